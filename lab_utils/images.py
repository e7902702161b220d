"""Images and probe sets: loading one image (path, URL, bytes), a folder of
them (flat, or ImageNet-style class subfolders), the embedded probe set in
data/, and imagenet-mini through kagglehub.

Every image comes out as RGB uint8 ``(size, size, 3)``: the shorter side is
resized to ``size`` and the centre cropped, as in ImageNet evaluation.
Odd files are converted: grayscale, RGBA/LA and palette (composited on white),
CMYK, 16-bit and float images.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import urllib.request
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from PIL.Image import DecompressionBombError

from .config import (  # noqa: F401  (display_name: part of this module's API)
    CLASS_INDEX_PATH, EMBEDDED_PROBE_DIR, LabError, ResourceMissingError, display_name, is_url)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
WNID_RE = re.compile(r"^(n\d{8})(?:_(.+))?$")
IMAGENET_MINI = "ifigotin/imagenetmini-1000/versions/1"  # pinned Kaggle dataset version
# Part of folder_content_key: bump whenever load_image/fit/to_rgb give other pixels for the same file.
DECODE_VERSION = "shorter-side-bicubic-centre-crop-v1"
# Part of folder_content_key too: bump whenever label_from_name/display_name give other labels for
# the same file names (a cached folder scan stores its labels).
LABEL_VERSION = "display-name-v1"

# Why an entry of a probe folder is not in the set (ProbeSet.skip_reasons, the "skipped" warning).
UNREADABLE = "unreadable or non-image file"
TOO_LARGE = "image over Pillow's pixel limit"
MISSING = "missing file or URL"
LINK_OUTSIDE = "link to outside the folder"
LINK_LOOP = "symlink loop"
LINK_BROKEN = "broken link"
FOLDER_UNREADABLE = "unreadable folder"
_PLURALS = {UNREADABLE: "unreadable or non-image files", TOO_LARGE: "images over Pillow's pixel limit",
            MISSING: "missing files or URLs", LINK_OUTSIDE: "links to outside the folder",
            LINK_LOOP: "symlink loops", LINK_BROKEN: "broken links", FOLDER_UNREADABLE: "unreadable folders"}


class ImageTooLargeError(LabError):
    """An image over Pillow's decompression-bomb pixel limit (``load_image`` names file and size)."""


def _read_bytes(source, timeout: float = 20.0) -> bytes:
    if is_url(source):
        try:
            with urllib.request.urlopen(source, timeout=timeout) as resp:
                return resp.read()
        except Exception as exc:
            raise ResourceMissingError(f"could not download {source}: {exc}") from None
    path = Path(source).expanduser()
    if not path.is_file():
        raise ResourceMissingError(f"image file not found: {display_name(path)}")
    try:
        return path.read_bytes()
    except OSError as exc:  # permission denied, a file that vanished: name it, in one line
        raise LabError(f"could not read {display_name(path)}: {exc.strerror or type(exc).__name__}") from None


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


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from an image's header, without Pillow's pixel-count check; None if
    no format reads it. Only for the message about an image over the limit: the check sits
    in ``Image.open``, so this asks the format plugins directly, as ``Image.open`` does."""
    Image.init()
    prefix = data[:16]
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        try:
            ok = not accept or accept(prefix)
            if ok and not isinstance(ok, str):
                with factory(io.BytesIO(data), "") as im:
                    return im.size
        except Exception:  # noqa: BLE001, S112 - not this format (plugins raise anything): try the next
            continue
    return None


def _too_large_message(name: str, data: bytes, exc: Exception) -> str:
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    limit = int(found.group(2)) if found else 2 * (Image.MAX_IMAGE_PIXELS or 0)
    wh = _header_size(data)
    if wh is not None:
        size = f"{wh[0]}x{wh[1]} = {wh[0] * wh[1]:,} pixels"
    else:
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return (f"image too large to decode: {name} is {size}, over Pillow's limit of {limit:,} pixels "
            "(a guard against 'decompression bombs'); resize it (e.g. to 1024 pixels on the long side) "
            "or remove it")


def load_image(source, size: int = 224) -> np.ndarray:
    """One image as RGB uint8 (size, size, 3) from a path, URL, bytes or PIL image.

    Raises ``LabError`` (one line, naming the source) for a file that is not a readable
    image, and ``ImageTooLargeError`` (a LabError) for one over Pillow's decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS`` x 2, about 179 million pixels), which is refused
    before its pixels are decoded.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        data = source if isinstance(source, (bytes, bytearray)) else _read_bytes(source)
        name = "<bytes>" if isinstance(source, (bytes, bytearray)) else display_name(str(source))
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except DecompressionBombError as exc:  # not an OSError: would escape every caller's except
            raise ImageTooLargeError(_too_large_message(name, data, exc)) from None
        except Exception as exc:  # noqa: BLE001 - a hostile file makes plugins raise anything (EOFError, ...)
            raise LabError(f"not a readable image: {name} ({display_name(str(exc)) or type(exc).__name__})") from None
    return fit(to_rgb(img), size)


