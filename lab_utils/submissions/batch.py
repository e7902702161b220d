"""The batch (the parent process): every hand-in through its workers, a few at a time.

Per hand-in, ``grade_one`` copies it into a fresh workroot and runs the run worker
there (with ``--execute``, killed with every process of the workroot at ``--timeout``
plus ``KILL_MARGIN``), then the page worker; ``run_batch`` supervises them (Ctrl-C,
SIGTERM and SIGHUP end every worker and kernel), then ``_reports`` writes one report per
lab hand-in folder (``reports``) and ``grades.csv``; it writes ``results.json`` and the
index, and keeps the manifest of the pages this command wrote (``MANIFEST``): a later run
replaces or removes only those.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import html
import json
import os
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..cluster import client_of, cluster_threads, open_executor
from ..config import KIT_ROOT, display_name
from ..grading import student_report
from ..pages import simple_page, write_text_atomic
from ..rubric import load_rubric
from .archives import MAX_IGNORED_LISTED, unpack_all
from .handins import Submission, assign_names, scan
from .notebooks import MAX_FILE_BYTES
from .statuses import BAD_ARCHIVE, GRADER_ERROR, LINK, OK
from .processes import kill_group, kill_processes_of, rmtree_hard, run_with_hard_timeout
from .remote import grade_remote
from .reports import (evidence_of, group_of, hand_in_folders, lab_hand_ins, report_page_names,
                      run_verification, student_page_spec, write_grades)
from .shards import SHARD_FILE, ShardRecord, class_slice, write_shard
from .shared_cache import Snapshot, TrustedCache, audit_source, describe, report_audit
from .warm import warm_class
from .student_kernel import copy_student_files, kernel_env, make_workroot, read_nofollow
from .student_pages import mode_text, write_banner_page, write_index
from .worker import CHECKPOINT_FILE, EXECUTED_FILE, RESULT_PREFIX, RUN_FILE

# Seconds beyond --timeout before the run worker's process group is killed: the worker
# stops the kernel itself at --timeout and needs a moment to save the notebook.
KILL_MARGIN = 5.0
KILL_GRACE = 2.0  # seconds between the SIGTERM (the worker saves the notebook) and the SIGKILL
RENDER_TIMEOUT = 600.0  # seconds the page worker may take (no student code runs then)

MANIFEST = ".submissions-manifest.json"


class LiveWork:
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
    evidence: dict | None = field(default=None, repr=False)  # evidence.to_json of the notebook (not in results.json)

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


def _run_copy(sub: Submission, args, root: Path, workroot: Path, live: LiveWork,
              snapshot=None) -> tuple[dict, str | None, float]:
    """Execute a copy of *sub* in *workroot*: (run info, path of the run's notebook or
    None, seconds). Every process of the run has ended when this returns. *snapshot*
    (``shared_cache.Snapshot``): the trusted read-only cache layer it may read."""
    where = root if sub.base is None else sub.base  # an archive's notebook: its extraction folder
    src = where / sub.rel
    name = Path(sub.rel).name
    try:
        if os.lstat(src).st_size > MAX_FILE_BYTES:
            return {"executed": False, "notes": []}, None, 0.0  # the page says "too large"
        (workroot / "work" / name).write_bytes(read_nofollow(src, MAX_FILE_BYTES))
        copy_notes = copy_student_files(src, where, workroot / "work")
    except OSError as e:
        return {"executed": False, "error": f"the hand-in could not be copied: {e}", "notes": []}, None, 0.0
    settings = {"phase": "run", "workroot": str(workroot), "notebook": name,
                "timeout": args.timeout, "cell_timeout": args.cell_timeout}
    env = kernel_env(workroot)
    notes: list[str] = []
    if snapshot is not None:  # as the grader wrote it, whatever an earlier hand-in did to it
        try:
            snapshot.repair()
            env.update(snapshot.kernel_vars(workroot))
        except OSError as e:  # this hand-in computes everything itself
            notes.append(f"the shared cache could not be prepared ({type(e).__name__}); run without it")
    with live.lock:
        live.workroots.add(workroot)
    t0 = time.monotonic()
    try:
        rc, killed, _ = run_with_hard_timeout(
            [sys.executable, "-m", "lab_utils.submissions", "--one", "-"], args.timeout + KILL_MARGIN,
            live=live, stdin_data=json.dumps(settings).encode(), log_path=workroot / "worker.log",
            env=env, cwd=workroot, grace=KILL_GRACE)
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
    run["notes"] = copy_notes + notes + run.get("notes", [])
    return run, executed, seconds


def _page_worker(spec: dict, live: LiveWork) -> dict | None:
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


def grade_one(sub: Submission, args, root: Path, out: Path, live: LiveWork, bounded: Path | None = None,
              snapshot=None) -> Result:
    """Run (with ``--execute``) and render one hand-in; never raises for a bad hand-in.
    *bounded*: where the page worker leaves the bounded notebook (a lab hand-in's report
    shows it); the result's ``evidence`` is what the worker read from the notebook.
    *snapshot*: the shared read-only cache layer of an executed run (``shared_cache``)."""
    page = out / f"{sub.slug}.html"
    base = Result(student=sub.name, file=sub.shown_rel, page=page.name, status=GRADER_ERROR,
                  seconds=0.0, notes=list(sub.notes))
    src = (root if sub.base is None else sub.base) / sub.rel
    spec = {"phase": "page", "src": str(src), "rel": sub.shown_rel, "name": sub.name,
            "slug": sub.slug, "page": str(page), "execute": bool(args.execute),
            "mode_text": mode_text(args), "bounded": str(bounded) if bounded is not None else None}
    if sub.problem is not None:  # nothing to read (an archive that could not be opened)
        base.status, base.message = sub.problem
        write_banner_page(page, spec, base.status, base.notes, base.message)
        return base
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
            spec["run"], spec["executed"], run_seconds = _run_copy(sub, args, root, workroot, live, snapshot)
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
    base.evidence = r.get("evidence")
    if not page.exists():
        write_banner_page(page, spec, base.status, base.notes, base.message)
    return base


def manifest_files(out: Path) -> list[str]:
    try:
        files = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def foreign_pages(out: Path) -> set[str]:
    """Page names (lower case, no ``.html``) of ``.html`` files in *out* that no earlier run
    of this command wrote: a student's page never overwrites them."""
    try:
        names = [p.name for p in out.iterdir() if p.name.lower().endswith(".html")]
    except OSError:
        return set()
    ours = set(manifest_files(out)) | {"index.html"}
    return {n[:-5].lower() for n in names if n not in ours}


