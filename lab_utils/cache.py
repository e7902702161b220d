"""A small on-disk cache of numpy results, keyed by what they were computed from.

Files are written atomically (temp file + rename), so an interrupted run never
leaves a half-written entry that a later run would trust.

Two layers. ``LAB_CACHE_DIR`` is this process's own cache: read first, and the
only one written. ``LAB_SHARED_CACHE_DIR`` with ``LAB_SHARED_CACHE_MANIFEST``
(set by the grader for an executed hand-in, ``submissions.shared_cache``) is a
trusted read-only layer: an entry there is used only when its bytes hash to the
SHA-256 the manifest lists for it (the manifest is the grader's, copied into the
hand-in's own folder), and it is parsed from the very bytes that were hashed. A
file changed, replaced or added by anyone else is therefore never read; what
is missing or refused is computed and saved in the private layer as usual.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

from .config import cache_dir

CACHE_VERSION = "1"
SHARED_DIR_ENV = "LAB_SHARED_CACHE_DIR"
SHARED_MANIFEST_ENV = "LAB_SHARED_CACHE_MANIFEST"
MANIFEST_FORMAT = 1
MAX_ENTRY_BYTES = 2**31  # a shared entry larger than this is not read


def cache_key(**parts) -> str:
    """A short stable hash of the key parts (str/int/float/tuple values)."""
    blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(kind: str, key: str) -> Path:
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.npz"


def entry_name(kind: str, key: str) -> str:
    """An entry's path relative to a cache folder (``<kind>/<key>.npz``): the manifest's key."""
    return f"{kind}/{key}.npz"


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def arrays_from_bytes(data: bytes) -> dict:
    """The arrays of an ``.npz`` file's bytes (no pickles); raises for anything else."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def read_regular(path: Path, limit: int = MAX_ENTRY_BYTES) -> bytes | None:
    """The bytes of *path* if it is a regular file (never through a symbolic link), else None."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode) or os.fstat(fd).st_size > limit:
            return None
        return fh.read(limit + 1)


def shared_layer() -> tuple[Path, dict[str, str]] | None:
    """(folder, {entry name: sha256}) of the trusted shared layer, or None when none is set
    or its manifest cannot be read (then nothing is shared: safe, only slower)."""
    folder, manifest = os.environ.get(SHARED_DIR_ENV), os.environ.get(SHARED_MANIFEST_ENV)
    if not folder or not manifest:
        return None
    key = (folder, manifest)
    if _shared_memo.get("key") != key:
        try:
            raw = json.loads(Path(manifest).read_text(encoding="utf-8"))
            entries = raw["entries"] if raw.get("format") == MANIFEST_FORMAT else {}
            hashes = {str(k): str(v) for k, v in entries.items()}
        except (OSError, ValueError, KeyError, AttributeError, TypeError):
            hashes = {}
        _shared_memo.update(key=key, layer=(Path(folder), hashes))
    return _shared_memo["layer"]


_shared_memo: dict = {}


def load_shared(kind: str, key: str) -> dict | None:
    """The entry from the trusted shared layer, if its bytes match the manifest's hash."""
    layer = shared_layer()
    if layer is None:
        return None
    folder, hashes = layer
    name = entry_name(kind, key)
    want = hashes.get(name)
    if want is None:
        return None
    data = read_regular(folder / name)
    if data is None or digest(data) != want:
        return None  # changed since the grader hashed it: never trusted
    try:
        return arrays_from_bytes(data)
    except Exception:  # noqa: BLE001 - cannot happen for a hashed entry; recompute if it does
        return None


def load(kind: str, key: str) -> dict | None:
    """The cached arrays for (*kind*, *key*): this process's own cache first, then the
    trusted shared layer (``load_shared``); None when neither has a usable entry."""
    path = cache_path(kind, key)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a corrupt entry is recomputed, never trusted
            pass
    return load_shared(kind, key)


def save(kind: str, key: str, **arrays) -> Path:
    path = cache_path(kind, key)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
