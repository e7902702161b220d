"""Grading on a Dask cluster (``--scheduler ADDRESS``): one task per hand-in notebook.

The client (``grade_remote``, in a thread of the batch) reads the hand-in as the local
path does (the notebook and, for a folder, its data files: ``copy_student_files``) into a
``Payload`` of bytes; the task (``grade_payload``, on a worker that has the kit) rebuilds
it in a temporary folder there and runs the very same ``batch.grade_one`` (run worker with
``--timeout``, page worker), then returns the ``Result``, the page and the bounded notebook
as bytes. The client writes the page and keeps the notebook for the report, so pages,
index and ``grades.csv`` are written where the grader runs, as without a cluster.

A worker that dies during a task: the scheduler would run the task again elsewhere;
``cluster.first_attempt`` makes the second run return at once, and the client gives that
hand-in the status ``grader error`` ("the Dask worker ... was lost"); the others complete.
"""
from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

from ..cluster import client_of, first_attempt, forget_attempts, is_lost_worker
from ..config import display_name
from ..pages import write_text_atomic
from .handins import Submission
from .notebooks import MAX_FILE_BYTES
from .statuses import GRADER_ERROR
from .student_kernel import copy_student_files, read_nofollow


@dataclass
class Payload:
    """One hand-in notebook as bytes, with what grading it needs."""

    token: str  # unique per task (``cluster.first_attempt``)
    rel: str  # the notebook's path in the hand-ins folder (posix)
    name: str
    slug: str
    notes: list[str]
    notebook: bytes | None  # None: over MAX_FILE_BYTES (the page says "too large")
    data_files: dict[str, bytes] = field(default_factory=dict)  # beside the notebook: relative path -> bytes
    copy_notes: list[str] = field(default_factory=list)
    execute: bool = False
    timeout: float = 900.0
    cell_timeout: float = 300.0
    want_bounded: bool = False


@dataclass
class TaskAnswer:
    """What a task sends back: the ``batch.Result`` as a dict, the page's and the bounded
    notebook's bytes; or ``lost`` (its worker died: this is a second start), or ``error``."""

    result: dict | None = None
    page: bytes | None = None
    bounded: bytes | None = None
    lost: bool = False
    error: str = ""


def payload_of(sub: Submission, args, root: Path, want_bounded: bool) -> Payload:
    """Read *sub* into a Payload (read-only, never through a symbolic link)."""
    where = root if sub.base is None else sub.base
    src = where / sub.rel
    data = read_nofollow(src, MAX_FILE_BYTES + 1)
    payload = Payload(token=uuid.uuid4().hex, rel=sub.rel, name=sub.name, slug=sub.slug,
                      notes=list(sub.notes), notebook=data if len(data) <= MAX_FILE_BYTES else None,
                      execute=bool(args.execute), timeout=args.timeout, cell_timeout=args.cell_timeout,
                      want_bounded=want_bounded)
    if args.execute and "/" in sub.rel:
        with tempfile.TemporaryDirectory(prefix="lab-payload-") as tmp:
            payload.copy_notes = copy_student_files(src, where, Path(tmp))
            for path in sorted(Path(tmp).rglob("*")):
                if path.is_file() and not path.is_symlink():
                    payload.data_files[path.relative_to(tmp).as_posix()] = path.read_bytes()
    return payload


def grade_payload(payload: Payload, trusted=None) -> TaskAnswer:
    """The task: grade one hand-in notebook from its bytes (``TaskAnswer``); ``lost`` when
    this task already started once (its worker died)."""
    from .batch import LiveWork, grade_one
    from .processes import rmtree_hard
    from .shared_cache import worker_snapshot

    if not first_attempt(payload.token):
        return TaskAnswer(lost=True)
    tmp = Path(tempfile.mkdtemp(prefix="lab-task-"))
    try:
        root = tmp / "hand-ins"
        src = root / payload.rel
        src.parent.mkdir(parents=True)
        src.write_bytes(payload.notebook if payload.notebook is not None else b"")
        if payload.notebook is None:  # the page worker says "too large" from the size alone
            with open(src, "r+b") as fh:
                fh.truncate(MAX_FILE_BYTES + 1)
        for rel, data in payload.data_files.items():
            target = src.parent / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out = tmp / "out"
        out.mkdir()
        bounded = tmp / "bounded.ipynb" if payload.want_bounded else None
        sub = Submission(rel=payload.rel, name=payload.name, slug=payload.slug, notes=list(payload.notes))
        args = SimpleNamespace(execute=payload.execute, timeout=payload.timeout,
                               cell_timeout=payload.cell_timeout)
        snapshot = worker_snapshot(trusted) if (trusted is not None and payload.execute) else None
        result = grade_one(sub, args, root, out, LiveWork(), bounded=bounded, snapshot=snapshot)
        page = out / result.page
        return TaskAnswer(result=asdict(result), page=page.read_bytes() if page.is_file() else None,
                          bounded=bounded.read_bytes() if bounded is not None and bounded.is_file() else None)
    finally:
        rmtree_hard(tmp)