def write_pages_manifest(out: Path, pages: set[str]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps({"files": sorted(pages)}, indent=1))


def _clean_stale_pages(out: Path, produced: set[str]) -> None:
    """Remove pages a previous run of this command wrote that this run did not."""
    for name in manifest_files(out):
        if (name not in produced and "/" not in name and "\\" not in name
                and name.endswith(".html") and not name.startswith(".")):
            try:
                (out / name).unlink()
            except OSError:
                pass
    write_pages_manifest(out, produced)


def _reports(subs, results: dict, bounded: dict, rubric, args, out: Path, live: LiveWork,
             class_subs: list | None = None) -> tuple[list, dict]:
    """The lab hand-ins' reports (``reports``): evidence from the page workers, ``--verify``'s
    recomputation, one report page per student (a student worker each, ``--jobs`` at a time).
    Returns the hand-ins and ``--verify``'s results. *class_subs*: the whole class, where
    *subs* is a shard's part of it (report page names are chosen over the whole class)."""
    evidence = evidence_of({i: r.evidence for i, r in results.items() if r.evidence})
    hand_ins = lab_hand_ins(subs, evidence)
    if not hand_ins:
        return [], {}
    everyone = subs if class_subs is None else class_subs
    taken = {s.slug.lower() for s in everyone} | foreign_pages(out)
    report_page_names(hand_ins, taken, hand_in_folders(everyone))
    verification = run_verification(hand_ins, _page_worker_env(), live) if getattr(args, "verify", False) else {}
    for h in hand_ins:
        h.report = student_report(display_name(h.key), h.evidence, rubric, verification)
    written = {i: str(p) for i, p in bounded.items() if p.is_file()}

    def one(h):
        spec = student_page_spec(h, subs, results, written, out, rubric)
        rc, killed, stdout = run_with_hard_timeout(
            [sys.executable, "-m", "lab_utils.submissions", "--one", "-"], RENDER_TIMEOUT, live=live,
            stdin_data=json.dumps(spec).encode(), capture=True, env=_page_worker_env(), cwd=KIT_ROOT)
        if not (out / h.page).exists():  # the worker failed or was killed: a page that says so
            why = f"the report page could not be made in {RENDER_TIMEOUT:g} s" if killed else f"exit code {rc}"
            write_text_atomic(out / h.page, simple_page(h.page, spec["banner"], f"<p>{html.escape(why)}</p>"))
        print(f"[submissions] report {display_name(h.key)}: {h.report.status()}", file=sys.stderr)

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, hand_ins))
    return hand_ins, verification


