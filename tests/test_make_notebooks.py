"""The committed notebooks are exactly what scripts/make_notebooks.py generates
(outputs and execution counts aside), and their parameters cell comes from the
parameter schema in lab_utils/params.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import nbformat

from lab_utils.params import DEFAULTS, PARAMETERS, parameters_cell

ROOT = Path(__file__).resolve().parent.parent


def generated() -> dict:
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_notebooks()


def shape(nb) -> list[tuple]:
    return [(c.get("id"), c.cell_type, c.source, sorted(c.metadata.get("tags", []))) for c in nb.cells]


def test_committed_notebooks_equal_the_generator():
    books = generated()
    committed = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(books) == committed
    for name, nb in books.items():
        stored = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert shape(stored) == shape(nb), f"{name}: run scripts/make_notebooks.py, then refresh_notebooks.sh"
        assert stored.metadata.get("kernelspec") == nb.metadata["kernelspec"], name


def test_committed_exercise_solutions_equal_the_generator():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "scripts" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    books = module.build_exercises()
    assert sorted(books) == sorted(p.stem for p in (ROOT / "exercises").glob("*.ipynb"))
    for name, nb in books.items():
        stored = nbformat.read(ROOT / "exercises" / f"{name}.ipynb", as_version=4)
        assert shape(stored) == shape(nb), f"{name}: run scripts/make_notebooks.py"
        assert stored.metadata["cnn_circuits_lab"] == {"step": int(name[:2]), "notebook": name[:-len("_solution")],
                                                       "exercise": "solution"}


def test_parameters_cell_is_the_schema():
    cell = parameters_cell()
    namespace: dict = {}
    exec(cell, namespace)  # noqa: S102 - our own generated source
    assert {k: namespace[k] for k in PARAMETERS} == DEFAULTS
    for name, (_default, _types, doc) in PARAMETERS.items():
        assert any(line.startswith(f"{name} = choice.{name} ") and f"# {doc} [kit default: " in line
                   for line in cell.splitlines()), name
    # the snapshot the check cell compares with papermill's values is the cell's last line
    assert cell.splitlines()[-1].startswith("parameters_cell_values = choice.values_in(globals())")
    snapshot = namespace["parameters_cell_values"]
    assert snapshot.values == DEFAULTS and snapshot.read_from_choice == set(PARAMETERS) and snapshot.typed == {}
    for nb in generated().values():
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1 and tagged[0].source == cell
