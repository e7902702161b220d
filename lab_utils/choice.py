"""The student's lab choice: one small YAML file that every notebook reads, so that a
filter chosen once in notebook 02 is the filter of notebooks 03, 04 and 05.

Where a value comes from (highest first; ``resolve`` decides, ``SOURCES`` names them):

1. papermill / ``render.sh -p`` / ``--params``: injected after a notebook's parameters
   cell; never written to the lab choice (CI sweeps leave no trace);
2. a value typed by hand into a notebook's parameters cell. In notebook 02 (where the
   choice is made) it becomes the lab choice; in a later notebook it overrides the
   choice for that notebook only, and the notebook says so;
3. the lab choice file (``lab-choice.yaml`` at the kit's root, or ``LAB_CHOICE_FILE``),
   made from the kit's defaults on first use and ignored by git;
4. the kit's defaults (``params.PARAMETERS``).

A generated parameters cell reads ``choice = load_lab_choice()``, sets each parameter
to ``choice.<name>`` and ends with ``parameters_cell_values = choice.values_in(globals())``:
that snapshot, taken before papermill's injected cell runs, is how the check cell tells a
value typed in the cell from one papermill injected.

No TensorFlow here: render.sh resolves values before any kernel starts.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .config import KIT_ROOT, LabError, display_name, yaml_problem
from .params import DEFAULTS, PARAMETERS, PROBE_SET_IMAGENET_MINI

CHOICE_FILE_NAME = "lab-choice.yaml"
# The name the parameters cell gives its snapshot (``LabChoice.values_in``).
CELL_SNAPSHOT = "parameters_cell_values"

INJECTED = "papermill / render.sh -p"
TYPED_IN_CELL = "typed in this notebook's parameters cell"
LAB_CHOICE = f"lab choice ({CHOICE_FILE_NAME})"
KIT_DEFAULT = "kit default"
ARGUMENT = "argument"
SOURCES = (INJECTED, TYPED_IN_CELL, LAB_CHOICE, KIT_DEFAULT, ARGUMENT)

_HEADER = f"""\
# Your lab choice (CNN Circuits Lab). Every notebook uses these values unless its
# parameters cell or render.sh -p says otherwise.
# Notebook 02 writes this file when you type a value into its parameters cell and run
# it, or click "use this filter" in its explorer; you may also edit it by hand:
# one "name: value" per line (YAML; strings in quotes, null for None).
# Lines that start with "# " are the kit's defaults, shown for reference.
"""


def choice_path() -> Path:
    """The lab choice file: ``$LAB_CHOICE_FILE`` if set (a relative path is relative to the
    kit's root, whichever folder a process runs in), else ``<kit>/lab-choice.yaml``."""
    env = os.environ.get("LAB_CHOICE_FILE", "").strip()
    return (KIT_ROOT / Path(env).expanduser()) if env else KIT_ROOT / CHOICE_FILE_NAME


def _same(a, b) -> bool:
    """Equal and of the same type (``1 == 1.0 == True`` must not hide a change)."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class LabChoice:
    """The values of the lab choice file. ``chosen``: name -> value for the names the file
    sets; every other parameter is at the kit's default. Attribute access gives the value
    (``choice.filter_index``), which is what a parameters cell reads; each name read so is
    remembered (``read``), so that a value the cell did not read from here counts as typed,
    even where it equals the choice."""

    path: Path
    chosen: dict = field(default_factory=dict)
    read: set = field(default_factory=set, compare=False, repr=False)

    @property
    def values(self) -> dict:
        return {**DEFAULTS, **self.chosen}

    def __getattr__(self, name):
        if name in PARAMETERS:
            self.read.add(name)
            return self.values[name]
        raise AttributeError(name)

    def values_in(self, namespace: dict) -> "CellValues":
        """What a parameters cell left in *namespace* (its ``globals()``): its last line."""
        return CellValues({name: namespace[name] for name in PARAMETERS if name in namespace},
                          frozenset(self.read), self)

    def source_of(self, name: str) -> str:
        return LAB_CHOICE if name in self.chosen else KIT_DEFAULT


@dataclass(frozen=True)
class CellValues:
    """A parameters cell's snapshot (``CELL_SNAPSHOT``): ``values`` as the cell left them,
    the names it ``read_from_choice``, and the ``choice`` it read them from."""

    values: dict
    read_from_choice: frozenset
    choice: LabChoice

    @property
    def typed(self) -> dict:
        """The values the cell set without reading them from the lab choice (typed by hand)."""
        return {k: v for k, v in self.values.items() if k not in self.read_from_choice}


def _parse(path: Path, text: str) -> dict:
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LabError(f"your lab choice {display_name(path)} is not valid YAML ({yaml_problem(exc)}); "
                       f"fix that line, or delete the file to start again from the kit's defaults") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise LabError(f"your lab choice {display_name(path)} must hold 'name: value' lines; "
                       f"delete the file to start again from the kit's defaults")
    unknown = sorted(str(k) for k in loaded if k not in PARAMETERS)
    if unknown:
        raise LabError(f"your lab choice {display_name(path)} sets unknown parameter(s) {', '.join(unknown)}; "
                       f"valid: {', '.join(PARAMETERS)}")
    return _absolute_probe_set(dict(loaded), path.parent)


def _absolute_probe_set(values: dict, base: Path) -> dict:
    """*values* with a relative probe folder made absolute against *base* (the file's folder
    for what the file says, the notebook's folder for what a cell says)."""
    probe = values.get("probe_set")
    if isinstance(probe, str) and probe.strip() and probe != PROBE_SET_IMAGENET_MINI:
        from .config import is_url

        path = Path(probe).expanduser()
        if not is_url(probe) and not path.is_absolute():
            values = {**values, "probe_set": str((base / path).resolve())}
    return values


def _stored_probe_set(values: dict, base: Path) -> dict:
    """*values* as the file stores them: a probe folder inside the file's folder (the kit)
    relative to it, so that a kit copied or handed in keeps its meaning."""
    probe = values.get("probe_set")
    if isinstance(probe, str) and Path(probe).is_absolute():
        try:
            values = {**values, "probe_set": Path(probe).resolve().relative_to(base.resolve()).as_posix()}
        except ValueError:
            pass  # outside the kit: stays absolute
    return values


def load_lab_choice(path: Path | None = None, create: bool = True) -> LabChoice:
    """The lab choice (``LabChoice``). A missing file is made from the kit's defaults
    (``create``), where the folder is writable; otherwise the defaults are used as they are."""
    path = Path(path) if path is not None else choice_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if create:
            try:
                _write(path, {})
            except OSError:
                pass  # a read-only kit still runs, on the defaults
        return LabChoice(path, {})
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"your lab choice {display_name(path)} cannot be read ({exc}); "
                       f"delete it to start again from the kit's defaults") from None
    return LabChoice(path, _parse(path, text))


def _write(path: Path, chosen: dict) -> None:
    from .pages import write_text_atomic

    chosen = _stored_probe_set(chosen, path.parent)
    lines = [_HEADER]
    for name, (default, _types, doc) in PARAMETERS.items():
        if name in chosen:
            lines.append(f"{name}: {json.dumps(chosen[name], ensure_ascii=False)}  # {doc}")
        else:
            lines.append(f"# {name}: {json.dumps(default)}  # {doc}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "\n".join(lines) + "\n")


def save_lab_choice(updates: dict, path: Path | None = None) -> LabChoice:
    """Set *updates* (name -> value, already checked) in the lab choice file and return
    the new choice. A relative probe folder is taken as relative to the current folder
    (a notebook's) and stored relative to the kit when inside it, else absolute."""
    unknown = sorted(set(updates) - set(PARAMETERS))
    if unknown:
        raise LabError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(PARAMETERS)}")
    current = load_lab_choice(path, create=False)
    chosen = {**current.chosen, **_absolute_probe_set(dict(updates), Path.cwd())}
    try:
        _write(current.path, chosen)
    except OSError as exc:
        raise LabError(f"your lab choice could not be saved to {display_name(current.path)} ({exc})") from None
    return LabChoice(current.path, chosen)


def changes_to(choice: LabChoice, typed: dict) -> dict:
    """The typed values that differ from *choice* (a relative probe folder compared as the
    absolute path it names from the current folder)."""
    typed = _absolute_probe_set(dict(typed), Path.cwd())
    return {k: v for k, v in typed.items() if not _same(v, choice.values[k])}


@dataclass(frozen=True)
class ResolvedParameters:
    """Every parameter's value and where it came from (one of ``SOURCES``).

    ``typed``: values typed by hand into the parameters cell that differ from the lab
    choice (notebook 02 saves them; a later notebook reports them as overrides).
    ``choice``: the lab choice the values were resolved against."""

    values: dict
    sources: dict
    typed: dict
    choice: LabChoice

    def overrides_text(self) -> str:
        """One line naming each typed value that differs from the lab choice."""
        changed = changes_to(self.choice, self.typed)
        return "; ".join(f"{k} = {v!r} (lab choice: {self.choice.values[k]!r})" for k, v in changed.items())


def resolve(namespace: dict, choice: LabChoice | None = None) -> ResolvedParameters:
    """Where each parameter of a notebook's *namespace* (its ``globals()``) comes from.

    With the parameters cell's snapshot (``CELL_SNAPSHOT``, a ``CellValues``): a value that
    differs from the snapshot, or that the cell does not set, came after the cell (papermill
    injected it); a value the cell set without reading it from the lab choice was typed;
    the rest is the lab choice the cell read (not the file as it is now: it may have
    changed since). A namespace without a snapshot (a notebook from before the lab choice)
    counts each of its values as typed, against *choice* (default: the file now).
    """
    present = {name: namespace[name] for name in PARAMETERS if name in namespace}
    snapshot = namespace.get(CELL_SNAPSHOT)
    if isinstance(snapshot, CellValues):
        cell, typed_names, choice = snapshot.values, set(snapshot.typed), snapshot.choice
    else:
        choice = load_lab_choice() if choice is None else choice
        cell, typed_names = present, {k for k, v in present.items() if not _same(v, choice.values[k])}
    values, sources, typed = dict(choice.values), {}, {}
    for name in PARAMETERS:
        if name in present and (name not in cell or not _same(present[name], cell[name])):
            values[name], sources[name] = present[name], INJECTED
        elif name in typed_names:
            values[name], sources[name] = cell[name], TYPED_IN_CELL
            typed[name] = cell[name]
        else:
            values[name] = cell.get(name, values[name])
            sources[name] = choice.source_of(name)
    return ResolvedParameters(values, sources, typed, choice)


def resolve_arguments(params: dict, choice: LabChoice | None = None, source: str = ARGUMENT) -> ResolvedParameters:
    """Values given as arguments (``check_parameters(**params)``; render.sh ``-p`` with
    ``source=INJECTED``) over the lab choice."""
    choice = load_lab_choice() if choice is None else choice
    values = {**choice.values, **params}
    sources = {name: (source if name in params else choice.source_of(name)) for name in PARAMETERS}
    return ResolvedParameters(values, sources, {}, choice)