def _archive_hand_ins(unpacked: list) -> tuple[list[str], list[str], dict]:
    """The archives' notebooks (relative paths), their ignored entries, and rel -> (base,
    notes, problem) for the ``Submission`` of each (``archives.unpack_all``'s results)."""
    rels: list[str] = []
    ignored: list[str] = []
    extra: dict[str, tuple] = {}
    for u in unpacked:
        ignored += u.ignored
        if u.n_skipped > MAX_IGNORED_LISTED:
            ignored.append(f"{u.name} (... and {u.n_skipped - MAX_IGNORED_LISTED:,} more skipped entries)")
        skipped = ([f"{u.name}: {u.n_skipped} entr{'y' if u.n_skipped == 1 else 'ies'} skipped "
                    "(see Ignored files)"] if u.n_skipped else [])
        if u.error is not None:
            rels.append(u.name)
            extra[u.name] = (None, [], (BAD_ARCHIVE, f"{display_name(u.name)}: {display_name(u.error)}"))
            print(f"[submissions] {display_name(u.name)}: {BAD_ARCHIVE}: {display_name(u.error)}", file=sys.stderr)
            continue
        if not u.members:
            ignored.append(f"{u.name} (an archive without a notebook)")
        for m in u.members:
            rels.append(m.rel)
            problem = None if m.problem is None else (m.problem[0], display_name(m.problem[1]))
            extra[m.rel] = (u.base, [f"from {display_name(u.name)} ({display_name(m.inner)})", *skipped], problem)
    return rels, ignored, extra


def run_batch(args, root: Path, out: Path) -> int:
    """Grade every hand-in of *root* into *out* (the exit status). The grader's own private
    folder (0700: the archives' contents, the bounded copies for the report pages) is removed
    however the batch ends, an unexpected error included."""
    private = Path(tempfile.mkdtemp(prefix="lab-grading-"))
    try:
        return _run_batch(args, root, out, private)
    finally:
        rmtree_hard(private)


def _trusted_cache(args, subs, root: Path) -> TrustedCache | None:
    """With ``--execute`` and a shared cache (``args.shared_cache``, the instructor's): warm it
    first with ``--warm`` (``warm.warm_class``), then read its entries (``shared_cache``); else None."""
    source = getattr(args, "shared_cache", None)
    if not args.execute or source is None:
        return None
    source = Path(source)
    if getattr(args, "warm", False):
        warm_class(subs, root, {**_page_worker_env(), "LAB_CACHE_DIR": str(source)})
    trusted = TrustedCache.from_folder(source)
    print(f"[submissions] {display_name(describe(trusted, source))}", file=sys.stderr)
    args.shared_note = (f"shared read-only cache: {len(trusted.entries)} entries, hash-checked"
                        if trusted.entries else "")
    return trusted


def _audit(trusted: TrustedCache | None, args) -> None:
    """After an executed batch: the instructor's cache as it was (``shared_cache.audit_source``)."""
    if trusted is not None:
        source = Path(args.shared_cache)
        report_audit(audit_source(trusted, source), source)


