"""Render a folder of student submissions to HTML: one page per notebook plus an index.

    ./render.sh --submissions hand-ins/ [--out build/submissions] [--execute]
                [--timeout S] [--cell-timeout S] [--jobs N]

Every ``.ipynb`` under the folder is one submission.  By default each notebook is
converted as submitted (no code runs).  With ``--execute`` each one runs on a
*copy* in a fresh temporary folder, in its own process, with a per-cell and a
total timeout; errors are recorded, not fatal.  The originals are only ever read.

Statuses written to the index (exact words):
``ok``, ``errors in N cells`` (``errors in 1 cell``), ``timed out``, ``kernel died``,
``not a valid notebook``, ``empty``, and, rarely, ``too large`` (file over the
read limit) or ``grader error`` (a bug or a crash of the grading process itself).
Annotations such as ``old nbformat (converted)`` or ``outputs truncated`` go in
the notes column and do not change the status.

Exit status: 0 when every submission is ``ok``, 1 when any is not (after all of
them were processed), 2 for a usage error.

This module must stay light: it imports no TensorFlow and no other ``lab_utils``
module.  nbformat/nbclient/nbconvert are imported lazily, in the worker.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import hashlib
import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

KIT_ROOT = Path(__file__).resolve().parent.parent

# --- statuses (exact words shown in the index) ---------------------------------
OK = "ok"
TIMED_OUT = "timed out"
KERNEL_DIED = "kernel died"
INVALID = "not a valid notebook"
EMPTY = "empty"
TOO_LARGE = "too large"
GRADER_ERROR = "grader error"
OLD_FORMAT_NOTE = "old nbformat (converted)"
TRUNCATED_NOTE = "outputs truncated"


def errors_status(n: int) -> str:
    """``errors in 3 cells`` / ``errors in 1 cell``."""
    return f"errors in {n} cell" + ("" if n == 1 else "s")


_ERRORS_RE = re.compile(r"^errors in \d+ cells?$")

# --- limits ----------------------------------------------------------------------
TEXT_LIMIT = 20_000  # characters kept of one text output (stream, text/plain, traceback)
RICH_TEXT_LIMIT = 500_000  # text/html, svg, json... over this are dropped (not cut mid-tag)
IMAGE_LIMIT = 2_000_000  # base64 characters of one image; larger ones are dropped
SOURCE_LIMIT = 200_000  # characters of one cell's source shown
NOTEBOOK_OUTPUT_BUDGET = 20_000_000  # characters of outputs kept per notebook page
EXEC_CELL_BUDGET = 20_000_000  # output characters kept per cell while running
EXEC_MAX_OUTPUTS = 2_000  # outputs kept per cell while running
MAX_FILE_BYTES = 256 * 2**20  # notebooks larger than this are not read at all
COPY_LIMIT_BYTES = 200 * 2**20  # data files copied next to an executed notebook
COPY_MAX_FILES = 5_000
HARD_KILL_MARGIN = 60.0  # seconds beyond --timeout before the worker's process group is killed

DEFAULT_OUT = "build/submissions"
DEFAULT_TIMEOUT = 900.0
DEFAULT_CELL_TIMEOUT = 300.0
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))

# Folders that are never submissions (Jupyter autosaves, macOS zip debris, VCS).
SKIP_DIRS = {".ipynb_checkpoints", "__MACOSX", "__pycache__", ".git", ".svn", ".hg"}
RESERVED_SLUGS = {"index"}
MANIFEST = ".submissions-manifest.json"

# Where untrusted code is sent when it honours proxy settings: the discard port.
DEAD_PROXY = "http://127.0.0.1:9"
_SECRET_NAME_RE = re.compile(
    r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE|AUTH", re.IGNORECASE
)
_SECRET_PREFIXES = (
    "AWS_", "AZURE_", "GOOGLE_", "GCLOUD", "GH_", "GITHUB_", "GITLAB_", "KAGGLE_",
    "HF_", "HUGGING", "OPENAI", "ANTHROPIC", "SSH_", "GPG_", "JPY_",
)


# =================================================================================
# Discovery and naming
# =================================================================================


@dataclass
class Submission:
    rel: str  # path relative to DIR, posix style
    name: str  # display name (untrusted: escape before use)
    slug: str  # file-name-safe page name, without ".html"
    notes: list[str] = field(default_factory=list)


def discover(root: Path) -> tuple[list[str], list[str]]:
    """Return (notebooks, ignored) as sorted posix paths relative to *root*.

    Hidden files and folders, ``.ipynb_checkpoints`` and ``__MACOSX`` are skipped
    (listed as ignored); symlinked folders are not followed.
    """
    notebooks: list[str] = []
    ignored: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            if d in SKIP_DIRS or d.startswith("."):
                ignored.append((here / d).relative_to(root).as_posix() + "/")
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            rel = p.relative_to(root).as_posix()
            if not f.startswith(".") and f.lower().endswith(".ipynb") and p.is_file():
                notebooks.append(rel)
            else:
                ignored.append(rel)
    return sorted(notebooks), sorted(ignored)


def _strip_ipynb(name: str) -> str:
    return name[: -len(".ipynb")] if name.lower().endswith(".ipynb") else name


def slugify(name: str) -> str:
    """A file-name-safe version of *name*: letters, digits, '-', '_', '.' only."""
    s = unicodedata.normalize("NFKD", name)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("/", "__")
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s)
    s = s.lstrip(".-")[:80].rstrip(".")
    if not re.search(r"[A-Za-z0-9]", s):
        s = "student-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return s


def assign_names(rels: list[str]) -> list[Submission]:
    """Student names and page names for the notebooks at *rels* (relative paths).

    ``alice/lab.ipynb`` -> ``alice``; ``bob.ipynb`` -> ``bob``; deeper paths use the
    first folder.  When several notebooks would get the same name, each is named
    by its path instead (``alice/lab``, ``alice/lab_v2``), with a note.  Page names
    are sanitised and made unique (case-insensitively; ``index`` is reserved) by
    a ``-2``, ``-3``... suffix, deterministically in path order.
    """
    rels = sorted(rels)
    keys = {}
    for rel in rels:
        parts = PurePosixPath(rel).parts
        keys[rel] = parts[0] if len(parts) > 1 else _strip_ipynb(parts[0])
    counts: dict[str, int] = {}
    for k in keys.values():
        counts[k] = counts.get(k, 0) + 1
    used: set[str] = set()
    subs = []
    for rel in rels:
        key = keys[rel]
        notes = []
        if counts[key] > 1:
            name = _strip_ipynb(rel)
            notes.append(
                f"duplicate name: {counts[key]} notebooks share the name {key!r}; "
                "each is named by its path"
            )
        else:
            name = key
        base = slugify(name)
        slug, k = base, 1
        while slug.lower() in used or slug.lower() in RESERVED_SLUGS:
            k += 1
            slug = f"{base}-{k}"
        if slug != base:
            notes.append(f"page renamed to {slug}.html to avoid a clash")
        used.add(slug.lower())
        subs.append(Submission(rel=rel, name=name, slug=slug, notes=notes))
    return subs


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
        return Loaded(status=INVALID, message=f"could not be read as a notebook ({type(e).__name__}: {e})")
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


def _as_text(v) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return "".join(v)
    return None


_MARKER_END = "truncated by the grader ...]"


def truncate_text(s: str, limit: int = TEXT_LIMIT) -> tuple[str, bool]:
    """Keep the first *limit* characters of *s* and add a visible marker."""
    if len(s) <= limit or (len(s) <= limit + 200 and s.rstrip().endswith(_MARKER_END)):
        return s, False  # short, or already cut (while it streamed)
    n = len(s) - limit
    return s[:limit] + f"\n[... {n:,} characters truncated by the grader ...]\n", True


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _marker_stream(text: str):
    import nbformat

    return nbformat.v4.new_output("stream", name="stderr", text=text)


def _bound_bundle(data: dict) -> int:
    """Bound one mime bundle in place; return the number of cuts."""
    cuts = 0
    markers = []
    for mime in list(data):
        v = data[mime]
        s = _as_text(v)
        if s is None:  # JSON-valued (application/json, widget state...)
            try:
                size = len(json.dumps(v))
            except (TypeError, ValueError):
                size = RICH_TEXT_LIMIT + 1
            if size > RICH_TEXT_LIMIT:
                del data[mime]
                markers.append(f"[... {mime} output of {_mb(size)} dropped by the grader ...]")
                cuts += 1
            continue
        if mime == "text/plain":
            data[mime], cut = truncate_text(s)
            cuts += cut
        elif mime.startswith("image/") and mime != "image/svg+xml":
            if len(s) > IMAGE_LIMIT:
                del data[mime]
                markers.append(
                    f"[... {mime} output of {_mb(len(s))} dropped by the grader "
                    f"(limit {_mb(IMAGE_LIMIT)}) ...]"
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
        plain = _as_text(data.get("text/plain")) or ""
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
                        s = _as_text(v)
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
                out["text"], cut = truncate_text(_as_text(out.get("text")) or "")
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
                _marker_stream(
                    f"[... {dropped} more output(s), {_mb(dropped_size)}, dropped by the grader: "
                    f"this page's output budget of {_mb(NOTEBOOK_OUTPUT_BUDGET)} is used up ...]\n"
                )
            )
        cell.outputs = kept
    return cuts


# =================================================================================
# Executing a copy (worker side)
# =================================================================================


def kernel_env(workroot: Path, base: dict | None = None) -> dict:
    """Environment for a student's kernel.

    Inherits PATH and the rest (so the kit's venv python runs), minus variables
    that look like credentials; HOME, TMPDIR and the caches point into the
    throw-away *workroot*; proxies point at a closed local port so well-behaved
    HTTP clients cannot reach the network (raw sockets still can: no sandbox).
    """
    base = dict(os.environ if base is None else base)
    env = {
        k: v
        for k, v in base.items()
        if not _SECRET_NAME_RE.search(k) and not k.upper().startswith(_SECRET_PREFIXES)
    }
    home = workroot / "home"
    tmp = workroot / "tmp"
    cfg = home / ".config"
    cache = home / ".cache"
    env.update(
        HOME=str(home),
        TMPDIR=str(tmp),
        TMP=str(tmp),
        TEMP=str(tmp),
        XDG_CONFIG_HOME=str(cfg),
        XDG_CACHE_HOME=str(cache),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        IPYTHONDIR=str(home / ".ipython"),
        MPLCONFIGDIR=str(cfg / "matplotlib"),
        MPLBACKEND="Agg",
        KERAS_HOME=str(home / ".keras"),
        KAGGLE_CONFIG_DIR=str(home / ".kaggle"),
        KAGGLEHUB_CACHE=str(cache / "kagglehub"),
        HF_HOME=str(cache / "huggingface"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PIP_NO_INDEX="1",
        PYTHONDONTWRITEBYTECODE="1",
        LAB_PROGRESS="0",
        # A cache per submission: no student reads results cached by another
        # (or poisons the instructor's cache).
        LAB_CACHE_DIR=str(cache / "lab"),
    )
    for var in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
        env[var] = env[var.upper()] = DEAD_PROXY
    env["no_proxy"] = env["NO_PROXY"] = ""
    old = base.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(KIT_ROOT) + (os.pathsep + old if old else "")
    return env


def _seed_matplotlib_cache(dest: Path) -> None:
    """Copy the instructor's matplotlib font list so each kernel skips a slow rebuild."""
    candidates = []
    if os.environ.get("MPLCONFIGDIR"):
        candidates.append(Path(os.environ["MPLCONFIGDIR"]))
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    candidates.append(Path(xdg) / "matplotlib")
    for c in candidates:
        try:
            for f in c.glob("fontlist-*.json"):
                dest.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dest / f.name)
            return
        except OSError:
            continue