def label_from_name(path: Path, class_folder: bool) -> tuple[str, str | None]:
    """(human label, wnid or None) from ``train/<wnid>/x.JPEG`` or ``<wnid>_<name>.JPEG``.

    A label taken from the name is ``display_name`` text: printable, safe in a UTF-8 notebook.
    """
    from .imagenet import wnid_to_name  # no TensorFlow: labelling a folder must not load it

    names = wnid_to_name()
    stem = path.parent.name if class_folder else path.stem
    m = WNID_RE.fullmatch(stem)  # fullmatch: "$" alone would accept a trailing newline
    if m:
        wnid = m.group(1)
        return names.get(wnid, display_name(m.group(2)) if m.group(2) else wnid), wnid
    return display_name(stem), None


@dataclass
class ProbeSet:
    """Decoded images with their labels: the set a filter is probed with.

    ``images``: uint8 (N, size, size, 3); ``labels``: class names; ``wnids``:
    ImageNet ids (None where unknown); ``sources``: where each image came from (paths
    as the file system gives them: open files by these, show them with ``display_name``).
    ``skipped``: sources left out (unreadable or non-image files, images over Pillow's
    pixel limit, links not followed), with ``skip_reasons[i]`` saying why (``UNREADABLE``,
    ``TOO_LARGE``, ``LINK_OUTSIDE``, ``LINK_LOOP``, ...).
    """

    images: np.ndarray
    labels: list[str]
    wnids: list
    sources: list[str]
    name: str = "probe set"
    skipped: list[str] = field(default_factory=list)
    skip_reasons: list[str] = field(default_factory=list)

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


@dataclass
class FolderListing:
    """What ``list_image_files`` found in a probe folder.

    ``files``: the candidate files, sorted, as paths under the folder as given (a link kept
    inside the folder keeps its own name: the label comes from it); ``class_folder``: whether
    they sit in class subfolders; ``skipped``: (path, reason) of every link not followed
    (``LINK_OUTSIDE``, ``LINK_LOOP``, ``LINK_BROKEN``) and every sub-folder that could not
    be read (``FOLDER_UNREADABLE``), in the order found.
    """

    files: list[Path]
    class_folder: bool
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def image_files(self) -> list[Path]:
        """The files with an image extension (``IMAGE_EXTENSIONS``, any case)."""
        return [f for f in self.files if f.suffix.lower() in IMAGE_EXTENSIONS]


def _link_problem(link: str, root: Path, chain: tuple) -> str | None:
    """Why the symlink ``link`` in a probe folder is not followed, or None where its target
    stays inside ``root`` (the folder, resolved). ``chain``: the resolved folders from
    ``root`` down to the link's folder; a link back to one of them would list them forever."""
    try:
        os.stat(link)  # follows the whole chain of links
    except OSError as exc:
        return LINK_LOOP if exc.errno == errno.ELOOP else LINK_BROKEN
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(root):
        return LINK_OUTSIDE
    if target in chain:
        return LINK_LOOP
    return None


def _list_dir(d: Path, root: Path, chain: tuple, skipped: list) -> tuple[list[Path], list[Path]]:
    """(files, folders) directly in ``d``, sorted by name, hidden names left out. A symlink
    is kept only where ``_link_problem`` finds none; the others go to ``skipped`` as
    (path, reason). Raises OSError where ``d`` itself cannot be listed."""
    files, dirs = [], []
    with os.scandir(d) as it:  # scandir: the entry type comes with the listing, no stat per file
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        if e.name.startswith("."):
            continue
        path = d / e.name
        try:
            if e.is_symlink():
                problem = _link_problem(e.path, root, chain)
                if problem is not None:
                    skipped.append((path, problem))
                    continue
            if e.is_file():
                files.append(path)
            elif e.is_dir():
                dirs.append(path)
        except OSError:  # removed while listed: as if it had not been there
            continue
    return files, dirs