def _run_batch(args, root: Path, out: Path, private: Path) -> int:
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    # cli.main loads (and checks) the rubric; a caller that built its own args gets the default.
    rubric = getattr(args, "rubric_loaded", None)
    if rubric is None:
        rubric = load_rubric(getattr(args, "rubric", None))
    found = scan(root)
    # --shard I/N: this shard's hand-ins of the whole class, named as the whole class is (``shards``).
    part = class_slice(found, args.shard) if getattr(args, "shard", None) is not None else None
    # The archives' contents and the bounded copies of the lab hand-ins' notebooks go into *private*.
    try:
        data_files = bool(args.execute) if part is None or not args.execute else set(part.units)
        unpacked = unpack_all(root, found.archives, private / "archives", data_files=data_files)
        archive_rels, archive_ignored, extra = _archive_hand_ins(unpacked)
        ignored = sorted(found.ignored + archive_ignored)
        subs = assign_names(found.notebooks + archive_rels, found.links, taken=foreign_pages(out))
    except BaseException:
        rmtree_hard(private)
        raise
    for sub in subs:
        if sub.rel in extra:
            sub.base, notes, sub.problem = extra[sub.rel]
            sub.notes += notes
    class_subs = subs
    if part is not None:
        subs = part.select(subs, {u.key: u.name for u in unpacked})
        ignored = part.ignored_part(ignored)
        print(f"[submissions] shard {part.shard}: {len(part.units)} of {len(part.all_units)} hand-ins",
              file=sys.stderr)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / SHARD_FILE).unlink(missing_ok=True)  # a shard's record describes only its own run
    except OSError:
        rmtree_hard(private)
        raise
    live = LiveWork()
    results: dict[int, Result] = {}
    mode = "executing" if args.execute else "converting"
    scheduler = getattr(args, "scheduler", None)
    stack = contextlib.ExitStack()  # the cluster's client or the local snapshot, closed after the runs
    trusted = snapshot = None
    try:
        if scheduler:  # reached first: an unreachable cluster is said before a long warm step
            executor = stack.enter_context(open_executor(scheduler, args.jobs))
        trusted = _trusted_cache(args, subs, root)
        if scheduler:
            # The trusted entries travel to each worker once (not with every task).
            trusted_ref = (client_of(executor).scatter(trusted, broadcast=True, hash=False)
                           if trusted is not None else None)
            # A client thread per task in flight (it only waits); two more keep the cluster fed.
            n_cluster = cluster_threads(executor) or 1
            n_threads = min(max(len(subs), 1), n_cluster + 2)
            where = f"on the Dask cluster at {scheduler} ({n_cluster} worker thread(s))"

            def work(sub, **kw):
                return grade_remote(sub, args, root, out, executor, trusted_ref, bounded=kw.get("bounded"))
        else:
            if trusted is not None:
                snapshot = Snapshot.create(trusted)
                stack.callback(snapshot.remove)
            n_threads, where = args.jobs, f"{args.jobs} at a time"

            def work(sub, **kw):
                return grade_one(sub, args, root, out, live, snapshot=snapshot, **kw)
    except BaseException:
        stack.close()
        _audit(trusted, args)
        rmtree_hard(private)
        raise
    print(f"[submissions] {mode} {len(subs)} notebook(s) from {display_name(str(root))}, "
          f"{where} -> {display_name(str(out))}", file=sys.stderr)
    interrupted = False
    # A terminal closed or a CI job cancelled: end the workers and their kernels as Ctrl-C does.
    restore = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            if hasattr(signal, name):
                restore[name] = signal.signal(getattr(signal, name), signal.default_int_handler)
    # Bounded copies of the notebooks in hand-in folders, for the report pages.
    bounded = {i: private / f"{i}.ipynb" for i, sub in enumerate(subs) if group_of(sub.rel) is not None}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=n_threads)
    futures = {pool.submit(work, sub, **({"bounded": bounded[i]} if i in bounded else {})): i
               for i, sub in enumerate(subs)}
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
        stack.close()  # a cluster's client: its tasks are cancelled, the threads waiting on them return
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for name, handler in restore.items():
            signal.signal(getattr(signal, name), handler)
        stack.close()
        _audit(trusted, args)
        if snapshot is not None and snapshot.repairs > 0:
            print(f"[submissions] shared cache: {snapshot.repairs} entr{'y' if snapshot.repairs == 1 else 'ies'} "
                  "changed by a hand-in during its run were put back (no hand-in read them)", file=sys.stderr)
    hand_ins, verification = [], {}
    if not interrupted:
        try:
            hand_ins, verification = _reports(subs, results, bounded, rubric, args, out, live, class_subs)
        except KeyboardInterrupt:
            interrupted = True
            live.stop.set()
            live.kill_all()
    rmtree_hard(private)
    if interrupted:
        # The pages written so far are this command's: a later run may replace them. A worker may
        # have written its page before its result reached this thread, so look at the folder; a
        # name in `subs` was chosen to avoid every foreign page, so a file by that name is ours.
        written = {f"{s.slug}.html" for s in subs if (out / f"{s.slug}.html").exists()}
        write_pages_manifest(out, written | {r.page for r in results.values()} | set(manifest_files(out)))
        print("[submissions] interrupted; no index written", file=sys.stderr)
        return 130
    ordered = [results[i] for i in range(len(subs))]
    ordered.sort(key=lambda r: (r.student.lower(), r.file))
    index, produced = write_outputs(out, ordered, hand_ins, rubric, root=root, args=args, ignored=ignored,
                                    started=started, elapsed=time.monotonic() - t0)
    if part is not None:  # what --merge needs (``shards``)
        write_shard(out, ShardRecord.of_run(part, root, args, rubric, started, time.monotonic() - t0,
                                            [(subs[i].rel, results[i]) for i in range(len(subs))],
                                            hand_ins, verification, ignored, produced))
    if not ordered and part is None:
        print(f"[submissions] no .ipynb files found under {display_name(str(root))}", file=sys.stderr)
    # A shard may be dealt no notebook (more shards than hand-ins): that is not a failure.
    return finish_status(ordered, index, empty_ok=part is not None and bool(part.all_units))


