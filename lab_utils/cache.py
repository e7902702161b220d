"""A small on-disk cache of numpy results, keyed by what they were computed from.

Files are written atomically (temp file + rename), so an interrupted run never
leaves a half-written entry that a later run would trust.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .config import cache_dir

CACHE_VERSION = "1"


def cache_key(**parts) -> str:
    """A short stable hash of the key parts (str/int/float/tuple values)."""
    blob = json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def cache_path(kind: str, key: str) -> Path:
    folder = cache_dir() / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.npz"


def load(kind: str, key: str) -> dict | None:
    path = cache_path(kind, key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except Exception:  # a corrupt entry is recomputed, never trusted
        return None


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