def list_image_files(folder: Path) -> FolderListing:
    """The candidate files of a probe folder: the one place that lists a folder's files
    (``load_probe_set``, ``folder_content_key`` and ``check_probe_folder`` use it).

    Flat folder: its files. Class subfolders (sub-folders and no image file at the top):
    every file below them. Names starting with "." are left out (hidden files and folders).
    Symlinks are followed only where the target, fully resolved, stays inside the folder:
    a link out of it (to a home folder, /etc), a broken link and a link loop are never
    followed, and each is reported in ``FolderListing.skipped``. Non-image files are listed
    too: the decoder skips and counts them.
    """
    folder = Path(folder)
    root = Path(os.path.realpath(folder))
    skipped: list[tuple[Path, str]] = []
    try:
        flat, subdirs = _list_dir(folder, root, (root,), skipped)
    except OSError as exc:
        raise LabError(f"cannot read the probe folder {display_name(folder)}: "
                       f"{exc.strerror or type(exc).__name__}") from None
    if not subdirs or any(p.suffix.lower() in IMAGE_EXTENSIONS for p in flat):
        return FolderListing(flat, False, skipped)
    files: list[Path] = []
    # Depth first, in name order. ``chain``: the resolved folders above; a followed link never
    # leads back into one of them (LINK_LOOP), so every path down meets a new folder and ends.
    todo = [(d, (root, Path(os.path.realpath(d)))) for d in reversed(subdirs)]
    while todo:
        d, chain = todo.pop()
        try:
            below, sub = _list_dir(d, root, chain, skipped)
        except OSError:
            skipped.append((d, FOLDER_UNREADABLE))
            continue
        files.extend(below)
        todo.extend((s, chain + (Path(os.path.realpath(s)),)) for s in reversed(sub))
    return FolderListing(sorted(files), True, skipped)


def check_probe_folder(source) -> None:
    """Fail fast when a local probe folder holds no candidate image file: a one-line
    ``LabError`` naming the folder and the fix, before any model is loaded or image decoded.

    Candidates are what ``list_image_files`` lists (symlink rules included) with an image
    extension (``IMAGE_EXTENSIONS``, any case); files are not opened, so a folder of broken
    JPEGs passes here and fails in ``load_probe_set``. Sources that are not a local folder
    (None for the embedded set, URLs, lists, single files, paths that do not exist) are
    left to the other checks. Cost: one directory listing (~1 ms per 1000 files).
    """
    folder = local_folder(source)
    if folder is None:
        return
    listing = list_image_files(folder)
    if listing.image_files:
        return
    name = probe_set_name(None) if source is None else display_name(folder)  # "~" expanded: the real place
    extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
    note = f" ({_count_reasons(r for _, r in listing.skipped)} skipped)" if listing.skipped else ""
    raise LabError(f"the probe folder {name} holds no image file ({extensions}){note}; put images in it "
                   "(flat, or one sub-folder per class) or use probe_set=None for the embedded set")


def _counted(reason: str, n: int) -> str:
    """'1 broken link', '2 broken links'."""
    return f"{n} {reason if n == 1 else _PLURALS.get(reason, reason + '(s)')}"


def _count_reasons(reasons) -> str:
    """'2 broken links, 1 symlink loop' from reasons, in order of first appearance."""
    return ", ".join(_counted(r, n) for r, n in Counter(reasons).items())  # first appearance first


def _skipped_warning(name: str, skipped: list[str], reasons: list[str], folder: Path | None) -> str:
    """The one warning about the entries a probe set left out: how many, by reason, with
    one example of each (its path relative to ``folder`` where it sits in it)."""
    def short(src):
        try:
            return display_name(Path(src).relative_to(folder).as_posix()) if folder else display_name(src)
        except ValueError:
            return display_name(src)

    first: dict[str, str] = {}
    for src, reason in zip(skipped, reasons):
        first.setdefault(reason, src)
    groups = "; ".join(f"{_counted(r, n)}, e.g. {short(first[r])}" for r, n in Counter(reasons).items())
    return f"skipped {len(skipped)} entr{'ies' if len(skipped) > 1 else 'y'} in {name}: {groups}"


def _decode_many(sources, size) -> list:
    """Each source decoded (``load_image``), or where it fails, the reason (a str) why."""
    def one(src):
        try:
            return load_image(src, size)
        except ImageTooLargeError:
            return TOO_LARGE
        except ResourceMissingError:
            return MISSING
        except (LabError, OSError, ValueError):
            return UNREADABLE

    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        return list(pool.map(one, sources))


