"""One student's (or team's) lab hand-in against the rubric: the evidence for each rubric
item, the score sheet and the gradebook row. Points stay the grader's: the kit shows what
it can check (answers written, notebooks ran, parameters agree, exercise checks, steps
missing) and leaves every points cell empty.

Inputs are ``evidence.NotebookEvidence`` values (read without running anything) and a
``rubric.Rubric``; no TensorFlow, no notebook execution here.
"""
from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field

from .evidence import STEP_NOTEBOOKS, NotebookEvidence
from .rubric import Rubric, RubricItem, points_text
from .verify import MATCHES, VERIFIED_TABLES

# Parameters that must agree across a student's notebooks: the five notebooks study one
# filter. Sizes of the ascent or the probe set may differ between notebooks without
# changing what is graded.
SHARED_PARAMETERS = ("model_name", "layer_name", "filter_index", "top_k", "probe_set", "probe_limit",
                     "per_class", "image_size")


@dataclass(frozen=True)
class ItemEvidence:
    """The automatic evidence for one rubric item. ``notebook``: the step's notebook (None:
    missing); ``answers``: (title, Answer or None where the cell is gone); ``verified``:
    table -> what ``verify.compare`` found (with ``--verify`` only)."""

    item: RubricItem
    notebook: NotebookEvidence | None
    answers: list
    mismatched: dict
    verified: dict = field(default_factory=dict)

    @property
    def handed_in(self) -> bool:
        return self.notebook is not None

    @property
    def answers_written(self) -> int:
        return sum(1 for _, a in self.answers if a is not None and a.written)

    @property
    def checks(self) -> list:
        return self.notebook.checks if self.notebook is not None else []

    def flags(self) -> list[str]:
        """What the grader should look at, short (empty: nothing found)."""
        if self.notebook is None:
            return [f"step {self.item.step} missing"]
        out = []
        if not self.notebook.ran_clean:
            out.append(self.notebook.run_text())
        out += [f"answer '{t}' {'missing' if a is None else 'not written'}" for t, a in self.answers
                if a is None or not a.written]
        out += [f"check {c.name} failed" for c in self.checks if not c.passed]
        if self.mismatched:
            out.append("parameters differ: " + ", ".join(self.mismatched))
        out += [f"{table.replace('_', ' ')} {text.split(' (')[0]}" for table, text in self.verified.items()
                if text != MATCHES and not text.startswith("not verified")]
        return out

    def lines(self) -> list[str]:
        """The evidence, one fact per line (score sheet and grades.csv)."""
        if self.notebook is None:
            return [f"step {self.item.step} not handed in (no notebook {STEP_NOTEBOOKS[self.item.step]} or renamed copy)"]
        nb = self.notebook
        out = [f"notebook: {nb.file} (recognized by its {nb.step.how}); {nb.run_text()}"]
        for title, answer in self.answers:
            out.append(f"answer '{title}': " + ("cell missing" if answer is None else answer.describe()))
        for check in self.checks:
            out.append(f"check {check.name}: {'pass' if check.passed else 'FAIL'}"
                       + (f" ({check.hint})" if check.hint and not check.passed else ""))
        for table, text in self.verified.items():
            out.append(f"{table.replace('_', ' ')}: {text}")
        for name, values in self.mismatched.items():
            out.append(f"parameter {name} differs: " + "; ".join(f"step {s}: {v}" for s, v in sorted(values.items())))
        return out


