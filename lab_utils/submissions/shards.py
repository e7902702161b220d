"""Shards: one class graded in N pieces (a CI matrix, a Slurm array), then merged.

``render.sh --submissions DIR --shard I/N --out OUT_I`` grades shard *I* of *N* (**I is
1-based**, ``1 <= I <= N``); ``render.sh --merge OUT_1 ... OUT_N --out OUT`` puts the
pieces together into what one run of the whole class would have written.

The unit of slicing is a *hand-in*: a top-level folder or top-level ``.zip`` of DIR (one
student or team, all of its notebooks together, so each report is made whole by one
shard), or a notebook (or a symbolic link) directly in DIR. The units, named by their path
relative to DIR, are sorted (code point order) and dealt round-robin: unit *k* (0-based)
goes to shard ``k % N + 1``. Every shard scans the whole class and names it (``handins.
assign_names`` and the report page names over every folder: cheap and deterministic), then
keeps its own units, so its page names are those of an unsharded run and unique across
shards. Every shard extracts the notebooks of every ``.zip`` (their names depend on each
other); with ``--execute`` only its own archives' data files.

A shard's OUT holds its pages, its own ``index.html``, ``results.json`` and ``grades.csv``
for its part, and ``shard.json`` (``ShardRecord``): the shard, the class's fingerprint
(sha256 of the sorted list of all units), its units, every ``Result`` with its evidence,
``--verify``'s results, its ignored files, the settings and its pages. ``merge`` checks the
records (same class, same N, same settings and rubric, no shard twice, none missing) before
it writes anything, copies the pages each record lists (regular files only, never through a
symbolic link, never over a file of OUT this command did not write), rebuilds the lab
hand-ins' reports from the stored evidence (no student code, no worker) and writes
``results.json``, ``grades.csv`` (points typed into OUT's earlier ``grades.csv`` kept) and
``index.html`` as one run does (``batch.write_outputs``).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import stat
import types
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from ..config import LabError, display_name
from ..pages import write_text_atomic

SHARD_FILE = "shard.json"
FORMAT = 1  # shard.json's format: a merge refuses another


class ShardError(LabError):
    """A one-line reason why a shard or a merge cannot go on (a usage error: exit 2)."""


@dataclass(frozen=True)
class Shard:
    """Shard *index* of *count* (index 1-based: ``1 <= index <= count``)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"2/4"`` -> ``Shard(2, 4)``; ValueError with a one-line message otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m:
        raise ValueError(f"--shard must be I/N, e.g. 1/4 (got {text!r})")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard I/N needs 1 <= I <= N (got {text!r})")
    return Shard(i, n)


def _first(rel: str) -> str:
    return PurePosixPath(rel).parts[0]


def class_units(found) -> list[str]:
    """The hand-ins (units) of a scanned class (``handins.Discovery``), sorted: top-level
    folders holding a notebook (or a linked one), top-level ``.zip`` files, notebooks and
    links directly in DIR."""
    return sorted({_first(r) for r in [*found.notebooks, *found.links]} | set(found.archives))


def fingerprint(units: list[str]) -> str:
    """sha256 of the sorted units (the same class gives the same fingerprint anywhere)."""
    return hashlib.sha256(json.dumps(sorted(units)).encode("ascii")).hexdigest()


def deal(units: list[str], count: int) -> dict[str, int]:
    """unit -> its shard (1-based): the sorted units dealt round-robin."""
    return {u: k % count + 1 for k, u in enumerate(sorted(units))}


@dataclass
class ClassSlice:
    """One shard's part of a class: *units* (its hand-ins, sorted) of *all_units*."""

    shard: Shard
    all_units: list[str]
    units: list[str]
    fingerprint: str

    def unit_of(self, rel: str, archive_of_key: dict[str, str]) -> str:
        """The unit of a submission's *rel*: its first component, or, for an archive's
        notebook (``<key>/...``), the archive (*archive_of_key*: key -> archive name)."""
        first = _first(rel)
        return archive_of_key.get(first, first) if "/" in rel else first

    def select(self, subs: list, archive_of_key: dict[str, str]) -> list:
        """This shard's submissions of the whole class's *subs* (their order kept)."""
        mine = set(self.units)
        return [s for s in subs if self.unit_of(s.rel, archive_of_key) in mine]

    def ignored_part(self, ignored: list[str]) -> list[str]:
        """This shard's part of the class's ignored files: the entries of its units (a
        folder's ``alice/notes.txt``, an archive's ``alice.zip/x (why)`` and ``alice.zip (...)``);
        entries of no unit (``README.txt`` beside the hand-ins) go to shard 1, so the shards'
        parts together are the class's list, each entry once."""
        units, mine = set(self.all_units), set(self.units)
        archives = [u for u in self.all_units if u.lower().endswith(".zip")]
        out = []
        for entry in ignored:
            unit = _first(entry) if _first(entry) in units else next(
                (a for a in archives if entry.startswith(a + " (")), None)
            if (unit in mine) if unit is not None else self.shard.index == 1:
                out.append(entry)
        return out


