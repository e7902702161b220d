"""A crafted class of lab hand-ins through ``render.sh --submissions`` (issue 12): one report
page per student with the right evidence, grades.csv, the index's student table, --verify,
--rubric, --execute; the originals stay byte-identical and no student script reaches a page."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import filled_notebook, kit_notebook
from lab_utils import evidence as E

ROOT = Path(__file__).resolve().parent.parent
NAMES = {s: n for s, n in E.STEP_NOTEBOOKS.items()}
ANSWER = "The filter responds to curved edges in many textures."


def filled(step: int, names: str = "Ada Lovelace, Alan Turing", answer: str = ANSWER) -> dict:
    return filled_notebook(step, answer, names)


def edit_output(nb: dict, marker: str, old: str, new: str) -> dict:
    """*nb* with *old* replaced by *new* in the stdout of the cell whose source holds *marker*."""
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and marker in E._source(cell):
            for out in cell["outputs"]:
                if out.get("output_type") == "stream":
                    text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                    assert old in text, (marker, old)
                    out["text"] = text.replace(old, new, 1)
    return nb


def write(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))


def digest(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def grade(*args, timeout=600):
    env = dict(os.environ, LAB_PROGRESS="0")
    return subprocess.run([sys.executable, "-m", "lab_utils.submissions", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, cwd=ROOT)


def grades(out: Path) -> dict:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


@pytest.fixture(scope="module")
def crafted_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    for s in NAMES:  # alice: everything, answered
        write(root / "alice" / f"{NAMES[s]}.ipynb", filled(s, names="Alice Liddell"))
    write(root / "bob" / "my_first_try.ipynb", filled(1, names="Bob"))  # renamed: metadata says step 1
    write(root / "bob" / "step3.ipynb", kit_notebook(3))  # unanswered; steps 2, 4, 5 missing
    for s in NAMES:  # carol: notebook 03 ran with another filter (mismatched parameters)
        nb = filled(s, names="Carol")
        if s == 3:
            nb = edit_output(nb, "check_parameters_from", "filter_index = 31 ", "filter_index = 7  ")
        write(root / "carol" / f"{NAMES[s]}.ipynb", nb)
    dan = edit_output(filled(3, names="Dan"), "format_channel_table(", "1     ", "1     ")  # untouched copy
    write(root / "dan" / "03_channel_analysis.ipynb", dan)
    eve = filled(1, names="Eve <script>alert('names')</script>",
                 answer="<script>alert('answer')</script><img src=x onerror=alert(1)> My five words are here.")
    write(root / "eve" / "01_model_choice.ipynb", eve)
    write(root / "frank.ipynb", {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# notes"}],
                                 "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    write(root / "gina" / "scratch.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    before = digest(root)
    out = root.parent / "out"
    proc = grade("--submissions", root, "--out", out, "--jobs", "2")
    return root, out, proc, before


def test_one_report_per_lab_folder_and_the_rest_as_before(crafted_class):
    root, out, proc, before = crafted_class
    assert proc.returncode == 1, proc.stderr  # gina's empty notebook is not ok
    assert digest(root) == before  # the hand-ins are only read
    for student in ("alice", "bob", "carol", "dan", "eve"):
        assert (out / f"{student}-report.html").is_file(), student
    assert not (out / "gina-report.html").exists() and not (out / "frank-report.html").exists()
    assert (out / "frank.html").is_file() and (out / "alice__03_channel_analysis.html").is_file()
    results = json.loads((out / "results.json").read_text())
    assert [s["folder"] for s in results["students"]] == ["alice", "bob", "carol", "dan", "eve"]


def test_the_gradebook_holds_the_evidence_and_empty_points(crafted_class):
    _, out, _, _ = crafted_class
    rows = grades(out)
    assert list(rows) == ["alice", "bob", "carol", "dan", "eve"]
    alice, bob, carol, dan = rows["alice"], rows["bob"], rows["carol"], rows["dan"]
    assert alice["status"] == "complete" and alice["answers_written"] == "7/7" and alice["names"] == "Alice Liddell"
    assert all(alice[f"{i}_points"] == "" for i in ("model", "filter", "channels", "circuit"))
    assert alice["max_points_15"] == "15" and alice["page"] == "alice-report.html"
    assert bob["steps_handed_in"] == "1 3" and bob["missing_steps"] == "2 4 5"
    assert "bob/my_first_try.ipynb (recognized by its metadata)" in bob["model_evidence"]
    assert "answer 'what do the weights say?': not written (placeholder)" in bob["channels_evidence"]
    assert bob["filter_evidence"].startswith("step 2 not handed in")
    assert "parameter filter_index differs: step 1: 31; step 2: 31; step 3: 7; step 4: 31; step 5: 31" in \
        carol["channels_evidence"]
    assert carol["status"].startswith("to check")
    assert dan["missing_steps"] == "1 2 4 5" and "no team names" not in dan["status"]


def test_the_index_lists_students_first_and_links_the_gradebook(crafted_class):
    _, out, _, _ = crafted_class
    index = (out / "index.html").read_text()
    assert 'href="grades.csv"' in index and index.index("Lab hand-ins") < index.index("<h2>Notebooks</h2>")
    table = index[index.index("Lab hand-ins"):index.index("<h2>Notebooks</h2>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]
    assert len(rows) == 5 and 'href="alice-report.html"' in rows[0] and "complete" in rows[0]
    assert "steps missing: 2, 4" in rows[1] and "parameters differ: filter_index" in rows[2]  # 5 is not scored
    assert "<script>" not in index and "&lt;script&gt;" in index  # eve's names, escaped


def test_a_report_page_shows_the_notebooks_in_lab_order_under_the_score_sheet(crafted_class):
    _, out, _, _ = crafted_class
    page = (out / "alice-report.html").read_text()
    assert "Content-Security-Policy" in page and "Score sheet: Alice Liddell" in page
    positions = [page.index(f"Step {s}: {NAMES[s]}") for s in NAMES]
    assert positions == sorted(positions) and page.index("Score sheet") < positions[0]
    assert page.count('class="points-box"') == 5 and 'href="index.html"' in page
    assert 'href="alice__01_model_choice.html"' in page  # each notebook's own page
    eve = (out / "eve-report.html").read_text()
    assert "<script" not in eve.lower() and not re.search(r"<[^>]*\bonerror\s*=", eve, flags=re.I)
    assert "My five words are here." in eve


def test_verify_flags_edited_and_stale_tables(tmp_path, vgg16):
    root = tmp_path / "class"
    write(root / "ok" / "03_channel_analysis.ipynb", filled(3))
    write(root / "edited" / "03_channel_analysis.ipynb",
          edit_output(filled(3), "format_channel_table(", "0.", "9.", ))
    stale = edit_output(filled(3), "check_parameters_from", "filter_index = 31 ", "filter_index = 7  ")
    write(root / "stale" / "03_channel_analysis.ipynb", stale)
    proc = grade("--submissions", root, "--out", tmp_path / "out", "--verify")
    assert proc.returncode == 0, proc.stderr
    rows = grades(tmp_path / "out")
    assert "channel table: matches a recomputation" in rows["ok"]["channels_evidence"]
    for name in ("edited", "stale"):
        assert "channel table: differs from a recomputation" in rows[name]["channels_evidence"], name
        assert "channel table differs" in rows[name]["status"] or rows[name]["status"].startswith("to check")


def test_an_instructors_rubric_changes_items_points_and_columns(tmp_path):
    root = tmp_path / "class"
    write(root / "team" / "01_model_choice.ipynb", filled(1))
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text('items:\n  - {id: setup, step: 1, points: 10, title: model, answers: ["why this model?"]}\n')
    proc = grade("--submissions", root, "--out", tmp_path / "out", "--rubric", rubric)
    assert proc.returncode == 0, proc.stderr
    row = grades(tmp_path / "out")["team"]
    assert row["max_points_10"] == "10" and "setup_evidence" in row and "model_evidence" not in row
    assert row["status"] == "complete"  # its one scored step is there and answered; the others are not scored
    assert row["missing_steps"] == "2 3 4 5"  # but still listed
    bad = tmp_path / "bad.yaml"
    bad.write_text("items: [{id: x, step: 9, points: 1, title: t}]")
    proc = grade("--submissions", root, "--out", tmp_path / "out2", "--rubric", bad)
    assert proc.returncode == 2 and "--rubric: bad.yaml, item 1 (x): step must be one of" in proc.stderr


def test_executed_hand_ins_report_what_this_run_printed(tmp_path):
    """--execute: the evidence comes from this run's outputs (a CHECK line printed now, an
    error raised now), not from what the student stored."""
    root = tmp_path / "class"

    def lab_nb(step, code, stored=""):
        return {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {E.KIT_METADATA: {"step": step},
                             "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "cells": [{"cell_type": "code", "metadata": {}, "source": code, "execution_count": 1,
                           "outputs": [{"output_type": "stream", "name": "stdout", "text": stored}]}]}

    # a check cell (it calls check_ascent_step) whose stored output is an old failure; this run passes
    check_cell = "def check_ascent_step():\n    print('CHECK ascent_step: PASS')\n\n\ncheck_ascent_step()"
    write(root / "team" / "a.ipynb", lab_nb(2, check_cell, "CHECK ascent_step: FAIL - old"))
    write(root / "team" / "b.ipynb", lab_nb(3, "1/0  # check_channel_norms(", "CHECK l2_norms: PASS"))
    proc = grade("--submissions", root, "--out", tmp_path / "out", "--execute", "--timeout", "120", timeout=400)
    assert proc.returncode == 1, proc.stderr  # b raises
    row = grades(tmp_path / "out")["team"]
    assert "check ascent_step: pass" in row["filter_evidence"] and row["checks_passed"] == "1/1"
    assert "errors in 1 cell" in row["channels_evidence"] and "l2_norms" not in row["channels_evidence"]


def test_a_rerun_keeps_the_points_typed_into_grades_csv(crafted_class, tmp_path):
    import shutil

    root, out, _, before = crafted_class
    rerun = tmp_path / "out"
    shutil.copytree(out, rerun)
    with open(rerun / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows[0]["model_points"], rows[0]["total_points"] = "2.5", "12"
    with open(rerun / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    typed = (rerun / "grades.csv").read_text(encoding="utf-8")
    grade("--submissions", root, "--out", rerun, "--jobs", "2")
    again = grades(rerun)
    assert again["alice"]["model_points"] == "2.5" and again["alice"]["total_points"] == "12"
    assert again["bob"]["model_points"] == ""
    assert (rerun / "grades.csv.previous").read_text(encoding="utf-8") == typed  # the file as it was
    assert digest(root) == before


def test_the_private_folder_is_removed_even_when_the_batch_fails(tmp_path, monkeypatch):
    import tempfile

    from lab_utils import submissions as S
    from lab_utils.submissions import batch

    root = tmp_path / "class"
    write(root / "team" / "01_model_choice.ipynb", filled(1))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    def broken(*a, **k):
        raise RuntimeError("a bug while grouping the hand-ins")

    monkeypatch.setattr(batch, "lab_hand_ins", broken)  # after the notebooks' bounded copies were written
    args = S.build_parser().parse_args(["--submissions", str(root), "--out", str(tmp_path / "out")])
    with pytest.raises(RuntimeError, match="a bug while grouping the hand-ins"):
        S.run_batch(args, root, tmp_path / "out")
    assert not list(scratch.glob("lab-grading-*"))  # the bounded copy of the notebook went with it
