"""``render.sh --submissions DIR --shard I/N`` and ``--merge`` (issue 13, point 3): the slicing
(every hand-in in exactly one shard, balanced, named as the whole class), a class graded as
two shards and merged reads exactly as one run of it, and every refusal of a merge."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import filled_notebook, kit_notebook
from lab_utils import evidence as E
from lab_utils.submissions import assign_names, main, scan
from lab_utils.submissions.shards import SHARD_FILE, Shard, class_slice, parse_shard

ROOT = Path(__file__).resolve().parent.parent
NAMES = E.STEP_NOTEBOOKS
ANSWER = "The filter responds to curved edges in many textures."


def write(path: Path, nb) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(nb if isinstance(nb, str) else json.dumps(nb))


def grade(*args, timeout=600):
    env = dict(os.environ, LAB_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "lab_utils.submissions", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def make_layout(root: Path, n_folders: int, n_top: int, n_zips: int) -> None:
    """A class of empty-but-valid files: folders of two notebooks, top-level notebooks,
    top-level archives of two notebooks, plus files that are ignored."""
    nb = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    for k in range(n_folders):
        write(root / f"s{k:02d}" / "01_model_choice.ipynb", nb)
        write(root / f"s{k:02d}" / "notes.txt", "x")
    for k in range(n_top):
        write(root / f"t{k:02d}.ipynb", nb)
    for k in range(n_zips):
        with zipfile.ZipFile(root / f"z{k:02d}.zip", "w") as zf:
            zf.writestr("lab/01_model_choice.ipynb", nb)
            zf.writestr("lab/03_channel_analysis.ipynb", nb)
    write(root / "README.txt", "loose")
    # a folder and an archive of the same student: the archive is keyed "s00.zip"
    if n_folders:
        with zipfile.ZipFile(root / "s00.zip", "w") as zf:
            zf.writestr("x.ipynb", nb)


def class_subs(root: Path):
    """The whole class's submissions as a run names them, and archive key -> archive name."""
    from lab_utils.submissions.archives import archive_keys

    found = scan(root)
    keys = archive_keys(root, found.archives)
    rels = list(found.notebooks)
    for name in found.archives:
        with zipfile.ZipFile(root / name) as zf:
            inner = [i.filename for i in zf.infolist()]
        strip = all("/" in i for i in inner) and len({i.split("/")[0] for i in inner}) == 1
        rels += [f"{keys[name]}/{i.split('/', 1)[1] if strip else i}" for i in inner]
    return found, assign_names(rels, found.links), {v: k for k, v in keys.items()}


@pytest.mark.parametrize("layout", [(0, 1, 0), (3, 2, 2), (7, 4, 3), (1, 0, 5)])
def test_every_hand_in_is_in_exactly_one_shard_balanced_and_whole(tmp_path, layout):
    make_layout(tmp_path, *layout)
    found, subs, archive_of_key = class_subs(tmp_path)
    for n in range(1, 5):
        parts = [class_slice(found, Shard(i, n)) for i in range(1, n + 1)]
        units = [u for p in parts for u in p.units]
        assert sorted(units) == parts[0].all_units and len(set(units)) == len(units)  # each unit once
        sizes = [len(p.units) for p in parts]
        assert max(sizes) - min(sizes) <= 1, sizes  # round-robin: balanced
        assert len({p.fingerprint for p in parts}) == 1
        chosen = [[s.rel for s in p.select(subs, archive_of_key)] for p in parts]
        flat = [r for c in chosen for r in c]
        assert sorted(flat) == sorted(s.rel for s in subs) and len(set(flat)) == len(flat)
        for p, rels in zip(parts, chosen):  # a student's notebooks are all in one shard
            firsts = {r.split("/")[0] for r in rels}
            assert all(archive_of_key.get(f, f) in p.units for f in firsts)
        ignored = sorted(found.ignored)
        pieces = [p.ignored_part(ignored) for p in parts]
        assert sorted(e for piece in pieces for e in piece) == ignored  # each ignored entry once
        assert "README.txt" in pieces[0]  # entries of no hand-in: shard 1
        # the same call gives the same slice (deterministic)
        assert [class_slice(found, Shard(i, n)).units for i in range(1, n + 1)] == [p.units for p in parts]


