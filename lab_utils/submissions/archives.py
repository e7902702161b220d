"""Zip archives at the top level of a submissions folder: ``DIR/alice.zip`` is student
``alice``'s hand-in, like a folder ``DIR/alice/``.

``unpack_all`` extracts each one into the grader's private folder (mode 0700, removed at
the end of the batch; never next to the hand-ins, which are only read) and says which
notebooks it held. Their ``Submission.rel`` is ``<key>/<path inside>``: *key* is the
archive's name without ``.zip`` (``alice``), or its whole name (``alice.zip``) where the
folder already holds an entry called ``alice``; a single folder wrapping everything in the
archive (``alice/...``, ``lab/...``) is left out of the path. So ``reports.group_of`` puts
an archive's lab notebooks in one report, exactly as a folder's.

An archive is data from a student, read defensively. Never extracted (each listed among
the ignored files with the reason): entries with an absolute path, a drive letter or a
``..`` component; symbolic links and other special files (the zip's Unix mode); encrypted
entries (no password is tried); archives inside the archive; entries past
``MAX_ENTRIES``; entries whose declared size is over ``MAX_FILE_BYTES`` or over what is
left of ``MAX_TOTAL_BYTES`` (zip bombs). The bytes actually written are counted too, and a
file stops at its declared size, the per-file limit or the budget, whichever comes first
(an entry that lies about its size is not kept). A ``.zip`` file that cannot be read as an
archive gets a row with the status ``not a readable archive`` and the reason; a ``.zip``
that is a symbolic link is never opened (``handins.scan`` lists it like a linked
notebook). Only ``.zip`` files directly in the folder count; other archive formats, and
archives deeper in a folder, are ignored files.
"""
from __future__ import annotations

import os
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .handins import SKIP_DIRS
from .notebooks import MAX_FILE_BYTES
from .statuses import INVALID, TOO_LARGE

MAX_ENTRIES = 5_000  # entries of one archive looked at (the rest: skipped, with a note)
MAX_TOTAL_BYTES = 1024 * 2**20  # uncompressed bytes written for one archive
MAX_ARCHIVE_BYTES = 1024 * 2**20  # an archive file larger than this is not opened
MAX_IGNORED_LISTED = 200  # skipped entries of one archive listed one by one
CHUNK = 1 << 20

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".7z", ".rar", ".tbz2", ".txz", ".zst")


def is_archive_name(name: str) -> bool:
    """A top-level hand-in archive: ``*.zip``, not hidden."""
    return name.lower().endswith(".zip") and not name.startswith(".")


def _mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n:,} bytes"


@dataclass
class Member:
    """A notebook of an archive: ``rel`` (shown, grouped), ``inner`` (its name in the
    archive); ``problem``: (status, message) when its bytes could not be extracted."""

    rel: str
    inner: str
    problem: tuple[str, str] | None = None


@dataclass
class Unpacked:
    """What one archive gave: its name in DIR, its key (the hand-in folder it stands for),
    where it was extracted (``base``: ``base / member.rel`` is a member's file), its
    notebooks, its skipped entries (for the index's ignored files) and a problem with the
    archive as a whole (None: it could be read)."""

    name: str
    key: str
    base: Path
    members: list[Member] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    error: str | None = None
    n_skipped: int = 0


def archive_keys(root: Path, archives: list[str]) -> dict[str, str]:
    """archive name -> key: the name without ``.zip`` unless DIR holds an entry of that name
    (a folder ``alice/`` beside ``alice.zip``) or another archive has it; then the name."""
    try:
        top = set(os.listdir(root))
    except OSError:
        top = set()
    keys: dict[str, str] = {}
    used: set[str] = set()
    for name in sorted(archives):
        stem = name[: -len(".zip")]
        key = stem if stem and stem not in top and stem not in used else name
        used.add(key)
        keys[name] = key
    return keys


def unpack_all(root: Path, archives: list[str], dest: Path, data_files: bool | set = True) -> list[Unpacked]:
    """Extract every archive of *archives* (names of regular files directly in *root*) into
    its own folder under *dest* (made here, mode 0700). *data_files*: also extract the
    files that are not notebooks (with ``--execute``, for the run's copy); a set: only for
    the archives it names (a shard's, ``shards``). Never raises for a bad archive."""
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = archive_keys(root, archives)
    out = []
    for n, name in enumerate(sorted(archives)):
        base = dest / str(n)
        base.mkdir(mode=0o700)
        u = Unpacked(name=name, key=keys[name], base=base)
        try:
            _unpack(root / name, u, data_files if isinstance(data_files, bool) else name in data_files)
        except Exception as e:  # noqa: BLE001 - a hostile archive is reported, never a crash
            u.error = f"could not be read as a zip archive ({type(e).__name__}: {e})"[:500]
        out.append(u)
    return out


def _open_nofollow(path: Path):
    flags = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
             | getattr(os, "O_NONBLOCK", 0))
    fd = os.open(path, flags)
    fh = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        fh.close()
        raise OSError(f"{path.name} is not a regular file")
    return fh, st.st_size


def _entry_name(raw: str) -> tuple[list[str] | None, str]:
    """The path components of an entry name, or (None, why it is refused)."""
    name = raw.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None, "absolute path: not extracted"
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        return None, "'..' in the path: not extracted"
    if not parts:
        return None, "empty name"
    return parts, ""


