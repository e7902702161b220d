"""Running a student's notebook copy (``render.sh --submissions DIR --execute``):
the throw-away working folder, the kernel's environment and the bounded client
that executes the cells (ending every process of a run: ``processes``).

One *workroot* (a fresh temporary folder) per executed hand-in::

    workroot/work/       the notebook's copy and its data files (the kernel's cwd)
    workroot/home/       HOME, caches, Keras/Kaggle/matplotlib config of the kernel
    workroot/tmp/        TMPDIR of the kernel
    workroot/runtime/    kernel connection file and IPC sockets (mode 0700)
    workroot/worker.log  the worker's own stdout/stderr
    workroot/run.json, executed.ipynb, checkpoint.ipynb   what the worker hands back

The worker process and the kernel see only this folder: the hand-ins folder,
other students' copies and the output folder are named nowhere they can read
(not in their environment, command lines, working folders or open files).
The parent copies the hand-in in, sends the worker its settings on stdin, and
reads the results back from the folder after every process of the run ended.

Light: imports nbclient/nbformat lazily (in the worker only).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..config import KIT_ROOT, socket_safe_temp_parent
from ..pages import write_text_atomic
from .handins import SKIP_DIRS

TEXT_LIMIT = 20_000  # characters kept of one streamed text output
EXEC_CELL_BUDGET = 20_000_000  # output characters kept per cell while running
EXEC_TOTAL_BUDGET = 60_000_000  # output characters kept per notebook while running
EXEC_MAX_OUTPUTS = 2_000  # outputs kept per cell while running
COPY_LIMIT_BYTES = 200 * 2**20  # data files copied next to an executed notebook
COPY_MAX_FILES = 5_000
CHECKPOINT_EVERY_S = 3.0  # the partial notebook is saved at most this often while running

# Where untrusted code is sent when it honours proxy settings: the discard port.
DEAD_PROXY = "http://127.0.0.1:9"

# The only variables of the grader's environment a kernel gets (an allow-list: whatever
# else the instructor's shell holds, credentials included, never reaches student code).
# Everything else a kernel needs is set explicitly by kernel_env.
KERNEL_ENV_ALLOWED = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME",
    "LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "LAB_WEIGHTS_DIR", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES",
    "JUPYTER_PATH", "SYSTEMROOT",
})
KERNEL_ENV_ALLOWED_PREFIXES = ("LC_",)


def kernel_env(workroot: Path, base: dict | None = None) -> dict:
    """Environment for a student's kernel (and the worker that starts it).

    Only ``KERNEL_ENV_ALLOWED`` names (and ``LC_*``) are taken from *base* (default:
    this process's environment); HOME, TMPDIR, the caches and the kernel's runtime
    folder point into the throw-away *workroot*; proxies point at a closed local
    port so well-behaved HTTP clients cannot reach the network (raw sockets still
    can: this is no sandbox).
    """
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items()
           if k in KERNEL_ENV_ALLOWED or k.startswith(KERNEL_ENV_ALLOWED_PREFIXES)}
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
        JUPYTER_RUNTIME_DIR=str(workroot / "runtime"),
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
        # The student's lab choice: the lab-choice.yaml handed in beside the notebook (copied
        # into work/ with the other files), else one made from the kit's defaults there; never
        # the instructor's (a hand-in's notebook 02 writes its typed values to it).
        LAB_CHOICE_FILE=str(workroot / "work" / "lab-choice.yaml"),
        PYTHONPATH=str(KIT_ROOT),
    )
    for var in ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy"):
        env[var] = env[var.upper()] = DEAD_PROXY
    env["no_proxy"] = env["NO_PROXY"] = ""
    return env


# What the grader keeps of the instructor's environment when it hides its paths
# (submissions.cli._reexec_hiding_paths): what it and its workers need, no credentials.
GRADER_ENV_ALLOWED = KERNEL_ENV_ALLOWED | {"HOME", "TMPDIR", "PYTHONPATH", "MPLCONFIGDIR"}
GRADER_ENV_ALLOWED_PREFIXES = KERNEL_ENV_ALLOWED_PREFIXES + ("LAB_", "JUPYTER_", "XDG_", "TF_")


def grader_env(base: dict | None = None) -> dict:
    """The instructor's environment (*base*, default this process's) reduced to
    ``GRADER_ENV_ALLOWED``: a student's process can read the grader's environment
    (``/proc/<pid>/environ``) wherever the grader is dumpable, so it holds no secret."""
    base = dict(os.environ if base is None else base)
    return {k: v for k, v in base.items()
            if k in GRADER_ENV_ALLOWED or k.startswith(GRADER_ENV_ALLOWED_PREFIXES)}


def make_undumpable() -> bool:
    """Mark this process non-dumpable (Linux ``prctl(PR_SET_DUMPABLE, 0)``): other
    processes of the same user, a student's kernel among them, can no longer read its
    environment, working folder, open files or memory under ``/proc`` (root still can).
    Returns whether it worked; a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(4, 0, 0, 0, 0) == 0  # PR_SET_DUMPABLE = 4
    except (OSError, AttributeError):
        return False