def test_an_archive_beside_a_folder_of_its_name_is_its_own_unit(tmp_path):
    make_layout(tmp_path, 2, 0, 0)  # s00/, s01/ and s00.zip (keyed "s00.zip")
    found, subs, archive_of_key = class_subs(tmp_path)
    assert class_slice(found, Shard(1, 1)).all_units == ["s00", "s00.zip", "s01"]
    two = [class_slice(found, Shard(i, 3)) for i in (1, 2, 3)]
    assert [p.units for p in two] == [["s00"], ["s00.zip"], ["s01"]]
    assert [s.rel for s in two[1].select(subs, archive_of_key)] == ["s00.zip/x.ipynb"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "2", "a/b", "-1/2", "1/2/3", ""])
def test_bad_shard_values_are_a_one_line_usage_error(tmp_path, capsys, text):
    with pytest.raises(ValueError):
        parse_shard(text)
    (tmp_path / "in").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["--submissions", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--shard", text])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, words", [
    (["--shard", "1/2", "--out", "o"], "required: --submissions (or --merge"),
    (["--submissions", "in", "--merge", "a", "--out", "o"], "not allowed with argument"),
    (["--merge", "a", "--shard", "1/2", "--out", "o"], "--shard cannot be used with --merge"),
    (["--merge", "a", "--execute", "--out", "o"], "--execute cannot be used with --merge"),
])
def test_merge_and_submissions_and_shard_argument_rules(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    (tmp_path / "a").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_parse_shard_is_one_based():
    assert parse_shard("1/1") == Shard(1, 1) and parse_shard(" 4/4 ") == Shard(4, 4) and str(Shard(2, 3)) == "2/3"


def lab_zip(path: Path, steps, names: str) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for s in steps:
            zf.writestr(f"lab/{NAMES[s]}.ipynb", json.dumps(filled_notebook(s, ANSWER, names)))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """One class graded three ways: unsharded, as shards 1/2 and 2/2 merged, and the shards."""
    base = tmp_path_factory.mktemp("shards")
    root = base / "class"
    for s in (1, 2, 3):
        write(root / "alice" / f"{NAMES[s]}.ipynb", filled_notebook(s, ANSWER, "Alice Liddell"))
    write(root / "alice" / "data.csv", "a,b\n")
    write(root / "bob" / "my_first_try.ipynb", filled_notebook(1, ANSWER, "Bob"))
    write(root / "bob" / "step3.ipynb", kit_notebook(3))
    lab_zip(root / "carol.zip", (1, 4), "Carol")
    write(root / "frank.ipynb", {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# notes"}],
                                 "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    write(root / "broken.ipynb", "{ this is not json")
    # beside bob/, in the other shard: named by its path, with a note, only if named over the whole class
    write(root / "bob.ipynb", {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# draft"}],
                               "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    write(root / "README.txt", "not a notebook")
    whole = grade("--submissions", root, "--out", base / "whole", "--jobs", "2")
    shards = [grade("--submissions", root, "--out", base / f"s{i}", "--jobs", "2", "--shard", f"{i}/2")
              for i in (1, 2)]
    merged = grade("--merge", base / "s1", base / "s2", "--out", base / "merged")
    return base, root, whole, shards, merged


def index_rows(out: Path) -> list[list[str]]:
    """The index's table rows as cell texts, the run time column (it differs per run) left out."""
    text = (out / "index.html").read_text()
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", text, re.S):
        cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells:
            rows.append([" ".join(c) for c in cells])
    notebook_rows = [r for r in rows if len(r) == 7]
    return [r[:4] + r[5:] for r in notebook_rows] + [r for r in rows if len(r) != 7]


def pages(out: Path) -> set[str]:
    return {p.name for p in out.glob("*.html")}


def results(out: Path) -> dict:
    data = json.loads((out / "results.json").read_text())
    for s in data["submissions"]:
        s.pop("seconds"), s.pop("run_seconds")
    return data


def test_two_shards_merged_read_exactly_as_one_run(graded):
    base, root, whole, shards, merged = graded
    assert whole.returncode == 1, whole.stderr  # broken.ipynb is not ok
    assert merged.returncode == whole.returncode, merged.stderr
    # shard 1: alice, bob.ipynb, carol.zip (all ok); shard 2: bob, broken.ipynb (not ok), frank.ipynb
    assert [p.returncode for p in shards] == [0, 1], [p.stderr for p in shards]
    w, m = base / "whole", base / "merged"
    assert index_rows(m) == index_rows(w)
    bob_top = [r for r in index_rows(m) if r[2] == "bob.ipynb"]
    assert len(bob_top) == 1 and "duplicate name: 3 notebooks share the name &#x27;bob&#x27;" in bob_top[0][4]
    assert len(index_rows(w)) == 10 + 3  # 10 notebooks, 3 lab hand-ins (alice, bob, carol.zip)
    assert (m / "grades.csv").read_bytes() == (w / "grades.csv").read_bytes()
    assert pages(m) == pages(w) and {"alice-report.html", "bob-report.html", "carol-report.html",
                                     "frank.html", "broken.html"} <= pages(w)
    assert results(m) == results(w)
    assert json.loads((m / ".submissions-manifest.json").read_text()) == \
        json.loads((w / ".submissions-manifest.json").read_text())
    for name in pages(w) - {"index.html"}:  # the pages themselves are the shards' copies
        src = [base / s / name for s in ("s1", "s2") if (base / s / name).exists()]
        assert len(src) == 1 and src[0].read_bytes() == (m / name).read_bytes(), name
    assert not (m / SHARD_FILE).exists()
    ignored = (w / "index.html").read_text().split("Ignored files")[1]
    assert "README.txt" in ignored and "alice/data.csv" in ignored
    assert (m / "index.html").read_text().split("Ignored files")[1].split("</details>")[0] == \
        ignored.split("</details>")[0]


def test_each_shard_holds_its_part_and_a_record(graded):
    base, root, whole, shards, merged = graded
    recs = [json.loads((base / f"s{i}" / SHARD_FILE).read_text()) for i in (1, 2)]
    units = ["alice", "bob", "bob.ipynb", "broken.ipynb", "carol.zip", "frank.ipynb"]
    assert [r["units"] for r in recs] == [units[0::2], units[1::2]]  # round-robin over the sorted units
    assert [(r["shard"], r["count"], r["n_units"]) for r in recs] == [(1, 2, 6), (2, 2, 6)]
    assert recs[0]["fingerprint"] == recs[1]["fingerprint"]
    s1, s2 = pages(base / "s1") - {"index.html"}, pages(base / "s2") - {"index.html"}
    assert not s1 & s2 and s1 | s2 == pages(base / "whole") - {"index.html"}
    assert set(recs[0]["pages"]) == s1 and set(recs[1]["pages"]) == s2
    # every result travels with its evidence (results.json leaves it out)
    alice = [s for s in recs[0]["submissions"] if s["rel"].startswith("alice/")]
    assert len(alice) == 3 and all(s["result"]["evidence"] for s in alice)
    assert [s["key"] for s in recs[0]["students"]] == ["alice", "carol"]
    assert [s["key"] for s in recs[1]["students"]] == ["bob"]
    # useful alone: each shard's grades.csv has its students' rows as the whole run's
    whole_rows = {r["student"]: r for r in csv.DictReader(io.StringIO((base / "whole" / "grades.csv").read_text()))}
    for i, students in ((1, ["alice", "carol"]), (2, ["bob"])):
        rows = list(csv.DictReader(io.StringIO((base / f"s{i}" / "grades.csv").read_text())))
        assert [r["student"] for r in rows] == students and all(r == whole_rows[r["student"]] for r in rows)
    assert "README.txt" in recs[0]["ignored"] and "README.txt" not in recs[1]["ignored"]


def test_a_second_merge_keeps_typed_points_and_only_its_own_pages(graded, tmp_path):
    base, *_ = graded
    out = tmp_path / "m"
    shutil.copytree(base / "merged", out)
    text = (out / "grades.csv").read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[0]["model_points"] = "2.5"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\r\n")
    w.writeheader()
    w.writerows(rows)
    (out / "grades.csv").write_text(buf.getvalue())
    (out / "old-student.html").write_text("from an earlier merge")
    manifest = json.loads((out / ".submissions-manifest.json").read_text())
    (out / ".submissions-manifest.json").write_text(json.dumps({"files": manifest["files"] + ["old-student.html"]}))
    (out / "mine.html").write_text("the instructor's own page")
    proc = grade("--merge", base / "s2", base / "s1", "--out", out)  # order of the folders does not matter
    assert proc.returncode == 1, proc.stderr
    again = list(csv.DictReader(io.StringIO((out / "grades.csv").read_text())))
    assert again[0]["model_points"] == "2.5" and again[0]["student"] == rows[0]["student"]
    assert (out / "grades.csv.previous").is_file()
    assert not (out / "old-student.html").exists()  # stale: an earlier merge's page
    assert (out / "mine.html").read_text() == "the instructor's own page"  # foreign: never touched
    assert index_rows(out) == index_rows(base / "whole")


def refused(proc, *words):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in proc.stderr, proc.stderr


def test_merge_refuses_a_missing_a_duplicate_and_an_unreadable_shard(graded, tmp_path):
    base, *_ = graded
    out = tmp_path / "out"
    refused(grade("--merge", base / "s1", "--out", out), "missing shard 2 of 2")
    refused(grade("--merge", base / "s1", base / "s1", "--out", out), "shard 1/2 given twice")
    refused(grade("--merge", base / "s1", base / "whole", "--out", out), "no shard.json")
    bad = tmp_path / "bad"
    shutil.copytree(base / "s2", bad)
    (bad / SHARD_FILE).write_text("{ not json")
    refused(grade("--merge", base / "s1", bad, "--out", out), "shard.json cannot be read")
    refused(grade("--merge", base / "s1", base / "s2", "--out", base / "s1"), "is one of the --merge folders")
    assert not out.exists()  # nothing written by a refused merge


def test_merge_refuses_shards_of_other_classes_or_counts(graded, tmp_path):
    base, *_ = graded
    out = tmp_path / "out"
    other = tmp_path / "other"
    write(other / "zed.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    write(other / "amy.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    proc = grade("--submissions", other, "--out", tmp_path / "o2", "--shard", "2/2")
    assert (tmp_path / "o2" / SHARD_FILE).is_file(), proc.stderr
    refused(grade("--merge", base / "s1", tmp_path / "o2", "--out", out), "another class")
    three = tmp_path / "three"
    shutil.copytree(base / "s2", three)
    rec = json.loads((three / SHARD_FILE).read_text())
    rec["count"] = 3
    (three / SHARD_FILE).write_text(json.dumps(rec))
    refused(grade("--merge", base / "s1", three, "--out", out), "shard 2/3", "a shard of 2")
    assert not out.exists()


def test_merge_never_overwrites_a_foreign_file_nor_follows_a_link(graded, tmp_path):
    base, *_ = graded
    out = tmp_path / "out"
    out.mkdir()
    (out / "alice-report.html").write_text("not the grader's")
    refused(grade("--merge", base / "s1", base / "s2", "--out", out), "alice-report.html", "did not write")
    assert (out / "alice-report.html").read_text() == "not the grader's" and not (out / "index.html").exists()
    linked = tmp_path / "linked"
    shutil.copytree(base / "s1", linked)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (linked / "alice-report.html").unlink()
    (linked / "alice-report.html").symlink_to(secret)
    out2 = tmp_path / "out2"
    refused(grade("--merge", linked, base / "s2", "--out", out2), "not a regular file")
    assert not out2.exists()


def test_an_executed_shard_runs_only_its_hand_ins(tmp_path):
    """--execute re-executes the grader with its arguments through a pipe: --shard must travel too."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    root = tmp_path / "class"
    for name in ("amy", "ben", "cat"):
        root.mkdir(exist_ok=True)
        nbformat.write(new_notebook(cells=[new_code_cell(f"print('ran {name}')")]), root / f"{name}.ipynb")
    proc = grade("--submissions", root, "--out", tmp_path / "o", "--shard", "2/2", "--execute",
                 "--timeout", "120", "--jobs", "1")
    assert proc.returncode == 0, proc.stderr
    rec = json.loads((tmp_path / "o" / SHARD_FILE).read_text())
    assert rec["units"] == ["ben.ipynb"] and rec["settings"]["execute"] is True
    assert [s["rel"] for s in rec["submissions"]] == ["ben.ipynb"]
    assert "ran ben" in (tmp_path / "o" / "ben.html").read_text()
    assert not (tmp_path / "o" / "amy.html").exists() and not (tmp_path / "o" / "cat.html").exists()
