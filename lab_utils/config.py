"""Where the kit finds things (data, weights, cache) and how it reports errors.

Every location can be overridden by an environment variable, so that tests,
CI and instructors can point the kit elsewhere without editing code:

- ``LAB_WEIGHTS_DIR``: folder holding ``<model>_imagenet_notop.h5`` files
  (default: ``<kit>/weights`` if it exists, else ``<kit>/../shared/weights``).
- ``LAB_CACHE_DIR``: on-disk cache of scans and visualizations
  (default: ``<kit>/.lab_cache``).
- ``LAB_PROGRESS``: ``0`` hides progress bars (used for stored notebook outputs).
- ``TF_ENABLE_ONEDNN_OPTS``: the kit sets it to ``1`` unless already set
  (faster convolutions on CPUs without AVX512; see bench/RESULTS.md).
"""
from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

KIT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = KIT_ROOT / "data"
CLASS_INDEX_PATH = DATA_DIR / "imagenet_class_index.json"
EMBEDDED_PROBE_DIR = DATA_DIR / "probe-224"


class LabError(ValueError):
    """A bad parameter or a missing resource, explained in one readable message.

    In a notebook IPython shows only the message (no traceback wall), because
    IPython renders an exception through ``_render_traceback_`` when it has one.
    """

    def _render_traceback_(self):  # noqa: D401 - IPython hook
        return [f"\x1b[31m{type(self).__name__}: {self}\x1b[0m"]


def yaml_problem(exc) -> str:
    """A YAML parse error in a few words: "line N: what" (PyYAML's own text is several lines)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return where + (getattr(exc, "problem", None) or " ".join(str(exc).split()))


class ResourceMissingError(LabError, RuntimeError):
    """A file, folder or download the kit needs is not available."""


# display_name escapes these Unicode categories: controls (C0, DEL, C1), format characters
# (bidi overrides and isolates such as U+202E, zero-width spaces, BOM), surrogates, line and
# paragraph separators. They are invisible or reorder/break the text around them.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# ZWNJ and ZWJ are format characters too, but words in Persian and Indic scripts and emoji
# sequences need them, and they cannot reorder text: kept.
_KEPT_FORMAT_CHARS = frozenset({"\u200c", "\u200d"})


def display_name(name) -> str:
    """A file name or path as text to show a human: printable, and safe to write into a
    UTF-8 notebook, JSON file or log.

    ``name``: str, Path or bytes. Python gives a name whose bytes are not UTF-8 (e.g. the
    Latin-1 ``b"Jos\\xe9.png"``) as a str with surrogate escapes (``"Jos\\udce9.png"``),
    which cannot be encoded to UTF-8; here such bytes are shown as ``\\xe9``. Control
    characters (newline, ESC, ...) and invisible format characters (bidi overrides such as
    U+202E, which can make ``gnp.exe`` read as ``exe.png``; zero-width spaces) are shown as
    ``\\x1b`` / ``\\u202e`` escapes. Everything else, accents and other scripts included, is
    unchanged, so an ordinary name looks as it does in a file manager.

    For display only: open files by their path, never by this text (it is not reversible;
    a name that really holds a backslash looks like an escape).
    """
    if isinstance(name, (bytes, bytearray)):
        raw = bytes(name)
    else:
        text = os.fspath(name)
        if isinstance(text, bytes):
            raw = text
        else:
            try:
                # UTF-8, not os.fsencode: the text goes into UTF-8 files, and under a non-UTF-8
                # locale Python already decoded the name correctly (no surrogates left).
                raw = text.encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:  # lone surrogates not from a file name's bytes (Windows, JSON)
                raw = text.encode("utf-8", "backslashreplace")
    text = raw.decode("utf-8", "backslashreplace")
    if text.isprintable():  # the common case: nothing to escape
        return text
    out = []
    for ch in text:
        if ch in _KEPT_FORMAT_CHARS or unicodedata.category(ch) not in _ESCAPED_CATEGORIES:
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return "".join(out)


def is_url(source) -> bool:
    """Whether *source* is an http(s) URL (a probe image or set fetched over the network)."""
    return isinstance(source, str) and "://" in source and source.split("://", 1)[0].lower() in ("http", "https")


def socket_safe_temp_parent() -> str | None:
    """Where to create a temporary folder that will hold Unix sockets (a kernel's IPC
    transport): None (the default temporary folder) unless its path is so long that a
    socket path inside it would pass the ~107-byte limit, then /tmp."""
    import tempfile

    if len(tempfile.gettempdir()) > 60 and os.path.isdir("/tmp"):
        return "/tmp"
    return None


def weights_dirs() -> list[Path]:
    """Folders searched for offline weights, in order."""
    env = os.environ.get("LAB_WEIGHTS_DIR")
    if env:
        return [Path(env).expanduser()]
    return [KIT_ROOT / "weights", KIT_ROOT.parent / "shared" / "weights"]


def cache_dir() -> Path:
    path = Path(os.environ.get("LAB_CACHE_DIR") or (KIT_ROOT / ".lab_cache")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def progress_enabled() -> bool:
    """Progress bars are on unless LAB_PROGRESS=0 (render.sh, tests, CI set it)."""
    return os.environ.get("LAB_PROGRESS", "1").strip().lower() not in ("0", "false", "no", "off")


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr, or the bare iterable when bars are off."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", not progress_enabled())
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def import_tensorflow_quietly():
    """Import TensorFlow and Keras with the process's stderr silenced.

    TensorFlow's C++ side prints CUDA probing lines to file descriptor 2 before
    its log level applies; in a notebook ipykernel captures them into the stored
    outputs. Python exceptions still propagate; only that noise is dropped.
    """
    if "tensorflow" in sys.modules and "keras" in sys.modules:
        return
    # TensorFlow enables its oneDNN kernels by default only on CPUs with AVX512-VNNI,
    # BF16 or AMX; on an AVX2 laptop it falls back to Eigen, which runs the kit's
    # convolutions at ~0.7 of the matmul bound instead of ~0.95 (bench/RESULTS.md).
    # Read once, at import: setting it later has no effect.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        import keras  # noqa: F401
        import tensorflow as tf

        tf.config.list_physical_devices()
        tf.get_logger().setLevel("ERROR")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

