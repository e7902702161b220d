"""What the grader writes: a student's page (the banner over the notebook, or over a
plain view of what could not be shown as one) and the index of a batch.

Built on ``lab_utils.pages`` (offline notebook pages with the CSP, sanitized; the index
table, badges and CSS the lab render's index uses too). Every student string (names,
paths, notes, messages) is escaped here.
"""
from __future__ import annotations

import datetime
import html
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import display_name
from ..pages import badge, inline_badge, notebook_page, simple_page, table_html, write_index_page, write_text_atomic
from .statuses import (
    _ERRORS_RE, BAD_ARCHIVE, EMPTY, GRADER_ERROR, INVALID, KERNEL_DIED, LINK, OK, TIMED_OUT, TOO_LARGE, errors_status,
    status_class)

if TYPE_CHECKING:
    from .batch import Result

_BANNER_CSS = (
    "font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;padding:10px 16px;"
    "margin:0 0 12px 0;border-bottom:1px solid #ccc;background:#f6f6f6;color:#222"
)


def banner_html(spec: dict, status: str, notes: list[str], message: str) -> str:
    e = html.escape
    bits = [
        '<div class="lab-grader-banner" style="' + _BANNER_CSS + '">',
        '<a href="index.html">&larr; all submissions</a> &middot; ',
        f"<b>{e(spec['name'])}</b> &middot; <code>{e(spec['rel'])}</code> &middot; ",
        inline_badge(status, status_class(status)),
        f" &middot; {e(spec['mode_text'])}",
    ]
    if message:
        bits.append(f"<br>{e(message)}")
    if notes:
        bits.append("<br>Notes: " + e("; ".join(notes)))
    bits.append("</div>")
    return "".join(bits)


def preview_html(data: bytes, limit: int = 3_000) -> str:
    """An escaped look at the first bytes of a file that is not a notebook."""
    head = data[: limit * 4]
    text = head.decode("utf-8", errors="replace")
    printable = sum(ch.isprintable() or ch in "\n\r\t" for ch in text)
    if not text or printable / max(1, len(text)) < 0.9:
        return (
            f"<p>Binary content, {len(data):,} bytes; first bytes: "
            f"<code>{html.escape(data[:16].hex(' '))}</code></p>"
        )
    more = "\n[...]" if len(data) > len(head) or len(text) > limit else ""
    return (
        f"<p>First characters of the file ({len(data):,} bytes):</p>"
        f"<pre style=\"white-space:pre-wrap;background:#fafafa;border:1px solid #ddd;"
        f"padding:8px\">{html.escape(text[:limit])}{more}</pre>"
    )


def write_banner_page(path: Path, spec: dict, status: str, notes: list[str], message: str,
                      body: str = "") -> None:
    """A page with only the banner (status, notes, message) above *body* (HTML): for a
    hand-in that has no notebook to show (a link, an invalid file, a failed run)."""
    write_text_atomic(path, simple_page(spec["slug"], banner_html(spec, status, notes, message), body))


def render_notebook_page(nb, spec: dict, banner: str) -> str:
    """The student's page: *nb* (untrusted) exported offline and sanitized, *banner* on top;
    a plain view when nbconvert fails on a damaged notebook."""
    return notebook_page(nb, spec["slug"], untrusted=True, banner=banner, plain_on_failure=True)


def where_text(args) -> str:
    """Where the notebooks were graded: the local pool or the Dask cluster, and the shared cache."""
    scheduler = getattr(args, "scheduler", None)
    where = f"on the Dask cluster at {scheduler}" if scheduler else f"{args.jobs} at a time"
    shared = getattr(args, "shared_note", "")
    return where + (f" · {shared}" if shared else "")


def mode_text(args) -> str:
    if args.execute:
        return (f"executed on a copy (per-cell timeout {args.cell_timeout:g} s, "
                f"total {args.timeout:g} s)")
    return "converted as submitted (no code was run)"


INDEX_HEADER = ["#", "Student", "File", "Status", "Run time (s)", "Notes", "Page"]


