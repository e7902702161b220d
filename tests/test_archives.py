"""Zip archives as hand-ins (issue 12): ``DIR/alice.zip`` is student alice's hand-in like a
folder ``DIR/alice/``; hostile archives (paths out of the folder, links, encryption, sizes
that lie, bombs, corrupt or linked archives) are skipped with a reason, never extracted
next to the hand-ins, never a crash. Each test makes its archives itself with ``zipfile``."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import pytest

from lab_utils.submissions import archives as A

from test_submissions import page_text, results, run_cli, write_nb  # noqa: E402

KIT = Path(__file__).resolve().parent.parent
LAB = sorted((KIT / "notebooks").glob("0*.ipynb"))


def digest(root: Path) -> dict:
    """Every entry of *root* (links too, never followed) with its content's hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_zip(path: Path, entries: dict) -> Path:
    """A zip at *path*: name -> bytes/str (deflated), or name -> (ZipInfo-like mode, data)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            if isinstance(data, tuple):  # (unix mode, data): e.g. a symbolic link entry
                info = zipfile.ZipInfo(name)
                info.create_system = 3
                info.external_attr = data[0] << 16
                z.writestr(info, data[1])
            else:
                z.writestr(name, data)
    return path


def patch_entry(path: Path, name: str, *, size: int | None = None, flags: int | None = None) -> None:
    """Rewrite the declared uncompressed *size* and/or the general-purpose *flags* of entry
    *name* in both its local header and its central directory record (a lying archive)."""
    raw = bytearray(path.read_bytes())
    enc = name.encode()
    pos = 0
    while True:  # central directory records: name at +46, flags at +8, size at +24
        pos = raw.find(b"PK\x01\x02", pos)
        if pos < 0:
            break
        n = struct.unpack_from("<H", raw, pos + 28)[0]
        if raw[pos + 46:pos + 46 + n] == enc:
            local = struct.unpack_from("<I", raw, pos + 42)[0]  # local header: flags +6, size +22
            for base, f_off, s_off in ((pos, 8, 24), (local, 6, 22)):
                if size is not None:
                    struct.pack_into("<I", raw, base + s_off, size)
                if flags is not None:
                    struct.pack_into("<H", raw, base + f_off, flags)
        pos += 4
    path.write_bytes(bytes(raw))


def notebook_bytes(*sources: str) -> bytes:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    nb = new_notebook(cells=[new_markdown_cell("# Lab")] + [new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb).encode()


def grades(out: Path) -> dict:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def ignored_entries(out: Path) -> str:
    index = (out / "index.html").read_text()
    return index[index.index("Ignored files"):]


# --------------------------------------------------------------------------- a class with archives


@pytest.fixture(scope="module")
def zipped_class(tmp_path_factory):
    base = tmp_path_factory.mktemp("zipped")
    root = base / "class"
    # alice: the five lab notebooks under one folder inside the archive, and a stray macOS folder
    make_zip(root / "alice.zip", {**{f"lab/{p.name}": p.read_bytes() for p in LAB},
                                  "__MACOSX/lab/._01_model_choice.ipynb": b"\x00junk"})
    for p in LAB[:2]:  # bob: a folder, as before, with an old zip inside it (an ignored file)
        (root / "bob").mkdir(parents=True, exist_ok=True)
        shutil.copy(p, root / "bob" / p.name)
    make_zip(root / "bob" / "old.zip", {"x.ipynb": LAB[0].read_bytes()})
    make_zip(root / "carol.zip", {LAB[0].name: LAB[0].read_bytes()})  # at the archive's root
    (root / "dan").mkdir()  # a folder and an archive of the same name: the archive keeps ".zip"
    shutil.copy(LAB[2], root / "dan" / LAB[2].name)
    make_zip(root / "dan.zip", {LAB[3].name: LAB[3].read_bytes()})
    before = digest(root)
    tmp = base / "tmp"
    tmp.mkdir()
    out = base / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out), "--jobs", "2", tmpdir=tmp, timeout=600)
    return root, out, proc, before, tmp


def test_an_archive_is_a_hand_in_like_a_folder(zipped_class):
    root, out, proc, before, tmp = zipped_class
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert digest(root) == before  # the hand-ins (archives included) are only read
    assert list(tmp.iterdir()) == []  # the private folder is gone
    for report in ("alice", "bob", "carol", "dan", "dan.zip"):
        assert (out / f"{report}-report.html").is_file(), report
    rows = grades(out)
    assert sorted(rows) == ["alice", "bob", "carol", "dan", "dan.zip"]
    assert rows["alice"]["steps_handed_in"] == "1 2 3 4 5" and rows["alice"]["page"] == "alice-report.html"
    assert rows["bob"]["steps_handed_in"] == "1 2" and rows["carol"]["steps_handed_in"] == "1"
    assert rows["dan"]["steps_handed_in"] == "3" and rows["dan.zip"]["steps_handed_in"] == "4"
    res = results(out)
    alice = res["alice/01_model_choice.ipynb"]  # the wrapping folder "lab/" is left out
    assert alice["status"] == "ok" and "from alice.zip (lab/01_model_choice.ipynb)" in alice["notes"]
    assert res["carol/01_model_choice.ipynb"]["student"] == "carol"
    assert res["dan.zip/04_channel_visualization.ipynb"]["page"] != res["dan/03_channel_analysis.ipynb"]["page"]
    pages = [r["page"] for r in res.values()]
    assert len(set(pages)) == len(pages) and all((out / p).is_file() for p in pages)
    report = (out / "alice-report.html").read_text()
    assert "Step 5:" in report and 'href="alice__01_model_choice.html"' in report
    ignored = ignored_entries(out)
    assert "bob/old.zip" in ignored  # only archives directly in the folder count
    assert "alice.zip/__MACOSX/" in ignored


def test_archive_keys_avoid_folders_and_other_archives(tmp_path):
    (tmp_path / "dan").mkdir()
    keys = A.archive_keys(tmp_path, ["alice.zip", "dan.zip", "x.ZIP"])
    assert keys == {"alice.zip": "alice", "dan.zip": "dan.zip", "x.ZIP": "x"}


# --------------------------------------------------------------------------- hostile archives


def hostile_zip(path: Path, outside: Path) -> Path:
    make_zip(path, {
        "ok.ipynb": notebook_bytes("print('fine')"),
        "../escape.ipynb": notebook_bytes("print('escaped')"),
        "a/../../escape.ipynb": notebook_bytes("print('escaped')"),
        "/abs.ipynb": notebook_bytes("print('absolute')"),
        str(outside / "abs_escape.ipynb"): notebook_bytes("print('absolute')"),
        "C:\\evil\\escape.ipynb": notebook_bytes("print('drive')"),
        "link.ipynb": (0o120777, str(outside / "escape.ipynb")),
        "linkdir": (0o120777, str(outside)),
        "fifo.ipynb": (0o010644, b""),
        "secret.ipynb": notebook_bytes("print('encrypted')"),
        "liar.ipynb": notebook_bytes("print('x' * 1000)", "# " + "y" * 100_000),
        "huge.ipynb": notebook_bytes("print('huge')"),
        "inner.zip": b"PK\x05\x06" + b"\x00" * 18,
        "data.tar.gz": b"\x1f\x8b",
    })
    patch_entry(path, "secret.ipynb", flags=0x1)  # marked encrypted
    patch_entry(path, "liar.ipynb", size=50)  # declares 50 bytes, holds 100 KB
    patch_entry(path, "huge.ipynb", size=300 * 2**20)  # declares more than the per-file limit
    return path


def test_hostile_archives_are_skipped_with_reasons(tmp_path):
    root = tmp_path / "class"
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile_zip(root / "evil.zip", outside)
    (root / "corrupt.zip").write_bytes(b"PK\x03\x04 this is not really a zip")
    (root / "empty.zip").write_bytes(b"")
    make_zip(outside / "secret.zip", {"secret.ipynb": notebook_bytes("print('TOP SECRET')")})
    (root / "linked.zip").symlink_to(outside / "secret.zip")
    write_nb(root / "frank" / "lab.ipynb", "print('frank')")
    before = digest(root)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = tmp_path / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out), tmpdir=tmp)
    assert proc.returncode == 1, proc.stderr  # the corrupt and linked archives are not ok
    assert "Traceback" not in proc.stderr
    assert "corrupt.zip: not a readable archive" in proc.stderr
    assert digest(root) == before and list(tmp.iterdir()) == []
    escaped = [p for p in tmp_path.rglob("*") if "escape" in p.name]
    assert escaped == [], escaped  # nothing written out of the private folder, nor left anywhere
    res = results(out)
    assert res["evil/ok.ipynb"]["status"] == "ok" and res["frank/lab.ipynb"]["status"] == "ok"
    assert "evil.zip: " in " ".join(res["evil/ok.ipynb"]["notes"])  # "... entries skipped"
    assert res["evil/huge.ipynb"]["status"] == "too large"
    assert "declared size" in res["evil/huge.ipynb"]["message"]
    assert res["evil/liar.ipynb"]["status"] == "not a valid notebook"
    assert "damaged" in res["evil/liar.ipynb"]["message"] and "CRC" in res["evil/liar.ipynb"]["message"]
    assert res["corrupt.zip"]["status"] == "not a readable archive"
    assert "not a zip archive" in res["corrupt.zip"]["message"]
    assert res["empty.zip"]["status"] == "not a readable archive"
    assert res["linked.zip"]["status"] == "symbolic link (not followed)"
    assert set(res) == {"evil/ok.ipynb", "evil/huge.ipynb", "evil/liar.ipynb", "corrupt.zip", "empty.zip",
                        "linked.zip", "frank/lab.ipynb"}
    for r in res.values():
        assert "TOP SECRET" not in page_text(out / r["page"])
    ignored = ignored_entries(out)
    for entry, why in [("../escape.ipynb", "&#x27;..&#x27; in the path"), ("/abs.ipynb", "absolute path"),
                       ("C:\\evil\\escape.ipynb", "absolute path"), ("link.ipynb", "symbolic link"),
                       ("linkdir", "symbolic link"), ("fifo.ipynb", "special file"),
                       ("secret.ipynb", "encrypted"), ("inner.zip", "an archive inside the archive"),
                       ("data.tar.gz", "an archive inside the archive")]:
        assert f"evil.zip/{entry} ({why}" in ignored, entry
    index = (out / "index.html").read_text()
    assert "not a readable archive" in index and "escaped" not in page_text(out / "index.html")


def test_unpack_never_writes_outside_its_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "class"
    hostile_zip(root / "evil.zip", outside)
    dest = tmp_path / "private" / "archives"
    (u,) = A.unpack_all(root, ["evil.zip"], dest)
    assert u.error is None and u.key == "evil"
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == ["class/evil.zip", "private/archives/0/evil/ok.ipynb"]
    assert oct(dest.stat().st_mode & 0o777) == "0o700"
    assert oct((dest / "0" / "evil" / "ok.ipynb").stat().st_mode & 0o777) == "0o600"
    assert [m.rel for m in u.members if m.problem is None] == ["evil/ok.ipynb"]


def test_zip_bombs_stop_at_the_budget(tmp_path, monkeypatch):
    """50 MB of zeros (about 50 KB compressed) against a budget lowered to 10 MB: refused from
    its declared size; and a writer that gets more bytes than allowed stops and keeps nothing."""
    root = tmp_path / "class"
    zeros = b"\x00" * (50 * 2**20)
    make_zip(root / "bomb.zip", {"nb.ipynb": notebook_bytes("1"), "zeros.bin": zeros,
                                 "more.ipynb": notebook_bytes("2")})
    assert (root / "bomb.zip").stat().st_size < 1_000_000
    monkeypatch.setattr(A, "MAX_TOTAL_BYTES", 10 * 2**20)
    (u,) = A.unpack_all(root, ["bomb.zip"], tmp_path / "private")
    assert any("zeros.bin (the archive's budget of 10 MB uncompressed is used up" in i for i in u.ignored)
    assert [m.rel for m in u.members] == ["bomb/nb.ipynb", "bomb/more.ipynb"]
    assert not (u.base / "bomb" / "zeros.bin").exists()
    # the bytes actually written are counted too (a lying header, a zipfile that trusts it)
    with zipfile.ZipFile(root / "bomb.zip") as zf:
        target = tmp_path / "w" / "zeros.bin"
        with pytest.raises(A._Refused, match="stopped and not kept"):
            A._write_entry(zf, zf.getinfo("zeros.bin"), target, limit=2**20)
        assert not target.exists()
    # too many entries: the first MAX_ENTRIES only
    monkeypatch.setattr(A, "MAX_ENTRIES", 2)
    (u,) = A.unpack_all(root, ["bomb.zip"], tmp_path / "private2")
    assert any("3 entries: only the first 2 were looked at" in i for i in u.ignored)
    # data files are extracted only when a run needs them
    monkeypatch.setattr(A, "MAX_ENTRIES", 100)
    (u,) = A.unpack_all(root, ["bomb.zip"], tmp_path / "private3", data_files=False)
    assert "bomb.zip/zeros.bin" in u.ignored and not (u.base / "bomb" / "zeros.bin").exists()


def test_a_non_zip_and_a_folder_named_zip_are_not_archives(tmp_path):
    root = tmp_path / "class"
    (root / "notes.zip").mkdir(parents=True)  # a folder called notes.zip: scanned as a folder
    write_nb(root / "notes.zip" / "lab.ipynb", "1")
    (root / ".hidden.zip").write_bytes(b"PK")
    from lab_utils.submissions import handins

    found = handins.scan(root)
    assert found.archives == [] and found.notebooks == ["notes.zip/lab.ipynb"]
    assert ".hidden.zip" in found.ignored


# --------------------------------------------------------------------------- --execute


def test_an_archive_notebook_runs_with_its_data_files(tmp_path):
    root = tmp_path / "class"
    code = ("import json\nvalues = open('data/values.csv').read().split(',')\n"
            "print('SUM', sum(int(v) for v in values), json.load(open('cfg.json'))['name'])")
    make_zip(root / "erin.zip", {"erin/run.ipynb": notebook_bytes(code), "erin/data/values.csv": "1,2,39",
                                 "erin/cfg.json": json.dumps({"name": "erin-config"})})
    before = digest(root)
    out = tmp_path / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out), "--execute", "--timeout", "120",
                   "--cell-timeout", "60", timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = results(out)["erin/run.ipynb"]
    assert r["status"] == "ok", r
    assert "SUM 42 erin-config" in page_text(out / r["page"])
    assert digest(root) == before
