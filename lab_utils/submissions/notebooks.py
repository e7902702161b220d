"""Reading and bounding a hand-in's notebook (in the page and run workers).

``load_notebook`` classifies the submitted bytes (``not a valid notebook``, ``empty``, or
a usable v4 notebook, upgraded from older formats); ``bound_notebook`` cuts what would
make a page unreadable, with visible markers. nbformat is imported lazily.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

from ..pages import SURROGATE_RE, as_text
from .statuses import EMPTY, INVALID, OLD_FORMAT_NOTE
from .student_kernel import TEXT_LIMIT, marker_output, mb_text

RICH_TEXT_LIMIT = 500_000  # text/html, svg, json... over this are dropped (not cut mid-tag)
IMAGE_LIMIT = 2_000_000  # base64 characters of one image; larger ones are dropped
SOURCE_LIMIT = 200_000  # characters of one cell's source shown
NOTEBOOK_OUTPUT_BUDGET = 20_000_000  # characters of outputs kept per notebook page
MAX_FILE_BYTES = 256 * 2**20  # notebooks larger than this are not read at all


@dataclass
class Loaded:
    nb: object = None  # NotebookNode (v4) or None
    status: str | None = None  # INVALID / EMPTY / None when usable
    message: str = ""
    notes: list[str] = field(default_factory=list)


def _sniff(data: bytes) -> str:
    signatures = [
        (b"%PDF", "a PDF file"),
        (b"PK\x03\x04", "a zip archive (e.g. .docx or .zip)"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"{\\rtf", "an RTF document"),
        (b"\xd0\xcf\x11\xe0", "an old Office document"),
    ]
    for magic, what in signatures:
        if data.startswith(magic):
            return f"; it looks like {what}"
    return ""


def load_notebook(data: bytes) -> Loaded:
    """Classify and parse the raw bytes of a submission. Never raises."""
    import nbformat

    if not data.strip():
        return Loaded(status=EMPTY, message="the file is empty" if not data else "the file is blank")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Loaded(status=INVALID, message="not UTF-8 text" + _sniff(data))
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        return Loaded(status=INVALID, message=f"not valid JSON ({e})" + _sniff(data))
    if not isinstance(obj, dict) or "nbformat" not in obj:
        return Loaded(status=INVALID, message="JSON, but not a notebook (no 'nbformat' field)")
    major = obj.get("nbformat")
    if not isinstance(major, int) or isinstance(major, bool) or major < 1:
        return Loaded(status=INVALID, message=f"unknown nbformat version {major!r}")
    if major > 4:
        return Loaded(status=INVALID, message=f"nbformat {major} is newer than this grader reads")
    loaded = Loaded()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nb = nbformat.reads(text, as_version=4)
    except Exception as e:  # nbformat raises a zoo of exception types
        why = f"{type(e).__name__}: {e}" if str(e).strip() else type(e).__name__
        return Loaded(status=INVALID, message=f"could not be read as a notebook ({why})")
    problem = _structure_problem(nb)
    if problem:
        return Loaded(status=INVALID, message=problem)
    if major < 4:  # nbformat.reads upgraded it (v3 -> v4)
        loaded.notes.append(OLD_FORMAT_NOTE)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            nbformat.validate(nb)
    except Exception:
        loaded.notes.append("schema warnings")
    loaded.nb = nb
    cells = nb.cells
    # Half of a surrogate pair (valid in JSON, e.g. an emoji cut by a front end) cannot be
    # sent to a kernel nor written as UTF-8: shown and run as U+FFFD.
    broken = 0
    for cell in cells:
        fixed, n = SURROGATE_RE.subn("\ufffd", cell.source)
        if n:
            cell.source, broken = fixed, broken + n
    if broken:
        loaded.notes.append(f"{broken} broken character(s) in the cells' text replaced by U+FFFD")
    if not cells:
        return Loaded(nb=nb, status=EMPTY, message="the notebook has no cells", notes=loaded.notes)
    if all(not c.source.strip() for c in cells):
        return Loaded(
            nb=nb, status=EMPTY, message=f"all {len(cells)} cells are blank", notes=loaded.notes
        )
    return loaded


def _structure_problem(nb) -> str:
    """What makes *nb* unusable as a v4 notebook ('' if nothing); fixes small things."""
    if not isinstance(nb, dict):
        return "not a notebook object"
    cells = nb.get("cells")
    if not isinstance(cells, list):
        return "the notebook has no list of cells"
    if not isinstance(nb.get("metadata"), dict):
        nb["metadata"] = {}
    for i, cell in enumerate(cells, 1):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            return f"cell {i} is not a code, markdown or raw cell"
        src = cell.get("source", "")
        if isinstance(src, list) and all(isinstance(s, str) for s in src):
            cell["source"] = "".join(src)
        elif not isinstance(src, str):
            return f"cell {i} has no text source"
        if not isinstance(cell.get("metadata"), dict):
            cell["metadata"] = {}
        if cell["cell_type"] == "code":
            outs = cell.get("outputs")
            if not isinstance(outs, list) or not all(isinstance(o, dict) for o in outs):
                cell["outputs"] = []
            cell.setdefault("execution_count", None)
    return ""


def count_error_cells(nb) -> int:
    return sum(
        1
        for c in nb.cells
        if c.get("cell_type") == "code"
        and any(o.get("output_type") == "error" for o in c.get("outputs", []))
    )


_MARKER_END = "truncated by the grader ...]"


def truncate_text(s: str, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """Keep the first *limit* characters of *s* and add a visible marker."""
    if len(s) <= limit or (len(s) <= limit + 200 and s.rstrip().endswith(_MARKER_END)):
        return s, False  # short, or already cut (while it streamed)
    n = len(s) - limit
    return s[:limit] + f"\n[... {n:,} characters truncated by the grader ...]\n", True


def _bound_bundle(data: dict) -> int:
    """Bound one mime bundle in place; return the number of cuts."""
    cuts = 0
    markers = []
    for mime in list(data):
        v = data[mime]
        s = as_text(v)
        if s is None:  # JSON-valued (application/json, widget state...)
            try:
                size = len(json.dumps(v))
            except (TypeError, ValueError):
                size = RICH_TEXT_LIMIT + 1
            if size > RICH_TEXT_LIMIT:
                del data[mime]
                markers.append(f"[... {mime} output of {mb_text(size)} dropped by the grader ...]")
                cuts += 1
            continue
        if mime == "text/plain":
            data[mime], cut = truncate_text(s)
            cuts += cut
        elif mime.startswith("image/") and mime != "image/svg+xml":
            if len(s) > IMAGE_LIMIT:
                del data[mime]
                markers.append(
                    f"[... {mime} output of {mb_text(len(s))} dropped by the grader "
                    f"(limit {mb_text(IMAGE_LIMIT)}) ...]"
                )
                cuts += 1
        elif len(s) > RICH_TEXT_LIMIT:
            del data[mime]
            markers.append(
                f"[... {mime} output of {len(s):,} characters dropped by the grader "
                f"(limit {RICH_TEXT_LIMIT:,}) ...]"
            )
            cuts += 1
    if markers:
        # The marker lives in text/plain; drop the richer text alternatives so that
        # nbconvert shows the plain text (and thus the marker) instead.
        plain = as_text(data.get("text/plain")) or ""
        for mime in ("text/html", "text/markdown", "text/latex", "image/svg+xml",
                     "application/javascript"):
            data.pop(mime, None)
        data["text/plain"] = plain + ("\n" if plain else "") + "\n".join(markers)
    return cuts


def bound_notebook(nb) -> int:
    """Truncate oversized sources and outputs in place so the page stays readable.

    Text outputs longer than TEXT_LIMIT keep their head and get a visible
    ``[... N characters truncated by the grader ...]`` marker; images over
    IMAGE_LIMIT and rich texts over RICH_TEXT_LIMIT are dropped with a marker;
    once NOTEBOOK_OUTPUT_BUDGET characters of output are used, further outputs
    are dropped with a marker.  Returns the number of cuts (0: untouched).
    """
    cuts = 0
    budget = NOTEBOOK_OUTPUT_BUDGET
    for cell in nb.cells:
        cell.source, cut = truncate_text(cell.source, SOURCE_LIMIT)
        cuts += cut
        attachments = cell.get("attachments")
        if isinstance(attachments, dict):
            for fname, bundle in list(attachments.items()):
                if isinstance(bundle, dict):
                    for mime, v in list(bundle.items()):
                        s = as_text(v)
                        if s is not None and len(s) > IMAGE_LIMIT:
                            del bundle[mime]
                            cuts += 1
                if not bundle:
                    del attachments[fname]
        if cell.cell_type != "code":
            continue
        kept = []
        dropped, dropped_size = 0, 0
        for out in cell.outputs:
            if budget <= 0:
                dropped += 1
                try:
                    dropped_size += len(json.dumps(out))
                except (TypeError, ValueError):
                    pass
                continue
            kind = out.get("output_type")
            if kind == "stream":
                out["text"], cut = truncate_text(as_text(out.get("text")) or "")
                cuts += cut
            elif kind in ("display_data", "execute_result"):
                if isinstance(out.get("data"), dict):
                    cuts += _bound_bundle(out["data"])
            elif kind == "error":
                tb = out.get("traceback")
                if isinstance(tb, list) and all(isinstance(s, str) for s in tb):
                    joined = "\n".join(tb)
                    if len(joined) > TEXT_LIMIT:
                        half = TEXT_LIMIT // 2
                        n = len(joined) - 2 * half
                        out["traceback"] = (
                            joined[:half]
                            + f"\n[... {n:,} characters truncated by the grader ...]\n"
                            + joined[-half:]
                        ).split("\n")
                        cuts += 1
                for key in ("ename", "evalue"):
                    if isinstance(out.get(key), str):
                        out[key], cut = truncate_text(out[key], 2_000)
                        cuts += cut
            try:
                budget -= len(json.dumps(out))
            except (TypeError, ValueError):
                pass
            kept.append(out)
        if dropped:
            cuts += 1
            kept.append(
                marker_output(
                    f"[... {dropped} more output(s), {mb_text(dropped_size)}, dropped by the grader: "
                    f"this page's output budget of {mb_text(NOTEBOOK_OUTPUT_BUDGET)} is used up ...]\n"
                )
            )
        cell.outputs = kept
    return cuts
