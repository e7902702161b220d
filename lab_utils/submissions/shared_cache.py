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
first, and always for root) changes nothing anyone else reads; before each hand-in runs
the grader puts the snapshot back as it was (``Snapshot.repair``), so the next hand-in
still finds every entry. The instructor's own cache is never shown to a hand-in; at the
end the grader checks it against the hashes it took and puts back any entry that changed
(``TrustedCache.restore_into``).

On a Dask cluster (``--scheduler``) the ``TrustedCache`` travels to each worker once and
each worker writes its own snapshot (``worker_snapshot``).
"""
from __future__ import annotations

import atexit
import json
import os
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..cache import (MANIFEST_FORMAT, SHARED_DIR_ENV, SHARED_MANIFEST_ENV, arrays_from_bytes, digest,
                     read_regular)

SHARED_LIMIT_BYTES = 4 * 2**30  # entries beyond this total are not shared (recomputed per hand-in)
MANIFEST_FILE = "shared-cache.json"  # in an executed hand-in's workroot


@dataclass
class TrustedCache:
    """The instructor's cache entries as the grader read them: entry name
    (``<kind>/<key>.npz``) -> bytes, and their SHA-256 hashes."""

    entries: dict[str, bytes] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # entries not shared, with why

    @classmethod
    def from_folder(cls, source: Path, limit_bytes: int = SHARED_LIMIT_BYTES) -> "TrustedCache":
        """Every ``<kind>/<key>.npz`` regular file of *source* that parses as arrays (no
        symbolic links, no pickles), in name order, up to *limit_bytes* in all."""
        trusted = cls()
        total = 0
        try:
            kinds = sorted(p for p in source.iterdir() if p.is_dir() and not p.is_symlink()
                           and not p.name.startswith("."))
        except OSError:
            return trusted
        for kind in kinds:
            for path in sorted(kind.glob("*.npz")):
                name = f"{kind.name}/{path.name}"
                data = read_regular(path)
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
        memo = self.__dict__.get("_hashes")
        if memo is None or len(memo) != len(self.entries):
            memo = {name: digest(data) for name, data in self.entries.items()}
            self.__dict__["_hashes"] = memo
        return memo

    def manifest_text(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, "entries": self.hashes()}, sort_keys=True)

    def fingerprint(self) -> str:
        return digest(self.manifest_text().encode())[:16]

    def restore_into(self, source: Path) -> list[str]:
        """Put back every entry of *source* (the instructor's cache) whose bytes no longer
        match what was read at the start; the names put back. Entries added since are left."""
        restored = []
        for name, data in self.entries.items():
            path = source / name
            now = read_regular(path)
            if now is not None and digest(now) == self.hashes()[name]:
                continue
            _write_entry(path, data, mode=0o644)
            restored.append(name)
        return restored

    def __getstate__(self):  # the hash memo is recomputed where it is needed
        return {"entries": self.entries, "skipped": self.skipped}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _write_entry(path: Path, data: bytes, mode: int) -> None:
    """Write *data* to *path* atomically, whatever the modes left there (a read-only
    folder, a file or folder swapped in under the name)."""
    parent = path.parent
    if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
        _remove(parent)
    parent.mkdir(parents=True, exist_ok=True)
    os.chmod(parent, 0o755)
    if path.is_symlink() or path.is_dir():
        _remove(path)
    fd, tmp = tempfile.mkstemp(dir=parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        from .processes import rmtree_hard

        rmtree_hard(path)
    else:
        try:
            path.unlink()
        except OSError:
            pass


class Snapshot:
    """A read-only copy of a ``TrustedCache`` in *folder*, shown to executed hand-ins."""

    def __init__(self, trusted: TrustedCache, folder: Path):
        self.trusted = trusted
        self.folder = folder
        self._lock = threading.Lock()
        self.repair()
        self.repairs = 0  # entries put back since the snapshot was written (tampering seen)

    @classmethod
    def create(cls, trusted: TrustedCache, parent: str | None = None) -> "Snapshot":
        return cls(trusted, Path(tempfile.mkdtemp(prefix="lab-shared-cache-", dir=parent)))

    def repair(self) -> list[str]:
        """Make the folder hold exactly the trusted entries again (read-only): entries changed
        or removed are written back, anything else there is removed. Names of entries put back."""
        with self._lock:
            os.chmod(self.folder, 0o755)
            hashes = self.trusted.hashes()
            fixed = []
            for name, data in self.trusted.entries.items():
                now = read_regular(self.folder / name)
                if now is None or digest(now) != hashes[name]:
                    _write_entry(self.folder / name, data, mode=0o444)
                    fixed.append(name)
            wanted_dirs = {n.split("/", 1)[0] for n in self.trusted.entries}
            for entry in list(os.scandir(self.folder)):
                path = Path(entry.path)
                if entry.name not in wanted_dirs or entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
                    _remove(path)
                    continue
                os.chmod(path, 0o755)
                for inner in list(os.scandir(path)):
                    if f"{entry.name}/{inner.name}" not in self.trusted.entries:
                        _remove(Path(inner.path))
                os.chmod(path, 0o555)
            os.chmod(self.folder, 0o555)
            self.repairs = getattr(self, "repairs", 0) + len(fixed)
            return fixed

    def kernel_vars(self, workroot: Path) -> dict:
        """The environment an executed hand-in reads the layer with; writes its own copy of
        the manifest into *workroot* (changing it changes only that hand-in's reads)."""
        manifest = workroot / MANIFEST_FILE
        manifest.write_text(self.trusted.manifest_text(), encoding="utf-8")
        return {SHARED_DIR_ENV: str(self.folder), SHARED_MANIFEST_ENV: str(manifest)}

    def remove(self) -> None:
        from .processes import rmtree_hard

        rmtree_hard(self.folder)


_worker_snapshots: dict[str, Snapshot] = {}
_worker_lock = threading.Lock()


def worker_snapshot(trusted: TrustedCache) -> Snapshot:
    """This process's snapshot of *trusted* (a Dask worker writes one per class, kept for its
    later tasks and removed when the worker exits)."""
    key = trusted.fingerprint()
    with _worker_lock:
        snap = _worker_snapshots.get(key)
        if snap is None or not snap.folder.is_dir():
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

