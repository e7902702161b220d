"""The trusted read-only cache layer of an executed class (``--execute``; ``--no-shared-cache``
turns it off).

At the start of a batch the grader reads the entries of the instructor's cache (the one
``./render.sh`` and ``--warm`` fill), keeps their bytes and SHA-256 hashes (``TrustedCache``),
and writes a *snapshot* of them into a folder of its own, files read-only (``Snapshot``).
Every executed hand-in gets ``LAB_SHARED_CACHE_DIR`` = that snapshot and a copy of the
manifest of hashes in its own workroot (``LAB_SHARED_CACHE_MANIFEST``); its private
``LAB_CACHE_DIR`` is still the only cache it writes. ``cache.load_shared`` uses an entry
only if its bytes hash to the manifest's value, so a student who writes, replaces or adds
files in the snapshot (possible for a process of the grader's user that changes the modes
first, and always for root) changes nothing anyone else reads. Before each hand-in runs
the grader puts the snapshot back as it was (``Snapshot.repair``: through folder file
descriptors, never following a link a student put there; a snapshot folder removed or
replaced is made again), so the next hand-in still finds every entry.

The instructor's own cache is never shown to a hand-in, but student code runs as the
grader's user and can find it. When the batch ends the grader audits it against what it
recorded at the start (``audit_source``): entries that changed are put back, files that
appeared or changed and cannot be put back are moved into ``.quarantine-<time>/`` there.

On a Dask cluster (``--scheduler``) the ``TrustedCache`` travels to each worker once and
each worker writes its own snapshot (``worker_snapshot``; one per worker process).
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import stat
import sys
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import (MANIFEST_FORMAT, SHARED_DIR_ENV, SHARED_MANIFEST_ENV, arrays_from_bytes, digest,
                     read_regular)
from ..config import display_name

SHARED_LIMIT_BYTES = 4 * 2**30  # entries beyond this total are not shared (recomputed per hand-in)
MANIFEST_FILE = "shared-cache.json"  # in an executed hand-in's workroot
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
QUARANTINE_PREFIX = ".quarantine-"


def _signature(st: os.stat_result) -> tuple:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass
class TrustedCache:
    """The instructor's cache entries as the grader read them: entry name
    (``<kind>/<key>.npz``) -> bytes; ``seen``: every file of the source at the start, name ->
    (mode, size, mtime, inode) for the end-of-batch audit (``audit_source``)."""

    entries: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # entries not shared, with why
    seen: dict[str, tuple] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_folder(cls, source: Path, limit_bytes: int = SHARED_LIMIT_BYTES) -> "TrustedCache":
        """Every ``<kind>/<key>.npz`` regular file of *source* that parses as arrays (no
        symbolic links, no pickles), in name order, up to *limit_bytes* in all."""
        trusted = cls()
        total = 0
        for name, st in _files_of(source):
            trusted.seen[name] = _signature(st)
            if not name.endswith(".npz") or not stat.S_ISREG(st.st_mode):
                continue
            data = read_regular(source / name)
            if data is None:
                continue
            try:
                arrays_from_bytes(data)
            except Exception:  # noqa: BLE001 - a corrupt entry is not shared
                trusted.skipped.append(f"{name} (not readable)")
                continue
            if total + len(data) > limit_bytes:
                trusted.skipped.append(f"{name} (over the {limit_bytes / 2**30:.0f} GiB shared limit)")
                continue
            total += len(data)
            trusted.entries[name] = data
        return trusted

    @property
    def n_bytes(self) -> int:
        return sum(len(b) for b in self.entries.values())

    def hashes(self) -> dict[str, str]:
        if len(self._hashes) != len(self.entries):
            self._hashes = {name: digest(data) for name, data in self.entries.items()}
        return self._hashes

    def manifest_text(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, "entries": self.hashes()}, sort_keys=True)

    def fingerprint(self) -> str:
        return digest(self.manifest_text().encode())[:16]


def _files_of(source: Path):
    """(``kind/name``, lstat) of every entry one folder deep in *source*, hidden kinds (the
    quarantine) left out; links and special files included (the audit needs them)."""
    try:
        kinds = sorted(os.scandir(source), key=lambda e: e.name)
    except OSError:
        return
    for kind in kinds:
        if kind.name.startswith("."):
            continue
        st = kind.stat(follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            yield kind.name, st
            continue
        try:
            files = sorted(os.scandir(kind.path), key=lambda e: e.name)
        except OSError:
            continue
        for f in files:
            try:
                yield f"{kind.name}/{f.name}", f.stat(follow_symlinks=False)
            except OSError:
                continue


@dataclass
class AuditReport:
    """What ``audit_source`` changed in the instructor's cache (entry names)."""

    restored: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    quarantine: Path | None = None
    error: str = ""