def write_outputs(out: Path, ordered: list, hand_ins: list, rubric, *, root: Path, args, ignored: list,
                  started: datetime.datetime, elapsed: float) -> tuple[Path, set]:
    """``results.json``, ``grades.csv`` and the index of *ordered* (results in index order) and
    *hand_ins* (with their reports), then the manifest (stale pages of an earlier run
    removed). Returns the index and the pages of the manifest. ``--merge`` writes its
    folder with this too, so that a merged class reads exactly as one run of it."""
    write_text_atomic(out / "results.json", json.dumps(
        {"folder": display_name(str(root)), "mode": mode_text(args),
         "submissions": [{**{k: v for k, v in asdict(r).items() if k != "evidence"}, "ok": r.ok} for r in ordered],
         "students": [{"folder": display_name(h.key), "names": h.report.names, "status": h.report.status(),
                       "steps": h.report.steps_handed_in, "flags": h.report.flags(), "report": h.page}
                      for h in hand_ins]}, indent=1))
    grades = write_grades(out, hand_ins, rubric) if hand_ins else None
    index = write_index(out, ordered, root=root, args=args, ignored=ignored, started=started,
                        elapsed=elapsed, students=hand_ins, grades=grades)
    produced = {r.page for r in ordered} | {h.page for h in hand_ins}
    _clean_stale_pages(out, produced)
    return index, produced


def finish_status(ordered: list, index: Path, empty_ok: bool = False) -> int:
    """Print the summary line; the exit status: 0 when every notebook is ok (and there is at
    least one, unless *empty_ok*), else 1."""
    n_bad = sum(not r.ok for r in ordered)
    print(f"[submissions] {len(ordered) - n_bad} ok, {n_bad} not ok; index: {display_name(str(index))}",
          file=sys.stderr)
    return 0 if (ordered or empty_ok) and not n_bad else 1