def copy_student_files(src: Path, root: Path, dest: Path) -> list[str]:
    """Copy the data files beside *src* (its folder, recursively) into *dest*.

    Nothing is copied for a notebook directly in *root* (its neighbours belong to
    other students); other notebooks, symlinks and special files are skipped.
    Only contents are copied (shutil.copyfile): the originals are only read.
    """
    notes: list[str] = []
    parent = src.parent
    try:
        if parent.resolve() == root.resolve():
            return notes
    except OSError:
        return notes
    total = count = skipped = 0
    for dirpath, dirnames, filenames in os.walk(parent):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for f in sorted(filenames):
            p = Path(dirpath) / f
            if f.lower().endswith(".ipynb") or p.is_symlink() or not p.is_file():
                continue
            try:
                size = p.stat().st_size
                if total + size > COPY_LIMIT_BYTES or count >= COPY_MAX_FILES:
                    skipped += 1
                    continue
                target = dest / p.relative_to(parent)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, target)
                total += size
                count += 1
            except OSError:
                skipped += 1
    if skipped:
        notes.append(f"{skipped} data file(s) not copied for the run")
    return notes


def _make_client_class():
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        """NotebookClient that keeps memory bounded while a cell streams output."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._dropped_chars: dict[int, int] = {}
            self._cell_bytes: dict[int, int] = {}
            self._dropped_outputs: dict[int, int] = {}
            self.cuts = 0  # outputs cut while they streamed

        def output(self, outs, msg, display_id, cell_index):
            parent = msg["parent_header"].get("msg_id")
            if self.output_hook_stack[parent]:
                return super().output(outs, msg, display_id, cell_index)
            content = msg.get("content", {})
            if msg["msg_type"] == "stream":
                text = content.get("text", "")
                last = outs[-1] if outs else None
                if (
                    not self.clear_before_next_output
                    and last is not None
                    and last.get("output_type") == "stream"
                    and last.get("name") == content.get("name")
                ):
                    room = TEXT_LIMIT - len(last["text"])
                    if room >= len(text):
                        last["text"] += text
                    else:
                        if room > 0:
                            last["text"] += text[:room]
                        self._dropped_chars[id(last)] = (
                            self._dropped_chars.get(id(last), 0) + len(text) - max(room, 0)
                        )
                    return last
            # A new output: bounded in total size and in number per cell.
            try:
                size = min(len(json.dumps(content.get("data", content))), TEXT_LIMIT + 100)
            except (TypeError, ValueError):
                size = 0
            used = self._cell_bytes.get(cell_index, 0)
            if used + size > EXEC_CELL_BUDGET or len(outs) >= EXEC_MAX_OUTPUTS:
                self._dropped_outputs[cell_index] = self._dropped_outputs.get(cell_index, 0) + 1
                return None
            self._cell_bytes[cell_index] = used + size
            out = super().output(outs, msg, display_id, cell_index)
            if (out is not None and out.get("output_type") == "stream"
                    and len(out.get("text", "")) > TEXT_LIMIT):
                self._dropped_chars[id(out)] = len(out["text"]) - TEXT_LIMIT
                out["text"] = out["text"][:TEXT_LIMIT]
            return out

        def flush_markers(self, cell, cell_index) -> None:
            for out in cell.get("outputs", []):
                n = self._dropped_chars.pop(id(out), 0)
                if n:
                    out["text"] += f"\n[... {n:,} characters truncated by the grader ...]\n"
                    self.cuts += 1
            n = self._dropped_outputs.pop(cell_index, 0)
            if n:
                self.cuts += 1
                cell.outputs.append(
                    _marker_stream(
                        f"[... {n} more output(s) dropped by the grader: over "
                        f"{_mb(EXEC_CELL_BUDGET)} or {EXEC_MAX_OUTPUTS:,} outputs in this cell ...]\n"
                    )
                )

    return BoundedClient


def execute_copy(nb, spec: dict, t0: float) -> dict:
    """Run *nb* (a parsed copy) in a fresh working folder. Returns run info.

    The notebook is modified in place (outputs of this run).  Keys of the result:
    ``timed_out`` (None, "cell" or "total"), ``died`` (bool), ``stopped_at``
    (1-based cell number or None), ``notes`` (list), ``error`` (str: the kernel
    could not be started), ``cuts`` (outputs truncated while they streamed).
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    info: dict = {"timed_out": None, "died": False, "stopped_at": None, "notes": [], "error": "",
                  "cuts": 0}
    src = Path(spec["src"])
    workroot = Path(spec["workroot"])
    work = workroot / "work"
    for sub in ("work", "home", "tmp", "runtime"):
        (workroot / sub).mkdir(parents=True, exist_ok=True)
    info["notes"] += copy_student_files(src, Path(spec["root"]), work)
    shutil.copyfile(src, work / src.name)  # the student's own file, for code that reads it
    _seed_matplotlib_cache(workroot / "home" / ".config" / "matplotlib")
    # Connection files of this kernel go to the throw-away folder too.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(workroot / "runtime")

    for cell in nb.cells:  # stored outputs must not pass for this run's
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None

    total = float(spec["timeout"])
    cell_timeout = float(spec["cell_timeout"])
    deadline = t0 + total
    Client = _make_client_class()
    client = Client(
        nb,
        kernel_name="python3",
        allow_errors=True,
        timeout=max(1, math.ceil(min(cell_timeout, total))),
        startup_timeout=max(5, math.ceil(min(60.0, total))),
        shutdown_kernel="immediate",
        coalesce_streams=True,
        record_timing=False,
        resources={"metadata": {"path": str(work)}},
    )
    client.on_cell_executed = lambda cell, cell_index, **kw: client.flush_markers(cell, cell_index)
    env = kernel_env(workroot)
    try:
        with client.setup_kernel(env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            pid = getattr(getattr(client.km, "provisioner", None), "pid", None)
            if pid and spec.get("kernel_pid_file"):
                Path(spec["kernel_pid_file"]).write_text(str(pid))
            for idx, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                remaining = deadline - time.monotonic()
                if remaining < 1:
                    info["timed_out"] = "total"
                    info["stopped_at"] = idx + 1
                    break
                per_cell = min(cell_timeout, remaining)
                client.timeout = max(1, math.ceil(per_cell))
                try:
                    client.execute_cell(cell, idx)
                except CellTimeoutError:
                    client.flush_markers(cell, idx)
                    which = "cell" if cell_timeout <= remaining else "total"
                    info["timed_out"] = which
                    info["stopped_at"] = idx + 1
                    limit = (
                        f"the per-cell timeout of {_secs(cell_timeout)}"
                        if which == "cell"
                        else f"the total timeout of {_secs(total)}"
                    )
                    cell.outputs.append(
                        _marker_stream(
                            f"[grader] This cell was stopped: it reached {limit}. "
                            "Later cells were not run.\n"
                        )
                    )
                    break
                except DeadKernelError:
                    client.flush_markers(cell, idx)
                    info["died"] = True
                    info["stopped_at"] = idx + 1
                    cell.outputs.append(
                        _marker_stream(
                            "[grader] The kernel died while running this cell (the code may "
                            "have called os._exit(), crashed the interpreter or run out of "
                            "memory). Later cells were not run.\n"
                        )
                    )
                    break
    except (CellTimeoutError, DeadKernelError):  # raised while shutting down: keep results
        pass
    except Exception as e:  # kernel did not start, or a jupyter error
        if not (info["died"] or info["timed_out"]):
            info["error"] = f"{type(e).__name__}: {e}"
    info["cuts"] = client.cuts
    return info


def _secs(s: float) -> str:
    return f"{s:g} s"


# =================================================================================
# Pages
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


def inject_banner(page: str, banner: str) -> str:
    m = re.search(r"<body[^>]*>", page)
    if not m:
        return banner + page
    return page[: m.end()] + "\n" + banner + page[m.end():]


def simple_page(title: str, banner: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title></head>\n<body style=\"margin:0\">\n{banner}\n"
        f"<div style=\"padding:0 16px;font:14px/1.45 system-ui,sans-serif\">{body}</div>\n"
        "</body></html>\n"
    )


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
                t = _as_text(out.get("text")) or ""
            elif kind == "error":
                tb = out.get("traceback") or []
                t = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(x) for x in tb))
            else:
                t = _as_text((out.get("data") or {}).get("text/plain")) or f"[{kind} output]"
            parts.append(f"<pre {pre}>{html.escape(t)}</pre>")
    return "".join(parts)