def class_slice(found, shard: Shard) -> ClassSlice:
    """Shard *shard*'s part of the scanned class *found*."""
    units = class_units(found)
    dealt = deal(units, shard.count)
    return ClassSlice(shard, units, [u for u in units if dealt[u] == shard.index], fingerprint(units))


def rubric_fingerprint(rubric) -> str:
    """A rubric's identity (its course and items): shards and their merge must share it."""
    return hashlib.sha256(repr((rubric.course, rubric.items)).encode("utf-8", "backslashreplace")).hexdigest()


SETTINGS = ("execute", "timeout", "cell_timeout", "verify")  # must be the same in every shard


@dataclass
class ShardRecord:
    """``shard.json``: what one shard did, all that ``merge`` needs. ``submissions``: per
    notebook of the shard, ``{"rel": path relative to DIR (as on disk), "result":
    Result's fields, evidence included}``; ``students``: per lab hand-in, ``{"key", "page"}``;
    ``verification``: notebook file -> ``--verify``'s comparison; ``pages``: the files of
    the shard's manifest. Text that is not UTF-8 travels as JSON's ``\\udcXX`` escapes."""

    shard: int  # 1-based
    count: int
    fingerprint: str
    units: list[str]
    n_units: int  # of the whole class
    folder: str  # str(DIR) of the run
    mode: str
    settings: dict
    rubric: str  # rubric_fingerprint
    started: str  # ISO 8601, with the time zone
    elapsed: float
    submissions: list = field(default_factory=list)
    students: list = field(default_factory=list)
    verification: dict = field(default_factory=dict)
    ignored: list = field(default_factory=list)
    pages: list = field(default_factory=list)
    format: int = FORMAT

    @classmethod
    def of_run(cls, part: ClassSlice, root: Path, args, rubric, started: datetime.datetime, elapsed: float,
               graded: list, hand_ins: list, verification: dict, ignored: list, pages: set) -> "ShardRecord":
        """The record of a finished shard run: *graded*: (rel, ``batch.Result``) per notebook."""
        from .student_pages import mode_text

        return cls(shard=part.shard.index, count=part.shard.count, fingerprint=part.fingerprint,
                   units=list(part.units), n_units=len(part.all_units), folder=str(root), mode=mode_text(args),
                   settings={"jobs": args.jobs, **{k: getattr(args, k, None) for k in SETTINGS}},
                   rubric=rubric_fingerprint(rubric), started=started.isoformat(), elapsed=round(elapsed, 2),
                   submissions=[{"rel": rel, "result": asdict(r)} for rel, r in graded],
                   students=[{"key": h.key, "page": h.page} for h in hand_ins],
                   verification=verification, ignored=list(ignored), pages=sorted(pages))


def write_shard(out: Path, record: ShardRecord) -> Path:
    path = out / SHARD_FILE
    write_text_atomic(path, json.dumps(asdict(record), indent=1))
    return path


def _safe_page(name) -> bool:
    """A page name a record may list: a plain ``.html`` file of the folder itself."""
    return (isinstance(name, str) and name.endswith(".html") and name != "index.html"
            and not name.startswith(".") and not any(c in name for c in "/\\\0"))


