"""The pairs file: ``read_pairs`` reads ``render.sh --sweep FILE`` (one ``layer_name
filter_index`` per line, or a YAML list of mappings) into ``SweepPair`` values, each
checked up front with the kit's own parameter checks; every bad line is reported at once,
with its line number."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import LabError, display_name

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class SweepPair:
    """One (layer, filter) of the sweep. ``filter_index``: 0-based output channel of
    ``layer_name``; ``line``: where FILE gives it (1-based)."""

    layer_name: str
    filter_index: int
    line: int = 0

    @property
    def folder(self) -> str:
        return pair_folder(self.layer_name, self.filter_index)


def pair_folder(layer_name: str, filter_index: int) -> str:
    """The pair's folder name in OUT: ``block3_conv1-f31``."""
    return f"{layer_name}-f{filter_index}"


def parse_text(text: str) -> tuple[list[SweepPair], list[str]]:
    """Pairs of the text format and the problems (``"line N: what"``)."""
    pairs, problems = [], []
    for n, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            problems.append(f"line {n}: expected 'layer_name filter_index', got {raw.strip()!r}")
            continue
        layer, f = words
        try:
            index = int(f, 10)
        except ValueError:
            problems.append(f"line {n}: filter_index must be a whole number, got {f!r}")
            continue
        pairs.append(SweepPair(layer, index, n))
    return pairs, problems


def parse_yaml(text: str) -> tuple[list[SweepPair], list[str]]:
    """Pairs of the YAML format (a list of ``{layer_name:, filter_index:}``) and the problems."""
    import yaml

    from ..config import yaml_problem

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return [], [f"not valid YAML ({yaml_problem(exc)})"]
    if root is None:
        return [], []
    if not isinstance(root, yaml.SequenceNode):
        return [], [(f"line {root.start_mark.line + 1}: expected a list of "
                     "{layer_name: ..., filter_index: ...} mappings")]
    pairs, problems = [], []
    for item in root.value:
        n = item.start_mark.line + 1
        if not isinstance(item, yaml.MappingNode):
            problems.append(f"line {n}: expected a mapping {{layer_name: ..., filter_index: ...}}")
            continue
        try:
            keys = [k.value if isinstance(k, yaml.ScalarNode) else None for k, _ in item.value]
            value = yaml.safe_load(yaml.serialize(item))
        except yaml.YAMLError as exc:
            problems.append(f"line {n}: {yaml_problem(exc)}")
            continue
        twice = sorted({k for k in keys if keys.count(k) > 1}, key=str)
        other = sorted(set(value) - {"layer_name", "filter_index"}, key=str)
        missing = [k for k in ("layer_name", "filter_index") if k not in value]
        if twice or other or missing:
            what = ([f"{', '.join(map(str, twice))} given twice"] if twice else []) + \
                   ([f"unknown key(s) {', '.join(map(str, other))}"] if other else []) + \
                   ([f"missing {', '.join(missing)}"] if missing else [])
            problems.append(f"line {n}: {'; '.join(what)} (give layer_name and filter_index)")
            continue
        layer, index = value["layer_name"], value["filter_index"]
        if not isinstance(layer, str):
            problems.append(f"line {n}: layer_name must be a string, got {layer!r}")
        elif isinstance(index, bool) or not isinstance(index, int):
            problems.append(f"line {n}: filter_index must be a whole number, got {index!r}")
        else:
            pairs.append(SweepPair(layer, index, n))
    return pairs, problems


def read_pairs(path, params: dict | None = None) -> list[SweepPair]:
    """The pairs of FILE *path*, each checked with the other parameters *params* (the
    ``-p`` values, resolved against the lab choice as ``render.sh`` does), in file order.
    One LabError lists every bad line (``line N: ...``) and every repeated pair."""
    from ..choice import INJECTED, resolve_arguments
    from ..params import check_values

    path = Path(path)
    name = display_name(str(path))
    if not path.is_file():
        raise LabError(f"--sweep {name}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"--sweep {name}: cannot read it ({type(exc).__name__}: {exc})") from None
    yaml_format = path.suffix.lower() in YAML_SUFFIXES
    pairs, problems = (parse_yaml if yaml_format else parse_text)(text)
    seen: dict[tuple[str, int], int] = {}
    good = []
    for pair in pairs:
        first = seen.setdefault((pair.layer_name, pair.filter_index), pair.line)
        if first != pair.line:
            problems.append(f"line {pair.line}: {pair.layer_name} {pair.filter_index} repeats line {first}")
            continue
        try:
            check_values(resolve_arguments({**(params or {}), "layer_name": pair.layer_name,
                                            "filter_index": pair.filter_index}, source=INJECTED).values)
        except LabError as exc:
            problems.append(f"line {pair.line}: {exc}")
            continue
        good.append(pair)
    if problems:
        problems.sort(key=lambda p: int(p.split(":")[0][5:]) if p.startswith("line ") else 0)
        raise LabError(f"--sweep {name}: {len(problems)} bad line{'s' if len(problems) > 1 else ''}, "
                       "nothing ran:\n  " + "\n  ".join(problems))
    if not good:
        how = ("a YAML list of {layer_name: ..., filter_index: ...}" if yaml_format
               else "one 'layer_name filter_index' per line")
        raise LabError(f"--sweep {name} lists no pair; write {how}")
    return good
