"""One pair (a task): ``render_pair`` renders the lab for one (layer, filter) pair in a
subprocess of its own, ``PairTask`` in and ``PairResult`` out, plain data only, so that it
runs the same on a local thread or a Dask worker (which imports it by name,
``lab_utils.sweep.task.render_pair``). ``stop_local_renders`` stops the renders running on
this machine's threads (Ctrl-C of the sweep)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..circuits import RECORD_DIR_ENV, RECORD_FILE, ChannelTableRecord
from .pairs import pair_folder

DEFAULT_PAIR_TIMEOUT = 3600.0  # seconds one pair's whole render may take
MESSAGE_LIMIT = 800  # characters of a failure kept (render.MESSAGE_LIMIT)
KILL_GRACE = 10.0  # seconds between Ctrl-C (the render stops its kernel) and SIGKILL


@dataclass(frozen=True)
class PairTask:
    """What a worker needs to render one pair: plain data only (it may run on another
    machine). ``arguments``: the render's other command-line arguments (``-p`` values,
    ``--only``, ``--cell-timeout``); ``cache_dir``: the caller's ``LAB_CACHE_DIR`` for a
    render on the caller's machine, None on a Dask worker (the worker's own; ``cli.pair_tasks``);
    ``timeout``: seconds for the whole render."""

    layer_name: str
    filter_index: int
    arguments: tuple[str, ...] = ()
    cache_dir: str | None = None
    timeout: float = DEFAULT_PAIR_TIMEOUT


@dataclass
class PairResult:
    """One pair's outcome. ``status``: "ok" or "failed"; ``seconds``: wall time of its render;
    ``files``: path relative to the pair's folder (POSIX) -> bytes; ``channel_table``: the
    record its render left (None where no notebook computed it); ``written``: set by the
    client once ``OUT/<pair>/`` holds the files (which it then drops from memory)."""

    layer_name: str
    filter_index: int
    status: str
    seconds: float = 0.0
    message: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    channel_table: ChannelTableRecord | None = None
    written: bool = False

    @property
    def folder(self) -> str:
        return pair_folder(self.layer_name, self.filter_index)


def _failure_message(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if ": failed (" in ln or ln.startswith("render.sh: error:")]
    text = "; ".join(said) if said else " | ".join(lines[-3:])
    return (f"render exited with status {returncode}" + (f": {text}" if text else ""))[:MESSAGE_LIMIT]


# The renders running on this machine's threads: each is a session of its own (so that a
# timeout can end it with its kernel), which a Ctrl-C on the terminal does not reach.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def stop_local_renders() -> None:
    """Stop every pair's render still running here (Ctrl-C of the sweep)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the render's process group (it shuts its kernel down), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def render_pair(task: PairTask) -> PairResult:
    """Render the lab for one pair in a subprocess (``python -m lab_utils.render``) into a
    temporary folder and return its files and channel table (``PairResult``). Never raises
    for a failing render: its status says so. Module-level, plain data in and out: runs the
    same on a local thread or a Dask worker."""
    env = {**os.environ, "LAB_PROGRESS": "0"}
    if task.cache_dir:
        env["LAB_CACHE_DIR"] = task.cache_dir
    env.pop(RECORD_DIR_ENV, None)  # the render sets its own
    result = PairResult(task.layer_name, task.filter_index, "failed")
    work = Path(tempfile.mkdtemp(prefix="lab-sweep-"))
    out = work / "out"
    cmd = [sys.executable, "-m", "lab_utils.render", "-p", "layer_name", task.layer_name,
           "-p", "filter_index", str(task.filter_index), *task.arguments, "--out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=env, cwd=str(work), start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            _stdout, stderr = proc.communicate(timeout=task.timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            proc.communicate()
            result.message = f"timed out after {task.timeout:g} s (the pair's render was stopped)"
        except BaseException:
            _stop(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
        if not result.message:  # not timed out
            if proc.returncode == 0:
                result.status = "ok"
            else:
                result.message = _failure_message(stderr, proc.returncode)
        result.seconds = time.perf_counter() - t0
        if out.is_dir():
            for path in sorted(out.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    result.files[path.relative_to(out).as_posix()] = path.read_bytes()
        record = result.files.get(f"notebooks/{RECORD_FILE}")
        if record is not None:
            try:
                result.channel_table = ChannelTableRecord.from_json(record.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                result.message = "; ".join(m for m in (result.message, f"channel table: {exc}") if m)
    except OSError as exc:
        result.seconds = time.perf_counter() - t0
        result.message = f"the render could not run: {type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result