@dataclass
class StudentReport:
    """One student's or team's hand-in: ``key`` (the folder, unique), ``names`` (from notebook
    01's names cell; [] when not filled in), notebooks by step, the rubric's evidence."""

    key: str
    names: list
    by_step: dict
    extra: list = field(default_factory=list)
    duplicates: dict = field(default_factory=dict)
    items: list = field(default_factory=list)
    mismatched: dict = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return ", ".join(self.names) if self.names else self.key

    @property
    def steps_handed_in(self) -> list[int]:
        return sorted(self.by_step)

    @property
    def missing_steps(self) -> list[int]:
        return [s for s in STEP_NOTEBOOKS if s not in self.by_step]

    def answers_count(self) -> tuple[int, int]:
        """(answer cells written, answer cells the rubric expects) over all items."""
        return sum(e.answers_written for e in self.items), sum(len(e.answers) for e in self.items)

    def checks_count(self) -> tuple[int, int]:
        checks = [c for nb in self.by_step.values() for c in nb.checks]
        return sum(c.passed for c in checks), len(checks)

    def flags(self) -> list[str]:
        """What the grader should look at: missing steps that the rubric scores (every missing
        step is in ``missing_steps``), second notebooks of a step, no team names, and each
        item's flags."""
        scored = {e.item.step for e in self.items}
        missing = [s for s in self.missing_steps if s in scored]
        out = [f"steps missing: {', '.join(map(str, missing))}"] if missing else []
        out += [f"two notebooks for step {s}: {', '.join(files)} (the first is graded)"
                for s, files in sorted(self.duplicates.items())]
        if not self.names:
            out.append("no team names (notebook 01's names cell)")
        seen = set(out)
        for e in self.items:
            for f in e.flags():
                if f not in seen and not f.startswith("step "):
                    seen.add(f)
                    out.append(f)
        if self.mismatched and not any(f.startswith("parameters differ") for f in out):
            out.append("parameters differ: " + ", ".join(self.mismatched))
        return out

    def status(self) -> str:
        """"complete" (every step handed in, ran clean, every answer written, checks pass) or
        "to check: N issue(s)"."""
        n = len(self.flags())
        return "complete" if n == 0 else f"to check: {n} issue{'s' if n != 1 else ''}"


def parameter_mismatches(by_step: dict) -> dict:
    """name -> {step: value} for each ``SHARED_PARAMETERS`` name whose shown value is not
    the same in every notebook that shows it."""
    out = {}
    for name in SHARED_PARAMETERS:
        values = {s: nb.parameters[name] for s, nb in by_step.items() if name in nb.parameters}
        if len(set(values.values())) > 1:
            out[name] = values
    return out


def _graded_first(nb: NotebookEvidence) -> tuple:
    """Which of two notebooks of one step is graded: the kit's own file name first (not a
    Jupyter "-Copy1"), then the one with more answers written, then the one that ran clean,
    then the file name."""
    canonical = nb.file.rsplit("/", 1)[-1] == f"{STEP_NOTEBOOKS.get(nb.step.step, '')}.ipynb"
    written = sum(a.written for a in nb.answers)
    return (not canonical, -written, not nb.ran_clean, nb.file)


def student_report(key: str, notebooks: list[NotebookEvidence], rubric: Rubric,
                   verification: dict | None = None) -> StudentReport:
    """Group *notebooks* by lab step (of two for one step, ``_graded_first`` decides; the
    others are listed) and gather the evidence of every rubric item. *verification*: the
    graded notebook's file -> {table: ``verify.compare`` text} (``--verify``)."""
    verification = verification or {}
    by_step, duplicates, extra = {}, {}, []
    for nb in sorted(notebooks, key=lambda n: (n.step.step is None, n.step.step or 0, _graded_first(n))):
        step = nb.step.step
        if step is None:
            extra.append(nb)
        elif step in by_step:
            duplicates.setdefault(step, [by_step[step].file]).append(nb.file)
        else:
            by_step[step] = nb
    mismatched = parameter_mismatches(by_step)
    names = next((nb.names for nb in list(by_step.values()) + [n for n in notebooks if n not in by_step.values()]
                  if nb.names), [])
    items = []
    for item in rubric.items:
        nb = by_step.get(item.step)
        found = {a.title.casefold(): a for a in nb.answers} if nb is not None else {}
        answers = [(t, found.get(t.casefold())) for t in item.answers]
        mism = {k: v for k, v in mismatched.items() if item.step in v}
        verified = {t: text for t, text in verification.get(nb.file, {}).items()
                    if VERIFIED_TABLES.get(t) == item.step} if nb is not None else {}
        items.append(ItemEvidence(item, nb, answers, mism, verified))
    return StudentReport(key, names, by_step, extra, duplicates, items, mismatched)


# ------------------------------------------------------------------ outputs
_CELL = "border:1px solid #ccc;padding:6px 8px;vertical-align:top;text-align:left"
_BOX = "display:inline-block;width:3.2em;height:1.4em;border:1px solid #888;vertical-align:middle;background:#fff"


