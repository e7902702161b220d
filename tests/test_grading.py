"""The rubric as data, the evidence read from lab notebooks, and one student's report
(issue 12): unit tests on notebooks built here and on the kit's own stored notebooks."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from conftest import filled_notebook, kit_notebook
from lab_utils import LabError
from lab_utils import evidence as E
from lab_utils import grading as G
from lab_utils.rubric import load_rubric

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"


# ------------------------------------------------------------------ rubric
def test_the_shipped_rubric_is_the_labs_fifteen_points():
    rubric = load_rubric()
    assert [(i.id, i.step, i.points) for i in rubric.items] == [
        ("model", 1, 3), ("filter", 2, 4), ("channels", 3, 4), ("circuit", 4, 4)]
    assert rubric.total == 15
    assert rubric.item("model").heading() == "Step 1: choose a pretrained model (3 points)"


def test_every_rubric_answer_is_an_answer_cell_of_its_notebook_and_headings_come_from_it():
    rubric = load_rubric()
    for item in rubric.items:
        nb = json.loads(next(NOTEBOOKS.glob(f"0{item.step}_*.ipynb")).read_text())
        titles = [a.title for a in E.answers(nb)]
        assert set(item.answers) <= set(titles), (item.id, titles)
        assert E._source(nb["cells"][0]).startswith("# " + item.heading())


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "rubric.yaml"
    path.write_text(text)
    return path


def test_an_edited_rubric_changes_points_headings_and_items(tmp_path):
    import importlib.util

    path = _write(tmp_path, """
course: variant B
items:
  - {id: model, step: 1, points: 5, title: pick a network, answers: ["why this model?"]}
  - {id: filter6, step: 2, points: 2.5, title: one filter, scored: six channels, answers: [hypothesis]}