def load_probe_set(source=None, size: int = 224, limit: int | None = None, per_class: int | None = None) -> ProbeSet:
    """Load a probe set from a folder, a list of paths/URLs, or one path/URL.

    ``source=None`` is the embedded set in ``data/probe-224`` (1000 ImageNet
    images, one per class). A folder may be flat (labels from file names
    ``<wnid>_<name>.JPEG``) or hold class subfolders (``train/<wnid>/*.JPEG``).
    ``limit`` keeps the first N images (sorted by path), ``per_class`` the
    first N of each class. Unreadable or non-image files, images over Pillow's
    pixel limit and symlinks that leave the folder (or loop, or are broken; see
    ``list_image_files``) are skipped with one warning that counts them by reason
    (``ProbeSet.skipped``, ``skip_reasons``); an empty result is an error.

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
            warnings.warn(_skipped_warning(probe.name, probe.skipped, probe.skip_reasons, local_folder(source)),
                          stacklevel=2)
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
                    list(probe.skipped), list(probe.skip_reasons))


def local_folder(source) -> Path | None:
    """The folder a probe-set source names (None: the embedded set), or None for URLs,
    lists, single files and paths that do not exist."""
    folder = EMBEDDED_PROBE_DIR if source is None else source
    if isinstance(folder, (list, tuple)) or is_url(folder):
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
    """The probe set's name for people (ProbeSet.name, messages): printable ``display_name`` text."""
    return "embedded probe set (data/probe-224)" if source is None else display_name(str(source))


def folder_content_key(source=None, size: int = 224, limit: int | None = None,
                       per_class: int | None = None) -> str | None:
    """A key for what ``load_probe_set(source, size, limit, per_class)`` decodes, from the
    folder's files without decoding them: sha256 of every file's relative path (its bytes
    on disk, so any name works) and contents, the decode and label settings, Pillow's
    version and the class index (labels). The files are those ``list_image_files`` lists:
    links out of the folder are never read.

    Results computed from the decoded set (a scan) can be cached under it and served
    without decoding 1000 JPEGs (~4 s; hashing the embedded set's 16 MB: ~0.1 s).
    None where ``source`` is not a local folder (URLs, lists, single files).
    """
    import PIL

    path = local_folder(source)
    if path is None:
        return None
    listing = list_image_files(path)
    h = hashlib.sha256(repr((DECODE_VERSION, LABEL_VERSION, PIL.__version__, size, limit, per_class,
                             listing.class_folder)).encode())
    h.update(CLASS_INDEX_PATH.read_bytes() if CLASS_INDEX_PATH.is_file() else b"no class index")
    try:
        for f in listing.files:
            # the name's bytes as on disk: a str with surrogate escapes (non-UTF-8 name) cannot .encode()
            rel = os.fsencode(f.relative_to(path).as_posix())
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
    listing = None  # the folder's listing, where source is a folder
    if isinstance(source, (list, tuple)):
        for s in source:
            p = Path(s) if not is_url(s) else None
            label, wnid = label_from_name(p, False) if p else (display_name(str(s).rsplit("/", 1)[-1]), None)
            items.append((str(s), label, wnid))
    elif is_url(source):
        items.append((source, display_name(str(source).rsplit("/", 1)[-1]), None))
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise ResourceMissingError(f"probe set not found: {display_name(path)}")
        if path.is_file():
            label, wnid = label_from_name(path, False)
            items.append((str(path), label, wnid))
        else:
            listing = list_image_files(path)
            for f in listing.files:
                label, wnid = label_from_name(f, listing.class_folder)
                items.append((str(f), label, wnid))
    # ``limit`` and ``per_class`` count readable images, not files: decode the
    # first candidates in one parallel batch, and only where some fail, go on
    # with the next candidates (a README or a corrupt file never costs a slot).
    todo = list(range(len(items)))
    taken: dict[int, np.ndarray] = {}
    failed: dict[int, str] = {}  # index: reason
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
            if isinstance(img, str):
                failed[i] = img
            else:
                taken[i] = img
                per_label[items[i][1]] = per_label.get(items[i][1], 0) + 1
        done = set(batch)
        todo = [i for i in todo if i not in done]
    good = [(items[i], taken[i]) for i in sorted(taken)]
    # links not followed and files that failed, in path order: one list, one warning
    skips = sorted([(str(p), reason) for p, reason in (listing.skipped if listing is not None else [])]
                   + [(items[i][0], reason) for i, reason in failed.items()])
    skipped, reasons = [s for s, _ in skips], [r for _, r in skips]
    if skipped:
        folder = Path(source).expanduser() if listing is not None else None
        warnings.warn(_skipped_warning(name, skipped, reasons, folder), stacklevel=2)
    if not good:
        note = f" (skipped {len(skipped)}: {_count_reasons(reasons)})" if skipped else ""
        raise LabError(f"the probe set {name} holds no readable image{note}; give a folder of .jpg/.png images")
    images = np.stack([img for _, img in good])
    return ProbeSet(images, [it[1] for it, _ in good], [it[2] for it, _ in good],
                    [it[0] for it, _ in good], name, skipped, reasons)