def score_sheet_html(report: StudentReport, rubric: Rubric) -> str:
    """The score sheet: one row per rubric item (points available, what is scored, the
    automatic evidence, an empty box for the grader's points), then the total. Styled
    inline (it sits on a notebook page, whose CSP allows inline styles only); every text
    is escaped: names and answers come from the student."""
    from .pages import inline_badge

    e = html.escape
    rows = []
    for ev in report.items:
        flags = ev.flags()
        badge = inline_badge("evidence complete", "ok") if not flags else inline_badge(f"{len(flags)} to check", "err")
        evidence = "".join(f"<li>{e(line)}</li>" for line in ev.lines())
        rows.append(f'<tr><td style="{_CELL}"><b>{e(ev.item.id)}</b><br>step {ev.item.step}</td>'
                    f'<td style="{_CELL}">{e(ev.item.scored or ev.item.title)}</td>'
                    f'<td style="{_CELL}"><ul style="margin:0 0 4px 0;padding-left:18px">{evidence}</ul>{badge}</td>'
                    f'<td style="{_CELL};white-space:nowrap"><span class="points-box" style="{_BOX}"></span> / '
                    f'{points_text(ev.item.points)}</td></tr>')
    flags = report.flags()
    summary = ("".join(f"<li>{e(f)}</li>" for f in flags) if flags else "<li>nothing flagged</li>")
    written, expected = report.answers_count()
    passed, checks = report.checks_count()
    head = "".join(f'<th style="{_CELL};background:#f3f3f3">{h}</th>'
                   for h in ("item", "scored", "automatic evidence", "points"))
    return (f'<section class="score-sheet" style="font:14px/1.4 system-ui,sans-serif;margin:0 0 18px 0">'
            f'<h2 style="margin:6px 0">Score sheet: {e(report.display_name)}</h2>'
            f'<p style="margin:4px 0">Hand-in <code>{e(report.key)}</code>; steps handed in: '
            f'{e(", ".join(map(str, report.steps_handed_in)) or "none")}; answers written: {written} of {expected}; '
            f'exercise checks passed: {passed} of {checks}. The points are the grader\'s: the kit gives none.</p>'
            f'<ul style="margin:4px 0 8px 0">{summary}</ul>'
            f'<table style="border-collapse:collapse;width:100%"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}<tr><td style="{_CELL}" colspan="3"><b>total</b></td>'
            f'<td style="{_CELL};white-space:nowrap"><span class="points-box" style="{_BOX}"></span> / '
            f'{points_text(rubric.total)}</td></tr></tbody></table></section>')


def gradebook_columns(rubric: Rubric) -> list[str]:
    cols = ["student", "names", "steps_handed_in", "missing_steps", "answers_written", "checks_passed", "status",
            "page"]
    for item in rubric.items:
        cols += [f"{item.id}_evidence", f"{item.id}_points"]
    return cols + ["total_points", f"max_points_{points_text(rubric.total)}"]


def gradebook_row(report: StudentReport, rubric: Rubric, page: str) -> dict:
    """One grades.csv row: the automatic evidence per item (facts joined by " | "), and empty
    points columns for the grader."""
    written, expected = report.answers_count()
    passed, checks = report.checks_count()
    row = {"student": report.key, "names": "; ".join(report.names),
           "steps_handed_in": " ".join(map(str, report.steps_handed_in)),
           "missing_steps": " ".join(map(str, report.missing_steps)),
           "answers_written": f"{written}/{expected}", "checks_passed": f"{passed}/{checks}",
           "status": report.status(), "page": page}
    for ev in report.items:
        row[f"{ev.item.id}_evidence"] = " | ".join(ev.lines())
        row[f"{ev.item.id}_points"] = ""
    row["total_points"] = ""
    row[f"max_points_{points_text(rubric.total)}"] = points_text(rubric.total)
    return row


def _spreadsheet_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (names and text come from students)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def gradebook_csv(reports: list[StudentReport], rubric: Rubric, pages: dict, previous: str = "") -> str:
    """grades.csv: one row per student (``pages``: report key -> its page's file name). The
    points a grader already typed into *previous* (the file's earlier text) are kept, by
    student and column: a re-run for a late hand-in loses no grade."""
    typed: dict[str, dict] = {}
    if previous:
        for row in csv.DictReader(io.StringIO(previous)):
            kept = {k: v for k, v in row.items() if k and (k.endswith("_points") or k == "total_points") and v}
            if row.get("student") and kept:
                typed[row["student"]] = kept
    buf = io.StringIO()
    cols = gradebook_columns(rubric)
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\r\n")
    writer.writeheader()
    for report in reports:
        row = {k: _spreadsheet_safe(str(v)) for k, v in gradebook_row(report, rubric, pages.get(report.key, "")).items()}
        for k, v in typed.get(row["student"], {}).items():
            if k in row:
                row[k] = v  # the grader's own text, as it was
        writer.writerow(row)
    return buf.getvalue()
