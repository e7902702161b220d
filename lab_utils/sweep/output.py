"""The output folder: ``check_out`` (the sweep never overwrites what it did not write),
``write_pair_files`` (a pair's files into ``OUT/<layer>-f<filter>/``, swapped in whole),
and the manifest (``MANIFEST``) of the pair folders the sweep wrote there
(``read_manifest``, ``write_manifest``, ``remove_stale``)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path, PurePosixPath

from ..config import LabError, display_name
from .pairs import SweepPair
from .task import PairResult

MANIFEST = ".sweep-manifest.json"  # in OUT: the pair folders this command wrote


def read_manifest(out: Path) -> list[str]:
    """The pair folders OUT's manifest lists (plain names only; [] where it is missing or unreadable)."""
    try:
        folders = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("folders", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in folders if isinstance(f, str) and f and "/" not in f and "\\" not in f
            and not f.startswith(".")] if isinstance(folders, list) else []


def check_out(out: Path, pairs: list[SweepPair]) -> None:
    """A LabError where the sweep would overwrite something it did not write: OUT's
    index.html without the sweep's manifest (a lab render, the grader), or a pair's
    folder that no earlier sweep into OUT wrote."""
    from ..render import check_out_folder

    check_out_folder(out)
    if not out.is_dir():
        return
    ours = set(read_manifest(out))
    has_manifest = (out / MANIFEST).is_file()
    index = out / "index.html"
    if (index.exists() or index.is_symlink()) and not has_manifest:
        raise LabError(f"--out {display_name(str(out))} holds an index.html that the sweep did not write; "
                       "choose another folder (nothing there is overwritten)")
    foreign = [p.folder for p in pairs
               if ((out / p.folder).exists() or (out / p.folder).is_symlink()) and p.folder not in ours]
    if foreign:
        raise LabError(f"--out {display_name(str(out))}: {', '.join(foreign)} exist(s) and the sweep did not "
                       "write them; choose another folder (nothing there is overwritten)")


def _safe_relative(name: str) -> PurePosixPath | None:
    rel = PurePosixPath(name)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") or "\\" in p for p in rel.parts):
        return None
    return rel


def write_pair_files(out: Path, result: PairResult) -> None:
    """Replace ``OUT/<pair>/`` by *result*'s files (names that would leave the folder are
    skipped). The new folder is filled beside it, then swapped in."""
    final = out / result.folder
    tmp = out / f".{result.folder}.{os.getpid()}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, data in result.files.items():
            rel = _safe_relative(name)
            if rel is None:
                continue
            target = tmp.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.is_dir():
            old = out / f".{result.folder}.{os.getpid()}.old"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_manifest(out: Path, folders: set[str]) -> None:
    """Record *folders* as the pair folders the sweep wrote in OUT (atomically)."""
    from ..pages import write_text_atomic

    write_text_atomic(out / MANIFEST, json.dumps({"folders": sorted(folders)}, indent=1))


def remove_stale(out: Path, keep: set[str]) -> None:
    """Remove pair folders an earlier sweep into OUT wrote that this one does not."""
    for name in read_manifest(out):
        path = out / name
        if name not in keep and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
