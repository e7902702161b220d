"""The ImageNet class index and its labels, without TensorFlow.

``data/imagenet_class_index.json`` is Keras' class index: class id (0-based, the
order of the classifier's 1000 outputs) -> (WordNet id, short name). Labelling a
folder of ``<wnid>_<name>.JPEG`` files needs only this, so it must not pay for a
TensorFlow import (``images.label_from_name``).
"""
from __future__ import annotations

import json
from functools import lru_cache

from .config import CLASS_INDEX_PATH, DATA_DIR, ResourceMissingError

GROUPS_PATH = DATA_DIR / "imagenet_groups.json"


@lru_cache(maxsize=1)
def class_index() -> dict[int, tuple[str, str]]:
    """ImageNet class index shipped in data/: {0: ("n01440764", "tench"), ...}."""
    if not CLASS_INDEX_PATH.is_file():
        raise ResourceMissingError(f"class index missing: {CLASS_INDEX_PATH}")
    raw = json.loads(CLASS_INDEX_PATH.read_text())
    return {int(k): (v[0], v[1]) for k, v in raw.items()}


@lru_cache(maxsize=1)
def wnid_to_name() -> dict[str, str]:
    """WordNet id -> short class name ("n01440764" -> "tench"), for the 1000 classes."""
    return {wnid: name for wnid, name in class_index().values()}


@lru_cache(maxsize=1)
def class_groups() -> dict[str, str | None]:
    """WordNet id -> coarse ImageNet group ("n01530575" -> "bird"), or None for a class in no
    group of at least 5 classes. Shipped in ``data/imagenet_groups.json``, made from WordNet
    3.0 by ``scripts/make_imagenet_groups.py`` (its rule is in the file)."""
    if not GROUPS_PATH.is_file():
        raise ResourceMissingError(f"ImageNet groups missing: {GROUPS_PATH} (scripts/make_imagenet_groups.py "
                                   f"makes it from WordNet 3.0)")
    raw = json.loads(GROUPS_PATH.read_text())
    return {wnid: entry["group"] for wnid, entry in raw["classes"].items()}
