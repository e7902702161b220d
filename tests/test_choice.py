"""The lab choice (issue 10, point 1): one file that every notebook reads, written by
notebook 02, with the precedence papermill / render.sh -p > typed in a parameters cell >
lab choice > kit defaults.

Unit tests on ``lab_utils.choice``, then the notebooks themselves, each in a kernel of
its own (as a student runs them in Jupyter): a filter typed into 02's cell, or written
into the file, is what 03, 04 and 05 use; a papermill value wins and writes nothing.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from lab_utils import choice as C
from lab_utils.config import LabError
from lab_utils.params import DEFAULTS, PARAMETERS

ROOT = Path(__file__).resolve().parent.parent
BOOKS = {p.stem[:2]: p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
# A cheap lab: the notebooks run in seconds each.
CHEAP = {"probe_limit": 12, "steps": 3, "vis_size": 48, "n_neighbours": 2, "top_n": 5}


@pytest.fixture
def choice_file(tmp_path, monkeypatch):
    path = tmp_path / "kit" / C.CHOICE_FILE_NAME
    monkeypatch.setenv("LAB_CHOICE_FILE", str(path))
    return path


def cell_namespace(choice: C.LabChoice, **typed) -> dict:
    """What a generated parameters cell leaves in globals(), with *typed* values typed by hand."""
    from lab_utils.params import parameters_cell

    source = parameters_cell()
    for name, value in typed.items():
        source = source.replace(f"{name} = choice.{name} ", f"{name} = {value!r} ")
    namespace: dict = {}
    exec(source, namespace)  # noqa: S102 - our own generated cell
    assert namespace["choice"].path == choice.path
    return namespace


# ---------------------------------------------------------------------- the file


def test_first_use_writes_the_defaults_as_comments_and_changes_nothing(choice_file):
    loaded = C.load_lab_choice()
    assert loaded.path == choice_file and loaded.chosen == {} and loaded.values == DEFAULTS
    text = choice_file.read_text()
    for name in PARAMETERS:
        assert f"\n# {name}: " in text, name  # every default shown, none set
    assert C.load_lab_choice().chosen == {}  # reading it back sets nothing
    assert loaded.filter_index == DEFAULTS["filter_index"]
    with pytest.raises(AttributeError):
        loaded.colour


def test_saved_values_are_read_back_and_keep_the_others_at_default(choice_file):
    C.save_lab_choice({"filter_index": 7})
    C.save_lab_choice({"layer_name": "block3_conv2"})  # a second save keeps the first
    loaded = C.load_lab_choice()
    assert loaded.chosen == {"filter_index": 7, "layer_name": "block3_conv2"}
    assert loaded.values == {**DEFAULTS, "filter_index": 7, "layer_name": "block3_conv2"}
    assert loaded.source_of("filter_index") == C.LAB_CHOICE and loaded.source_of("seed") == C.KIT_DEFAULT
    assert "\nfilter_index: 7  # " in choice_file.read_text()
    assert not list(choice_file.parent.glob(".*.tmp"))


def test_a_hand_edited_file_is_read_and_its_mistakes_are_one_line_errors(choice_file):
    choice_file.parent.mkdir(parents=True)
    choice_file.write_text("filter_index: 12\nprobe_set: my-images\nprobe_limit: null\n")
    loaded = C.load_lab_choice()
    assert loaded.filter_index == 12 and loaded.probe_limit is None
    # a relative folder is relative to the file's folder (the kit), not to notebooks/
    assert loaded.probe_set == str((choice_file.parent / "my-images").resolve())
    for text, message in [("filter_index: [7\n", "is not valid YAML (line 2"),
                          ("colour: red\n", "sets unknown parameter(s) colour; valid: model_name"),
                          ("- 7\n", "must hold 'name: value' lines")]:
        choice_file.write_text(text)
        with pytest.raises(LabError, match=None) as err:
            C.load_lab_choice()
        assert message in str(err.value) and str(choice_file) in str(err.value)


def test_a_bad_value_in_the_file_says_it_comes_from_the_file(choice_file):
    from lab_utils.session import check_parameters

    C.save_lab_choice({"filter_index": 900})
    with pytest.raises(LabError) as err:
        check_parameters(load_weights=False)
    assert "out of range" in str(err.value) and "comes from your lab choice, lab-choice.yaml" in str(err.value)


# ---------------------------------------------------------------------- precedence


def test_precedence_injected_over_typed_over_choice_over_defaults(choice_file):
    C.save_lab_choice({"layer_name": "block3_conv2", "seed": 4})
    choice = C.load_lab_choice()
    ns = cell_namespace(choice, filter_index=7, seed=4)  # seed typed, equal to the choice
    ns["top_n"] = 3  # what papermill's injected cell does after the parameters cell
    ns["layer_name"] = "block3_conv2"  # injected, but the same as the cell: indistinguishable, harmless
    resolved = C.resolve(ns, choice)
    assert resolved.values == {**DEFAULTS, "layer_name": "block3_conv2", "seed": 4, "filter_index": 7, "top_n": 3}
    assert resolved.sources["top_n"] == C.INJECTED
    assert resolved.sources["filter_index"] == C.TYPED_IN_CELL and resolved.sources["seed"] == C.TYPED_IN_CELL
    assert resolved.sources["layer_name"] == C.LAB_CHOICE
    assert resolved.sources["image_size"] == C.KIT_DEFAULT
    assert resolved.typed == {"filter_index": 7, "seed": 4}
    assert C.changes_to(choice, resolved.typed) == {"filter_index": 7}  # only what differs is news
    assert resolved.overrides_text() == "filter_index = 7 (lab choice: 31)"


def test_an_injected_value_equal_to_the_default_still_wins_over_a_typed_one(choice_file):
    choice = C.load_lab_choice()
    ns = cell_namespace(choice, filter_index=7)
    ns["filter_index"] = 31  # papermill -p filter_index 31 after the student typed 7
    resolved = C.resolve(ns, choice)
    assert resolved.values["filter_index"] == 31 and resolved.sources["filter_index"] == C.INJECTED
    assert resolved.typed == {}


def test_same_value_of_another_type_is_a_change(choice_file):
    choice = C.load_lab_choice()
    ns = cell_namespace(choice)
    ns["seed"] = False  # False == 0, but it is not the default 0: check_values must see it
    assert C.resolve(ns, choice).values["seed"] is False


def test_a_notebook_without_the_snapshot_counts_its_values_as_typed(choice_file):
    choice = C.load_lab_choice()
    resolved = C.resolve({"filter_index": 5, "seed": 0}, choice)  # an old notebook's plain cell
    assert resolved.typed == {"filter_index": 5}
    assert resolved.sources["seed"] == C.KIT_DEFAULT


def test_arguments_override_the_choice(choice_file):
    C.save_lab_choice({"filter_index": 7, "top_k": 6})
    resolved = C.resolve_arguments({"filter_index": 9}, source=C.INJECTED)
    assert resolved.values["filter_index"] == 9 and resolved.sources["filter_index"] == C.INJECTED
    assert resolved.values["top_k"] == 6 and resolved.sources["top_k"] == C.LAB_CHOICE


def test_check_parameters_from_saves_typed_values_only_where_asked(choice_file):
    from lab_utils.session import check_parameters_from

    choice = C.load_lab_choice()
    setup = check_parameters_from(cell_namespace(choice, filter_index=7), load_weights=False)
    assert setup.filter_index == 7 and C.load_lab_choice().chosen == {}  # 03-05: not saved
    assert setup.describe().startswith("NOTE: this notebook's parameters cell overrides your lab choice: "
                                       "filter_index = 7 (lab choice: 31)")
    bad = cell_namespace(choice, filter_index=7, top_k=0)
    with pytest.raises(LabError):
        check_parameters_from(bad, load_weights=False, record_choice=True)
    assert C.load_lab_choice().chosen == {}  # a value that fails the checks is never saved
    ns = cell_namespace(choice, filter_index=7)
    ns["seed"] = 5  # injected by papermill
    setup = check_parameters_from(ns, load_weights=False, record_choice=True)
    assert C.load_lab_choice().chosen == {"filter_index": 7}  # 02: typed saved, injected not
    assert setup.describe().startswith("Saved to your lab choice (lab-choice.yaml): filter_index = 7.")
    lines = setup.describe().splitlines()
    assert any(line.split() == ["seed", "=", "5", *C.INJECTED.split()] for line in lines), lines
    assert any(line.split()[:3] == ["filter_index", "=", "7"] and line.endswith(C.TYPED_IN_CELL) for line in lines)


# ---------------------------------------------------------------------- notebooks


def _execute(nb, choice_file: Path):
    from nbclient import NotebookClient

    NotebookClient(nb, kernel_name="python3", timeout=600,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    return nb


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _book(number: str, typed: dict | None = None, upto_check: bool = False):
    nb = nbformat.read(BOOKS[number], as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    for name, value in (typed or {}).items():
        assert f"{name} = choice.{name} " in params.source
        params.source = params.source.replace(f"{name} = choice.{name} ", f"{name} = {value!r} ")
    if upto_check:
        end = next(i for i, c in enumerate(nb.cells) if "check_parameters_from" in c.source)
        nb.cells = nb.cells[:end + 1]
    return nb


@pytest.mark.weights
@pytest.mark.slow
def test_a_filter_typed_in_02_is_used_by_03_04_05_each_in_its_own_kernel(choice_file, vgg16):
    C.save_lab_choice(CHEAP)
    out02 = _stdout(_execute(_book("02", {"filter_index": 7}), choice_file))
    assert "Saved to your lab choice (lab-choice.yaml): filter_index = 7." in out02
    assert C.load_lab_choice().chosen == {**CHEAP, "filter_index": 7}
    for number in ("03", "04", "05"):
        out = _stdout(_execute(_book(number), choice_file))
        assert "block3_conv1 filter 7 (0-based)" in out, (number, out[:800])
        assert "NOTE:" not in out
    # a later notebook's own cell overrides the choice for itself only, and says so first
    nb = _execute(_book("03", {"filter_index": 5}, upto_check=True), choice_file)
    first = nb.cells[-1].outputs[0]["text"]
    assert first.startswith("NOTE: this notebook's parameters cell overrides your lab choice: filter_index = 5 "
                            "(lab choice: 7)"), first
    assert C.load_lab_choice().filter_index == 7


@pytest.mark.weights
@pytest.mark.slow
def test_a_filter_written_in_the_file_is_used_and_papermill_values_are_never_saved(choice_file, tmp_path, vgg16):
    import papermill as pm

    C.save_lab_choice({**CHEAP, "filter_index": 12})
    for number in ("03", "04", "05"):
        out = _stdout(_execute(_book(number, upto_check=True), choice_file))
        assert "block3_conv1 filter 12 (0-based)" in out and "lab choice (lab-choice.yaml)" in out, number
    before = choice_file.read_text()
    for number in ("02", "03"):  # a CI sweep over 02 (which records typed values) leaves no trace
        book = tmp_path / f"{number}.ipynb"
        nbformat.write(_book(number, upto_check=True), book)
        nb = pm.execute_notebook(str(book), str(tmp_path / f"{number}-out.ipynb"), parameters={"filter_index": 9},
                                 cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False,
                                 log_output=False)
        out = _stdout(nb)
        assert "block3_conv1 filter 9 (0-based)" in out and "Saved" not in out and "NOTE:" not in out, out
        assert f"filter_index = 9                {C.INJECTED}" in out, out
    assert choice_file.read_text() == before


@pytest.mark.weights
@pytest.mark.slow
def test_use_this_filter_in_02s_explorer_is_what_03_04_05_use(choice_file, vgg16):
    from nbformat.v4 import new_code_cell

    C.save_lab_choice(CHEAP)
    nb = _book("02")
    end = next(i for i, c in enumerate(nb.cells) if c.source.startswith("explorer = setup.explorer()"))
    # what a student's clicks do: choose filter 9 of block3_conv2 in the widgets, then the button
    nb.cells = nb.cells[:end + 1] + [new_code_cell(
        'explorer.layer.value = "block3_conv2"\nexplorer.filter.value = 9\nexplorer.use_button.click()\n'
        'print(explorer.status.value)')]
    out02 = _stdout(_execute(nb, choice_file))
    assert "Saved: block3_conv2 filter 9 is your lab choice" in out02
    assert C.load_lab_choice().chosen == {**CHEAP, "layer_name": "block3_conv2", "filter_index": 9}
    for number in ("03", "04", "05"):
        out = _stdout(_execute(_book(number, upto_check=True), choice_file))
        assert "block3_conv2 filter 9 (0-based)" in out, (number, out[:800])


def test_a_typed_value_equal_to_the_choice_stays_typed_and_is_not_saved_again(choice_file):
    from lab_utils.session import check_parameters_from

    C.save_lab_choice({"filter_index": 7})  # typed in 02 and saved by an earlier run
    setup = check_parameters_from(cell_namespace(C.load_lab_choice(), filter_index=7), load_weights=False,
                                  record_choice=True)  # 02 run again: the cell still types 7
    # still "typed" (so the explorer's button warns that running the cell saves 7 again), but no news
    assert setup.sources["filter_index"] == C.TYPED_IN_CELL and setup.filter_index == 7
    assert setup.choice_note == "" and C.load_lab_choice().chosen == {"filter_index": 7}


def test_rerunning_only_the_check_cell_keeps_what_the_cell_read(choice_file):
    from lab_utils.session import check_parameters_from

    ns = cell_namespace(C.load_lab_choice())  # the parameters cell ran: filter 31 from the choice
    C.save_lab_choice({"filter_index": 12})  # the explorer's button, after that
    setup = check_parameters_from(ns, load_weights=False, record_choice=True)  # check cell run again alone
    assert setup.filter_index == 31 and setup.sources["filter_index"] == C.KIT_DEFAULT
    assert setup.choice_note == "" and C.load_lab_choice().filter_index == 12  # nothing reverted


def test_a_typed_kit_default_differing_from_the_file_is_saved(choice_file):
    from lab_utils.session import check_parameters_from

    C.save_lab_choice({"filter_index": 12})
    setup = check_parameters_from(cell_namespace(C.load_lab_choice(), filter_index=31), load_weights=False,
                                  record_choice=True)
    assert setup.filter_index == 31 and C.load_lab_choice().chosen == {"filter_index": 31}
    assert "Saved to your lab choice (lab-choice.yaml): filter_index = 31." in setup.choice_note


def test_a_choice_that_cannot_be_saved_is_a_note_and_02_still_runs(choice_file, monkeypatch):
    from lab_utils.session import check_parameters_from

    choice = C.load_lab_choice()

    def read_only(path, chosen):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(C, "_write", read_only)
    setup = check_parameters_from(cell_namespace(choice, filter_index=7), load_weights=False, record_choice=True)
    assert setup.filter_index == 7
    assert setup.choice_note.startswith("NOTE: filter_index = 7 could not be saved as your lab choice: ")
    assert "Permission denied" in setup.choice_note


def test_a_probe_folder_inside_the_kit_is_stored_relative_to_it(choice_file, tmp_path, monkeypatch):
    kit = choice_file.parent
    (kit / "my-images").mkdir(parents=True)
    (kit / "notebooks").mkdir()
    monkeypatch.chdir(kit / "notebooks")  # a notebook's folder: the cell said "../my-images"
    C.save_lab_choice({"probe_set": "../my-images"})
    assert '\nprobe_set: "my-images"  # ' in choice_file.read_text()  # moves with the kit
    assert C.load_lab_choice().probe_set == str((kit / "my-images").resolve())
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    C.save_lab_choice({"probe_set": str(outside)})
    assert f'probe_set: "{outside.resolve()}"' in choice_file.read_text()
    # the same folder typed relative to the notebook is no change
    assert C.changes_to(C.load_lab_choice(), {"probe_set": "../../elsewhere"}) == {}
