"""The trusted read-only cache layer of an executed class (lab_utils.cache's shared layer,
lab_utils.submissions.shared_cache) and the warm step (lab_utils.submissions.warm).

The end-to-end test grades a crafted class with --execute: a hostile hand-in that writes,
replaces and adds files in the shared layer (and in the instructor's cache, whose path it
was told), then a clean one; the clean one must read the instructor's numbers."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lab_utils import cache
from lab_utils.submissions import shared_cache as SC
from lab_utils.submissions import warm as W

from test_submissions import html, results, run_cli, write_nb


def npz_bytes(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def make_cache(folder: Path, entries: dict[str, dict]) -> Path:
    for name, arrays in entries.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(npz_bytes(**arrays))
    return folder


# ----------------------------------------------------------------- the reading side


def test_shared_entry_is_read_only_when_its_hash_matches(tmp_path, monkeypatch):
    shared = make_cache(tmp_path / "shared", {"scans/k1.npz": {"x": np.arange(3)},
                                              "scans/k2.npz": {"x": np.arange(4)}})
    trusted = SC.TrustedCache.from_folder(shared)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(trusted.manifest_text())
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "private"))
    monkeypatch.setenv(cache.SHARED_DIR_ENV, str(shared))
    monkeypatch.setenv(cache.SHARED_MANIFEST_ENV, str(manifest))
    assert cache.load("scans", "k1")["x"].tolist() == [0, 1, 2]
    # replaced bytes: never read, the caller recomputes
    (shared / "scans/k2.npz").write_bytes(npz_bytes(x=np.array([100])))
    assert cache.load("scans", "k2") is None
    # a file added after the manifest was taken: not listed, not read
    (shared / "scans/k3.npz").write_bytes(npz_bytes(x=np.array([7])))
    assert cache.load("scans", "k3") is None
    # a symbolic link swapped in for a listed entry: not followed
    (shared / "scans/k1.npz").rename(tmp_path / "k1.npz")
    (shared / "scans/k1.npz").symlink_to(tmp_path / "k1.npz")
    assert cache.load("scans", "k1") is None
    # the private layer comes first and is the only one written
    cache.save("scans", "k2", x=np.array([5]))
    assert cache.load("scans", "k2")["x"].tolist() == [5]
    assert not (shared / "scans" / "k2.npz").read_bytes() == npz_bytes(x=np.array([5]))


def test_no_manifest_means_nothing_shared(tmp_path, monkeypatch):
    shared = make_cache(tmp_path / "shared", {"vis/a.npz": {"x": np.ones(2)}})
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path / "private"))
    monkeypatch.setenv(cache.SHARED_DIR_ENV, str(shared))
    monkeypatch.setenv(cache.SHARED_MANIFEST_ENV, str(tmp_path / "missing.json"))
    assert cache.load("vis", "a") is None


def test_trusted_cache_skips_links_and_corrupt_entries(tmp_path):
    src = make_cache(tmp_path / "src", {"scans/good.npz": {"x": np.arange(2)}})
    (src / "scans" / "bad.npz").write_bytes(b"not an npz")
    (src / "scans" / "link.npz").symlink_to(src / "scans" / "good.npz")
    (src / "linked-kind").symlink_to(src / "scans")
    pickled = io.BytesIO()
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    (src / "scans" / "pickle.npz").write_bytes(pickled.getvalue())
    trusted = SC.TrustedCache.from_folder(src)
    assert sorted(trusted.entries) == ["scans/good.npz"]
    assert any("bad.npz" in s for s in trusted.skipped) and any("pickle.npz" in s for s in trusted.skipped)


def test_snapshot_is_read_only_and_repair_restores_it(tmp_path):
    src = make_cache(tmp_path / "src", {"scans/a.npz": {"x": np.arange(3)}, "vis/b.npz": {"y": np.ones(2)}})
    trusted = SC.TrustedCache.from_folder(src)
    snap = SC.Snapshot.create(trusted, parent=str(tmp_path))
    try:
        assert SC.is_read_only(snap.folder)
        if os.geteuid() != 0:  # root ignores modes; the hashes still protect the readers
            with pytest.raises(PermissionError):
                (snap.folder / "scans" / "a.npz").write_bytes(b"x")
        os.chmod(snap.folder / "scans", 0o755)
        os.chmod(snap.folder / "scans" / "a.npz", 0o644)
        (snap.folder / "scans" / "a.npz").write_bytes(npz_bytes(x=np.array([9])))
        (snap.folder / "scans" / "extra.npz").write_bytes(b"junk")
        os.chmod(snap.folder / "vis", 0o755)
        (snap.folder / "vis" / "b.npz").unlink()
        fixed = snap.repair()
        assert sorted(fixed) == ["scans/a.npz", "vis/b.npz"]
        assert snap.repairs == 2
        assert sorted(p.relative_to(snap.folder).as_posix() for p in snap.folder.rglob("*.npz")) == [
            "scans/a.npz", "vis/b.npz"]
        assert (snap.folder / "scans" / "a.npz").read_bytes() == (src / "scans" / "a.npz").read_bytes()
        assert SC.is_read_only(snap.folder)
    finally:
        snap.remove()
    assert not snap.folder.exists()


def test_audit_puts_back_changed_entries_and_quarantines_new_files(tmp_path):
    src = make_cache(tmp_path / "src", {"scans/a.npz": {"x": np.arange(3)}, "scans/b.npz": {"x": np.arange(2)}})
    os.chmod(src / "scans" / "a.npz", 0o600)
    before = (src / "scans" / "a.npz").read_bytes()
    trusted = SC.TrustedCache.from_folder(src)
    (src / "scans" / "a.npz").write_bytes(npz_bytes(x=np.array([42])))
    (src / "scans" / "planted.npz").write_bytes(npz_bytes(x=np.array([1])))  # a key a hand-in computed
    (src / "vis").symlink_to(tmp_path)  # a kind swapped for a link
    report = SC.audit_source(trusted, src)
    assert report.restored == ["scans/a.npz"] and sorted(report.quarantined) == ["scans/planted.npz", "vis"]
    assert (src / "scans" / "a.npz").read_bytes() == before
    assert (src / "scans" / "a.npz").stat().st_mode & 0o777 == 0o600  # the file's own mode kept
    assert not (src / "scans" / "planted.npz").exists() and not os.path.lexists(src / "vis")
    assert (report.quarantine / "scans" / "planted.npz").is_file()
    assert tmp_path.is_dir() and (tmp_path / "src").is_dir()  # the link's target untouched
    # the next batch shares neither the planted entry nor anything in the quarantine
    assert sorted(SC.TrustedCache.from_folder(src).entries) == ["scans/a.npz", "scans/b.npz"]
    assert SC.audit_source(SC.TrustedCache.from_folder(src), src) == SC.AuditReport()


def test_snapshot_removed_or_swapped_for_a_link_is_made_again(tmp_path):
    src = make_cache(tmp_path / "src", {"scans/a.npz": {"x": np.arange(3)}})
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("keep")
    os.chmod(canary, 0o751)
    snap = SC.Snapshot.create(SC.TrustedCache.from_folder(src), parent=str(tmp_path))
    first = snap.folder
    import shutil

    for d in (first, first / "scans"):
        os.chmod(d, 0o755)
    shutil.rmtree(first)
    assert snap.repair() == ["scans/a.npz"]
    assert (snap.folder / "scans" / "a.npz").read_bytes() == (src / "scans" / "a.npz").read_bytes()
    second = snap.folder
    for d in (second, second / "scans"):
        os.chmod(d, 0o755)
    shutil.rmtree(second)
    second.symlink_to(canary)  # the snapshot's name now points at someone else's folder
    snap.repair()
    assert snap.folder != second and not os.path.lexists(second)
    assert sorted(os.listdir(canary)) == ["keep.txt"] and canary.stat().st_mode & 0o777 == 0o751
    snap.remove()
    assert not snap.folder.exists() and (canary / "keep.txt").read_text() == "keep"
    assert snap.repair() == []  # closed: never made again


def test_trusted_cache_pickles_without_its_memo(tmp_path):
    import pickle

    trusted = SC.TrustedCache.from_folder(make_cache(tmp_path / "s", {"scans/a.npz": {"x": np.arange(3)}}))
    fp = trusted.fingerprint()
    again = pickle.loads(pickle.dumps(trusted))
    assert again.fingerprint() == fp and again.entries == trusted.entries


# ----------------------------------------------------------------- end to end (--execute)

HOSTILE = """
import os, io, numpy as np
from lab_utils import cache
shared = os.environ['LAB_SHARED_CACHE_DIR']
print('HOSTILE-READ', cache.load('scans', 'k1')['x'].sum())
target = os.path.join(shared, 'scans', 'k1.npz')
try:
    open(target, 'wb').write(b'junk')
    print('PLAIN-WRITE worked')
