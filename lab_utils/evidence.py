"""What a lab hand-in shows, read from its notebooks without running anything: which lab
step each notebook is, its answer cells (written or still the placeholder, word counts),
the team's names, the parameters it ran with, whether it ran without an error, and its
exercise checks. ``grading`` puts one student's notebooks together against the rubric.

How the kit marks its notebooks (``scripts/make_notebooks.py`` writes it; students keep it
when they rename a file, since it lives inside the notebook):
- notebook metadata ``cnn_circuits_lab: {step: N, notebook: "0N_..."}``;
- every answer cell: tag ``student`` and metadata ``cnn_circuits_lab: {answer: TITLE}``;
  notebook 01's names cell also has the tag ``names``;
- exercise check cells print lines ``CHECK <name>: PASS`` or ``CHECK <name>: FAIL - hint``.
Notebooks without the metadata are recognized by their file name (``03_...``, ``step3``)
or their first heading (``# Step 3: ...``). No TensorFlow here; nbformat is not needed
either (notebooks are JSON dicts).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .choice import SOURCES
from .pages import as_text

KIT_METADATA = "cnn_circuits_lab"
ANSWER_MARK = "### ✍️ YOUR ANSWER:"
NAMES_MARK = "### ✍️ TEAM:"
PLACEHOLDER = "> _(write here: replace this line)_"
NAMES_PLACEHOLDER = "> _(your names here: one per line, or separated by commas)_"
STEP_NOTEBOOKS = {1: "01_model_choice", 2: "02_filter_selection", 3: "03_channel_analysis",
                  4: "04_channel_visualization", 5: "05_summary"}
CHECK_RE = re.compile(r"^CHECK (?P<name>[^:\r\n]{1,80}): (?P<result>PASS|FAIL)(?: - (?P<hint>[^\r\n]*))?\r?$", re.M)
# The kit's numbering (02_..., 2-...? no: a leading zero is required, "4-layer-net" is not step 4) or "step 2"
_FILE_STEP_RE = re.compile(r"^0([1-5])(?:[_\- .]|$)|(?<![a-z])step[_\- ]?0?([1-5])(?!\d)", re.I)
# A check cell calls one of these (lab_utils.exercises); its CHECK lines are the only ones counted.
CHECK_CALLS = {"check_channel_norms": "l2_norms", "check_top_channels": "ranking",
               "check_categories": "categories", "check_ascent_step": "ascent_step"}
# The checks an exercise notebook of each step must show (a deleted check cell is "not run").
EXPECTED_CHECKS = {2: ("ascent_step",), 3: ("l2_norms", "ranking", "categories")}
_HEADING_STEP_RE = re.compile(r"^#\s*Step\s+([1-5])\b", re.I | re.M)
_WORD_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def _kit_meta(obj) -> dict:
    meta = obj.get("metadata", {}) if isinstance(obj, dict) else {}
    value = meta.get(KIT_METADATA, {}) if isinstance(meta, dict) else {}
    return value if isinstance(value, dict) else {}


def _tags(cell) -> list:
    meta = cell.get("metadata", {})
    tags = meta.get("tags", []) if isinstance(meta, dict) else []
    return tags if isinstance(tags, list) else []


@dataclass(frozen=True)
class StepFound:
    """The lab step of a notebook (1-5, or None) and how it was recognized:
    "metadata", "file name" or "heading"."""

    step: int | None
    how: str = ""


def lab_step(nb: dict, file_name: str = "") -> StepFound:
    """Which lab step *nb* is: the kit's metadata first (survives renaming), then the file
    name (``02_x.ipynb``, ``step2.ipynb``), then a ``# Step N:`` heading in its first cells."""
    step = _kit_meta(nb).get("step")
    if isinstance(step, int) and not isinstance(step, bool) and step in STEP_NOTEBOOKS:
        return StepFound(step, "metadata")
    stem = file_name.rsplit("/", 1)[-1]
    m = _FILE_STEP_RE.search(stem)
    if m:
        return StepFound(int(m.group(1) or m.group(2)), "file name")
    for cell in nb.get("cells", [])[:3]:
        if cell.get("cell_type") == "markdown":
            m = _HEADING_STEP_RE.search(_source(cell))
            if m:
                return StepFound(int(m.group(1)), "heading")
    return StepFound(None)