def read_shard(folder: Path) -> ShardRecord:
    """*folder*'s ``shard.json``, checked; ShardError (one line) when missing or unreadable."""
    where = f"--merge {display_name(str(folder))}"
    path = folder / SHARD_FILE
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise ShardError(f"{where}: no {SHARD_FILE} (not the --out of a finished --shard run)") from None
    except OSError as e:
        raise ShardError(f"{where}: {SHARD_FILE} cannot be read ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "rb") as fh:
            raw = json.loads(fh.read().decode("utf-8"))
        if raw.get("format") != FORMAT:
            raise ValueError(f"format {raw.get('format')!r}, expected {FORMAT}")
        record = ShardRecord(**raw)
        ints = (record.shard, record.count, record.n_units)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or not 1 <= record.shard <= record.count:
            raise ValueError("bad shard numbers")
        if not (isinstance(record.units, list) and isinstance(record.submissions, list)
                and isinstance(record.students, list) and isinstance(record.verification, dict)
                and isinstance(record.ignored, list) and isinstance(record.pages, list)
                and isinstance(record.settings, dict)):
            raise ValueError("a field of the wrong type")
        if not all(_safe_page(p) for p in record.pages):
            raise ValueError("a page that is not a plain .html file of the folder")
        datetime.datetime.fromisoformat(record.started)
        for s in record.submissions:
            if not isinstance(s.get("rel"), str) or not isinstance(s.get("result"), dict):
                raise ValueError("a submission without its path or result")
        for s in record.students:
            if not isinstance(s.get("key"), str) or not _safe_page(s.get("page")):
                raise ValueError("a student without its folder or page")
    except (OSError, ValueError, TypeError, AttributeError) as e:  # JSON errors are ValueErrors
        raise ShardError(f"{where}: {SHARD_FILE} cannot be read ({display_name(str(e))[:200]})") from None
    return record


@dataclass
class MergePlan:
    """A checked merge: the records (in shard order) with their folders, and the pages to
    copy (page name -> source file)."""

    records: list
    folders: list
    copies: dict


def check_merge(dirs: list[Path], out: Path, rubric) -> MergePlan:
    """Read and check every shard of a merge into *out*; ShardError on the first problem.
    Nothing is written here."""
    from .batch import foreign_pages, manifest_files

    out = out.resolve()
    records, folders = [], []
    for d in dirs:
        folder = d.expanduser().resolve()
        if folder == out:
            raise ShardError(f"--out {display_name(str(d))} is one of the --merge folders; choose a new folder")
        records.append(read_shard(folder))
        folders.append(folder)
    first, where0 = records[0], display_name(str(dirs[0]))
    seen: dict[int, Path] = {}
    for d, r in zip(dirs, records):
        where = display_name(str(d))
        if r.count != first.count:
            raise ShardError(f"--merge {where} is shard {r.shard}/{r.count}, but {where0} is a shard of "
                             f"{first.count}: every shard of a merge comes from the same --shard I/N")
        if r.fingerprint != first.fingerprint:
            raise ShardError(f"--merge {where} is a shard of another class than {where0} "
                             f"(their hand-ins differ: {r.n_units} vs {first.n_units} hand-ins, or other names)")
        if r.shard in seen:
            raise ShardError(f"--merge: shard {r.shard}/{r.count} given twice "
                             f"({display_name(str(seen[r.shard]))} and {where})")
        seen[r.shard] = d
        if {k: r.settings.get(k) for k in SETTINGS} != {k: first.settings.get(k) for k in SETTINGS}:
            raise ShardError(f"--merge {where} was graded with other settings than {where0} "
                             f"({r.mode} vs {first.mode})")
        if r.rubric != rubric_fingerprint(rubric):
            raise ShardError(f"--merge {where} was graded with another rubric than this merge's "
                             "(pass the shards' --rubric FILE)")
    missing = [i for i in range(1, first.count + 1) if i not in seen]
    if missing:
        raise ShardError(f"--merge: missing shard{'s' if len(missing) > 1 else ''} "
                         f"{', '.join(map(str, missing))} of {first.count}; nothing was written")
    foreign = foreign_pages(out) if out.is_dir() else set()
    copies: dict[str, Path] = {}
    for d, folder, r in zip(dirs, folders, records):
        where = display_name(str(d))
        listed = set(manifest_files(folder))
        for page in r.pages:
            if page not in listed:
                raise ShardError(f"--merge {where}: {display_name(page)} is in {SHARD_FILE} but not in the "
                                 "folder's manifest (the folder changed after its run?)")
            if page in copies:
                raise ShardError(f"--merge {where}: the page {display_name(page)} comes from two shards")
            try:
                st = os.lstat(folder / page)
            except OSError:
                raise ShardError(f"--merge {where}: {display_name(page)} is missing") from None
            if not stat.S_ISREG(st.st_mode):
                raise ShardError(f"--merge {where}: {display_name(page)} is not a regular file "
                                 "(symbolic links are never followed)")
            if page[:-5].lower() in foreign:
                raise ShardError(f"--out {display_name(str(out))} holds {display_name(page)}, which this command "
                                 "did not write; nothing there is overwritten (choose another --out)")
            copies[page] = folder / page
    order = sorted(range(len(records)), key=lambda k: records[k].shard)
    return MergePlan([records[k] for k in order], [folders[k] for k in order], copies)


def _copy_nofollow(src: Path, dst: Path) -> None:
    """Copy the regular file *src* (never through a symbolic link) to *dst*, atomically."""
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as fin:
        if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
            raise OSError(f"{src} is not a regular file")
        tmp = dst.with_name(f".{dst.name}.merging")
        with open(tmp, "wb") as fout:
            while chunk := fin.read(1 << 20):
                fout.write(chunk)
    os.replace(tmp, dst)


def merge(dirs: list[Path], out: Path, rubric) -> int:
    """``--merge DIR... --out OUT``: the shards in *dirs* put together in *out*, as one run of
    the whole class would have written it. Checks first (``check_merge``: ShardError, nothing
    written); the exit status as a run's: 0 when every notebook is ok, else 1."""
    import sys

    from ..grading import student_report
    from .batch import Result, finish_status, manifest_files, write_outputs, write_pages_manifest
    from .reports import evidence_of, lab_hand_ins

    plan = check_merge(dirs, out, rubric)
    entries = sorted(((s["rel"], s["result"]) for r in plan.records for s in r.submissions), key=lambda e: e[0])
    try:
        results = {i: Result(**res) for i, (_, res) in enumerate(entries)}
    except TypeError as e:
        raise ShardError(f"--merge: a result in a {SHARD_FILE} cannot be read ({e})") from None
    subs = [types.SimpleNamespace(rel=rel) for rel, _ in entries]
    evidence = evidence_of({i: r.evidence for i, r in results.items() if r.evidence})
    hand_ins = lab_hand_ins(subs, evidence)
    verification = {k: v for r in plan.records for k, v in r.verification.items()}
    pages = {s["key"]: s["page"] for r in plan.records for s in r.students}
    for h in hand_ins:
        if h.key not in pages:
            raise ShardError(f"--merge: no shard made the report of {display_name(h.key)}")
        h.page = pages[h.key]
        h.report = student_report(display_name(h.key), h.evidence, rubric, verification)
    ordered = [results[i] for i in range(len(entries))]
    ordered.sort(key=lambda r: (r.student.lower(), r.file))
    first = plan.records[0]
    starts = [datetime.datetime.fromisoformat(r.started) for r in plan.records]
    try:
        started = min(starts)
        elapsed = max((s + datetime.timedelta(seconds=r.elapsed) for s, r in zip(starts, plan.records))) - started
    except TypeError:  # records from a time without a time zone
        started, elapsed = starts[0], datetime.timedelta(seconds=sum(r.elapsed for r in plan.records))
    args = types.SimpleNamespace(**{k: first.settings.get(k) for k in SETTINGS}, jobs=first.settings.get("jobs", 1))
    out.mkdir(parents=True, exist_ok=True)
    (out / SHARD_FILE).unlink(missing_ok=True)  # OUT is a merge now, not a shard
    copied: set[str] = set()
    try:
        for page, src in plan.copies.items():
            _copy_nofollow(src, out / page)
            copied.add(page)
    except OSError as e:  # keep what was written ours (a later run may replace it)
        write_pages_manifest(out, copied | set(manifest_files(out)))
        raise ShardError(f"--merge: a page could not be copied ({display_name(str(e))})") from None
    print(f"[submissions] merged {len(plan.records)} shards: {len(ordered)} notebooks, "
          f"{len(hand_ins)} lab hand-ins -> {display_name(str(out))}", file=sys.stderr)
    index, _ = write_outputs(out, ordered, hand_ins, rubric, root=Path(first.folder), args=args,
                             ignored=sorted(e for r in plan.records for e in r.ignored), started=started,
                             elapsed=elapsed.total_seconds())
    return finish_status(ordered, index, empty_ok=first.n_units > 0)
