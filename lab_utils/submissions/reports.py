"""One report per student (or team): a hand-in folder's lab notebooks in lab order on one
page, under a header with the team's names and the score sheet (``grading``), plus
``grades.csv``.

A *lab hand-in* is a top-level folder of the submissions folder holding at least one
notebook recognized as a lab step (``evidence.lab_step``: the kit's metadata, so a renamed
file still counts, else its file name or first heading). Each of its notebooks is still
processed (and executed, with ``--execute``) on its own, exactly like any other hand-in;
the page worker reads its evidence and leaves a bounded copy in the batch's private
folder; then a *student* worker puts the copies together on one page (no student code
runs there either). Notebooks at the top level, and folders without a lab notebook, are
graded one notebook at a time as before.
"""
from __future__ import annotations

import html
import json
import re
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from ..config import display_name
from ..evidence import STEP_NOTEBOOKS, NotebookEvidence, from_json
from ..grading import StudentReport, gradebook_csv, score_sheet_html
from ..pages import inline_badge, write_text_atomic

GRADES_FILE = "grades.csv"
VERIFY_TIMEOUT = 3600  # seconds for all recomputations of a class (one scan per distinct layer: ~85 s each)


def group_of(rel: str) -> str | None:
    """The hand-in folder a notebook belongs to (its first path component), or None for a
    notebook at the top level of the submissions folder."""
    parts = rel.split("/")
    return parts[0] if len(parts) > 1 else None


@dataclass
class StudentHandIn:
    """One lab hand-in: its folder (``key``), its notebooks (indices into the batch's
    submissions), their evidence, the report, and the page's file name."""

    key: str
    members: list
    evidence: list
    report: StudentReport | None = None
    page: str = ""


def lab_hand_ins(subs: list, evidence: dict) -> list[StudentHandIn]:
    """The lab hand-ins of a batch: *subs* (``handins.Submission``), *evidence*: index ->
    ``NotebookEvidence`` of each notebook that could be read. Folders in name order."""
    groups: dict[str, list[int]] = {}
    for i, sub in enumerate(subs):
        key = group_of(sub.rel)
        if key is not None:
            groups.setdefault(key, []).append(i)
    out = []
    for key in sorted(groups, key=str.lower):
        members = groups[key]
        evs = [evidence[i] for i in members if i in evidence]
        if any(ev.step.step is not None for ev in evs):
            out.append(StudentHandIn(key, members, evs))
    return out


def hand_in_folders(subs: list) -> list[str]:
    """Every hand-in folder of *subs* (``group_of``), lab hand-in or not, in the order
    ``lab_hand_ins`` lists them."""
    return sorted(dict.fromkeys(k for k in (group_of(s.rel) for s in subs) if k is not None), key=str.lower)


def report_page_names(hand_ins: list[StudentHandIn], taken: set[str], folders: list[str] | None = None) -> None:
    """Give each hand-in a page name: ``<folder>-report.html``, made unique against *taken*
    (lower-case page names without ``.html``: the notebooks' pages and foreign files).
    *folders* (``hand_in_folders`` of the whole class): names are dealt to all of them in
    this order, so that a hand-in's name does not depend on which other folders hold a lab
    notebook, nor on which of them a shard graded (``shards``)."""
    from .handins import slugify

    used = set(taken)
    names: dict[str, str] = {}
    for key in (folders if folders is not None else []) + [h.key for h in hand_ins]:
        if key in names:
            continue
        base = f"{slugify(key) or 'student'}-report"
        name, n = base, 2
        while name.lower() in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name.lower())
        names[key] = f"{name}.html"
    for h in hand_ins:
        h.page = names[h.key]


def run_verification(hand_ins: list[StudentHandIn], env: dict, live) -> dict:
    """``--verify``: one ``python -m lab_utils.verify`` process (the kit's code, the grader's
    cache, no student code) for every distinct set of printed parameters of the graded
    step 2 and 3 notebooks. Returns notebook file -> {table: ``verify.compare`` text}."""
    from ..verify import VERIFIED_TABLES, compare
    from .processes import run_with_hard_timeout

    wanted: dict[str, dict] = {}
    notebooks: list[NotebookEvidence] = []
    for h in hand_ins:
        for ev in h.evidence:
            if ev.step.step in VERIFIED_TABLES.values():
                notebooks.append(ev)
                wanted.setdefault(json.dumps(ev.parameters, sort_keys=True), ev.parameters)
    if not notebooks:
        return {}
    keys = list(wanted)
    print(f"[submissions] --verify: recomputing for {len(keys)} parameter set(s)", file=sys.stderr)
    rc, killed, stdout = run_with_hard_timeout(
        [sys.executable, "-m", "lab_utils.verify"], VERIFY_TIMEOUT, live=live,
        stdin_data=json.dumps([{"parameters": wanted[k]} for k in keys]).encode(), capture=True, env=env)
    try:
        results = json.loads(stdout.decode("utf-8", "replace").strip().splitlines()[-1])
        if not isinstance(results, list) or len(results) != len(keys) or not all(isinstance(r, dict) for r in results):
            raise ValueError("not one result per request")
        expected = dict(zip(keys, results))
    except (ValueError, IndexError):
        why = "timed out" if killed else f"the recomputation failed (exit code {rc})"
        expected = {k: {"error": why} for k in keys}
    return {ev.file: compare(ev.tables, expected[json.dumps(ev.parameters, sort_keys=True)]) for ev in notebooks}


def _escape_markdown(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]()<>#+!|~-])", r"\\\1", text)


