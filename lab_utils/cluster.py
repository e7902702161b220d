"""Where a batch's per-item work runs: a local pool, or a Dask cluster (``--scheduler``).

Both are a ``concurrent.futures.Executor``: the grader (one task per hand-in) and the
sweep (one task per (layer, filter) pair) submit module-level functions whose
arguments and results are plain data (bytes, dicts, dataclasses of them), so a task
runs the same on a thread here or on a Dask worker on another machine. A worker that
dies mid-task makes its future raise (``KilledWorker``): ``is_lost_worker`` tells that
failure from a bug, and the caller gives that one item an error status.

Dask (``dask.distributed``) is imported only when a scheduler is named.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
from pathlib import Path

from .config import KIT_ROOT, LabError

CONNECT_TIMEOUT_S = 15.0  # seconds to reach the scheduler before giving up with a message


def kit_fingerprint() -> str:
    """A hash of the kit's Python sources (``lab_utils``): a Dask worker must run the
    same code as the client, or its pages would not match the client's index."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _worker_fingerprint() -> str:  # runs on each worker (client.run)
    from lab_utils.cluster import kit_fingerprint as fingerprint

    return fingerprint()


def connect(scheduler: str):
    """A ``distributed.Client`` for *scheduler* (``tcp://host:port``) whose workers run this
    kit's code; a LabError that says what is wrong otherwise."""
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - dask is a dependency of the kit
        raise LabError(f"--scheduler needs dask.distributed ({e}); pip install 'distributed'") from e
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as e:
        raise LabError(f"could not reach the Dask scheduler at {scheduler} within "
                       f"{CONNECT_TIMEOUT_S:g} s ({type(e).__name__}: {e}); start one with "
                       "'dask scheduler' and workers with 'dask worker ADDRESS'") from e
    try:
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        mine = kit_fingerprint()
        try:
            theirs = client.run(_worker_fingerprint)
        except Exception as e:  # noqa: BLE001 - a worker without the kit
            raise LabError(f"a Dask worker of {scheduler} cannot import the kit ({type(e).__name__}: {e}); "
                           f"install it there (pip install -e {KIT_ROOT}) and restart the workers") from e
        other = sorted(addr for addr, fp in theirs.items() if fp != mine)
        if other:
            raise LabError(f"Dask worker(s) {', '.join(other)} run a different version of the kit's code "
                           f"than this one ({mine}); install the same checkout there and restart them")
    except LabError:
        client.close()
        raise
    except (OSError, TimeoutError) as e:
        client.close()
        raise LabError(f"the Dask scheduler at {scheduler} has no worker ({type(e).__name__}: {e}); "
                       "start one with 'dask worker " + scheduler + "'") from e
    return client


@contextlib.contextmanager
def open_executor(scheduler: str | None, jobs: int):
    """An executor for a batch: a pool of *jobs* threads here (each task starts its own
    processes), or, with *scheduler*, the Dask cluster's (tasks are never deduplicated:
    two equal hand-ins are two tasks). Closed on exit."""
    if scheduler is None:
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            yield pool
        return
    client = connect(scheduler)
    try:
        yield client.get_executor(pure=False)
    finally:
        client.close()


def client_of(executor):
    """The ``distributed.Client`` behind an executor of ``open_executor`` (None: a local pool)."""
    return getattr(executor, "_client", None)  # distributed's ClientExecutor keeps it there


def cluster_threads(executor) -> int | None:
    """How many tasks the cluster behind *executor* runs at once (None for a local pool)."""
    client = client_of(executor)
    if client is None:
        return None
    return sum(w.get("nthreads", 1) for w in client.scheduler_info().get("workers", {}).values()) or 1


def is_lost_worker(exc: BaseException) -> bool:
    """Whether *exc* (from a future's result) says the Dask worker running the task died."""
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:  # pragma: no cover
        return False
    from concurrent.futures import CancelledError

    return isinstance(exc, (KilledWorker, CancelledError)) or type(exc).__name__ in (
        "KilledWorker", "FutureCancelledError")


def first_attempt(token: str) -> bool:
    """On a Dask worker: True the first time a task with *token* starts, False when the
    scheduler runs it again because the worker running it died (the caller then reports
    that instead of running it twice). Off a cluster: always True."""
    try:
        from distributed import Event, get_worker
    except ImportError:  # pragma: no cover
        return True
    try:
        get_worker()
    except ValueError:  # not in a Dask worker
        return True
    started = Event(f"lab-attempt-{token}")
    if started.is_set():
        return False
    started.set()
    return True


def forget_attempts(client, tokens) -> None:
    """Drop the scheduler's markers of *tokens* (``first_attempt``) once a batch is done."""
    from distributed import Event

    for token in tokens:
        try:
            Event(f"lab-attempt-{token}", client=client).clear()
        except Exception:  # noqa: BLE001 - a marker left behind costs a few bytes
            pass


class LocalCluster:
    """A Dask scheduler and *n_workers* single-thread workers as processes on 127.0.0.1, for
    tests and the benchmark (``with LocalCluster(2, env, logs) as c: ... c.address``). Workers
    run without a nanny (a killed worker stays dead); each process lives in a session of its
    own and is bounded even if the caller dies without stopping it: the scheduler stops after
    ``idle_s`` without work, the workers ``death_s`` after losing it."""

    def __init__(self, n_workers: int, env: dict, logs: Path, *, idle_s: int = 600, death_s: int = 30,
                 startup_s: float = 90.0):
        import socket
        import subprocess
        import sys
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.address = f"tcp://127.0.0.1:{port}"
        self.procs: list = []
        self.workers: list = []
        logs = Path(logs)

        def start(cmd, name):
            with open(logs / f"{name}.log", "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", *cmd], stdout=log, stderr=subprocess.STDOUT,
                                        env=env, cwd=KIT_ROOT, start_new_session=True)
            self.procs.append(proc)
            return proc

        try:
            start(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                   "--no-dashboard", "--idle-timeout", f"{idle_s}s"], "scheduler")
            for i in range(n_workers):
                self.workers.append(start(
                    ["distributed.cli.dask_worker", self.address, "--nthreads", "1", "--no-nanny",
                     "--no-dashboard", "--host", "127.0.0.1", "--memory-limit", "0", "--name", f"w{i}",
                     "--death-timeout", f"{death_s}s"], f"worker{i}"))
            from distributed import Client

            deadline = time.monotonic() + startup_s
            while True:
                try:
                    with Client(self.address, timeout=5, set_as_default=False) as client:
                        client.wait_for_workers(n_workers, timeout=max(1.0, deadline - time.monotonic()))
                        return
                except (OSError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        import os
        import signal

        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                proc.wait(10)
            except Exception:  # noqa: BLE001 - a zombie we cannot reap is the OS's
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
