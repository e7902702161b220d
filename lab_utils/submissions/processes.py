"""Ending every process of a run (``render.sh --submissions DIR --execute``).

A worker runs in a session of its own (``run_with_hard_timeout``: SIGKILL to its whole
process group at the deadline); what its kernel started elsewhere is found by the
workroot its environment names (``processes_of``, Linux ``/proc``) and killed too;
``rmtree_hard`` then removes the workroot whatever modes were left in it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path


def kill_group(pgid: int) -> None:
    """SIGKILL the process group *pgid* (a worker started in its own session)."""
    try:
        if hasattr(os, "killpg"):
            os.killpg(pgid, signal.SIGKILL)
        else:  # pragma: no cover - not POSIX
            os.kill(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def processes_of(workroot: Path) -> list[int]:
    """Pids of the processes started for *workroot*: every process whose initial
    environment has ``HOME=<workroot>/home`` (the worker, the kernel, and whatever the
    kernel started without clearing its environment, even in sessions of its own).
    Linux only (``/proc``); elsewhere an empty list."""
    proc = Path("/proc")
    if not (proc / "self" / "environ").exists():
        return []
    needle = b"\0HOME=" + os.fsencode(str(workroot / "home")) + b"\0"
    me = os.getpid()
    pids = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in b"\0" + environ + b"\0":
            pids.append(int(entry.name))
    return pids


def kill_processes_of(workroot: Path, rounds: int = 3) -> int:
    """SIGKILL every process of *workroot* (``processes_of``), a few rounds in case one
    forks while being killed. Returns how many were killed."""
    killed = 0
    for _ in range(rounds):
        pids = processes_of(workroot)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.05)
    return killed


def run_with_hard_timeout(cmd, timeout: float, *, live=None, stdin_data: bytes | None = None,
                          log_path: Path | None = None, capture: bool = False, env: dict | None = None,
                          cwd: str | Path | None = None, grace: float = 0.0):
    """Run *cmd* in a new session; SIGKILL its whole process group after *timeout* s
    (with *grace* > 0, SIGTERM to it first and SIGKILL *grace* s later, so that it
    can save what it has).

    *stdin_data* is written to its stdin (then closed); its stdout and stderr go to
    *log_path*, or are returned when *capture* (the grader's own workers only: a
    student's process could write without bound). Returns (returncode, killed,
    stdout bytes or b""). Leftover processes of the group are killed after a normal
    exit too. *live* (an object with ``add``/``discard``) tracks it for Ctrl-C.
    """
    log = open(log_path, "wb") if log_path else None
    out = subprocess.PIPE if capture else (log or subprocess.DEVNULL)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT if capture or log else subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=cwd)
    finally:
        if log:
            log.close()
    if live is not None:
        live.add(proc)
    killed = False
    stdout = b""
    try:
        try:
            stdout, _ = proc.communicate(stdin_data, timeout=timeout)
        except subprocess.TimeoutExpired:
            killed = True
            if grace > 0:
                try:
                    proc.terminate()
                    proc.wait(grace)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            kill_group(proc.pid)
            stdout, _ = proc.communicate()
        except BrokenPipeError:  # it exited before reading its settings
            proc.wait()
    finally:
        if live is not None:
            live.discard(proc)
    kill_group(proc.pid)  # stragglers that stayed in the worker's group
    return proc.returncode, killed, stdout or b""


def rmtree_hard(path: Path) -> None:
    """Remove *path* even if the student's code made parts of it read-only. A symbolic link
    put in its place is removed itself, never followed; modes are loosened only inside *path*
    (never on the folder that holds it)."""
    top = os.path.abspath(path)

    def fix(func, p, _exc):
        try:
            parent = os.path.dirname(os.path.abspath(p))
            if parent == top or parent.startswith(top + os.sep):
                os.chmod(parent, 0o700)
            if not os.path.islink(p):
                os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    if not os.path.lexists(path):
        return
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=fix)
    else:
        shutil.rmtree(path, onerror=fix)