IMAGENET_MINI_SPLITS = {"train": ("train",), "val": ("val",), "train+val": ("train", "val")}


def load_imagenet_mini(split: str = "train+val", size: int = 224, limit: int | None = None,
                       per_class: int | None = None) -> ProbeSet:
    """imagenet-mini (Kaggle ``ifigotin/imagenetmini-1000``, pinned version) via kagglehub.

    ``split``: "train+val" (both, train first: about 39 images per class, what the seeds
    ranked classes over), "train" or "val". ``per_class`` keeps the first N images of each
    class over the splits together, ``limit`` the first N after that. Needs network access
    and Kaggle's terms accepted once; offline it raises ``ResourceMissingError`` that points
    to the embedded probe set instead.
    """
    if split not in IMAGENET_MINI_SPLITS:
        raise LabError(f"split must be 'train' or 'val' (or 'train+val'), got {split!r}")
    try:
        import kagglehub

        root = Path(kagglehub.dataset_download(IMAGENET_MINI))
    except Exception as exc:
        raise ResourceMissingError(
            f"could not get imagenet-mini from Kaggle ({IMAGENET_MINI}): {type(exc).__name__}: "
            f"{str(exc)[:200]}. Offline? Use the embedded probe set (probe_set=None) or a local folder."
        ) from None
    parts = []
    for name in IMAGENET_MINI_SPLITS[split]:
        folder = next((f for f in (root / "imagenet-mini" / name, root / name) if f.is_dir()), None)
        if folder is None:
            raise ResourceMissingError(f"imagenet-mini download at {root} has no {name}/ folder")
        if parts and _quota_filled(parts[0], limit, per_class):
            break  # train already holds every image asked for: val would be decoded to be thrown away
        parts.append(load_probe_set(folder, size=size, limit=limit, per_class=per_class))
    return parts[0] if len(parts) == 1 else merge_probe_sets(parts, f"imagenet-mini {split}", limit, per_class)


def _quota_filled(part: ProbeSet, limit: int | None, per_class: int | None) -> bool:
    """Whether *part* alone reaches ``limit`` images, or ``per_class`` images in each of the
    1000 classes (then a second split adds nothing)."""
    if limit is not None and len(part) >= limit:
        return True
    if per_class is None:
        return False
    counts = Counter(part.labels)
    return len(counts) >= 1000 and min(counts.values()) >= per_class


def merge_probe_sets(parts: list, name: str, limit: int | None = None, per_class: int | None = None) -> ProbeSet:
    """One ProbeSet of *parts* in order, keeping the first ``per_class`` images of each label
    over all parts, then the first ``limit``."""
    keep, seen = [], Counter()
    for p, part in enumerate(parts):
        for i, label in enumerate(part.labels):
            if per_class is None or seen[label] < per_class:
                seen[label] += 1
                keep.append((p, i))
    keep = keep[:limit] if limit is not None else keep
    pick = lambda attr: [getattr(parts[p], attr)[i] for p, i in keep]  # noqa: E731
    images = np.stack([parts[p].images[i] for p, i in keep])
    return ProbeSet(images, pick("labels"), pick("wnids"), pick("sources"), name,
                    [s for part in parts for s in part.skipped], [r for part in parts for r in part.skip_reasons])


# Shipped images that step 1 classifies (files of the embedded probe set).
DEMO_IMAGES = ("n01440764_tench", "n02123045_tabby", "n03452741_grand_piano", "n07747607_orange")


def demo_images(size: int = 224) -> ProbeSet:
    """A few shipped images with obvious classes, for the classification demo of step 1."""
    return load_probe_set([str(EMBEDDED_PROBE_DIR / f"{stem}.jpg") for stem in DEMO_IMAGES], size=size)