def grade_remote(sub: Submission, args, root: Path, out: Path, executor, trusted_ref=None,
                 bounded: Path | None = None):
    """The client side of one hand-in: send it to the cluster, write what comes back.
    Returns a ``batch.Result``; never raises for a hand-in or a lost worker."""
    from .batch import Result, grade_one, LiveWork

    if sub.problem is not None or sub.link is not None:  # nothing to send: the local path says why
        return grade_one(sub, args, root, out, LiveWork())
    base = Result(student=sub.name, file=sub.shown_rel, page=f"{sub.slug}.html", status=GRADER_ERROR,
                  seconds=0.0, notes=list(sub.notes))
    t0 = time.monotonic()
    try:
        payload = payload_of(sub, args, root, want_bounded=bounded is not None)
    except OSError as e:
        base.message = f"the hand-in could not be read: {display_name(str(e))}"
        return _banner(base, sub, args, out)
    client = client_of(executor)
    try:
        answer = wait_for(executor.submit(grade_payload, payload, trusted_ref), client)
    except Exception as e:  # noqa: BLE001 - a lost worker, or the task's own failure
        answer = TaskAnswer(lost=True) if is_lost_worker(e) else TaskAnswer(error=f"{type(e).__name__}: {e}")
    finally:
        if client is not None and client.status == "running":
            forget_attempts(client, [payload.token])
    base.seconds = round(time.monotonic() - t0, 2)
    if answer.lost:
        base.message = "the Dask worker grading it was lost (it died or was stopped); grade it again"
        return _banner(base, sub, args, out)
    if answer.error or answer.result is None:
        base.message = f"the cluster task failed: {display_name(answer.error)[:300]}"
        return _banner(base, sub, args, out)
    result = Result(**{**answer.result, "page": f"{sub.slug}.html"})
    result.notes = list(sub.notes) + [n for n in result.notes if n not in sub.notes] + payload.copy_notes
    if answer.page is not None:
        write_text_atomic(out / result.page, answer.page.decode("utf-8"))
    else:
        _banner(result, sub, args, out)
    if bounded is not None and answer.bounded is not None:
        write_text_atomic(bounded, answer.bounded.decode("utf-8"))
    return result


NO_WORKER_GRACE_S = 120.0  # seconds a cluster may have no worker before its tasks are given up
POLL_S = 5.0


def wait_for(future, client) -> TaskAnswer:
    """The task's answer; gives up (``NoWorkerLeft``) once the cluster has had no worker for
    ``NO_WORKER_GRACE_S``: the task would wait for ever. The run's own ``--timeout`` is
    enforced on the worker."""
    import concurrent.futures

    empty_since = None
    while True:
        try:
            return future.result(timeout=POLL_S)
        except concurrent.futures.TimeoutError:
            pass
        workers = client.scheduler_info().get("workers", {}) if client is not None else {1: 1}
        if workers:
            empty_since = None
        elif empty_since is None:
            empty_since = time.monotonic()
        elif time.monotonic() - empty_since > NO_WORKER_GRACE_S:
            future.cancel()
            raise NoWorkerLeft(f"no Dask worker left on the cluster for {NO_WORKER_GRACE_S:g} s")


class NoWorkerLeft(RuntimeError):
    """The cluster lost all of its workers while a task waited."""


def _banner(result, sub: Submission, args, out: Path):
    from .student_pages import mode_text, write_banner_page

    spec = {"rel": sub.shown_rel, "name": sub.name, "slug": sub.slug, "execute": bool(args.execute),
            "mode_text": mode_text(args)}
    write_banner_page(out / result.page, spec, result.status, result.notes, result.message)
    return result