_SAFE_TAGS = [
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col",
    "colgroup", "dd", "del", "details", "div", "dl", "dt", "em", "figcaption", "figure",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
    "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary",
    "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
]
_SAFE_ATTRS = {"class", "id", "title", "alt", "align", "valign", "colspan", "rowspan",
               "width", "height", "border", "start", "style", "name"}
_STYLE_BLOCK_RE = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.IGNORECASE | re.DOTALL)
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=\s]*$")


def _clean_html_filter(element) -> str:
    """nbconvert's ``clean_html`` with a wider allowlist (headings, paragraphs, tables,
    images) so that sanitised pages stay readable; scripts, event handlers, forms,
    iframes and ``<style>`` blocks do not survive."""
    import bleach
    from bleach.css_sanitizer import CSSSanitizer

    text = element.decode() if isinstance(element, bytes) else str(element)
    text = _STYLE_BLOCK_RE.sub("", text)

    def allow(tag, name, value):
        v = (value or "").strip().lower()
        if name in _SAFE_ATTRS:
            return True
        if name == "href":
            return not v.startswith("data:")
        if name == "src" and tag == "img":
            return not v.startswith("data:") or v.startswith("data:image/")
        return False

    return bleach.clean(
        text,
        tags=_SAFE_TAGS,
        attributes=allow,
        protocols=["http", "https", "mailto", "data"],
        css_sanitizer=CSSSanitizer(),
        strip_comments=True,
    )