@dataclass(frozen=True)
class Answer:
    """One answer cell: its title, the student's words (heading, prompt and placeholder
    left out), and whether the placeholder line is still there."""

    title: str
    text: str
    placeholder_left: bool

    @property
    def words(self) -> int:
        return len(_WORD_RE.findall(self.text))

    @property
    def written(self) -> bool:
        return self.words > 0

    def describe(self) -> str:
        return f"{self.words} words" if self.written else "not written (placeholder)"


def _answer_title(cell, mark: str) -> str:
    title = _kit_meta(cell).get("answer")
    if isinstance(title, str) and title.strip():
        return title.strip()
    first = _source(cell).lstrip().split("\n", 1)[0]
    return first[len(mark):].strip() if first.startswith(mark) else ""


def _student_text(source: str, mark: str, placeholder: str) -> tuple[str, bool]:
    """The cell's text without the kit's heading, its italic prompt (the first non-blank line
    under the heading, when the heading is still there) and the placeholder line (with or
    without its ``>``)."""
    lines = source.strip().split("\n")
    bare = placeholder.lstrip("> ").strip()
    kept, left, heading_at = [], False, None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if i == 0 and (stripped.startswith(mark) or stripped.startswith("#")):
            heading_at = i
            continue
        if stripped in (placeholder, bare, "> " + bare):
            left = True
            continue
        if heading_at is not None and not any(k.strip() for k in kept) and stripped.startswith("*") and stripped.endswith("*") \
                and not stripped.startswith("**") and all(not ln.strip() for ln in lines[heading_at + 1:i]):
            heading_at = None  # the prompt: only the first line under the heading
            continue
        kept.append(line)
    return "\n".join(kept).strip(), left


def answers(nb: dict) -> list[Answer]:
    """The notebook's answer cells (tag ``student`` or the kit's heading), in order; the
    names cell is not one of them (``team_names``)."""
    found = []
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = _source(cell)
        is_answer = "student" in _tags(cell) or src.lstrip().startswith(ANSWER_MARK)
        if not is_answer or "names" in _tags(cell) or src.lstrip().startswith(NAMES_MARK):
            continue
        text, left = _student_text(src, ANSWER_MARK, PLACEHOLDER)
        found.append(Answer(_answer_title(cell, ANSWER_MARK), text, left))
    merged: dict[str, Answer] = {}  # a copied answer cell keeps its title: one answer, both texts
    for a in found:
        key = a.title.casefold()
        if key in merged:
            b = merged[key]
            merged[key] = Answer(b.title, "\n\n".join(t for t in (b.text, a.text) if t),
                                 b.placeholder_left and a.placeholder_left)
        else:
            merged[key] = a
    return list(merged.values())


def team_names(nb: dict) -> list[str]:
    """The names written in the names cell (one per line, or separated by commas or "and";
    list markers dropped), or [] where it is missing or not filled in."""
    for cell in nb.get("cells", []):
        src = _source(cell)
        if cell.get("cell_type") == "markdown" and ("names" in _tags(cell) or src.lstrip().startswith(NAMES_MARK)):
            text, _ = _student_text(src, NAMES_MARK, NAMES_PLACEHOLDER)
            text = "\n".join(re.sub(r"^\s*>\s?", "", line) for line in text.split("\n"))  # kept the quote
            parts = re.split(r"\n|,|;|\band\b", text)
            names = [" ".join(re.sub(r"^\s*(?:[-*+]|\d+[.)])\s+", "", p).split()) for p in parts]
            return [n.strip("*_() ") for n in names if n.strip("*_() ")]
    return []


def parameters_shown(nb: dict) -> dict[str, str]:
    """name -> value (its repr, as printed) from the check cell's "where each value comes
    from" lines (``LabSetup.describe``): the values the notebook really ran with. {} where
    the check cell did not run."""
    values: dict[str, str] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code" or "check_parameters" not in _source(cell):
            continue
        for out in cell.get("outputs", []):
            text = as_text(out.get("text")) or ""
            if "where each value comes from:" not in text:
                continue
            for line in text.split("where each value comes from:", 1)[1].split("\n"):
                m = re.match(r"^  (\w+)\s*= (.*)$", line)
                if not m:
                    continue
                value = m.group(2).rstrip()
                for source in SOURCES:
                    if value.endswith(source):
                        value = value[: -len(source)].rstrip()
                        break
                values[m.group(1)] = value
        if values:
            return values
    return values


