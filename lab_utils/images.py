"""Images and probe sets: loading one image (path, URL, bytes), a folder of
them (flat, or ImageNet-style class subfolders), the embedded probe set in
data/, and imagenet-mini through kagglehub.

Every image comes out as RGB uint8 ``(size, size, 3)``: the shorter side is
resized to ``size`` and the centre cropped, as in ImageNet evaluation.
Odd files are converted: grayscale, RGBA/LA and palette (composited on white),
CMYK, 16-bit and float images.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import CLASS_INDEX_PATH, EMBEDDED_PROBE_DIR, LabError, ResourceMissingError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
WNID_RE = re.compile(r"^(n\d{8})(?:_(.+))?$")
IMAGENET_MINI = "ifigotin/imagenetmini-1000/versions/1"  # pinned Kaggle dataset version
# Part of folder_content_key: bump whenever load_image/fit/to_rgb give other pixels for the same file.
DECODE_VERSION = "shorter-side-bicubic-centre-crop-v1"


def _is_url(source) -> bool:
    return isinstance(source, str) and source.split("://", 1)[0].lower() in ("http", "https")


def _read_bytes(source, timeout: float = 20.0) -> bytes:
    if _is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as resp:
                return resp.read()
        except Exception as exc:
            raise ResourceMissingError(f"could not download {source}: {exc}") from None
    path = Path(source).expanduser()
    if not path.is_file():
        raise ResourceMissingError(f"image file not found: {path}")
    return path.read_bytes()


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited on white."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F" and arr.max() <= 1.0:
            hi = 1.0
        arr = np.clip(arr / hi * 255.0, 0, 255).round().astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("P", "L", "RGB") and "transparency" in img.info:  # PNG tRNS / GIF transparent colour
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def fit(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to ``size`` and centre-crop to ``size x size``."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


def load_image(source, size: int = 224) -> np.ndarray:
    """One image as RGB uint8 (size, size, 3) from a path, URL, bytes or PIL image."""
    if isinstance(source, Image.Image):
        img = source
    else:
        data = source if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise LabError(f"not a readable image: {source if not isinstance(source, bytes) else '<bytes>'} ({exc})") from None
    return fit(to_rgb(img), size)


def label_from_name(path: Path, class_folder: bool) -> tuple[str, str | None]:
    """(human label, wnid or None) from ``train/<wnid>/x.JPEG`` or ``<wnid>_<name>.JPEG``."""
    from .models import wnid_to_name

    names = wnid_to_name()
    stem = path.parent.name if class_folder else path.stem
    m = WNID_RE.match(stem)
    if m:
        wnid = m.group(1)
        return names.get(wnid, m.group(2) or wnid), wnid
    return stem, None


@dataclass
class ProbeSet:
    """Decoded images with their labels: the set a filter is probed with.

    ``images``: uint8 (N, size, size, 3); ``labels``: class names; ``wnids``:
    ImageNet ids (None where unknown); ``sources``: where each image came from.
    """

    images: np.ndarray
    labels: list[str]
    wnids: list
    sources: list[str]
    name: str = "probe set"
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def fingerprint(self) -> str:
        """sha256 of the pixels and labels: the cache key of a scan."""
        h = hashlib.sha256(str(self.images.shape).encode())
        h.update(np.ascontiguousarray(self.images).tobytes())
        h.update("\n".join(self.labels).encode())
        return h.hexdigest()[:20]

    def subset(self, indices) -> "ProbeSet":
        idx = list(indices)
        return ProbeSet(self.images[idx], [self.labels[i] for i in idx], [self.wnids[i] for i in idx],
                        [self.sources[i] for i in idx], self.name)


def list_image_files(folder: Path) -> tuple[list[Path], bool]:
    """Image files of a folder, sorted, and whether they sit in class subfolders."""
    flat = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in flat):
        files = sorted(p for d in subdirs for p in d.rglob("*") if p.is_file() and not p.name.startswith("."))
        return files, True
    return flat, False


def _decode_many(sources, size):
    def one(src):
        try:
            return load_image(src, size)
        except (LabError, OSError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(one, sources))


def load_probe_set(source=None, size: int = 224, limit: int | None = None, per_class: int | None = None) -> ProbeSet:
    """Load a probe set from a folder, a list of paths/URLs, or one path/URL.

    ``source=None`` is the embedded set in ``data/probe-224`` (1000 ImageNet
    images, one per class). A folder may be flat (labels from file names
    ``<wnid>_<name>.JPEG``) or hold class subfolders (``train/<wnid>/*.JPEG``).
    ``limit`` keeps the first N images (sorted by path), ``per_class`` the
    first N of each class. Unreadable or non-image files are skipped with one
    warning that counts them; an empty result is an error.

    Folders (and the embedded set) are decoded once per process: a second call
    with the same arguments, while no file of the folder changed (names, sizes,
    mtimes), returns the same read-only ProbeSet, so the five notebooks of a
    render do not each decode 1000 JPEGs.
    """
    signature = _folder_signature(source, size, limit, per_class)
    if signature is not None and signature in _DECODED:
        probe = _DECODED.pop(signature)
        _DECODED[signature] = probe  # most recently used last
        if probe.skipped:
            warnings.warn(f"skipped {len(probe.skipped)} unreadable or non-image file(s) in {probe.name}, "
                          f"e.g. {probe.skipped[0]}", stacklevel=2)
        return _shared_copy(probe)
    probe = _load_probe_set_uncached(source, size, limit, per_class)
    if signature is not None and probe.images.nbytes <= _DECODED_MAX_BYTES:
        probe.images.flags.writeable = False  # shared between callers: nobody may change it in place
        while _DECODED and sum(p.images.nbytes for p in _DECODED.values()) + probe.images.nbytes > _DECODED_MAX_BYTES:
            _DECODED.pop(next(iter(_DECODED)))  # least recently used first
        _DECODED[signature] = probe
        return _shared_copy(probe)
    return probe


# Decoded folders of this process: {signature: ProbeSet}, least recently used first. 1000 images at
# 224 px are 150 MB; a bigger set (imagenet-mini train: ~5 GB) is not kept.
_DECODED: dict = {}
_DECODED_MAX_BYTES = 512 * 2**20


def _shared_copy(probe: ProbeSet) -> ProbeSet:
    """The memoized set for one caller: a read-only view of the pixels, lists of its own."""
    images = probe.images.view()
    images.flags.writeable = False
    return ProbeSet(images, list(probe.labels), list(probe.wnids), list(probe.sources), probe.name,
                    list(probe.skipped))


def local_folder(source) -> Path | None:
    """The folder a probe-set source names (None: the embedded set), or None for URLs,
    lists, single files and paths that do not exist."""
    folder = EMBEDDED_PROBE_DIR if source is None else source
    if isinstance(folder, (list, tuple)) or _is_url(folder):
        return None
    path = Path(folder).expanduser()
    return path if path.is_dir() else None


def _folder_signature(source, size, limit, per_class):
    """A key that changes whenever the folder's files change; None where not memoizable (URLs, lists)."""
    path = local_folder(source)
    if path is None:
        return None
    try:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        stats = tuple((str(p), st.st_size, st.st_mtime_ns) for p in files for st in (p.stat(),))
    except OSError:
        return None
    return (source is None, str(path.resolve()), size, limit, per_class, hashlib.sha256(repr(stats).encode()).hexdigest())


def probe_set_name(source) -> str:
    return "embedded probe set (data/probe-224)" if source is None else str(source)


def folder_content_key(source=None, size: int = 224, limit: int | None = None,
                       per_class: int | None = None) -> str | None:
    """A key for what ``load_probe_set(source, size, limit, per_class)`` decodes, from the
    folder's files without decoding them: sha256 of every file's relative path and bytes,
    the decode settings, Pillow's version and the class index (labels).

    Results computed from the decoded set (a scan) can be cached under it and served
    without decoding 1000 JPEGs (~4 s; hashing the embedded set's 16 MB: ~0.1 s).
    None where ``source`` is not a local folder (URLs, lists, single files).
    """
    import PIL

    path = local_folder(source)
    if path is None:
        return None
    files, class_folder = list_image_files(path)
    h = hashlib.sha256(repr((DECODE_VERSION, PIL.__version__, size, limit, per_class, class_folder)).encode())
    h.update(CLASS_INDEX_PATH.read_bytes() if CLASS_INDEX_PATH.is_file() else b"no class index")
    try:
        for f in files:
            rel = f.relative_to(path).as_posix().encode()
            h.update(len(rel).to_bytes(4, "little") + rel)
            data = f.read_bytes()
            h.update(len(data).to_bytes(8, "little") + data)
    except OSError:
        return None  # unreadable now: let the decoding path report it
    return h.hexdigest()[:24]


def _load_probe_set_uncached(source, size, limit, per_class) -> ProbeSet:
    if size < 32:
        raise LabError(f"image size must be at least 32 pixels, got {size}")
    if limit is not None and limit < 1:
        raise LabError(f"limit must be >= 1 (or None for all), got {limit}")
    if per_class is not None and per_class < 1:
        raise LabError(f"per_class must be >= 1 (or None for all), got {per_class}")
    name = probe_set_name(source)
    source = EMBEDDED_PROBE_DIR if source is None else source
    items: list[tuple[str, str, object]] = []
    if isinstance(source, (list, tuple)):
        for s in source:
            p = Path(s) if not _is_url(s) else None
            label, wnid = label_from_name(p, False) if p else (str(s).rsplit("/", 1)[-1], None)
            items.append((str(s), label, wnid))
    elif _is_url(source):
        items.append((source, str(source).rsplit("/", 1)[-1], None))
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ResourceMissingError(f"probe set not found: {path}")
        if path.is_file():
            label, wnid = label_from_name(path, False)
            items.append((str(path), label, wnid))
        else:
            files, class_folder = list_image_files(path)
            for f in files:
                label, wnid = label_from_name(f, class_folder)
                items.append((str(f), label, wnid))
    # ``limit`` and ``per_class`` count readable images, not files: decode the
    # first candidates in one parallel batch, and only where some fail, go on
    # with the next candidates (a README or a corrupt file never costs a slot).
    todo = list(range(len(items)))
    taken: dict[int, np.ndarray] = {}
    failed: list[int] = []
    per_label: dict[str, int] = {}
    while todo:
        batch, planned = [], dict(per_label)
        for i in todo:
            if limit is not None and len(taken) + len(batch) >= limit:
                break
            if per_class is not None and planned.get(items[i][1], 0) >= per_class:
                continue
            planned[items[i][1]] = planned.get(items[i][1], 0) + 1
            batch.append(i)
        if not batch:
            break
        for i, img in zip(batch, _decode_many([items[i][0] for i in batch], size)):
            if img is None:
                failed.append(i)
            else:
                taken[i] = img
                per_label[items[i][1]] = per_label.get(items[i][1], 0) + 1
        done = set(batch)
        todo = [i for i in todo if i not in done]
    good = [(items[i], taken[i]) for i in sorted(taken)]
    skipped = [items[i][0] for i in sorted(failed)]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable or non-image file(s) in {name}, e.g. {skipped[0]}",
                      stacklevel=2)
    if not good:
        raise LabError(f"the probe set {name} holds no readable image; give a folder of .jpg/.png images")
    images = np.stack([img for _, img in good])
    return ProbeSet(images, [it[1] for it, _ in good], [it[2] for it, _ in good],
                    [it[0] for it, _ in good], name, skipped)


def load_imagenet_mini(split: str = "val", size: int = 224, limit: int | None = None,
                       per_class: int | None = None) -> ProbeSet:
    """imagenet-mini (Kaggle ``ifigotin/imagenetmini-1000``, pinned version) via kagglehub.

    Needs network access and Kaggle's terms accepted once; offline it raises
    ``ResourceMissingError`` that points to the embedded probe set instead.
    """
    if split not in ("train", "val"):
        raise LabError(f"split must be 'train' or 'val', got {split!r}")
    try:
        import kagglehub

        root = Path(kagglehub.dataset_download(IMAGENET_MINI))
    except Exception as exc:
        raise ResourceMissingError(
            f"could not get imagenet-mini from Kaggle ({IMAGENET_MINI}): {type(exc).__name__}: "
            f"{str(exc)[:200]}. Offline? Use the embedded probe set (probe_set=None) or a local folder."
        ) from None
    candidates = [root / "imagenet-mini" / split, root / split]
    for folder in candidates:
        if folder.is_dir():
            return load_probe_set(folder, size=size, limit=limit, per_class=per_class)
    raise ResourceMissingError(f"imagenet-mini download at {root} has no {split}/ folder")


# Shipped images that step 1 classifies (files of the embedded probe set).
DEMO_IMAGES = ("n01440764_tench", "n02123045_tabby", "n03452741_grand_piano", "n07747607_orange")


def demo_images(size: int = 224) -> ProbeSet:
    """A few shipped images with obvious classes, for the classification demo of step 1."""
    return load_probe_set([str(EMBEDDED_PROBE_DIR / f"{stem}.jpg") for stem in DEMO_IMAGES], size=size)