def audit_source(trusted: TrustedCache, source: Path) -> AuditReport:
    """After an executed batch: put back every shared entry of *source* whose bytes changed (or
    that is gone), and move aside every other file that appeared or changed since the batch
    started (into ``source/.quarantine-<time>/``), so no later run trusts what a hand-in wrote.
    The instructor's own runs during the batch would be moved aside too (recomputed later)."""
    report = AuditReport()
    hashes = trusted.hashes()
    try:
        for name, data in trusted.entries.items():
            now = read_regular(source / name)
            if now is None or digest(now) != hashes[name]:
                _move_aside(source, name, report)  # whatever is there now (a link, a folder) first
                _restore_entry(source / name, data, trusted.seen[name][0])
                report.restored.append(name)
        for name, st in list(_files_of(source)):
            if name in trusted.entries:
                continue
            if trusted.seen.get(name) != _signature(st):
                _move_aside(source, name, report)
                report.quarantined.append(name)
    except OSError as e:
        report.error = f"{type(e).__name__}: {e}"
    return report


def _move_aside(source: Path, name: str, report: AuditReport) -> None:
    if not os.path.lexists(source / name):
        return
    if report.quarantine is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        report.quarantine = source / f"{QUARANTINE_PREFIX}{stamp}-{uuid.uuid4().hex[:6]}"
    target = report.quarantine / name
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.rename(source / name, target)  # renames a link or folder itself, never its target


def _restore_entry(path: Path, data: bytes, mode: int) -> None:
    """Write *data* to *path* atomically with the file's original permission bits."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def report_audit(report: AuditReport, source: Path) -> None:
    """The terminal lines of an audit (nothing when nothing changed)."""
    where = display_name(str(source))
    if report.restored:
        print(f"[submissions] WARNING: {len(report.restored)} entr{'y' if len(report.restored) == 1 else 'ies'} "
              f"of your cache {where} changed during the run (a hand-in's code?) and were put back: "
              + ", ".join(display_name(n) for n in report.restored[:5]), file=sys.stderr)
    if report.quarantined:
        print(f"[submissions] WARNING: {len(report.quarantined)} file(s) appeared or changed in your cache "
              f"{where} during the run and were moved to {display_name(str(report.quarantine))} (never "
              "trusted): " + ", ".join(display_name(n) for n in report.quarantined[:5]), file=sys.stderr)
    if report.error:
        print(f"[submissions] WARNING: your cache {where} could not be checked to the end "
              f"({display_name(report.error)}); delete it before trusting it again", file=sys.stderr)


def _remove_at(dir_fd: int, name: str) -> None:
    """Remove *name* in the folder *dir_fd* without following any link (a folder with
    everything in it, whatever its modes)."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    fd = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o700)
        for entry in list(os.scandir(fd)):
            _remove_at(fd, entry.name)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _remove_path(path: Path) -> None:
    """Remove whatever is at *path* now (a link itself, never its target; best effort)."""
    try:
        parent = os.open(path.parent, DIR_FLAGS)
    except OSError:
        return
    try:
        _remove_at(parent, path.name)
    except OSError:
        pass
    finally:
        os.close(parent)


def _read_at(dir_fd: int, name: str) -> bytes | None:
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0),
                     dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return fh.read()


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Replace *name* in *dir_fd* by a read-only file holding *data* (never through a link)."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            _remove_at(dir_fd, name)
    except FileNotFoundError:
        pass
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o444,
                 dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