# The tables ``verify`` recomputes: name -> (text in the cell that prints it, its header's first words).
PRINTED_TABLES = {"top_classes": ("format_class_table(", ("rank", "class")),
                  "channel_table": ("format_channel_table(", ("rank", "channel"))}


def printed_tables(nb: dict) -> dict[str, str]:
    """name -> the table as the notebook printed it (header to the first blank line), for
    each of ``PRINTED_TABLES`` found in a cell's stdout; what ``verify`` compares."""
    found = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        for name, (marker, header) in PRINTED_TABLES.items():
            if marker not in src or name in found:
                continue
            text = "".join(as_text(o.get("text")) or "" for o in cell.get("outputs", [])
                           if o.get("output_type") == "stream")
            lines, block = text.split("\n"), []
            for line in lines:
                if not block and tuple(line.split()[:2]) == header:
                    block.append(line)
                elif block:
                    if not line.strip():
                        break
                    block.append(line)
            if block:
                found[name] = "\n".join(block)
    return found


@dataclass(frozen=True)
class Check:
    """One exercise check printed by a check cell: ``CHECK name: PASS`` or ``FAIL - hint``."""

    name: str
    passed: bool
    hint: str = ""


def exercise_checks(nb: dict) -> list[Check]:
    """The exercise checks: ``CHECK`` lines printed by the kit's check cells (a cell whose
    source calls one of ``CHECK_CALLS``; a line printed anywhere else does not count), the last
    result of a name winning (a check re-run after a fix replaces its failure). In an exercise
    notebook (the kit's metadata ``exercise``) of step 2 or 3, an expected check that printed
    nothing (its cell deleted, or not run) is a failure "not run"."""
    results: dict[str, Check] = {}
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = _source(cell)
        names = {name for call, name in CHECK_CALLS.items() if f"{call}(" in src}
        if not names:
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream" or out.get("name") != "stdout":
                continue
            text = as_text(out.get("text")) or ""
            for m in CHECK_RE.finditer(text):
                name = m.group("name").strip()
                if name in names:
                    results[name] = Check(name, m.group("result") == "PASS", (m.group("hint") or "").strip())
    meta = _kit_meta(nb)
    step = lab_step(nb).step
    if meta.get("exercise") and step in EXPECTED_CHECKS:
        for name in EXPECTED_CHECKS[step]:
            results.setdefault(name, Check(name, False, "not run: its check cell is missing or did not run"))
    return list(results.values())


@dataclass(frozen=True)
class NotebookEvidence:
    """What one notebook shows. ``ran``: some code cell has an execution count; ``error_cells``:
    code cells holding an error output; ``code_cells``: how many code cells it has."""

    file: str
    step: StepFound
    answers: list = field(default_factory=list)
    names: list = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)
    tables: dict = field(default_factory=dict)
    ran: bool = False
    error_cells: int = 0
    code_cells: int = 0

    @property
    def ran_clean(self) -> bool:
        return self.ran and self.error_cells == 0

    def run_text(self) -> str:
        if not self.ran:
            return "not run (no outputs)"
        if self.error_cells:
            return f"errors in {self.error_cells} cell{'s' if self.error_cells != 1 else ''}"
        return "ran without an error"


def notebook_evidence(nb: dict, file_name: str) -> NotebookEvidence:
    """Everything this module reads from one notebook (a JSON dict or nbformat node)."""
    codes = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    errors = sum(any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in codes)
    ran = any(c.get("execution_count") is not None for c in codes)
    return NotebookEvidence(file_name, lab_step(nb, file_name), answers(nb), team_names(nb), parameters_shown(nb),
                            exercise_checks(nb), printed_tables(nb), ran, errors, len(codes))


def to_json(ev: NotebookEvidence) -> dict:
    """A JSON-able dict of *ev* (the page worker sends it to the batch process)."""
    from dataclasses import asdict

    return asdict(ev)


def from_json(data: dict) -> NotebookEvidence:
    """The inverse of ``to_json``."""
    return NotebookEvidence(
        data["file"], StepFound(**data["step"]), [Answer(**a) for a in data["answers"]], list(data["names"]),
        dict(data["parameters"]), [Check(**c) for c in data["checks"]], dict(data["tables"]), bool(data["ran"]),
        int(data["error_cells"]), int(data["code_cells"]))