def harden_for_page(nb) -> None:
    """Remove what nbconvert would put into the page without escaping.

    Stored notebooks are untrusted: execution counts, cell ids, image data and
    output metadata (width/height, filenames) reach the HTML, some unquoted."""
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell.get("execution_count"), (int, type(None))) or isinstance(
                cell.get("execution_count"), bool):
            cell["execution_count"] = None
        cid = cell.get("id")
        if cid is not None and not (isinstance(cid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid)):
            cell["id"] = f"cell-{i}"
        tags = cell.get("metadata", {}).get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            del cell["metadata"]["tags"]
        for out in cell.get("outputs", []) or []:
            if "execution_count" in out and (not isinstance(out["execution_count"], (int, type(None)))
                                             or isinstance(out["execution_count"], bool)):
                out["execution_count"] = None
            meta = out.get("metadata")
            if isinstance(meta, dict):
                meta.pop("filenames", None)
                for m in [meta, *[v for v in meta.values() if isinstance(v, dict)]]:
                    for key in ("width", "height"):
                        if key in m and (not isinstance(m[key], (int, float)) or isinstance(m[key], bool)):
                            del m[key]
            elif "metadata" in out:
                out["metadata"] = {}
            data = out.get("data")
            if isinstance(data, dict):
                for mime in list(data):
                    if mime in ("text/vnd.mermaid", "application/javascript"):
                        del data[mime]
                    elif mime.startswith("image/") and mime != "image/svg+xml":
                        s = _as_text(data[mime])
                        if s is None or not _BASE64_RE.match(s):
                            del data[mime]
                if not data:
                    data["text/plain"] = "[output removed by the grader: not safe to display]"


