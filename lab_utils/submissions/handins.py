"""Finding and naming the hand-ins of a submissions folder (``render.sh --submissions``).

A *hand-in* is an ``.ipynb`` file under the folder, or a ``.zip`` archive directly in
it (``archives``: its notebooks count as those of a folder). Its student name is the
first folder under the root (``alice/lab.ipynb`` -> ``alice``), or the file name
for notebooks (and archives) directly in the root. Names come from the file system and are
untrusted: ``config.display_name`` makes any of them safe to print and to write into UTF-8
pages (undecodable bytes and invisible or direction-changing characters are
shown as escapes), and ``slugify`` makes page names from them.

Symbolic links are never followed: a linked ``.ipynb`` (or top-level ``.zip``) is listed as a hand-in
with the status ``symbolic link (not followed)``, a linked folder among the
ignored entries, so nothing outside the folder is ever read through one.
"""
from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..config import display_name

# Folders that are never submissions (Jupyter autosaves, macOS zip debris, VCS).
SKIP_DIRS = {".ipynb_checkpoints", "__MACOSX", "__pycache__", ".git", ".svn", ".hg"}
RESERVED_SLUGS = {"index"}


def _has_surrogates(s: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in s)


def name_notes(raw: str) -> list[str]:
    """Why ``display_name(raw)`` differs from *raw*, for the index's notes column."""
    notes = []
    if _has_surrogates(raw):
        notes.append("file name is not UTF-8 (undecodable bytes shown as \\xNN)")
    elif display_name(raw) != raw:
        notes.append("name holds control, invisible or direction-changing characters (shown as escapes)")
    return notes


@dataclass
class Submission:
    rel: str  # path relative to DIR, posix style, exactly as on disk (may hold surrogate escapes)
    name: str  # display name: display_name(), still untrusted text (escape before use in HTML)
    slug: str  # file-name-safe page name, without ".html"
    notes: list[str] = field(default_factory=list)
    link: str | None = None  # for a symbolic link: where it points (display_name()), never followed
    # Where the bytes are: ``base / rel`` (None: DIR itself). An archive's notebooks were extracted
    # into the grader's private folder (``archives``); ``rel`` stays the name shown and grouped.
    base: Path | None = None
    problem: tuple[str, str] | None = None  # (status, message): nothing could be read (a bad archive)

    @property
    def shown_rel(self) -> str:
        return display_name(self.rel)


@dataclass
class Discovery:
    """What a submissions folder holds (posix paths relative to it, sorted)."""

    notebooks: list[str]  # regular .ipynb files
    ignored: list[str]  # not notebooks, hidden, checkpoint folders, linked folders ("x/ (...)")
    links: dict[str, str]  # .ipynb (and top-level .zip) symbolic links: relative path -> link target (as stored)
    archives: list[str] = field(default_factory=list)  # regular .zip files directly in the folder


def discover(root: Path) -> tuple[list[str], list[str]]:
    """Return (notebooks, ignored) as sorted posix paths relative to *root*
    (``scan`` has the symbolic links too)."""
    found = scan(root)
    return found.notebooks, found.ignored