def student_page_spec(h: StudentHandIn, subs: list, results: dict, bounded: dict, out: Path, rubric,
                      index_name: str = "index.html") -> dict:
    """The student worker's settings: the page, its banner (header and score sheet, HTML
    made here from escaped text) and its parts in lab order (graded notebooks by step, then
    the others), each with its bounded copy (None: nothing to show) and its own page."""
    report = h.report
    by_file = {subs[i].shown_rel: i for i in h.members}
    graded = [(s, by_file[nb.file]) for s, nb in sorted(report.by_step.items())]
    rest = [i for i in h.members if i not in {i for _, i in graded}]
    parts = []
    for step, i in graded + [(None, i) for i in rest]:
        r = results[i]
        what = f"Step {step}: {STEP_NOTEBOOKS[step]}" if step else "Other notebook"
        parts.append({"heading": f"{what} — {subs[i].shown_rel} ({r.status})",
                      "bounded": bounded.get(i), "page": r.page})
    e = html.escape
    flags = report.flags()
    badge = inline_badge(report.status(), "ok" if not flags else "err")
    steps = "".join(
        f'<a href="#step-{s}" style="margin-right:10px">step {s}</a>' if s in report.by_step
        else f'<span style="margin-right:10px;color:#a00">step {s} missing</span>' for s in STEP_NOTEBOOKS)
    banner = (f'<div style="font:14px/1.4 system-ui,sans-serif;border-bottom:2px solid #ddd;padding:8px 12px;'
              f'margin-bottom:12px;background:#fbfbfb"><p style="margin:0 0 6px 0">'
              f'<a href="{e(urllib.parse.quote(index_name), quote=True)}">&larr; all submissions</a></p>'
              f'<h1 style="font-size:22px;margin:4px 0">{e(report.display_name)} {badge}</h1>'
              f'<p style="margin:2px 0">{steps}</p>{score_sheet_html(report, rubric)}</div>')
    return {"phase": "student", "page": str(out / h.page), "title": display_name(report.display_name),
            "banner": banner, "parts": parts}


def student_page(spec: dict) -> dict:
    """The student worker: the bounded copies of *spec*'s parts as one notebook (a heading
    cell before each, with a link to the notebook's own page), exported like any hand-in
    (untrusted: sanitized, offline, CSP) with the banner on top. Never raises."""
    import nbformat
    from nbformat.v4 import new_markdown_cell, new_notebook

    from ..pages import notebook_page

    res = {"page_written": False, "message": ""}
    try:
        cells = []
        for k, part in enumerate(spec["parts"]):
            link = urllib.parse.quote(part["page"])
            step = re.match(r"Step (\d)", part["heading"])
            anchor = f'<a id="step-{step.group(1)}"></a>\n\n' if step else ""
            cells.append(new_markdown_cell(f"{anchor}# {_escape_markdown(part['heading'])}\n\n"
                                           f"[this notebook on its own page]({link})"))
            nb = None
            if part.get("bounded"):
                try:
                    nb = nbformat.read(part["bounded"], as_version=4)
                except Exception:  # noqa: BLE001 - a copy that does not read: say so on the page
                    nb = None
            if nb is None:
                cells.append(new_markdown_cell("*(no notebook to show: see its own page)*"))
                continue
            for j, cell in enumerate(nb.cells):
                cell["id"] = f"p{k}-{j}"
                cells.append(cell)
        combined = new_notebook(cells=cells, metadata={"language_info": {"name": "python"}})
        write_text_atomic(Path(spec["page"]), notebook_page(combined, spec["title"], untrusted=True,
                                                            banner=spec["banner"], plain_on_failure=True))
        res["page_written"] = True
    except BaseException as e:  # noqa: BLE001 - the worker reports, never crashes
        res["message"] = f"{type(e).__name__}: {e}"
    return res


def write_grades(out: Path, hand_ins: list[StudentHandIn], rubric) -> Path:
    """``grades.csv`` (``grading.gradebook_csv``): one row per lab hand-in."""
    path = out / GRADES_FILE
    try:  # the points a grader typed into an earlier grades.csv are carried over
        previous = path.read_text(encoding="utf-8-sig") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        previous = ""
    if previous:
        backup = out / (GRADES_FILE + ".previous")
        write_text_atomic(backup, previous)  # and the file as it was stays beside it
    write_text_atomic(path, gradebook_csv([h.report for h in hand_ins], rubric,
                                          {h.report.key: h.page for h in hand_ins}, previous))
    return path


def students_table(hand_ins: list[StudentHandIn]) -> str:
    """The index's table of lab hand-ins: one row per student, with a link to the report."""
    from ..pages import badge, table_html

    e = html.escape
    rows = []
    for n, h in enumerate(hand_ins, 1):
        r = h.report
        written, expected = r.answers_count()
        passed, checks = r.checks_count()
        flags = r.flags()
        rows.append(([(str(n), "num"), f"{e(r.display_name)}<br><code>{e(display_name(h.key))}</code>",
                      e(" ".join(map(str, r.steps_handed_in)) or "none")
                      + (f"<br><small>missing: {e(' '.join(map(str, r.missing_steps)))}</small>" if r.missing_steps else ""),
                      (f"{written}/{expected}", "num"), (f"{passed}/{checks}" if checks else "–", "num"),
                      badge(r.status(), "ok" if not flags else "err"),
                      (e("; ".join(flags)), "notes"),
                      f'<a href="{e(urllib.parse.quote(h.page), quote=True)}">report</a>'], ""))
    return table_html(["#", "Student / team", "Steps handed in", "Answers written", "Checks passed", "Status",
                       "To check", "Report"], rows)


def evidence_of(results_evidence: dict) -> dict:
    """index -> NotebookEvidence from the page workers' JSON (index -> dict)."""
    out = {}
    for i, data in results_evidence.items():
        try:
            out[i] = from_json(data)
        except (KeyError, TypeError, ValueError):
            continue  # a worker that could not read the notebook sends none
    return out