def render_notebook_page(nb, spec: dict, banner: str) -> str:
    try:
        from nbconvert import HTMLExporter

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exporter = HTMLExporter(template_name="lab", sanitize_html=True,
                                    filters={"clean_html": _clean_html_filter})
            harden_for_page(nb)
            page, _ = exporter.from_notebook_node(
                nb, resources={"metadata": {"name": spec["slug"]}}
            )
        return inject_banner(page, banner)
    except Exception as e:  # a damaged notebook must still get a page
        body = fallback_notebook_html(nb) + (
            f"<p><small>nbconvert error: {html.escape(f'{type(e).__name__}: {e}')}</small></p>"
        )
        return simple_page(spec["slug"], banner, body)


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# =================================================================================
# The per-notebook worker (runs as `python -m lab_utils.submissions --one SPEC`)
# =================================================================================


def process_one(spec: dict) -> dict:
    """Classify, optionally execute, bound and render one submission.

    Writes the page to ``spec['page']``.  Never raises; returns the result dict
    (status, n_error_cells, notes, message, seconds, page_written).
    """
    t0 = time.monotonic()
    res = {"status": GRADER_ERROR, "n_error_cells": 0, "notes": [], "message": "",
           "page_written": False}
    page_path = Path(spec["page"])
    try:
        _process_one(spec, res, t0)
    except BaseException as e:  # noqa: BLE001 - the worker must report, not crash
        res["status"] = GRADER_ERROR
        res["message"] = f"{type(e).__name__}: {e}"
    if not res["page_written"]:
        try:
            banner = banner_html(spec, res["status"], res["notes"], res["message"])
            write_text_atomic(page_path, simple_page(spec["slug"], banner, ""))
            res["page_written"] = True
        except OSError:
            pass
    res["seconds"] = round(time.monotonic() - t0, 2)
    return res