def scan(root: Path) -> Discovery:
    """Walk *root* without following any symbolic link.

    Hidden files and folders, ``.ipynb_checkpoints`` and ``__MACOSX`` are skipped
    (listed as ignored); linked folders are listed as ignored with their target;
    linked ``.ipynb`` files are returned in ``links`` (they get a row, not a read).
    ``.zip`` files directly in *root* are hand-ins too (``archives``; a linked one is in
    ``links``); deeper ones are ignored files.
    """
    from .archives import is_archive_name

    notebooks: list[str] = []
    ignored: list[str] = []
    links: dict[str, str] = {}
    archives: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):  # followlinks=False
        here = Path(dirpath)
        keep = []
        for d in sorted(dirnames):
            rel = (here / d).relative_to(root).as_posix()
            if (here / d).is_symlink():
                ignored.append(f"{rel}/ (symbolic link to {_target(here / d)}, not followed)")
            elif d in SKIP_DIRS or d.startswith("."):
                ignored.append(rel + "/")
            else:
                keep.append(d)
        dirnames[:] = keep
        for f in sorted(filenames):
            p = here / f
            rel = p.relative_to(root).as_posix()
            is_notebook = not f.startswith(".") and f.lower().endswith(".ipynb")
            is_archive = here == root and is_archive_name(f)
            if p.is_symlink():
                if is_notebook or is_archive:
                    links[rel] = _target(p)
                else:
                    ignored.append(f"{rel} (symbolic link, not followed)")
            elif is_notebook and p.is_file():
                notebooks.append(rel)
            elif is_archive and p.is_file():
                archives.append(rel)
            else:
                ignored.append(rel)
    return Discovery(sorted(notebooks), sorted(ignored), dict(sorted(links.items())), sorted(archives))


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"


def _strip_ipynb(name: str) -> str:
    return name[: -len(".ipynb")] if name.lower().endswith(".ipynb") else name


def _strip_top(name: str) -> str:
    """The student name of a file directly in the folder: ``bob.ipynb``, ``bob.zip`` -> ``bob``."""
    return name[: -len(".zip")] if name.lower().endswith(".zip") and len(name) > 4 else _strip_ipynb(name)


def slugify(name: str) -> str:
    """A file-name-safe version of *name*: letters, digits, '-', '_', '.' only."""
    s = unicodedata.normalize("NFKD", name)
    s = "".join(c for c in s if not unicodedata.combining(c))
    s = s.replace("/", "__")
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", s)
    s = s.lstrip(".-")[:80].rstrip(".")
    if not re.search(r"[A-Za-z0-9]", s):
        s = "student-" + hashlib.sha1(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return s


def assign_names(rels: list[str], links: dict[str, str] | None = None,
                 taken: set[str] | None = None) -> list[Submission]:
    """Student names and page names for the notebooks at *rels* (relative paths) and
    the linked notebooks in *links* (relative path -> target).

    ``alice/lab.ipynb`` -> ``alice``; ``bob.ipynb`` -> ``bob``; deeper paths use the
    first folder.  When several notebooks would get the same name, each is named
    by its path instead (``alice/lab``, ``alice/lab_v2``), with a note.  Page names
    are sanitised and made unique (case-insensitively; ``index`` is reserved) by
    a ``-2``, ``-3``... suffix, deterministically in path order. *taken*: page names
    (lower case, without ``.html``) that must not be used, e.g. files already in the
    output folder that the grader did not write.
    """
    links = links or {}
    rels = sorted(set(rels) | set(links))
    keys = {}
    for rel in rels:
        parts = PurePosixPath(rel).parts
        keys[rel] = display_name(parts[0] if len(parts) > 1 else _strip_top(parts[0]))
    counts: dict[str, int] = {}
    for k in keys.values():
        counts[k] = counts.get(k, 0) + 1
    used: set[str] = set()
    subs = []
    for rel in rels:
        key = keys[rel]
        notes = name_notes(rel)
        if counts[key] > 1:
            name = display_name(_strip_ipynb(rel))
            notes.append(
                f"duplicate name: {counts[key]} notebooks share the name {key!r}; "
                "each is named by its path"
            )
        else:
            name = key
        base = slugify(name)
        slug, k = base, 1
        while slug.lower() in used or slug.lower() in RESERVED_SLUGS or slug.lower() in (taken or ()):
            k += 1
            slug = f"{base}-{k}"
        if slug != base:
            notes.append(f"page renamed to {slug}.html to avoid a clash")
        used.add(slug.lower())
        link = display_name(links[rel]) if rel in links else None
        subs.append(Submission(rel=rel, name=name, slug=slug, notes=notes, link=link))
    return subs
