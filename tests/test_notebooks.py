"""Notebook tests: a papermill sweep over other (layer, filter) pairs, and the
one-line failures of bad parameters. (nbval checks the stored reference outputs
separately: pytest collects notebooks/*.ipynb with --nbval.)"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import papermill as pm
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SMALL = dict(probe_limit=16, steps=3, vis_size=48, n_neighbours=2, top_n=5)
SWEEP = [("block2_conv2", 5), ("block3_conv2", 100), ("block4_conv1", 7)]

pytestmark = [pytest.mark.weights, pytest.mark.slow]


def run(book: Path, out: Path, **params):
    return pm.execute_notebook(str(book), str(out), parameters=params, cwd=str(book.parent),
                               kernel_name="python3", progress_bar=False, log_output=False)


def stdout_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stdout")


def stderr_of(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("output_type") == "stream" and o.get("name") == "stderr")


def test_five_notebooks_in_order_with_one_parameters_cell():
    names = [b.stem for b in NOTEBOOKS]
    assert names == ["01_model_choice", "02_filter_selection", "03_channel_analysis",
                     "04_channel_visualization", "05_summary"]
    from lab_utils.params import PARAMETERS

    for book in NOTEBOOKS:
        nb = nbformat.read(book, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, book.name
        for name in PARAMETERS:  # every student choice is in the one parameters cell
            assert f"\n{name} = " in "\n" + tagged[0].source, (book.name, name)
        students = [c for c in nb.cells if "student" in c.metadata.get("tags", [])]
        names = [c for c in students if "names" in c.metadata.get("tags", [])]
        assert len(names) == (1 if book.name.startswith("01") else 0), book.name  # the team's names: in 01
        assert all(c.source.startswith("### ✍️ TEAM: team names") for c in names)
        answers = [c for c in students if c not in names]
        assert answers and all(c.source.startswith("### ✍️ YOUR ANSWER") for c in answers), book.name
        assert nb.metadata["cnn_circuits_lab"]["step"] == int(book.name[:2])  # renamed files are still recognized
        # no analysis code of its own: code cells only call into lab_utils / plots
        for c in nb.cells:
            if c.cell_type == "code":
                assert "def " not in c.source and "import numpy" not in c.source, (book.name, c.source[:60])


@pytest.mark.parametrize("layer_name,filter_index", SWEEP)
def test_sweep_all_notebooks_print_the_channel_table(tmp_path, vgg16, layer_name, filter_index):
    from lab_utils import channel_table, feeding_layer
    from lab_utils.circuits import format_channel_table

    table = channel_table(vgg16, layer_name, filter_index, 10)
    expected = format_channel_table(table)
    feeder = feeding_layer(vgg16, layer_name)
    for book in NOTEBOOKS:
        nb = run(book, tmp_path / book.name, layer_name=layer_name, filter_index=filter_index, **SMALL)
        out = stdout_of(nb)
        assert f"{layer_name} filter {filter_index} (0-based)" in out, book.name
        assert not stderr_of(nb).strip(), (book.name, stderr_of(nb)[:500])
        if book.name.startswith("03"):
            assert expected in out
        if book.name.startswith("04"):
            assert f"fed by {feeder}" in out
            assert "visualizing its channels " + ", ".join(str(c) for c in table.channel) in out
        if book.name.startswith("05"):
            assert f"come from {feeder}" in out
            for c in table.channel[:3]:
                assert f"{int(c)} (" in out


@pytest.mark.parametrize("params,message", [
    (dict(layer_name="block9_conv9"), "unknown layer 'block9_conv9'; conv layers of vgg16: block1_conv1"),
    (dict(filter_index=999), "filter_index of block3_conv1 999 is out of range; valid: 0..255"),
])
def test_bad_parameter_stops_with_one_line(tmp_path, params, message):
    out = tmp_path / "bad.ipynb"
    with pytest.raises(pm.PapermillExecutionError) as err:
        run(NOTEBOOKS[1], out, **params)
    assert message in err.value.evalue
    nb = json.loads(out.read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert len(errors) == 1
    # the stored error is one readable line, not a traceback wall
    assert len(errors[0]["traceback"]) == 1 and message in errors[0]["traceback"][0]
    # it stopped in the check cell, right after the parameters
    assert "check_parameters_from" in "".join(
        c["source"] if isinstance(c["source"], str) else "".join(c["source"])
        for c in nb["cells"] if c["cell_type"] == "code" and any(o["output_type"] == "error" for o in c.get("outputs", [])))
