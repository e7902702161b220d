"""Render a folder of student submissions to HTML: one page per notebook plus an index.

    ./render.sh --submissions hand-ins/ [--out build/submissions] [--execute]
                [--timeout S] [--cell-timeout S] [--jobs N]

Every ``.ipynb`` under the folder is one submission (``handins``: discovery and
names; symbolic links are listed, never followed).  By default each notebook is
converted as submitted (no code runs).  With ``--execute`` each one runs on a
*copy* in a fresh temporary folder, in its own process, with a per-cell and a
total timeout (``student_kernel``); errors are recorded, not fatal.  The
originals are only ever read.  Pages are written by ``pages`` (offline, with a
Content-Security-Policy, sanitized).

Per hand-in, two short-lived worker processes (``python -m lab_utils.submissions
--one -``, settings on stdin, never in a file or a command line):

1. with ``--execute``, the *run* worker, in the hand-in's workroot, started with
   the kernel's allow-list environment: it executes the copy and leaves
   ``run.json`` and the executed notebook there. The parent kills it, and every
   process of that workroot, at ``--timeout`` plus ``KILL_MARGIN`` seconds;
2. the *page* worker (no student code runs anywhere by then): it classifies the
   submitted bytes, bounds the outputs and writes the page.

Statuses written to the index (exact words):
``ok``, ``errors in N cells`` (``errors in 1 cell``), ``timed out``, ``kernel died``,
``not a valid notebook``, ``empty``, ``symbolic link (not followed)``, and, rarely,
``too large`` (file over the read limit) or ``grader error`` (a bug or a crash of
the grading process itself).  Annotations such as ``old nbformat (converted)`` or
``outputs truncated`` go in the notes column and do not change the status.

Exit status: 0 when every submission is ``ok``, 1 when any is not (after all of
them were processed), 2 for a usage error.

This module must stay light: it imports no TensorFlow and no lab_utils module
that does.  nbformat/nbclient/nbconvert are imported lazily, in the workers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import html
import json
import math
import os
import re
import signal
import sys
import threading
import time
import urllib.parse
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .handins import (  # noqa: F401  (discover, slugify: part of this module's API)
    Submission, assign_names, discover, scan, slugify)
from .config import display_name
from .pages import (
    SURROGATE_RE, as_text, document, inject_banner, notebook_html, simple_page, write_text_atomic)
from .student_kernel import (  # noqa: F401  (kernel_env...: part of this module's API)
    COPY_LIMIT_BYTES, EXEC_CELL_BUDGET, EXEC_MAX_OUTPUTS, TEXT_LIMIT, copy_student_files, execute_copy,
    grader_env, kernel_env, kill_group, kill_processes_of, make_undumpable, make_workroot, marker_output, mb_text,
    read_nofollow, rmtree_hard, run_with_hard_timeout, write_notebook_atomic)

KIT_ROOT = Path(__file__).resolve().parent.parent

# --- statuses (exact words shown in the index) ---------------------------------
OK = "ok"
TIMED_OUT = "timed out"
KERNEL_DIED = "kernel died"
INVALID = "not a valid notebook"
EMPTY = "empty"
TOO_LARGE = "too large"
LINK = "symbolic link (not followed)"
GRADER_ERROR = "grader error"
OLD_FORMAT_NOTE = "old nbformat (converted)"
TRUNCATED_NOTE = "outputs truncated"


def errors_status(n: int) -> str:
    """``errors in 3 cells`` / ``errors in 1 cell``."""
    return f"errors in {n} cell" + ("" if n == 1 else "s")


_ERRORS_RE = re.compile(r"^errors in \d+ cells?$")

# --- limits ----------------------------------------------------------------------
RICH_TEXT_LIMIT = 500_000  # text/html, svg, json... over this are dropped (not cut mid-tag)
IMAGE_LIMIT = 2_000_000  # base64 characters of one image; larger ones are dropped
SOURCE_LIMIT = 200_000  # characters of one cell's source shown
NOTEBOOK_OUTPUT_BUDGET = 20_000_000  # characters of outputs kept per notebook page
MAX_FILE_BYTES = 256 * 2**20  # notebooks larger than this are not read at all
# Seconds beyond --timeout before the run worker's process group is killed: the worker
# stops the kernel itself at --timeout and needs a moment to save the notebook.
KILL_MARGIN = 5.0
KILL_GRACE = 2.0  # seconds between the SIGTERM (the worker saves the notebook) and the SIGKILL
RENDER_TIMEOUT = 600.0  # seconds the page worker may take (no student code runs then)

DEFAULT_OUT = "build/submissions"
DEFAULT_TIMEOUT = 900.0
DEFAULT_CELL_TIMEOUT = 300.0
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))

MANIFEST = ".submissions-manifest.json"


# =================================================================================
# Reading and bounding notebooks (worker side; nbformat imported lazily)
# =================================================================================



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



# =================================================================================
# Student pages
# =================================================================================

_STATUS_CLASS = {OK: "ok", TIMED_OUT: "fail", KERNEL_DIED: "fail", INVALID: "bad",
                 EMPTY: "bad", TOO_LARGE: "bad", GRADER_ERROR: "bad"}


def status_class(status: str) -> str:
    if _ERRORS_RE.match(status):
        return "err"
    return _STATUS_CLASS.get(status, "bad")


_BANNER_CSS = (
    "font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;padding:10px 16px;"
    "margin:0 0 12px 0;border-bottom:1px solid #ccc;background:#f6f6f6;color:#222"
)
_BADGE = {
    "ok": "background:#d7f5dc;color:#135c1f",
    "err": "background:#fff0c2;color:#6b4b00",
    "fail": "background:#fbd5d5;color:#8a1010",
    "bad": "background:#e6e0f0;color:#41295f",
}


def banner_html(spec: dict, status: str, notes: list[str], message: str) -> str:
    e = html.escape
    cls = status_class(status)
    bits = [
        '<div class="lab-grader-banner" style="' + _BANNER_CSS + '">',
        '<a href="index.html">&larr; all submissions</a> &middot; ',
        f"<b>{e(spec['name'])}</b> &middot; <code>{e(spec['rel'])}</code> &middot; ",
        f'<span style="padding:1px 7px;border-radius:9px;{_BADGE[cls]}">{e(status)}</span>',
        f" &middot; {e(spec['mode_text'])}",
    ]
    if message:
        bits.append(f"<br>{e(message)}")
    if notes:
        bits.append("<br>Notes: " + e("; ".join(notes)))
    bits.append("</div>")
    return "".join(bits)


def preview_html(data: bytes, limit: int = 3_000) -> str:
    """An escaped look at the first bytes of a file that is not a notebook."""
    head = data[: limit * 4]
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
    if not text or printable / max(1, len(text)) < 0.9:
        return (
            f"<p>Binary content, {len(data):,} bytes; first bytes: "
            f"<code>{html.escape(data[:16].hex(' '))}</code></p>"
        )
    more = "\n[...]" if len(data) > len(head) or len(text) > limit else ""
    return (
        f"<p>First characters of the file ({len(data):,} bytes):</p>"
        f"<pre style=\"white-space:pre-wrap;background:#fafafa;border:1px solid #ddd;"
        f"padding:8px\">{html.escape(text[:limit])}{more}</pre>"
    )


def fallback_notebook_html(nb) -> str:
    """A plain rendering used when nbconvert fails on a (damaged) notebook."""
    parts = ["<p><i>nbconvert could not render this notebook; a plain view follows.</i></p>"]
    pre = 'style="white-space:pre-wrap;border:1px solid #ddd;padding:6px;background:#fafafa"'
    for i, cell in enumerate(nb.cells, 1):
        parts.append(f"<h4>Cell {i} ({html.escape(str(cell.get('cell_type')))})</h4>")
        parts.append(f"<pre {pre}>{html.escape(str(cell.get('source', '')))}</pre>")
        for out in cell.get("outputs", []) or []:
            kind = out.get("output_type")
            if kind == "stream":
                t = as_text(out.get("text")) or ""
            elif kind == "error":
                tb = out.get("traceback") or []
                t = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(x) for x in tb))
            else:
                t = as_text((out.get("data") or {}).get("text/plain")) or f"[{kind} output]"
            parts.append(f"<pre {pre}>{html.escape(t)}</pre>")
    return "".join(parts)


def write_banner_page(path: Path, spec: dict, status: str, notes: list[str], message: str,
                      body: str = "") -> None:
    """A page with only the banner (status, notes, message) above *body* (HTML): for a
    hand-in that has no notebook to show (a link, an invalid file, a failed run)."""
    write_text_atomic(path, simple_page(spec["slug"], banner_html(spec, status, notes, message), body))


def render_notebook_page(nb, spec: dict, banner: str) -> str:
    """The student's page: *nb* (untrusted) exported offline and sanitized, *banner* on top;
    a plain view when nbconvert fails on a damaged notebook."""
    try:
        return inject_banner(notebook_html(nb, spec["slug"], untrusted=True), banner)
    except Exception as e:  # a damaged notebook must still get a page
        body = fallback_notebook_html(nb) + (
            f"<p><small>nbconvert error: {html.escape(f'{type(e).__name__}: {e}')}</small></p>"
        )
        return simple_page(spec["slug"], banner, body)


# =================================================================================
# The workers (`python -m lab_utils.submissions --one -`, settings on stdin)
# =================================================================================

RUN_FILE = "run.json"  # in the workroot: what the run worker reports
EXECUTED_FILE = "executed.ipynb"  # the notebook with this run's outputs
CHECKPOINT_FILE = "checkpoint.ipynb"  # the same, saved while running (a killed run's outputs)


def run_phase(spec: dict) -> None:
    """The run worker: execute ``workroot/work/<notebook>`` and leave RUN_FILE and
    EXECUTED_FILE in the workroot. Its settings name nothing outside the workroot."""
    t0 = time.monotonic()
    workroot = Path(spec["workroot"])
    info: dict = {"executed": False}
    try:
        loaded = load_notebook((workroot / "work" / spec["notebook"]).read_bytes())
        if loaded.status is None:
            info = execute_copy(loaded.nb, workroot, float(spec["timeout"]), float(spec["cell_timeout"]),
                                t0, checkpoint=workroot / CHECKPOINT_FILE, run_file=workroot / RUN_FILE)
            write_notebook_atomic(loaded.nb, workroot / EXECUTED_FILE)
            info["executed"] = True
    except Exception as e:  # noqa: BLE001 - reported on the page, never a crash
        info = {"executed": False, "error": f"the run worker failed: {type(e).__name__}: {e}"}
    write_text_atomic(workroot / RUN_FILE, json.dumps(info))


def process_one(spec: dict) -> dict:
    """The page worker: classify the submitted bytes, take this run's outputs (with
    ``--execute``: ``spec['run']``, ``spec['executed']``), bound them and write the
    page to ``spec['page']``.  Never raises; returns the result dict (status,
    n_error_cells, notes, message, seconds, page_written)."""
    t0 = time.monotonic()
    res = {"status": GRADER_ERROR, "n_error_cells": 0, "notes": [], "message": "",
           "page_written": False}
    page_path = Path(spec["page"])
    try:
        _process_one(spec, res)
    except BaseException as e:  # noqa: BLE001 - the worker must report, not crash
        res["status"] = GRADER_ERROR
        res["message"] = f"{type(e).__name__}: {e}"
    if not res["page_written"]:
        try:
            write_banner_page(page_path, spec, res["status"], res["notes"], res["message"])
            res["page_written"] = True
        except OSError:
            pass
    res["seconds"] = round(time.monotonic() - t0, 2)
    return res


def _executed_notebook(path: str | None):
    """The run's notebook (a file the student's processes could have written: parsed
    like any hand-in), or None."""
    if not path:
        return None
    try:
        loaded = load_notebook(read_nofollow(Path(path), MAX_FILE_BYTES))
    except OSError:
        return None
    return loaded.nb if loaded.status is None else None


def _mark_first_unrun_cell(nb, text: str) -> int | None:
    """Append the grader's *text* to the first code cell this run did not finish; its
    1-based number (None when every cell ran)."""
    for idx, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.strip() and cell.get("execution_count") is None:
            cell.outputs.append(marker_output(text))
            return idx + 1
    return None


def _process_one(spec: dict, res: dict) -> None:
    src = Path(spec["src"])
    page_path = Path(spec["page"])
    notes = res["notes"]
    data = read_nofollow(src, MAX_FILE_BYTES + 1)  # read-only: the original is never written
    if len(data) > MAX_FILE_BYTES:
        res["status"] = TOO_LARGE
        res["message"] = f"over the {mb_text(MAX_FILE_BYTES)} limit; not read"
        return
    loaded = load_notebook(data)
    notes += loaded.notes
    res["message"] = loaded.message
    if loaded.status == INVALID:
        res["status"] = INVALID
        write_banner_page(page_path, spec, INVALID, notes, loaded.message, preview_html(data))
        res["page_written"] = True
        return
    if loaded.status == EMPTY and loaded.nb is None:
        res["status"] = EMPTY
        return
    nb = loaded.nb
    cuts = 0
    if loaded.status == EMPTY:
        status = EMPTY
    elif spec["execute"]:
        run = spec.get("run") or {}
        executed = _executed_notebook(spec.get("executed"))
        if executed is not None:
            nb = executed
        else:  # stored outputs must not pass for this run's
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
        notes += run.get("notes", [])
        cuts += run.get("cuts", 0)
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        if run.get("killed"):
            status = TIMED_OUT
            text = (f"[grader] The run was stopped here: {run['message']}. "
                    "This cell and later cells did not finish.\n")
            at = run.get("stopped_at")
            if isinstance(at, int) and 1 <= at <= len(nb.cells) and nb.cells[at - 1].cell_type == "code":
                nb.cells[at - 1].outputs.append(marker_output(text))
            elif executed is not None:  # the saved notebook shows where the run was
                at = _mark_first_unrun_cell(nb, text)
            else:  # nothing was saved: no cell number to claim
                at = None
            res["message"] = run["message"] + (f"; stopped in cell {at}" if at else "")
        elif run.get("error"):
            status = GRADER_ERROR
            res["message"] = run["error"]  # says what failed: the copy, the kernel, the worker
        elif run.get("timed_out"):
            status = TIMED_OUT
            what = ("per-cell timeout" if run["timed_out"] == "cell" else "total timeout")
            res["message"] = f"stopped in cell {run.get('stopped_at')} ({what})"
        elif run.get("died"):
            status = KERNEL_DIED
            res["message"] = (
                f"the kernel died in cell {run.get('stopped_at')} (os._exit, a crash, or out of memory)"
            )
        elif not run.get("executed") or executed is None:
            status = GRADER_ERROR
            res["message"] = "the run ended without saving the notebook"
        else:
            status = errors_status(n_err) if n_err else OK
        if status in (TIMED_OUT, KERNEL_DIED) and n_err:
            notes.append(errors_status(n_err) + " before that")
    else:
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        status = errors_status(n_err) if n_err else OK
    cuts += bound_notebook(nb)
    if cuts:
        notes.append(f"{TRUNCATED_NOTE} ({cuts})")
    res["status"] = status
    banner = banner_html(spec, status, notes, res["message"])
    write_text_atomic(page_path, render_notebook_page(nb, spec, banner))
    res["page_written"] = True


RESULT_PREFIX = "LAB-RESULT "


def worker_main() -> int:
    """``--one -``: read the settings (JSON) from stdin; a run worker leaves its results
    in its workroot, a page worker prints its result as the last stdout line."""
    spec = json.loads(sys.stdin.read())
    make_undumpable()  # what it read (the page worker: the hand-in's path) stays its own
    if spec.get("phase") == "run":
        run_phase(spec)
    else:
        res = process_one(spec)
        sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(res) + "\n")
    # Do not wait for stray threads (nbclient, zmq) to wind down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# =================================================================================
# The batch (parent side)
# =================================================================================


class _Live:
    """Worker processes and workroots alive now, so that Ctrl-C can end them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: set = set()
        self.workroots: set[Path] = set()
        self.stop = threading.Event()

    def add(self, p):
        with self.lock:
            self.procs.add(p)

    def discard(self, p):
        with self.lock:
            self.procs.discard(p)

    def kill_all(self):
        with self.lock:
            procs, roots = list(self.procs), list(self.workroots)
        for p in procs:
            kill_group(p.pid)
        for w in roots:
            kill_processes_of(w)