def make_workroot(parent: str | None = None) -> Path:
    """A fresh throw-away folder with the layout above (every part mode 0700)."""
    import tempfile

    if parent is None:  # the kernel's IPC sockets live in workroot/runtime
        parent = socket_safe_temp_parent()
    workroot = Path(tempfile.mkdtemp(prefix="lab-submission-", dir=parent))
    for sub in ("work", "home", "tmp", "runtime"):
        (workroot / sub).mkdir(mode=0o700)
    # Here, with the grader's environment: the kernel's MPLCONFIGDIR is this very folder.
    seed_matplotlib_cache(workroot / "home" / ".config" / "matplotlib")
    return workroot


def read_nofollow(path: Path, limit: int) -> bytes:
    """The bytes of *path*, refusing a symbolic link as the last component (so a link
    swapped in after discovery is not followed) and reading at most *limit* bytes."""
    import stat

    # O_NONBLOCK: opening a FIFO swapped in for the file must not wait for a writer.
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return fh.read(limit)


def copy_student_files(src: Path, root: Path, dest: Path) -> list[str]:
    """Copy the data files beside *src* (its folder, recursively) into *dest*.

    Nothing is copied for a notebook directly in *root* (its neighbours belong to
    other students); other notebooks, symlinks and special files are skipped.
    Only contents are copied: the originals are only read.
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
        # A sub-folder holding notebooks belongs to other submissions (sec1/alice.ipynb
        # beside sec1/bob/lab.ipynb): its files are not this student's data.
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS
                             and not _holds_notebooks(Path(dirpath) / d))
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
                target.write_bytes(read_nofollow(p, COPY_LIMIT_BYTES))
                total += size
                count += 1
            except OSError:
                skipped += 1
    if skipped:
        notes.append(f"{skipped} data file(s) not copied for the run")
    return notes


def _holds_notebooks(folder: Path) -> bool:
    for _dirpath, _dirnames, filenames in os.walk(folder):
        if any(f.lower().endswith(".ipynb") for f in filenames):
            return True
    return False


def seed_matplotlib_cache(dest: Path) -> None:
    """Copy the instructor's matplotlib font list (found through this process's
    environment: call it in the grader) so each kernel skips a slow rebuild."""
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


def mb_text(n: int) -> str:
    """*n* bytes or characters as "2.0 MB" (10^6), for the grader's markers and messages."""
    return f"{n / 1e6:.1f} MB"


def marker_output(text: str):
    """A visible stderr line of the grader inside a cell's outputs."""
    import nbformat

    return nbformat.v4.new_output("stream", name="stderr", text=text)


def _make_client_class():
    from nbclient import NotebookClient

    class BoundedClient(NotebookClient):
        """NotebookClient that keeps memory bounded while a cell streams output."""

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self._dropped_chars: dict[int, int] = {}
            self._cell_bytes: dict[int, int] = {}
            self._total_bytes = 0
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
            if (used + size > EXEC_CELL_BUDGET or len(outs) >= EXEC_MAX_OUTPUTS
                    or self._total_bytes + size > EXEC_TOTAL_BUDGET):
                self._dropped_outputs[cell_index] = self._dropped_outputs.get(cell_index, 0) + 1
                return None
            self._cell_bytes[cell_index] = used + size
            self._total_bytes += size
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
                    marker_output(
                        f"[... {n} more output(s) dropped by the grader: over "
                        f"{mb_text(EXEC_CELL_BUDGET)} in this cell, {mb_text(EXEC_TOTAL_BUDGET)} in the "
                        f"notebook or {EXEC_MAX_OUTPUTS:,} outputs in this cell ...]\n"
                    )
                )

    return BoundedClient


def _secs(s: float) -> str:
    return f"{s:g} s"


def write_notebook_atomic(nb, path: Path) -> None:
    """*nb* as JSON into *path*, atomically (``pages.write_text_atomic``: halves of surrogate
    pairs, which a student's metadata may hold, as U+FFFD)."""
    import nbformat

    write_text_atomic(path, nbformat.writes(nb))