def _process_one(spec: dict, res: dict, t0: float) -> None:
    src = Path(spec["src"])
    page_path = Path(spec["page"])
    notes = res["notes"]
    size = src.stat().st_size
    if size > MAX_FILE_BYTES:
        res["status"] = TOO_LARGE
        res["message"] = f"{_mb(size)}, over the {_mb(MAX_FILE_BYTES)} limit; not read"
        return
    with open(src, "rb") as fh:  # read-only: the original is never written
        data = fh.read()
    loaded = load_notebook(data)
    notes += loaded.notes
    res["message"] = loaded.message
    if loaded.status == INVALID:
        res["status"] = INVALID
        banner = banner_html(spec, INVALID, notes, loaded.message)
        write_text_atomic(page_path, simple_page(spec["slug"], banner, preview_html(data)))
        res["page_written"] = True
        return
    if loaded.status == EMPTY and loaded.nb is None:
        res["status"] = EMPTY
        return
    nb = loaded.nb
    info = None
    if loaded.status == EMPTY:
        status = EMPTY
    elif spec["execute"]:
        info = execute_copy(nb, spec, t0)
        notes += info["notes"]
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        if info["error"]:
            status = GRADER_ERROR
            res["message"] = "the kernel could not be started: " + info["error"]
        elif info["timed_out"]:
            status = TIMED_OUT
            what = ("per-cell timeout" if info["timed_out"] == "cell" else "total timeout")
            res["message"] = f"stopped in cell {info['stopped_at']} ({what})"
        elif info["died"]:
            status = KERNEL_DIED
            res["message"] = (
                f"the kernel died in cell {info['stopped_at']} (os._exit, a crash, or out of memory)"
            )
        else:
            status = errors_status(n_err) if n_err else OK
        if status in (TIMED_OUT, KERNEL_DIED) and n_err:
            notes.append(errors_status(n_err) + " before that")
    else:
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        status = errors_status(n_err) if n_err else OK
    cuts = bound_notebook(nb) + (info["cuts"] if info else 0)
    if cuts:
        notes.append(f"{TRUNCATED_NOTE} ({cuts})")
    res["status"] = status
    banner = banner_html(spec, status, notes, res["message"])
    write_text_atomic(page_path, render_notebook_page(nb, spec, banner))
    res["page_written"] = True


def worker_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    res = process_one(spec)
    tmp = Path(spec["result"] + ".tmp")
    tmp.write_text(json.dumps(res), encoding="utf-8")
    os.replace(tmp, spec["result"])
    # Do not wait for stray threads (nbclient, zmq) to wind down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# =================================================================================
# The batch (parent side)
# =================================================================================


class _Live:
    """Worker processes and kernels alive now, so that Ctrl-C can end them all."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stop = threading.Event()

    def add(self, p):
        with self.lock:
            self.procs.add(p)

    def discard(self, p):
        with self.lock:
            self.procs.discard(p)

    def kill_all(self):
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            kill_group(p.pid)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group *pgid* (a worker started in its own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pgid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            os.kill(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def kill_kernel(pid_file: Path) -> None:
    """Kill the kernel whose pid the worker recorded (it runs in its own session)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    cmdline = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            if b"ipykernel" not in cmdline.read_bytes():
                return  # gone, or the pid now belongs to someone else
        except OSError:
            return
    kill_group(pid)


