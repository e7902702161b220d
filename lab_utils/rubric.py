"""The lab's rubric as data (``data/rubric.yaml``): what is scored, its points, and which
step and answer cells hold each item's evidence.

One file decides it: ``scripts/make_notebooks.py`` writes the notebooks' headings from it,
and grading (``render.sh --submissions``) builds the score sheets and ``grades.csv`` from
it. An instructor edits the file (or passes ``--rubric FILE``); a bad file stops with one
line naming the item and the field. No TensorFlow here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .config import DATA_DIR, LabError, yaml_problem

RUBRIC_PATH = DATA_DIR / "rubric.yaml"
LAB_STEPS = (1, 2, 3, 4, 5)
ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")


@dataclass(frozen=True)
class RubricItem:
    """One scored item. ``step``: the lab step (1-5) = notebook 0N; ``points``: its maximum;
    ``answers``: titles of that notebook's answer cells that hold its evidence."""

    id: str
    step: int
    points: float
    title: str
    scored: str
    answers: tuple

    def heading(self) -> str:
        """The notebook's heading: "Step 1: choose a pretrained model (3 points)"."""
        return f"Step {self.step}: {self.title} ({points_text(self.points)} points)"


@dataclass(frozen=True)
class Rubric:
    course: str
    items: tuple
    path: Path | None = None

    @property
    def total(self) -> float:
        return sum(i.points for i in self.items)

    def for_step(self, step: int) -> list[RubricItem]:
        return [i for i in self.items if i.step == step]

    def step_heading(self, step: int, default_title: str) -> str:
        """The heading of step *step*'s notebook: its items' titles and points ("Step 1: choose
        a pretrained model (3 points)"), or *default_title* without points for a step no item
        scores (the summary)."""
        items = self.for_step(step)
        if not items:
            return f"Step {step}: {default_title}"
        if len(items) == 1:
            return items[0].heading()
        total = sum(i.points for i in items)
        return f"Step {step}: {'; '.join(i.title for i in items)} ({points_text(total)} points)"

    def item(self, item_id: str) -> RubricItem:
        for i in self.items:
            if i.id == item_id:
                return i
        raise LabError(f"no rubric item {item_id!r}; items: {', '.join(i.id for i in self.items)}")


def points_text(points: float) -> str:
    """3 -> "3", 1.5 -> "1.5"."""
    return f"{points:g}"


def load_rubric(path=None) -> Rubric:
    """The rubric of *path* (default ``data/rubric.yaml``), checked field by field."""
    import yaml

    path = Path(path).expanduser() if path is not None else RUBRIC_PATH
    where = path.name
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabError(f"rubric file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabError(f"rubric file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        raise LabError(f"rubric file {where} is not valid YAML ({yaml_problem(exc)})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("items"), list) or not raw["items"]:
        raise LabError(f"rubric file {where} must hold a mapping with a non-empty list 'items'")
    items, seen = [], set()
    for n, entry in enumerate(raw["items"], 1):
        items.append(_item(entry, f"{where}, item {n}", seen))
    course = raw.get("course", "")
    if not isinstance(course, str):
        raise LabError(f"{where}: 'course' must be text")
    return Rubric(course, tuple(items), path)


def _item(entry, where: str, seen: set) -> RubricItem:
    if not isinstance(entry, dict):
        raise LabError(f"{where} must be a mapping (id, step, points, title, scored, answers)")
    unknown = sorted(set(entry) - {"id", "step", "points", "title", "scored", "answers"})
    if unknown:
        raise LabError(f"{where}: unknown field(s) {', '.join(unknown)}")
    item_id = entry.get("id")
    if not isinstance(item_id, str) or not ID_RE.fullmatch(item_id):
        raise LabError(f"{where}: id must be a short name of letters, digits and _ (a grades.csv column), "
                       f"got {item_id!r}")
    if item_id.lower() == "total":
        raise LabError(f"{where}: id 'total' is reserved (grades.csv has a total_points column)")
    if item_id in seen:
        raise LabError(f"{where}: id {item_id!r} is used twice")
    seen.add(item_id)
    where = f"{where} ({item_id})"
    step = entry.get("step")
    if isinstance(step, bool) or step not in LAB_STEPS:
        raise LabError(f"{where}: step must be one of {', '.join(map(str, LAB_STEPS))}, got {step!r}")
    points = entry.get("points")
    if isinstance(points, bool) or not isinstance(points, (int, float)) or not 0 <= points <= 1000:
        raise LabError(f"{where}: points must be a number from 0 to 1000, got {points!r}")
    texts = {}
    for key in ("title", "scored"):
        value = entry.get(key, "")
        if not isinstance(value, str) or (key == "title" and not value.strip()):
            raise LabError(f"{where}: {key} must be {'non-empty ' if key == 'title' else ''}text, got {value!r}")
        texts[key] = " ".join(value.split())
    answers = entry.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) and a.strip() for a in answers):
        raise LabError(f"{where}: answers must be a list of answer-cell titles, got {answers!r}")
    return RubricItem(item_id, int(step), float(points), texts["title"], texts["scored"],
                      tuple(a.strip() for a in answers))