@dataclass
class Result:
    student: str  # display_name(): safe to print, still to be escaped in HTML
    file: str  # display_name() relative path
    page: str
    status: str
    seconds: float  # this hand-in's whole grading: run and page
    n_error_cells: int = 0
    notes: list[str] = field(default_factory=list)
    message: str = ""
    run_seconds: float | None = None  # with --execute: the run alone (bounded by --timeout)

    @property
    def ok(self) -> bool:
        return self.status == OK


def _clip(s, n: int = 300) -> str:
    return str(s)[:n]


def read_run_info(workroot: Path) -> dict | None:
    """RUN_FILE of a run (written by a process the student shared: every field checked)."""
    try:
        raw = json.loads(read_nofollow(workroot / RUN_FILE, 1_000_000).decode("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    stopped = raw.get("stopped_at")
    notes = raw.get("notes") if isinstance(raw.get("notes"), list) else []
    return {
        "executed": raw.get("executed") is True,
        "timed_out": raw.get("timed_out") if raw.get("timed_out") in ("cell", "total") else None,
        "died": raw.get("died") is True,
        "stopped_at": stopped if isinstance(stopped, int) and not isinstance(stopped, bool) else None,
        "notes": [_clip(n) for n in notes[:20] if isinstance(n, str)],
        "error": _clip(raw.get("error") or "", 500) if isinstance(raw.get("error"), str) else "",
        "cuts": raw["cuts"] if isinstance(raw.get("cuts"), int) and raw["cuts"] >= 0 else 0,
    }


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_bytes()[-4000:].decode("utf-8", "replace").strip().splitlines()
        return display_name(lines[-1])[:300] if lines else ""
    except OSError:
        return ""


def _run_copy(sub: Submission, args, root: Path, workroot: Path, live: _Live) -> tuple[dict, str | None, float]:
    """Execute a copy of *sub* in *workroot*: (run info, path of the run's notebook or
    None, seconds). Every process of the run has ended when this returns."""
    src = root / sub.rel
    name = Path(sub.rel).name
    try:
        if os.lstat(src).st_size > MAX_FILE_BYTES:
            return {"executed": False, "notes": []}, None, 0.0  # the page says "too large"
        (workroot / "work" / name).write_bytes(read_nofollow(src, MAX_FILE_BYTES))
        notes = copy_student_files(src, root, workroot / "work")
    except OSError as e:
        return {"executed": False, "error": f"the hand-in could not be copied: {e}", "notes": []}, None, 0.0
    settings = {"phase": "run", "workroot": str(workroot), "notebook": name,
                "timeout": args.timeout, "cell_timeout": args.cell_timeout}
    with live.lock:
        live.workroots.add(workroot)
    t0 = time.monotonic()
    try:
        rc, killed, _ = run_with_hard_timeout(
            [sys.executable, "-m", "lab_utils.submissions", "--one", "-"], args.timeout + KILL_MARGIN,
            live=live, stdin_data=json.dumps(settings).encode(), log_path=workroot / "worker.log",
            env=kernel_env(workroot), cwd=workroot, grace=KILL_GRACE)
        seconds = time.monotonic() - t0
        kill_processes_of(workroot)  # the kernel and anything it started
    finally:
        with live.lock:
            live.workroots.discard(workroot)
    run = read_run_info(workroot)
    executed = next((str(workroot / f) for f in (EXECUTED_FILE, CHECKPOINT_FILE)
                     if (workroot / f).is_file()), None)
    if killed:
        run = {**(run or {}), "killed": True, "message": (
            f"the run was stopped after {seconds:.1f} s (--timeout {args.timeout:g} s)"
            + ("" if executed else "; no outputs had been saved"))}
    elif run is None:
        tail = _log_tail(workroot / "worker.log")
        how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
        run = {"executed": False, "error": f"the run worker ended ({how}) without a result"
                                           + (f": {tail}" if tail else "")}
    run["notes"] = notes + run.get("notes", [])
    return run, executed, seconds


def _page_worker(spec: dict, live: _Live) -> dict | None:
    """Run the page worker for *spec*; its result dict, or None (the message is in
    ``spec['_failure']``)."""
    rc, killed, stdout = run_with_hard_timeout(
        [sys.executable, "-m", "lab_utils.submissions", "--one", "-"], RENDER_TIMEOUT, live=live,
        stdin_data=json.dumps(spec).encode(), capture=True, env=_page_worker_env(), cwd=KIT_ROOT)
    lines = stdout.decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        if line.startswith(RESULT_PREFIX):
            try:
                return json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                break
    tail = display_name(next((ln for ln in reversed(lines) if ln.strip()), ""))[:300]
    spec["_failure"] = (f"the page could not be made in {RENDER_TIMEOUT:g} s" if killed
                        else f"the grading process exited with code {rc}" + (f": {tail}" if tail else ""))
    return None


def _with_kit_on_path(env: dict) -> dict:
    """*env* with the kit first on PYTHONPATH (a worker runs ``-m lab_utils.submissions``)."""
    env["PYTHONPATH"] = str(KIT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _page_worker_env() -> dict:
    return {**_with_kit_on_path(dict(os.environ)), "LAB_PROGRESS": "0"}


def grade_one(sub: Submission, args, root: Path, out: Path, live: _Live) -> Result:
    """Run (with ``--execute``) and render one hand-in; never raises for a bad hand-in."""
    page = out / f"{sub.slug}.html"
    base = Result(student=sub.name, file=sub.shown_rel, page=page.name, status=GRADER_ERROR,
                  seconds=0.0, notes=list(sub.notes))
    spec = {"phase": "page", "src": str(root / sub.rel), "rel": sub.shown_rel, "name": sub.name,
            "slug": sub.slug, "page": str(page), "execute": bool(args.execute),
            "mode_text": _mode_text(args)}
    if sub.link is not None:
        base.status = LINK
        base.message = f"links to {sub.link}: not read (symbolic links are never followed)"
        write_banner_page(page, spec, LINK, base.notes, base.message)
        return base
    if live.stop.is_set():
        base.message = "interrupted"
        return base
    t0 = time.monotonic()
    workroot = make_workroot() if args.execute else None
    try:
        if workroot is not None:
            spec["run"], spec["executed"], run_seconds = _run_copy(sub, args, root, workroot, live)
            base.run_seconds = round(run_seconds, 2)
        r = None if live.stop.is_set() else _page_worker(spec, live)
    finally:
        if workroot is not None:
            rmtree_hard(workroot)
    base.seconds = round(time.monotonic() - t0, 2)
    if r is None:
        base.message = "interrupted" if live.stop.is_set() else spec["_failure"]
        write_banner_page(page, spec, base.status, base.notes, base.message)
        return base
    base.status = r["status"]
    base.n_error_cells = r.get("n_error_cells", 0)
    base.notes += r.get("notes", [])
    base.message = r.get("message", "")
    if not page.exists():
        write_banner_page(page, spec, base.status, base.notes, base.message)
    return base


def _mode_text(args) -> str:
    if args.execute:
        return (f"executed on a copy (per-cell timeout {args.cell_timeout:g} s, "
                f"total {args.timeout:g} s)")
    return "converted as submitted (no code was run)"


INDEX_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 6px 0} .meta{color:#555;margin-bottom:14px}
table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #ddd;padding:6px 8px;
text-align:left;vertical-align:top} th{background:#f3f3f3;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap} code{font-size:13px}
.st{padding:1px 8px;border-radius:10px;white-space:nowrap}
.st-ok{background:#d7f5dc;color:#135c1f} .st-err{background:#fff0c2;color:#6b4b00}
.st-fail{background:#fbd5d5;color:#8a1010} .st-bad{background:#e6e0f0;color:#41295f}
.summary span{margin-right:10px} .notes{color:#444;font-size:13px}
details{margin-top:18px} .warn{background:#fff4e5;border:1px solid #f0c27b;padding:8px 12px;margin:12px 0}
"""


def write_index(out: Path, results: list[Result], *, root: Path, args, ignored: list[str],
                started: datetime.datetime, elapsed: float) -> Path:
    e = html.escape
    counts: dict[str, int] = {}
    for r in results:
        key = "errors" if _ERRORS_RE.match(r.status) else r.status
        counts[key] = counts.get(key, 0) + 1
    order = [OK, "errors", TIMED_OUT, KERNEL_DIED, INVALID, EMPTY, TOO_LARGE, LINK, GRADER_ERROR]
    summary = " ".join(
        f'<span><span class="st st-{status_class(k if k != "errors" else errors_status(2))}">'
        f"{e(k if k != 'errors' else 'errors')}</span> {counts[k]}</span>"
        for k in order if counts.get(k)
    )
    rows = []
    for n, r in enumerate(results, 1):
        href = urllib.parse.quote(r.page)
        notes = "; ".join([*([r.message] if r.message else []), *r.notes])
        rows.append(
            "<tr>"
            f"<td class=\"num\">{n}</td>"
            f"<td>{e(r.student)}</td>"
            f"<td><code>{e(r.file)}</code></td>"
            f"<td><span class=\"st st-{status_class(r.status)}\">{e(r.status)}</span></td>"
            f"<td class=\"num\">{r.seconds:.1f}</td>"
            f"<td class=\"notes\">{e(notes)}</td>"
            f"<td><a href=\"{e(href, quote=True)}\">page</a></td>"
            "</tr>"
        )
    n_bad = sum(not r.ok for r in results)
    if not results:
        headline = "<p class=\"warn\">No <code>.ipynb</code> files were found in this folder.</p>"
    elif n_bad:
        headline = f"<p class=\"warn\">{n_bad} of {len(results)} submissions are not <b>ok</b>.</p>"
    else:
        headline = f"<p>All {len(results)} submissions are <b>ok</b>.</p>"
    listed = ignored[:500]
    ignored_html = ""
    if ignored:
        more = f"<li>... and {len(ignored) - len(listed)} more</li>" if len(ignored) > len(listed) else ""
        ignored_html = (
            f"<details><summary>Ignored files ({len(ignored)}): not notebooks, hidden, "
            "checkpoint folders or symbolic links</summary><ul>"
            + "".join(f"<li><code>{e(display_name(p))}</code></li>" for p in listed) + more + "</ul></details>"
        )
    security = ""
    if args.execute:
        security = (
            "<p class=\"notes\">Student code was executed: each notebook ran on a copy, in its "
            "own process and temporary folder, with an allow-list environment, timeouts and "
            "proxy variables pointing nowhere. This is not a sandbox.</p>"
        )
    folder = display_name(str(root))
    body = f"""<h1>Submissions: {e(display_name(root.name))}</h1>
<div class="meta">Folder <code>{e(folder)}</code> &middot; {len(results)} notebooks &middot;
{e(_mode_text(args))} &middot; {args.jobs} at a time &middot; generated
{e(started.strftime('%Y-%m-%d %H:%M:%S %Z').strip())} in {elapsed:.1f} s</div>
<div class="summary">{summary}</div>
{headline}
<table>
<thead><tr><th>#</th><th>Student</th><th>File</th><th>Status</th><th>Run time (s)</th>
<th>Notes</th><th>Page</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
{ignored_html}
{security}
<p class="notes">Statuses: <b>ok</b>; <b>errors in N cells</b> (the page shows where);
<b>timed out</b> (a cell or the whole notebook ran past its limit); <b>kernel died</b>
(os._exit, a crash, or out of memory); <b>not a valid notebook</b>; <b>empty</b>;
<b>symbolic link (not followed)</b> (a link is never read through).
Notes such as <i>old nbformat (converted)</i> or <i>outputs truncated</i> do not change the
status. The submitted files were only read, never modified.</p>"""
    path = out / "index.html"
    write_text_atomic(path, document(f"Submissions: {display_name(root.name)}", body,
                                     head=f"<style>{INDEX_CSS}</style>"))
    return path


def _manifest_files(out: Path) -> list[str]:
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _foreign_pages(out: Path) -> set[str]:
    """Page names (lower case, no ``.html``) of ``.html`` files in *out* that no earlier run
    of this command wrote: a student's page never overwrites them."""
    try:
        names = [p.name for p in out.iterdir() if p.name.lower().endswith(".html")]
    except OSError:
        return set()
    ours = set(_manifest_files(out)) | {"index.html"}
    return {n[:-5].lower() for n in names if n not in ours}


def _write_manifest(out: Path, pages: set[str]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps({"files": sorted(pages)}, indent=1))


def _clean_stale_pages(out: Path, produced: set[str]) -> None:
    """Remove pages a previous run of this command wrote that this run did not."""
    for name in _manifest_files(out):
        if (name not in produced and "/" not in name and "\\" not in name
                and name.endswith(".html") and not name.startswith(".")):
            try:
                (out / name).unlink()
            except OSError:
                pass
    _write_manifest(out, produced)


def run_batch(args, root: Path, out: Path) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    found = scan(root)
    ignored = found.ignored
    subs = assign_names(found.notebooks, found.links, taken=_foreign_pages(out))
    out.mkdir(parents=True, exist_ok=True)
    live = _Live()
    results: dict[int, Result] = {}
    mode = "executing" if args.execute else "converting"
    print(f"[submissions] {mode} {len(subs)} notebook(s) from {display_name(str(root))}, "
          f"{args.jobs} at a time -> {display_name(str(out))}", file=sys.stderr)
    interrupted = False
    # A terminal closed or a CI job cancelled: end the workers and their kernels as Ctrl-C does.
    restore = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                restore[name] = signal.signal(getattr(signal, name), signal.default_int_handler)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
    futures = {pool.submit(grade_one, sub, args, root, out, live): i for i, sub in enumerate(subs)}
    try:
        for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
            i = futures[fut]
            try:
                r = fut.result()
            except Exception as e:  # a bug here must not lose the other results
                sub = subs[i]
                r = Result(student=sub.name, file=sub.shown_rel, page=f"{sub.slug}.html",
                           status=GRADER_ERROR, seconds=0.0, notes=list(sub.notes),
                           message=f"{type(e).__name__}: {e}")
            results[i] = r
            print(f"[{done}/{len(subs)}] {display_name(r.student)}: {r.status} ({r.seconds:.1f} s)",
                  file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
        live.stop.set()
        live.kill_all()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name, handler in restore.items():
            signal.signal(getattr(signal, name), handler)
    if interrupted:
        # The pages written so far are this command's: a later run may replace them. A worker may
        # have written its page before its result reached this thread, so look at the folder; a
        # name in `subs` was chosen to avoid every foreign page, so a file by that name is ours.
        written = {f"{s.slug}.html" for s in subs if (out / f"{s.slug}.html").exists()}
        _write_manifest(out, written | {r.page for r in results.values()} | set(_manifest_files(out)))
        print("[submissions] interrupted; no index written", file=sys.stderr)
        return 130
    ordered = [results[i] for i in range(len(subs))]
    ordered.sort(key=lambda r: (r.student.lower(), r.file))
    write_text_atomic(out / "results.json", json.dumps(
        {"folder": display_name(str(root)), "mode": _mode_text(args),
         "submissions": [{**asdict(r), "ok": r.ok} for r in ordered]}, indent=1))
    index = write_index(out, ordered, root=root, args=args, ignored=ignored, started=started,
                        elapsed=time.monotonic() - t0)
    _clean_stale_pages(out, {r.page for r in ordered})
    n_bad = sum(not r.ok for r in ordered)
    if not ordered:
        print(f"[submissions] no .ipynb files found under {display_name(str(root))}", file=sys.stderr)
    print(f"[submissions] {len(ordered) - n_bad} ok, {n_bad} not ok; index: {display_name(str(index))}",
          file=sys.stderr)
    return 0 if ordered and not n_bad else 1


# =================================================================================
# Command line
# =================================================================================


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump or traceback
        self.exit(2, f"submissions: error: {message} (see --help)\n")


def _positive_seconds(flag):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number of seconds (got {text!r})")
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number of seconds (got {text})")
        return v
    return parse


def _jobs(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--jobs must be a whole number (got {text!r})")
    if v < 1:
        raise argparse.ArgumentTypeError(f"--jobs must be at least 1 (got {v})")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="render.sh --submissions",
        usage="render.sh --submissions DIR [--out DIR] [--execute] [--timeout S] "
              "[--cell-timeout S] [--jobs N]",
        description=(
            "Render every .ipynb under DIR (a folder of student submissions) to "
            "OUT/<student>.html and write OUT/index.html, a table of every submission with "
            "its status. The student's name is the first folder under DIR, or the file name "
            "for notebooks directly in DIR. Submitted files are only read, never written."
        ),
        epilog=(
            "Statuses: ok, errors in N cells, timed out, kernel died, not a valid notebook, "
            "empty. Exit status: 0 if every submission is ok, 1 if any is not (all are still "
            "processed), 2 for a usage error. SECURITY: --execute runs untrusted student code "
            "with your user's permissions; the kit adds timeouts, a separate process and "
            "temporary folder per notebook and network-free proxy settings, but it is not a "
            "sandbox. Without --execute no student code runs."
        ),
    )
    p.add_argument("--submissions", metavar="DIR", required=True,
                   help="folder of submissions (searched recursively for .ipynb files)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"where the pages go (default: {DEFAULT_OUT}, relative to the current "
                        "folder); must not be inside the submissions folder")
    p.add_argument("--execute", action="store_true",
                   help="run each notebook (on a copy, in a temporary folder) before rendering; "
                        "default: render the outputs as submitted, running nothing")
    p.add_argument("--timeout", metavar="S", type=_positive_seconds("--timeout"),
                   default=DEFAULT_TIMEOUT,
                   help=f"total seconds per notebook (default: {DEFAULT_TIMEOUT:g})")
    p.add_argument("--cell-timeout", metavar="S", type=_positive_seconds("--cell-timeout"),
                   default=DEFAULT_CELL_TIMEOUT,
                   help=f"seconds per cell with --execute (default: {DEFAULT_CELL_TIMEOUT:g})")
    p.add_argument("--jobs", metavar="N", type=_jobs, default=DEFAULT_JOBS,
                   help=f"notebooks processed at the same time, each in its own process "
                        f"(default: {DEFAULT_JOBS})")
    return p


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


ARGS_FD_FLAG = "--settings-from-fd"


def _reexec_hiding_paths(args, root: Path, out: Path) -> None:
    """Replace this process (same pid) by one whose command line, working folder and
    environment name neither the hand-ins nor the output folder: the arguments travel
    through an inherited pipe. Student code can read every process's command line
    (``ps``); with ``--execute`` it must not learn where the hand-ins are from ours. The
    new process keeps only ``grader_env`` of the environment (no credentials) and marks
    itself non-dumpable (its working folder, open files and memory: ``make_undumpable``).
    Does nothing where there is no ``execve`` or the pipe would not hold the arguments."""
    if not hasattr(os, "execve") or not hasattr(os, "pipe"):
        return
    argv = ["--submissions", str(root), "--out", str(out), "--timeout", repr(args.timeout),
            "--cell-timeout", repr(args.cell_timeout), "--jobs", str(args.jobs)]
    argv += ["--execute"] if args.execute else []
    data = json.dumps(argv).encode()
    if len(data) > 60_000:  # a pipe buffer holds 64 KiB: never block here
        return
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    os.set_inheritable(r, True)
    env = _with_kit_on_path(grader_env())
    sys.stdout.flush()
    sys.stderr.flush()
    here = os.getcwd()
    os.chdir("/")
    try:
        os.execve(sys.executable, [sys.executable, "-m", "lab_utils.submissions", ARGS_FD_FLAG, str(r)], env)
    except OSError as e:  # go on without hiding, and say so
        os.chdir(here)
        os.close(r)
        print(f"submissions: warning: could not re-execute to hide the folders ({e}); "
              "student code may find them in this process's command line", file=sys.stderr)


def _argv_from_fd(fd_text: str) -> list[str]:
    fd = int(fd_text)
    with os.fdopen(fd, "rb") as fh:
        return json.loads(fh.read().decode())


def main(argv: list[str] | None = None, *, hide_paths: bool = False) -> int:
    """The command line. *hide_paths* (the ``python -m`` entry point): with ``--execute``,
    re-execute without the folders in the command line (``_reexec_hiding_paths``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--one":  # internal: one worker, settings on stdin
        return worker_main()
    if len(argv) == 2 and argv[0] == ARGS_FD_FLAG:  # internal: after _reexec_hiding_paths
        argv = _argv_from_fd(argv[1])
        hide_paths = False  # hidden already
        make_undumpable()  # its cwd, open files and memory: unreadable to student code
    parser = build_parser()
    args = parser.parse_args(argv)
    src = Path(args.submissions).expanduser()
    if not src.exists():
        parser.error(f"--submissions {display_name(args.submissions)}: no such folder")
    if not src.is_dir():
        parser.error(f"--submissions {display_name(args.submissions)}: not a folder")
    root = src.resolve()
    out = Path(args.out).expanduser().resolve()
    if out == root or _inside(out, root):
        parser.error(f"--out {display_name(args.out)} is inside the submissions folder; choose a folder "
                     "outside it (submissions are never written to)")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {display_name(args.out)} exists and is not a folder")
    if (out / "index.html").exists() and not (out / MANIFEST).exists():
        parser.error(f"--out {display_name(args.out)} holds an index.html that this command did not "
                     "write (a lab render?); choose another folder, nothing there is overwritten")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        parser.error(f"--out {display_name(args.out)}: {display_name(str(blocker))} is a file, not a folder")
    if hide_paths and args.execute:
        _reexec_hiding_paths(args, root, out)
    try:
        return run_batch(args, root, out)
    except OSError as e:
        print(f"submissions: error: {display_name(str(e))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(hide_paths=True))