def write_index(out: Path, results: list[Result], *, root: Path, args, ignored: list[str],
                started: datetime.datetime, elapsed: float, students: list | None = None,
                grades: Path | None = None) -> Path:
    """The index: the lab hand-ins (*students*, ``reports.StudentHandIn``: one row per
    student with a link to the report, and *grades*, the gradebook) first, where there are
    some, then every notebook."""
    from .reports import students_table

    e = html.escape
    counts: dict[str, int] = {}
    for r in results:
        key = "errors" if _ERRORS_RE.match(r.status) else r.status
        counts[key] = counts.get(key, 0) + 1
    order = [OK, "errors", TIMED_OUT, KERNEL_DIED, INVALID, EMPTY, TOO_LARGE, BAD_ARCHIVE, LINK, GRADER_ERROR]
    summary = " ".join(
        f"<span>{badge(k, status_class(k if k != 'errors' else errors_status(2)))} {counts[k]}</span>"
        for k in order if counts.get(k)
    )
    rows = []
    for n, r in enumerate(results, 1):
        href = urllib.parse.quote(r.page)
        notes = "; ".join([*([r.message] if r.message else []), *r.notes])
        rows.append(([(str(n), "num"), e(r.student), f"<code>{e(r.file)}</code>",
                      badge(r.status, status_class(r.status)), (f"{r.seconds:.1f}", "num"),
                      (e(notes), "notes"), f"<a href=\"{e(href, quote=True)}\">page</a>"], ""))
    n_bad = sum(not r.ok for r in results)
    if not results:
        headline = "<p class=\"warn\">No <code>.ipynb</code> files were found in this folder.</p>"
    elif n_bad:
        headline = f"<p class=\"warn\">{n_bad} of {len(results)} submissions are not <b>ok</b>.</p>"
    else:
        headline = f"<p>All {len(results)} submissions are <b>ok</b>.</p>"
    listed = ignored[:500]
    ignored_html = ""
    if ignored:
        more = f"<li>... and {len(ignored) - len(listed)} more</li>" if len(ignored) > len(listed) else ""
        ignored_html = (
            f"<details><summary>Ignored files ({len(ignored)}): not notebooks, hidden, "
            "checkpoint folders, symbolic links, or entries of a .zip hand-in that were not extracted "
            "(the reason in brackets)</summary><ul>"
            + "".join(f"<li><code>{e(display_name(p))}</code></li>" for p in listed) + more + "</ul></details>"
        )
    security = ""
    if args.execute:
        security = (
            "<p class=\"notes\">Student code was executed: each notebook ran on a copy, in its "
            "own process and temporary folder, with an allow-list environment, timeouts and "
            "proxy variables pointing nowhere. This is not a sandbox.</p>"
        )
    students_html = ""
    if students:
        link = (f' &middot; gradebook: <a href="{e(urllib.parse.quote(grades.name), quote=True)}">{e(grades.name)}</a> '
                "(one row per student; points columns empty for you)") if grades is not None else ""
        students_html = (f"<h2>Lab hand-ins: {len(students)} student{'s' if len(students) != 1 else ''} or "
                         f"teams{link}</h2>{students_table(students)}<h2>Notebooks</h2>")
    folder = display_name(str(root))
    body = f"""<h1>Submissions: {e(display_name(root.name))}</h1>
<div class="meta">Folder <code>{e(folder)}</code> &middot; {len(results)} notebooks &middot;
{e(mode_text(args))} &middot; {e(where_text(args))} &middot; generated
{e(started.strftime('%Y-%m-%d %H:%M:%S %Z').strip())} in {elapsed:.1f} s</div>
<div class="summary">{summary}</div>
{students_html}
{headline}
{table_html(INDEX_HEADER, rows)}
{ignored_html}
{security}
<p class="notes">Statuses: <b>ok</b>; <b>errors in N cells</b> (the page shows where);
<b>timed out</b> (a cell or the whole notebook ran past its limit); <b>kernel died</b>
(os._exit, a crash, or out of memory); <b>not a valid notebook</b>; <b>empty</b>;
<b>symbolic link (not followed)</b> (a link is never read through); <b>not a readable archive</b>
(a <code>.zip</code> hand-in that could not be opened).
Notes such as <i>old nbformat (converted)</i> or <i>outputs truncated</i> do not change the
status. The submitted files were only read, never modified.</p>"""
    return write_index_page(out / "index.html", f"Submissions: {display_name(root.name)}", body)