def run_with_hard_timeout(cmd, timeout: float, *, live: _Live | None = None,
                          log_path: Path | None = None, env: dict | None = None):
    """Run *cmd* in a new session; SIGKILL its whole process group after *timeout*.

    Returns (returncode, killed).  Leftover processes of the group are killed
    after a normal exit too.
    """
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    finally:
        if log_path:
            log.close()
    if live:
        live.add(proc)
    killed = False
    try:
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            kill_group(proc.pid)
            rc = proc.wait()
    finally:
        if live:
            live.discard(proc)
    kill_group(proc.pid)  # stragglers that stayed in the worker's group
    return rc, killed


def rmtree_hard(path: Path) -> None:
    """Remove *path* even if the student's code made parts of it read-only."""

    def fix(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if not os.path.lexists(path):
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)


@dataclass
class Result:
    student: str
    file: str
    page: str
    status: str
    seconds: float
    n_error_cells: int = 0
    notes: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


def _term(s: str) -> str:
    """Untrusted names printed to a terminal: no control characters."""
    return "".join(ch if ch.isprintable() else "?" for ch in s)


def _process_in_subprocess(sub: Submission, i: int, args, root: Path, out: Path,
                           scratch: Path, live: _Live) -> Result:
    page = out / f"{sub.slug}.html"
    base = Result(student=sub.name, file=sub.rel, page=page.name, status=GRADER_ERROR,
                  seconds=0.0, notes=list(sub.notes))
    if live.stop.is_set():
        base.message = "interrupted"
        return base
    workroot = Path(tempfile.mkdtemp(prefix="lab-submission-")) if args.execute else None
    spec = {
        "src": str(root / sub.rel),
        "root": str(root),
        "rel": sub.rel,
        "name": sub.name,
        "slug": sub.slug,
        "page": str(page),
        "execute": bool(args.execute),
        "timeout": args.timeout,
        "cell_timeout": args.cell_timeout,
        "mode_text": _mode_text(args),
        "workroot": str(workroot) if workroot else "",
        "result": str(scratch / f"{i}.result.json"),
        "kernel_pid_file": str(scratch / f"{i}.kernel.pid"),
    }
    spec_path = scratch / f"{i}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(KIT_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["LAB_PROGRESS"] = "0"
    if workroot is not None:
        # The worker's own temporary files (kernel connection file) go into the
        # throw-away folder too, so that nothing is left behind if it is killed.
        (workroot / "runtime").mkdir()
        env["TMPDIR"] = str(workroot / "runtime")
    log_path = scratch / f"{i}.log"
    t0 = time.monotonic()
    try:
        rc, killed = run_with_hard_timeout(
            [sys.executable, "-m", "lab_utils.submissions", "--one", str(spec_path)],
            args.timeout + HARD_KILL_MARGIN, live=live, log_path=log_path, env=env,
        )
        kill_kernel(Path(spec["kernel_pid_file"]))
        elapsed = time.monotonic() - t0
        try:
            r = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            r = None
        if r is None:
            if live.stop.is_set():
                base.message = "interrupted"
            elif killed:
                base.status = TIMED_OUT
                base.message = (f"the grading process was killed after {elapsed:.0f} s "
                                f"(--timeout {args.timeout:g} s plus a margin)")
            else:
                tail = ""
                try:
                    tail = log_path.read_text(errors="replace").strip().splitlines()[-1][:300]
                except (OSError, IndexError):
                    pass
                base.message = f"the grading process exited with code {rc}" + (f": {tail}" if tail else "")
            base.seconds = round(elapsed, 2)
            if not page.exists() or killed:
                spec_banner = banner_html(spec, base.status, base.notes, base.message)
                write_text_atomic(page, simple_page(sub.slug, spec_banner, ""))
            return base
        base.status = r["status"]
        base.seconds = r.get("seconds", round(elapsed, 2))
        base.n_error_cells = r.get("n_error_cells", 0)
        base.notes += r.get("notes", [])
        base.message = r.get("message", "")
        if not page.exists():
            write_text_atomic(page, simple_page(
                sub.slug, banner_html(spec, base.status, base.notes, base.message), ""))
        return base
    finally:
        if workroot is not None:
            rmtree_hard(workroot)


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
    order = [OK, "errors", TIMED_OUT, KERNEL_DIED, INVALID, EMPTY, TOO_LARGE, GRADER_ERROR]
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
    shown = ignored[:500]
    ignored_html = ""
    if ignored:
        more = f"<li>... and {len(ignored) - len(shown)} more</li>" if len(ignored) > len(shown) else ""
        ignored_html = (
            f"<details><summary>Ignored files ({len(ignored)}): not notebooks, hidden, "
            "or checkpoint folders</summary><ul>"
            + "".join(f"<li><code>{e(p)}</code></li>" for p in shown) + more + "</ul></details>"
        )
    security = ""
    if args.execute:
        security = (
            "<p class=\"notes\">Student code was executed: each notebook ran on a copy, in its "
            "own process and temporary folder, with timeouts and proxy variables pointing "
            "nowhere. This is not a sandbox.</p>"
        )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Submissions: {e(root.name)}</title>