class Snapshot:
    """A read-only copy of a ``TrustedCache`` in a folder of the grader's, shown to executed
    hand-ins (``kernel_vars``)."""

    def __init__(self, trusted: TrustedCache, folder: Path):
        self.trusted = trusted
        self.folder = folder
        self._ident = self._identity()
        self._lock = threading.Lock()
        self.closed = False
        self.repairs = 0  # entries put back after the first write (what hand-ins changed)
        self.repair(count=False)

    @classmethod
    def create(cls, trusted: TrustedCache, parent: str | None = None) -> "Snapshot":
        folder = Path(tempfile.mkdtemp(prefix="lab-shared-cache-", dir=parent))
        try:
            return cls(trusted, folder)
        except BaseException:
            from .processes import rmtree_hard

            rmtree_hard(folder)
            raise

    def _identity(self) -> tuple | None:
        try:
            st = os.lstat(self.folder)
        except OSError:
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None

    def _new_folder(self) -> None:
        """The folder is gone or was swapped: remove what is at its name (a link itself, never
        its target) and make a fresh one beside it."""
        _remove_path(self.folder)
        self.folder = Path(tempfile.mkdtemp(prefix="lab-shared-cache-", dir=self.folder.parent))
        self._ident = self._identity()

    def repair(self, count: bool = True) -> list[str]:
        """Make the folder hold exactly the trusted entries again (read-only): entries changed
        or removed are written back, anything else there is removed. Names of entries put back."""
        with self._lock:
            if self.closed:
                return []
            if self._identity() != self._ident or self._ident is None:
                self._new_folder()
            root = os.open(self.folder, DIR_FLAGS)
            try:
                st = os.fstat(root)
                if (st.st_dev, st.st_ino) != self._ident:  # swapped between the check and the open
                    os.close(root)
                    self._new_folder()
                    root = os.open(self.folder, DIR_FLAGS)
                fixed = self._repair_in(root)
            finally:
                os.close(root)
            if count:
                self.repairs += len(fixed)
            return fixed

    def _repair_in(self, root: int) -> list[str]:
        by_kind: dict[str, dict[str, bytes]] = {}
        for name, data in self.trusted.entries.items():
            kind, file = name.split("/", 1)
            by_kind.setdefault(kind, {})[file] = data
        hashes = self.trusted.hashes()
        fixed = []
        os.fchmod(root, 0o755)
        for entry in list(os.scandir(root)):
            if entry.name not in by_kind or not entry.is_dir(follow_symlinks=False):
                _remove_at(root, entry.name)
        for kind, files in by_kind.items():
            try:
                kfd = os.open(kind, DIR_FLAGS, dir_fd=root)
            except FileNotFoundError:
                os.mkdir(kind, 0o755, dir_fd=root)
                kfd = os.open(kind, DIR_FLAGS, dir_fd=root)
            try:
                os.fchmod(kfd, 0o755)
                for entry in list(os.scandir(kfd)):
                    if entry.name not in files:
                        _remove_at(kfd, entry.name)
                for file, data in files.items():
                    now = _read_at(kfd, file)
                    if now is None or digest(now) != hashes[f"{kind}/{file}"]:
                        _write_at(kfd, file, data)
                        fixed.append(f"{kind}/{file}")
                os.fchmod(kfd, 0o555)
            finally:
                os.close(kfd)
        os.fchmod(root, 0o555)
        return fixed

    def kernel_vars(self, workroot: Path) -> dict:
        """The environment an executed hand-in reads the layer with; writes its own copy of
        the manifest into *workroot* (changing it changes only that hand-in's reads)."""
        manifest = workroot / MANIFEST_FILE
        manifest.write_text(self.trusted.manifest_text(), encoding="utf-8")
        return {SHARED_DIR_ENV: str(self.folder), SHARED_MANIFEST_ENV: str(manifest)}

    def remove(self) -> None:
        """Delete the snapshot (whatever is at its name now; links are not followed)."""
        with self._lock:
            self.closed = True
            _remove_path(self.folder)


_worker_snapshots: dict[str, Snapshot] = {}
_worker_lock = threading.Lock()


def worker_snapshot(trusted: TrustedCache) -> Snapshot:
    """This process's snapshot of *trusted* (a Dask worker keeps the latest class's for its
    later tasks, removes an older class's, and removes its own when it exits)."""
    key = trusted.fingerprint()
    with _worker_lock:
        snap = _worker_snapshots.get(key)
        if snap is None:
            for old in _worker_snapshots.values():
                old.remove()
            _worker_snapshots.clear()
            snap = Snapshot.create(trusted)
            _worker_snapshots[key] = snap
            atexit.register(snap.remove)
        return snap


def describe(trusted: TrustedCache, source: Path) -> str:
    """One line for the terminal: what is shared."""
    kinds: dict[str, int] = {}
    for name in trusted.entries:
        kinds[name.split("/", 1)[0]] = kinds.get(name.split("/", 1)[0], 0) + 1
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing"
    extra = f"; {len(trusted.skipped)} not shared" if trusted.skipped else ""
    return (f"shared read-only cache: {listed} ({trusted.n_bytes / 2**20:.1f} MB) from "
            f"{source}{extra}")


def is_read_only(folder: Path) -> bool:
    """Whether nothing under *folder* has a write bit (what a snapshot leaves)."""
    for root, dirs, files in os.walk(folder):
        if os.stat(root).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            return False
        for f in files:
            if os.stat(os.path.join(root, f)).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
                return False
    return True
