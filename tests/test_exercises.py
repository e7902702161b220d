"""Exercises (issue 12, point 4): the student version is the solution with its marked regions
stripped; the checks pass on the solution, fail with a hint on the stripped version and on
wrong answers; the CHECK lines reach the grader's evidence."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab_utils import LabError
from lab_utils import exercises as X
from lab_utils.evidence import exercise_checks

ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((ROOT / "exercises").glob("*_solution.ipynb"))
SMALL = dict(probe_limit=16, steps=3, vis_size=48, n_neighbours=2, top_n=5)


# ------------------------------------------------------------------ stripping
def test_a_region_becomes_its_stub_at_its_indentation():
    src = "a = 1\n    ### BEGIN SOLUTION: x = None; y = 2\n    x = compute()\n    ### END SOLUTION\nb = 2"
    out, n = X.strip_source(src)
    assert n == 1 and out == f"a = 1\n    {X.YOUR_CODE}\n    x = None\n    y = 2\nb = 2"
    bare, _ = X.strip_source("### BEGIN SOLUTION\nsecret()\n### END SOLUTION")
    assert bare == f"{X.YOUR_CODE}\npass" and "secret" not in bare


def test_near_markers_are_refused_instead_of_leaking_the_solution():
    for marker in ("### begin solution", "###BEGIN SOLUTION", "###  BEGIN SOLUTION", "# BEGIN SOLUTION"):
        with pytest.raises(LabError, match="is not a marker"):
            X.strip_source(f"{marker}\nanswer = 42\n### END SOLUTION")
    nb = json.loads(SOLUTIONS[1].read_text())
    nb["cells"].append({"cell_type": "markdown", "metadata": {}, "source": "### BEGIN SOLUTION\n42\n### END SOLUTION"})
    with pytest.raises(LabError, match="only code cells are stripped"):
        X.strip_solutions(nb)


@pytest.mark.parametrize("src, message", [
    ("### BEGIN SOLUTION\nx = 1", "cell: the region opened at line 1 has no END SOLUTION"),
    ("x = 1\n### END SOLUTION", "line 2: END SOLUTION without a BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "line 2: BEGIN SOLUTION inside"),
])
def test_unbalanced_markers_are_named(src, message):
    with pytest.raises(LabError, match=message):
        X.strip_source(src)


def test_the_shipped_solutions_strip_to_student_versions_without_any_answer():
    assert [p.name for p in SOLUTIONS] == ["02_filter_selection_solution.ipynb", "03_channel_analysis_solution.ipynb"]
    for path in SOLUTIONS:
        nb = json.loads(path.read_text())
        before = copy.deepcopy(nb)
        student = X.strip_solutions(nb)
        assert nb == before  # the solution is not changed
        text = json.dumps(student)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text and X.YOUR_CODE in text
        assert student["metadata"]["cnn_circuits_lab"]["exercise"] == "student"
        assert student["metadata"]["cnn_circuits_lab"]["step"] == int(path.name[:2])
    three = X.strip_solutions(json.loads(SOLUTIONS[1].read_text()))
    code = "\n".join("".join(c["source"]) for c in three["cells"] if c["cell_type"] == "code")
    assert "norms = None" in code and "np.sqrt((kernel ** 2)" not in code and "by_sum = None" in code


def test_a_notebook_without_regions_is_not_a_solution():
    with pytest.raises(LabError, match="not an exercise's solution version"):
        X.strip_solutions(json.loads((ROOT / "notebooks" / "03_channel_analysis.ipynb").read_text()))


def test_the_command_never_replaces_a_file_unless_forced(tmp_path):
    out = tmp_path / "student"
    cmd = [sys.executable, "-m", "lab_utils.exercises", str(SOLUTIONS[1]), "--out", str(out)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert first.returncode == 0 and (out / "03_channel_analysis.ipynb").is_file()
    (out / "03_channel_analysis.ipynb").write_text("a student's work")
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 2 and "exists; not replaced (give --force" in again.stderr
    assert (out / "03_channel_analysis.ipynb").read_text() == "a student's work"
    assert subprocess.run(cmd + ["--force"], capture_output=True, text=True, cwd=ROOT).returncode == 0
    plain = tmp_path / "x.ipynb"  # a solution named without "_solution": its student version has its name
    plain.write_text(SOLUTIONS[1].read_text())
    with pytest.raises(LabError, match="would replace the solution"):
        X.strip_file(plain, tmp_path)
    assert plain.read_text() == SOLUTIONS[1].read_text()


# ------------------------------------------------------------------ checks, real weights
@pytest.fixture
def setup(vgg16, tmp_path, monkeypatch):
    import lab_utils

    monkeypatch.setenv("LAB_CHOICE_FILE", str(tmp_path / "lab-choice.yaml"))
    return lab_utils.check_parameters(probe_limit=16, steps=2, vis_size=32)


def _kernel(setup):
    return setup.model.get_layer(setup.layer_name).kernel.numpy()[:, :, :, setup.filter_index].astype(np.float64)


@pytest.mark.weights
def test_norm_check_passes_the_right_norms_and_names_common_mistakes(setup, capsys):
    k = _kernel(setup)
    right = np.sqrt((k ** 2).sum(axis=(0, 1)))
    cases = [(right, True, ""), (right ** 2, False, "squared norms"), (np.abs(k).sum(axis=(0, 1)), False, "L1 norms"),
             (np.sqrt((k ** 2).sum()), False, "norm of the whole filter"), (right[:5], False, "one norm per input"),
             (None, False, "norms is still None"), (right + np.eye(1, len(right), 3)[0], False, "first at channel 3")]
    for norms, passed, hint in cases:
        assert X.check_channel_norms(norms, setup) is passed
        line = capsys.readouterr().out.strip()
        assert line.startswith("CHECK l2_norms: " + ("PASS" if passed else "FAIL - ")) and hint in line


@pytest.mark.weights
def test_ranking_and_category_checks(setup, capsys):
    table = setup.channel_table()
    top = [int(c) for c in table["channel"]]
    assert X.check_top_channels(top, setup)
    for wrong, hint in ((top[::-1], "descending"), ([c + 1 for c in top], "0-based"), (top[:3], "keep top_k = 10"),
                        ([top[1], top[0]] + top[2:], "wrong order")):
        capsys.readouterr()
        assert not X.check_top_channels(wrong, setup) and hint in capsys.readouterr().out
    signs, sums = list(table["by_sign_count"]), list(table["by_sum"])
    assert X.check_categories(signs, sums, setup)
    capsys.readouterr()
    if signs != sums:  # filter 31: the rules disagree on some channels
        assert not X.check_categories(sums, signs, setup)
        assert "these are the results of the other rule" in capsys.readouterr().out
    flipped = ["inhibitory" if s == "excitatory" else "excitatory" for s in sums]
    assert not X.check_categories(signs, flipped, setup) and f"by_sum: {len(sums)} wrong" in capsys.readouterr().out


@pytest.mark.weights
def test_ascent_step_check(setup, capsys):
    import tensorflow as tf

    import lab_utils as lab

    to_layer = lab.submodel(setup.model, setup.layer_name, pre_activation=True)

    def step(sign=1.0, normalize=True):
        def ascent_step(image, learning_rate):
            x = tf.convert_to_tensor(image)
            with tf.GradientTape() as tape:
                tape.watch(x)
                value = tf.reduce_mean(to_layer(lab.preprocess(setup.model, x))[..., setup.filter_index])
            g = tape.gradient(value, x)
            return (x + sign * learning_rate * g / (tf.norm(g) if normalize else 1.0)).numpy()
        return ascent_step

    assert X.check_ascent_step(step(), setup)
    for fn, hint in ((step(-1.0), "went down the gradient"), (step(normalize=False), "wrong length"),
                     (lambda image, lr: image, "did not change"), (lambda image, lr: 1 / 0, "raised ZeroDivisionError"),
                     (lambda image, lr: image[0], "shape")):
        capsys.readouterr()
        assert not X.check_ascent_step(fn, setup)
        assert hint in capsys.readouterr().out


# ------------------------------------------------------------------ round trip, executed
def _run(book: Path, out: Path, cwd: Path, **params):
    import papermill as pm

    return pm.execute_notebook(str(book), str(out), parameters=params, cwd=str(cwd), kernel_name="python3",
                               progress_bar=False, log_output=False)


@pytest.mark.weights
@pytest.mark.slow
@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name[:2])
def test_solution_passes_student_version_fails_and_a_wrong_answer_fails(vgg16, tmp_path, solution):
    student = X.strip_file(solution, tmp_path / "student")
    ran = {}
    for label, book in (("solution", solution), ("student", student)):
        ran[label] = _run(book, tmp_path / f"{label}.ipynb", ROOT / "notebooks", **SMALL)
    solved = exercise_checks(json.loads((tmp_path / "solution.ipynb").read_text()))
    stripped = exercise_checks(json.loads((tmp_path / "student.ipynb").read_text()))
    assert solved and all(c.passed for c in solved)
    assert [c.name for c in stripped] == [c.name for c in solved] and not any(c.passed for c in stripped)
    assert all("still None" in c.hint or "did not change" in c.hint for c in stripped)  # clear, not a traceback
    # a wrong answer: the student's cell with squared norms / a descending step
    nb = json.loads(student.read_text())
    for cell in nb["cells"]:
        src = "".join(cell["source"])
        if "norms = None" in src:
            cell["source"] = src.replace("norms = None", "norms = (kernel ** 2).sum(axis=(0, 1))")
        if "    return image" in src and "def ascent_step" in src:
            cell["source"] = src.replace("    return image", "    return image - learning_rate")
    wrong = tmp_path / "wrong.ipynb"
    wrong.write_text(json.dumps(nb))
    _run(wrong, tmp_path / "wrong-out.ipynb", ROOT / "notebooks", **SMALL)
    first = exercise_checks(json.loads((tmp_path / "wrong-out.ipynb").read_text()))[0]
    assert not first.passed and ("squared norms" in first.hint or "step points elsewhere" in first.hint)