""")
    rubric = load_rubric(path)
    assert rubric.total == 7.5 and rubric.item("filter6").heading() == "Step 2: one filter (2.5 points)"
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    books = make.build_notebooks(rubric)
    assert books["01_model_choice"].cells[0].source.startswith("# Step 1: pick a network (5 points)")
    assert books["02_filter_selection"].cells[0].source.startswith("# Step 2: one filter (2.5 points)")
    assert books["03_channel_analysis"].cells[0].source.startswith("# Step 3: analyze each channel of the filter\n")


@pytest.mark.parametrize("text, message", [
    ("items: []", "non-empty list 'items'"),
    ("items: [{id: a, step: 1, points: 1, title: t}, {id: a, step: 2, points: 1, title: u}]", "id 'a' is used twice"),
    ("items: [{id: a, step: 6, points: 1, title: t}]", r"item 1 \(a\): step must be one of 1, 2, 3, 4, 5, got 6"),
    ("items: [{id: a, step: 1, points: -1, title: t}]", "points must be a number from 0 to 1000"),
    ("items: [{id: a, step: 1, points: 1, title: t, pionts: 2}]", "unknown field"),
    ("items: [{id: 'a b', step: 1, points: 1, title: t}]", "id must be a short name"),
    ("items: [{id: a, step: 1, points: 1, title: t, answers: x}]", "answers must be a list"),
    ("items: [{id: a, step: 1, points: 1, title: ''}]", "title must be non-empty text"),
    ("items: [{id: a, step: 1", "not valid YAML"),
])
def test_a_bad_rubric_stops_with_one_line(tmp_path, text, message):
    with pytest.raises(LabError, match=message) as info:
        load_rubric(_write(tmp_path, text))
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------ evidence
def _nb(cells, step=None):
    meta = {E.KIT_METADATA: {"step": step}} if step else {}
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": meta, "cells": cells}


def _md(text, tags=(), answer=None):
    meta = {"tags": list(tags)}
    if answer:
        meta[E.KIT_METADATA] = {"answer": answer}
    return {"cell_type": "markdown", "metadata": meta, "source": text}


def _code(source, outputs=(), count=1):
    return {"cell_type": "code", "metadata": {}, "source": source, "outputs": list(outputs),
            "execution_count": count}


def _answer(title, body=E.PLACEHOLDER):
    return _md(f"{E.ANSWER_MARK} {title}\n\n*the prompt*\n\n{body}", ["student"], title)


def test_the_lab_step_comes_from_metadata_then_the_file_name_then_the_heading():
    assert E.lab_step(_nb([], step=3), "anything.ipynb") == E.StepFound(3, "metadata")
    assert E.lab_step(_nb([]), "04_channel_visualization (1).ipynb") == E.StepFound(4, "file name")
    assert E.lab_step(_nb([]), "team7_Step2.ipynb") == E.StepFound(2, "file name")
    assert E.lab_step(_nb([_md("# Step 5: summary")]), "final.ipynb") == E.StepFound(5, "heading")
    assert E.lab_step(_nb([_md("# Notes")]), "2023_notes.ipynb").step is None  # a year is not a step
    assert E.lab_step(_nb([]), "step12.ipynb").step is None
    for name in ("4-layer-net.ipynb", "2 cats.ipynb", "footstep3.ipynb", "1_scratch.ipynb"):
        assert E.lab_step(_nb([]), name).step is None, name


def test_answers_count_the_students_words_only():
    nb = _nb([_answer("a"), _answer("b", "The filter detects *curves*; it's built from 3 edges."),
              _answer("c", E.PLACEHOLDER + "\n\nI wrote below the placeholder"), _md("plain cell")])
    found = {a.title: a for a in E.answers(nb)}
    assert not found["a"].written and found["a"].placeholder_left and found["a"].describe() == "not written (placeholder)"
    assert found["b"].words == 9 and found["b"].written and not found["b"].placeholder_left
    assert found["c"].written and found["c"].placeholder_left
    assert len(found) == 3
    italic = _md(f"{E.ANSWER_MARK} d\n\n*the prompt*\n\n*It is a plain chain of convs*", ["student"], "d")
    no_heading = _md("*It is a plain chain of convs*", ["student"], "e")
    same_line = _md(f"{E.ANSWER_MARK} f\n\n*the prompt* my answer", ["student"], "f")
    unquoted = _md(f"{E.ANSWER_MARK} g\n\n*the prompt*\n\n_(write here: replace this line)_", ["student"], "g")
    copied = [_answer("h", "first half of it"), _answer("h")]
    more = {a.title: a for a in E.answers(_nb([italic, no_heading, same_line, unquoted, *copied]))}
    assert more["d"].words == 7 and more["e"].words == 7 and more["f"].words == 4
    assert not more["g"].written and more["g"].placeholder_left
    assert more["h"].words == 4 and more["h"].written  # a copied cell: one answer


def test_an_answer_cell_renamed_by_the_student_keeps_its_title_from_metadata():
    cell = _answer("hypothesis", "edges")
    cell["source"] = cell["source"].replace("### ✍️ YOUR ANSWER: hypothesis", "### My hypothesis!")
    assert [(a.title, a.words) for a in E.answers(_nb([cell]))] == [("hypothesis", 1)]


def test_team_names_are_read_from_the_names_cell():
    cell = _md(f"{E.NAMES_MARK} team names\n\n- Ada Lovelace\n- Alan  Turing and Grace Hopper", ["student", "names"])
    assert E.team_names(_nb([cell])) == ["Ada Lovelace", "Alan Turing", "Grace Hopper"]
    quoted = _md(f"{E.NAMES_MARK} team names\n\n> Alice Martin, Bob Durand", ["student", "names"])
    assert E.team_names(_nb([quoted])) == ["Alice Martin", "Bob Durand"]
    typed_in = _md(f"{E.NAMES_MARK} team names\n\n> _(Alice, Bob)_", ["student", "names"])
    assert E.team_names(_nb([typed_in])) == ["Alice", "Bob"]
    empty = _md(f"{E.NAMES_MARK} team names\n\n{E.NAMES_PLACEHOLDER}", ["student", "names"])
    assert E.team_names(_nb([empty])) == []
    assert E.answers(_nb([cell])) == []  # the names cell is not an answer


def test_parameters_are_read_from_the_kit_notebooks_check_output():
    nb = json.loads((NOTEBOOKS / "03_channel_analysis.ipynb").read_text())
    shown = E.parameters_shown(nb)
    assert shown["model_name"] == "'vgg16'" and shown["layer_name"] == "'block3_conv1'"
    assert shown["filter_index"] == "31" and shown["top_k"] == "10" and shown["probe_set"] == "None"
    assert set(shown) >= set(G.SHARED_PARAMETERS)


def test_exercise_checks_keep_the_last_result_of_each_name():
    out = {"output_type": "stream", "name": "stdout",
           "text": "CHECK l2_norms: FAIL - norms of the slices, not of the filter\nCHECK ranking: PASS\n"}
    again = {"output_type": "stream", "name": "stdout", "text": "CHECK l2_norms: PASS\n"}
    norms_cell = "_ = exercises.check_channel_norms(norms, setup)"
    both = "_ = exercises.check_channel_norms(norms, setup)\n_ = exercises.check_top_channels(top_channels, setup)"
    checks = E.exercise_checks(_nb([_code(both, [out]), _code(norms_cell, [again])]))
    assert [(c.name, c.passed) for c in checks] == [("l2_norms", True), ("ranking", True)]
    failed = E.exercise_checks(_nb([_code(norms_cell, [out])]))
    assert failed[0].hint == "norms of the slices, not of the filter" and not failed[0].passed


def test_a_check_line_printed_by_the_student_does_not_count_and_a_missing_check_is_a_failure():
    fake = {"output_type": "stream", "name": "stdout", "text": "CHECK l2_norms: PASS\nCHECK ascent_step: PASS\n"}
    real_fail = {"output_type": "stream", "name": "stdout", "text": "CHECK l2_norms: FAIL - squared\r\n"}
    nb = _nb([_code("_ = exercises.check_channel_norms(norms, setup)", [real_fail]), _code("print(...)", [fake])], 3)
    assert [(c.name, c.passed) for c in E.exercise_checks(nb)] == [("l2_norms", False)]  # not an exercise notebook
    nb["metadata"][E.KIT_METADATA]["exercise"] = "student"
    checks = {c.name: c for c in E.exercise_checks(nb)}
    assert not checks["l2_norms"].passed and checks["l2_norms"].hint == "squared"
    assert not checks["ranking"].passed and checks["ranking"].hint.startswith("not run")
    assert set(checks) == {"l2_norms", "ranking", "categories"}


def test_notebook_evidence_says_whether_it_ran_cleanly():
    err = {"output_type": "error", "ename": "NameError", "evalue": "x", "traceback": []}
    assert E.notebook_evidence(_nb([_code("1", count=None)], 1), "a.ipynb").run_text() == "not run (no outputs)"
    assert E.notebook_evidence(_nb([_code("1", [err]), _code("2", [err])], 1), "a.ipynb").run_text() == \
        "errors in 2 cells"
    assert E.notebook_evidence(_nb([_code("1")], 1), "a.ipynb").ran_clean


# ------------------------------------------------------------------ one student's report
_kit_notebook = kit_notebook


def _filled(step: int, words="The filter responds to curved edges.") -> dict:
    return filled_notebook(step, words)


def test_a_complete_hand_in_has_nothing_flagged():
    rubric = load_rubric()
    nbs = [E.notebook_evidence(_filled(s), f"{E.STEP_NOTEBOOKS[s]}.ipynb") for s in range(1, 6)]
    report = G.student_report("team-a", nbs, rubric)
    assert report.names == ["Ada Lovelace", "Alan Turing"] and report.display_name == "Ada Lovelace, Alan Turing"
    assert report.flags() == [] and report.status() == "complete"
    assert report.answers_count() == (7, 7)
    assert all(not ev.flags() for ev in report.items)


def test_missing_steps_unwritten_answers_renamed_files_and_mismatched_parameters_are_flagged():
    rubric = load_rubric()
    one = E.notebook_evidence(_filled(1), "renamed-by-student.ipynb")  # metadata still says step 1
    two = _kit_notebook(2)  # answers left as placeholders
    three = _filled(3)
    for cell in three["cells"]:  # ran with another filter
        for out in cell.get("outputs", []):
            if "where each value comes from:" in "".join(out.get("text", "")):
                out["text"] = "".join(out["text"]).replace("filter_index = 31 ", "filter_index = 7  ")
    nbs = [one, E.notebook_evidence(two, "02_filter_selection.ipynb"),
           E.notebook_evidence(three, "03_channel_analysis.ipynb"),
           E.notebook_evidence(_filled(3), "03_channel_analysis_v2.ipynb")]
    report = G.student_report("team-b", nbs, rubric)
    assert report.by_step[1].step.how == "metadata" and report.missing_steps == [4, 5]
    flags = report.flags()
    assert flags[0] == "steps missing: 4"  # step 5 (the summary) is not scored: listed, not flagged
    assert any(f.startswith("two notebooks for step 3") for f in flags)
    assert "answer 'hypothesis' not written" in flags
    assert any(f.startswith("parameters differ: filter_index") for f in flags)
    assert report.mismatched["filter_index"] == {1: "31", 2: "31", 3: "7"}
    circuit = report.items[3]
    assert circuit.flags() == ["step 4 missing"] and not circuit.handed_in
    assert report.status() == f"to check: {len(flags)} issues"


def test_the_gradebook_has_a_row_per_student_and_empty_points(tmp_path):
    rubric = load_rubric()
    good = G.student_report("team-a", [E.notebook_evidence(_filled(s), f"0{s}.ipynb") for s in range(1, 6)], rubric)
    evil = _filled(1, words="=HYPERLINK(\"http://x\")")
    for cell in evil["cells"]:
        if "names" in cell["metadata"].get("tags", []):
            cell["source"] = f"{E.NAMES_MARK} team names\n\n=cmd|' /C calc'!A0"
    bad = G.student_report("team-z", [E.notebook_evidence(evil, "01.ipynb")], rubric)
    text = G.gradebook_csv([good, bad], rubric, {"team-a": "team-a.html", "team-z": "team-z.html"})
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["student"] for r in rows] == ["team-a", "team-z"]
    assert list(rows[0]) == G.gradebook_columns(rubric)
    assert all(rows[0][f"{i.id}_points"] == "" for i in rubric.items) and rows[0]["total_points"] == ""
    assert rows[0]["max_points_15"] == "15" and rows[0]["status"] == "complete"
    assert rows[1]["missing_steps"] == "2 3 4 5" and rows[1]["page"] == "team-z.html"
    assert rows[1]["names"].startswith("'=")  # never a formula in a spreadsheet
    assert "answer 'why this model?': 6 words" in rows[0]["model_evidence"]


def test_the_score_sheet_escapes_what_students_wrote():
    rubric = load_rubric()
    nb = _filled(1)
    for cell in nb["cells"]:
        if "names" in cell["metadata"].get("tags", []):
            cell["source"] = f"{E.NAMES_MARK} team names\n\n<script>alert(1)</script>"
    report = G.student_report("<b>x</b>", [E.notebook_evidence(nb, "01.ipynb")], rubric)
    sheet = G.score_sheet_html(report, rubric)
    assert "<script>" not in sheet and "&lt;script&gt;" in sheet and "<b>x</b>" not in sheet
    assert sheet.count('class="points-box"') == len(rubric.items) + 1


def test_a_jupyter_copy_is_not_graded_before_the_original_and_names_come_from_any_notebook():
    rubric = load_rubric()
    copy1 = E.notebook_evidence(_kit_notebook(1), "alice/01_model_choice-Copy1.ipynb")  # empty answers, no names
    original = E.notebook_evidence(_filled(1), "alice/01_model_choice.ipynb")
    report = G.student_report("alice", [copy1, original], rubric)
    assert report.by_step[1].file == "alice/01_model_choice.ipynb" and report.names == ["Ada Lovelace", "Alan Turing"]
    assert report.duplicates == {1: ["alice/01_model_choice.ipynb", "alice/01_model_choice-Copy1.ipynb"]}
    named_elsewhere = E.notebook_evidence(_filled(1), "alice/old_try.ipynb")
    report = G.student_report("alice", [copy1, named_elsewhere], rubric)
    assert report.names == ["Ada Lovelace", "Alan Turing"]  # the graded one is the answered one


def test_a_rerun_keeps_the_points_the_grader_typed():
    rubric = load_rubric()
    report = G.student_report("team-a", [E.notebook_evidence(_filled(s), f"0{s}.ipynb") for s in range(1, 6)], rubric)
    first = G.gradebook_csv([report], rubric, {"team-a": "team-a.html"})
    rows = list(csv.DictReader(io.StringIO(first)))
    rows[0]["model_points"] = "3"  # the grader's 3 points for the first item, typed in a spreadsheet
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    typed = buf.getvalue()
    again = list(csv.DictReader(io.StringIO(G.gradebook_csv([report], rubric, {"team-a": "team-a.html"}, typed))))
    assert again[0]["model_points"] == "3" and again[0]["filter_points"] == ""


def test_the_reserved_id_total_is_refused(tmp_path):
    with pytest.raises(LabError, match="id 'total' is reserved"):
        load_rubric(_write(tmp_path, "items: [{id: total, step: 1, points: 1, title: t}]"))