def execute_copy(nb, workroot: Path, timeout: float, cell_timeout: float, t0: float,
                 checkpoint: Path | None = None, run_file: Path | None = None) -> dict:
    """Run *nb* (a parsed copy; its file is in ``workroot/work``). Returns run info.

    The notebook is modified in place (outputs of this run). Every
    CHECKPOINT_EVERY_S the partial notebook is saved to *checkpoint*, so that a
    run killed from outside still has a page with its outputs so far; on SIGTERM (the
    parent's warning before SIGKILL) the notebook goes to *checkpoint* and the run info,
    with the cell that was running, to *run_file*, and the process exits.
    Keys of the result: ``timed_out`` (None, "cell" or "total"), ``died`` (bool),
    ``stopped_at`` (1-based cell number or None), ``notes`` (list), ``error`` (str, ''
    when none: the kernel could not be started, or the run failed in a cell for a reason
    of the grader's own), ``cuts`` (outputs truncated while they streamed).
    """
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from traitlets.config import Config

    info: dict = {"timed_out": None, "died": False, "stopped_at": None, "notes": [], "error": "",
                  "cuts": 0}
    work = workroot / "work"
    # Connection file and IPC sockets in the run's own folder: no TCP port open to other
    # users of the machine, nothing left behind.
    os.environ["JUPYTER_RUNTIME_DIR"] = str(workroot / "runtime")
    config = Config()
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = str(workroot / "runtime" / "kernel")

    for cell in nb.cells:  # stored outputs must not pass for this run's
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None

    deadline = t0 + timeout
    Client = _make_client_class()
    client = Client(
        nb,
        kernel_name="python3",
        allow_errors=True,
        timeout=max(1, math.ceil(min(cell_timeout, timeout))),
        startup_timeout=max(5, math.ceil(min(60.0, timeout))),
        shutdown_kernel="immediate",
        coalesce_streams=True,
        record_timing=False,
        resources={"metadata": {"path": str(work)}},
        config=config,
    )
    last_save = [time.monotonic()]
    running = [None]  # 1-based number of the cell being run

    def cell_done(cell, cell_index, **_kw):
        client.flush_markers(cell, cell_index)
        running[0] = None
        now = time.monotonic()
        if checkpoint is not None and now - last_save[0] >= CHECKPOINT_EVERY_S:
            try:
                write_notebook_atomic(nb, checkpoint)
            except Exception:  # noqa: BLE001 - a checkpoint must never stop the run
                pass
            # A big notebook takes a while to save: never spend more than ~1/5 of the run on it.
            last_save[0] = now + 4 * (time.monotonic() - now)

    client.on_cell_executed = cell_done
    if checkpoint is not None and hasattr(signal, "SIGTERM"):
        def save_and_exit(_signum, _frame):  # the parent's last call before SIGKILL
            try:
                if run_file is not None:  # the small file first: the grace period is short
                    if not (info["died"] or info["timed_out"]):
                        info.update(timed_out="total", stopped_at=running[0])
                    info.update(executed=True, cuts=client.cuts)
                    write_text_atomic(run_file, json.dumps(info))
                write_notebook_atomic(nb, checkpoint)
            finally:
                os._exit(0)
        signal.signal(signal.SIGTERM, save_and_exit)
    env = kernel_env(workroot)
    # The shared cache layer the grader gave this run worker (never taken from elsewhere:
    # kernel_env's allow-list drops these names from any other environment).
    from ..cache import SHARED_DIR_ENV, SHARED_MANIFEST_ENV

    env.update({k: os.environ[k] for k in (SHARED_DIR_ENV, SHARED_MANIFEST_ENV) if os.environ.get(k)})
    try:
        with client.setup_kernel(env=env, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
            for idx, cell in enumerate(nb.cells):
                if cell.cell_type != "code" or not cell.source.strip():
                    continue
                remaining = deadline - time.monotonic()
                if remaining < 0.5:
                    info["timed_out"] = "total"
                    info["stopped_at"] = idx + 1
                    cell.outputs.append(marker_output(
                        f"[grader] Not run: the total timeout of {_secs(timeout)} was reached "
                        "before this cell. Later cells were not run.\n"))
                    break
                running[0] = idx + 1
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
                        else f"the total timeout of {_secs(timeout)}"
                    )
                    cell.outputs.append(
                        marker_output(
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
                        marker_output(
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
            where = (f"the run failed in cell {running[0]}" if running[0] is not None
                     else "the kernel could not be started")
            info["error"] = f"{where}: {type(e).__name__}: {e}"
    finally:
        if checkpoint is not None and hasattr(signal, "SIGTERM"):
            # The cells are over: a SIGTERM now (while the notebook is saved) must not
            # rewrite what happened; the parent falls back to the last checkpoint.
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    info["cuts"] = client.cuts
    return info