except OSError as e:
    print('PLAIN-WRITE failed', type(e).__name__)
buf = io.BytesIO(); np.savez(buf, x=np.array([100]))
for d in (shared, os.path.join(shared, 'scans')):
    os.chmod(d, 0o755)
os.chmod(target, 0o644)
open(target + '.tmp', 'wb').write(buf.getvalue())
os.replace(target + '.tmp', target)
open(os.path.join(shared, 'scans', 'k9.npz'), 'wb').write(buf.getvalue())
m = os.environ['LAB_SHARED_CACHE_MANIFEST']
print('OWN-MANIFEST', os.path.dirname(m) != shared)
victim = {victim!r}
os.chmod(victim, 0o644)
open(victim, 'wb').write(buf.getvalue())
open(os.path.join(os.path.dirname(victim), 'k9.npz'), 'wb').write(buf.getvalue())
import shutil
for d in (shared, os.path.join(shared, 'scans')):
    os.chmod(d, 0o755)
shutil.rmtree(shared)
os.symlink({canary!r}, shared)
print('TAMPERED')
"""

CLEAN = """
from lab_utils import cache
hit = cache.load('scans', 'k1')
print('CLEAN-SUM', None if hit is None else int(hit['x'].sum()))
print('CLEAN-K9', cache.load('scans', 'k9'))
"""


def build_class(tmp_path: Path) -> tuple[Path, Path]:
    instructor = make_cache(tmp_path / "instructor-cache", {"scans/k1.npz": {"x": np.arange(4)}})
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("keep")
    root = tmp_path / "hand-ins"
    write_nb(root / "a_hostile" / "work.ipynb",
             HOSTILE.replace("{victim!r}", repr(str(instructor / "scans" / "k1.npz")))
             .replace("{canary!r}", repr(str(canary))))
    write_nb(root / "b_clean" / "work.ipynb", CLEAN)
    return root, instructor


def test_a_hand_in_cannot_change_what_the_next_one_or_the_instructor_reads(tmp_path):
    root, instructor = build_class(tmp_path)
    before = (instructor / "scans" / "k1.npz").read_bytes()
    out = tmp_path / "out"
    r = run_cli("--submissions", str(root), "--out", str(out), "--execute", "--jobs", "1",
                "--timeout", "60", "--cell-timeout", "30", "--shared-cache", str(instructor),
                tmpdir=tmp_path)
    res = results(out)
    hostile = html.unescape((out / res["a_hostile/work.ipynb"]["page"]).read_text())
    clean = html.unescape((out / res["b_clean/work.ipynb"]["page"]).read_text())
    assert "HOSTILE-READ 6" in hostile and "TAMPERED" in hostile, hostile[-3000:]
    assert "OWN-MANIFEST True" in hostile
    if os.geteuid() != 0:
        assert "PLAIN-WRITE failed PermissionError" in hostile
    # The next hand-in reads the instructor's numbers from the shared layer (not 100, not a miss)
    assert "CLEAN-SUM 6" in clean, clean[-3000:]
    assert "CLEAN-K9 None" in clean
    # and the instructor's own cache is as it was, with a warning that it was put back
    assert (instructor / "scans" / "k1.npz").read_bytes() == before
    assert "changed during the run" in r.stderr and "scans/k1.npz" in r.stderr
    assert "put back" in r.stderr
    # the entry it planted there is moved aside, and what it pointed the snapshot at is untouched
    assert not (instructor / "scans" / "k9.npz").exists() and "moved to" in r.stderr
    assert sorted(os.listdir(tmp_path / "canary")) == ["keep.txt"]
    assert res["b_clean/work.ipynb"]["status"] == "ok"


def test_no_shared_cache_means_a_miss(tmp_path):
    root, instructor = build_class(tmp_path)
    out = tmp_path / "out"
    run_cli("--submissions", str(root / "b_clean"), "--out", str(out), "--execute", "--no-shared-cache",
            "--timeout", "60", tmpdir=tmp_path)
    page = html.unescape((out / results(out)["work.ipynb"]["page"]).read_text())
    assert "CLEAN-SUM None" in page


@pytest.mark.parametrize("argv, message", [
    (["--warm"], "add --execute"),
    (["--no-shared-cache"], "add --execute"),
    (["--execute", "--warm", "--no-shared-cache"], "cannot be combined"),
    (["--execute", "--shared-cache", "/nonexistent-cache-folder"], "no such folder"),
])
def test_shared_cache_usage_errors(tmp_path, argv, message):
    (tmp_path / "in").mkdir()
    r = run_cli("--submissions", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *argv)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_shared_cache_inside_the_hand_ins_is_refused(tmp_path):
    root = tmp_path / "in"
    (root / "cache").mkdir(parents=True)
    r = run_cli("--submissions", str(root), "--out", str(tmp_path / "out"), "--execute",
                "--shared-cache", str(root / "cache"))
    assert r.returncode == 2 and "outside the submissions folder" in r.stderr


# ----------------------------------------------------------------- the warm step


def param_notebook(**values) -> dict:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    src = "from lab_utils.choice import load_lab_choice\nchoice = load_lab_choice()\n"
    src += "".join(f"{k} = {v}\n" for k, v in values.items())
    src += "image_size = choice.image_size\n"
    cell = new_code_cell(src)
    cell.metadata["tags"] = ["parameters"]
    return json.loads(nbformat.writes(new_notebook(cells=[cell])))


def test_warm_requests_read_cells_and_choice_files(tmp_path):
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "lab-choice.yaml").write_text("layer_name: block2_conv2\nprobe_limit: 50\n")
    got = W.requests_for([
        (param_notebook(layer_name='"block4_conv1"'), None),  # typed in the cell
        (param_notebook(layer_name='"block4_conv1"', filter_index="3"), None),  # same scan
        (param_notebook(), folder),  # from alice's lab-choice.yaml
        (param_notebook(layer_name="choice.layer_name"), None),  # defaults
        (param_notebook(probe_set='"/home/alice/photos"'), None),  # not on this machine: skipped
        (param_notebook(layer_name="7"), None),  # a wrong type: the run says why, nothing warmed
    ])
    labels = [(r.label(), n) for r, n in got]
    assert labels == [("vgg16 block4_conv1 at 224 px", 2),
                      ("vgg16 block2_conv2 at 224 px, probe_limit=50", 1),
                      ("vgg16 block3_conv1 at 224 px", 1)]


def test_a_hostile_parameters_cell_does_not_stop_the_warm_step(tmp_path):
    deep = param_notebook()
    deep["cells"][0]["source"] = "layer_name = " + "-" * 300_000 + "1\n"  # MemoryError in ast.parse
    long_sum = param_notebook(layer_name="1" + "+1" * 200_000)  # RecursionError
    got = W.requests_for([(deep, None), (long_sum, None), (param_notebook(layer_name='"block4_conv1"'), None)])
    # the unreadable cells count as the defaults (their run says what is wrong); the batch goes on
    assert sorted((r.label(), n) for r, n in got) == [("vgg16 block3_conv1 at 224 px", 2),
                                                      ("vgg16 block4_conv1 at 224 px", 1)]


def test_warm_fills_the_instructor_cache(tmp_path):
    from conftest import require_weights

    require_weights("vgg16")
    root = tmp_path / "hand-ins"
    nb = param_notebook(layer_name='"block1_conv2"', probe_limit="4")
    path = root / "alice" / "02.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(nb))
    instructor = tmp_path / "instructor-cache"
    instructor.mkdir()
    r = run_cli("--submissions", str(root), "--out", str(tmp_path / "out"), "--execute", "--warm",
                "--shared-cache", str(instructor), "--timeout", "120", tmpdir=tmp_path, timeout=600)
    assert "warm: 1 scan(s) for 1 notebook(s): vgg16 block1_conv2 at 224 px, probe_limit=4" in r.stderr, r.stderr
    # the scan (the embedded set's entry by its files, and by its decoded images) and step 1's check
    assert len(list((instructor / "scans").glob("*.npz"))) == 2
    assert len(list((instructor / "model-check").glob("*.npz"))) == 1
    # and the executed hand-ins are then shown exactly that
    assert "shared read-only cache: 1 model-check, 2 scans" in r.stderr