<style>{INDEX_CSS}</style></head>
<body>
<h1>Submissions: {e(root.name)}</h1>
<div class="meta">Folder <code>{e(str(root))}</code> &middot; {len(results)} notebooks &middot;
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
(os._exit, a crash, or out of memory); <b>not a valid notebook</b>; <b>empty</b>.
Notes such as <i>old nbformat (converted)</i> or <i>outputs truncated</i> do not change the
status. The submitted files were only read, never modified.</p>
</body></html>
"""
    path = out / "index.html"
    write_text_atomic(path, page)
    return path


def _clean_stale_pages(out: Path, produced: set[str]) -> None:
    """Remove pages a previous run of this command wrote that this run did not."""
    try:
        old = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        old = []
    for name in old:
        if (isinstance(name, str) and name not in produced and "/" not in name
                and "\\" not in name and name.endswith(".html") and not name.startswith(".")):
            try:
                (out / name).unlink()
            except OSError:
                pass
    write_text_atomic(out / MANIFEST, json.dumps({"files": sorted(produced)}, indent=1))


def run_batch(args, root: Path, out: Path) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    rels, ignored = discover(root)
    subs = assign_names(rels)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="lab-grader-"))
    live = _Live()
    results: dict[int, Result] = {}
    mode = "executing" if args.execute else "converting"
    print(f"[submissions] {mode} {len(subs)} notebook(s) from {_term(str(root))}, "
          f"{args.jobs} at a time -> {_term(str(out))}", file=sys.stderr)
    interrupted = False
    try:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs)
        futures = {
            pool.submit(_process_in_subprocess, sub, i, args, root, out, scratch, live): i
            for i, sub in enumerate(subs)
        }
        try:
            for done, fut in enumerate(concurrent.futures.as_completed(futures), 1):
                i = futures[fut]
                try:
                    r = fut.result()
                except Exception as e:  # a bug here must not lose the other results
                    sub = subs[i]
                    r = Result(student=sub.name, file=sub.rel, page=f"{sub.slug}.html",
                               status=GRADER_ERROR, seconds=0.0, notes=list(sub.notes),
                               message=f"{type(e).__name__}: {e}")
                results[i] = r
                print(f"[{done}/{len(subs)}] {_term(r.student)}: {r.status} ({r.seconds:.1f} s)",
                      file=sys.stderr)
        except KeyboardInterrupt:
            interrupted = True
            live.stop.set()
            live.kill_all()
            for p in scratch.glob("*.kernel.pid"):
                kill_kernel(p)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        rmtree_hard(scratch)
    if interrupted:
        print("[submissions] interrupted; no index written", file=sys.stderr)
        return 130
    ordered = [results[i] for i in range(len(subs))]
    ordered.sort(key=lambda r: (r.student.lower(), r.file))
    index = write_index(out, ordered, root=root, args=args, ignored=ignored, started=started,
                        elapsed=time.monotonic() - t0)
    write_text_atomic(out / "results.json", json.dumps(
        {"folder": str(root), "mode": _mode_text(args),
         "submissions": [{**asdict(r), "ok": r.ok} for r in ordered]}, indent=1))
    _clean_stale_pages(out, {r.page for r in ordered})
    n_bad = sum(not r.ok for r in ordered)
    if not ordered:
        print(f"[submissions] no .ipynb files found under {_term(str(root))}", file=sys.stderr)
    print(f"[submissions] {len(ordered) - n_bad} ok, {n_bad} not ok; index: {_term(str(index))}",
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--one":  # internal: one notebook, in a worker process
        return worker_main(argv[1])
    parser = build_parser()
    args = parser.parse_args(argv)
    src = Path(args.submissions).expanduser()
    if not src.exists():
        parser.error(f"--submissions {args.submissions}: no such folder")
    if not src.is_dir():
        parser.error(f"--submissions {args.submissions}: not a folder")
    root = src.resolve()
    out = Path(args.out).expanduser().resolve()
    if out == root or _inside(out, root):
        parser.error(f"--out {args.out} is inside the submissions folder; choose a folder "
                     "outside it (submissions are never written to)")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    try:
        return run_batch(args, root, out)
    except OSError as e:
        print(f"submissions: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