def _refusal(info: zipfile.ZipInfo) -> str:
    """Why *info* is never extracted, whatever its name ('' when it may be)."""
    mode = (info.external_attr >> 16) & 0xFFFF
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFLNK:
        return "symbolic link: not extracted"
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        return "special file: not extracted"
    if info.flag_bits & 0x1:
        return "encrypted: not extracted (no password is tried)"
    return ""


def _unpack(path: Path, u: Unpacked, data_files: bool) -> None:
    fh, size = _open_nofollow(path)
    with fh:
        if size > MAX_ARCHIVE_BYTES:
            u.error = f"over the {_mb(MAX_ARCHIVE_BYTES)} limit for an archive: not opened"
            return
        try:
            zf = zipfile.ZipFile(fh)
        except zipfile.BadZipFile as e:
            u.error = f"not a zip archive, or a damaged one ({e})"
            return
        with zf:
            infos = zf.infolist()
            if len(infos) > MAX_ENTRIES:
                u.ignored.append(f"{u.name} ({len(infos):,} entries: only the first {MAX_ENTRIES:,} were "
                                 "looked at)")
                infos = infos[:MAX_ENTRIES]
            _extract(zf, infos, u, data_files)


def _skip(u: Unpacked, inner: str, why: str) -> None:
    u.n_skipped += 1
    if u.n_skipped <= MAX_IGNORED_LISTED:
        u.ignored.append(f"{u.name}/{inner} ({why})")


def _extract(zf: zipfile.ZipFile, infos: list, u: Unpacked, data_files: bool) -> None:
    accepted: list[tuple[zipfile.ZipInfo, list[str]]] = []
    hidden: set[str] = set()
    for info in infos:
        inner = info.filename
        why = _refusal(info)
        parts, bad_name = _entry_name(inner)
        if why or parts is None:
            _skip(u, inner, why or bad_name)
            continue
        if info.is_dir():
            continue  # folders are made as needed
        skipped_dir = next((p for p in parts[:-1] if p in SKIP_DIRS or p.startswith(".")), None)
        if skipped_dir is not None:
            hidden.add("/".join(parts[: parts.index(skipped_dir) + 1]) + "/")
            continue
        if parts[-1].startswith("."):
            _skip(u, inner, "hidden file")
            continue
        if parts[-1].lower().endswith(ARCHIVE_SUFFIXES):
            _skip(u, inner, "an archive inside the archive: not opened")
            continue
        accepted.append((info, parts))
    for h in sorted(hidden):
        _skip(u, h, "not a submission")
    # One folder wrapping everything ("alice/...", "lab/..."): left out of the paths.
    tops = {parts[0] for _, parts in accepted}
    strip = len(tops) == 1 and all(len(parts) > 1 for _, parts in accepted)
    total = 0
    seen: set[str] = set()
    for info, parts in accepted:
        inner = info.filename
        local = parts[1:] if strip else parts
        rel_inside = "/".join(local)
        is_nb = local[-1].lower().endswith(".ipynb")
        member = Member(rel=f"{u.key}/{rel_inside}", inner=inner) if is_nb else None
        where = f"in {u.name}"

        def refuse(status_why: str, status: str | None = None):
            if member is not None:
                member.problem = (status or INVALID, f"{status_why} ({where}: {inner})")
                u.members.append(member)
            else:
                _skip(u, inner, status_why)

        if rel_inside.lower() in seen:
            _skip(u, inner, "a second entry of the same name: not extracted")
            continue
        seen.add(rel_inside.lower())
        if not is_nb and not data_files:
            u.ignored.append(f"{u.name}/{inner}")
            continue
        if info.file_size > MAX_FILE_BYTES:
            refuse(f"declared size {_mb(info.file_size)}, over the {_mb(MAX_FILE_BYTES)} limit for a file: "
                   "not extracted", TOO_LARGE)
            continue
        if total + info.file_size > MAX_TOTAL_BYTES:
            refuse(f"the archive's budget of {_mb(MAX_TOTAL_BYTES)} uncompressed is used up: not extracted")
            continue
        target = u.base / u.key / rel_inside
        try:
            written = _write_entry(zf, info, target, min(info.file_size, MAX_FILE_BYTES, MAX_TOTAL_BYTES - total))
        except _Refused as e:
            refuse(str(e))
            continue
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError,
                OSError, UnicodeError) as e:
            _remove(target)
            refuse(f"damaged or unsupported entry: not extracted ({type(e).__name__}: {e})"[:300])
            continue
        total += written
        if member is not None:
            u.members.append(member)
        else:
            u.ignored.append(f"{u.name}/{inner}")  # a data file: extracted for the run, not a submission


class _Refused(Exception):
    pass


def _remove(target: Path) -> None:
    try:
        os.unlink(target)
    except OSError:
        pass


def _write_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> int:
    """Write *info*'s bytes to *target* (a new file; its folders made 0700), at most
    *limit* bytes: one more and the file is removed (``_Refused``). Returns bytes written."""
    for parent in reversed(target.parents):
        if not parent.exists():
            os.mkdir(parent, 0o700)
    if target.parent.is_symlink() or not target.parent.is_dir():
        raise _Refused("its folder clashes with a file of the archive: not extracted")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o600)
    written = 0
    ok = False
    try:
        with os.fdopen(fd, "wb") as out, zf.open(info) as src:
            while True:
                chunk = src.read(min(CHUNK, limit - written + 1))
                if not chunk:
                    break
                written += len(chunk)
                if written > limit:
                    raise _Refused(f"more than the {_mb(limit)} it may hold (declared {_mb(info.file_size)}): "
                                   "stopped and not kept")
                out.write(chunk)
        ok = True
    finally:
        if not ok:
            _remove(target)
    return written
