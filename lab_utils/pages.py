"""The one place that writes the kit's HTML pages: lab pages (``render.sh``),
student pages and indexes (``render.sh --submissions``).

Every page the kit writes

- loads nothing from the network: notebooks are exported with the
  ``lab_offline`` template (``lab_utils/templates``), which is nbconvert's
  ``lab`` page without require.js, MathJax, Mermaid or the widget manager from a
  CDN, without JavaScript outputs and without widget views or widget state;
- carries a Content-Security-Policy (``CSP``) that allows no script at all, no
  network fetch, no form and no frame: the kit's pages have no script of their
  own, so even markup that slipped past the sanitizer cannot run or phone home
  (images and fonts only as ``data:`` URIs, styles inline);
- is written atomically (``write_text_atomic``): a reader sees the old page or
  the new one, never half of one, and no temporary file is left behind.

Untrusted notebooks (student hand-ins) are additionally sanitized
(``clean_html``: no scripts, event handlers, forms, iframes or ``<style>``
blocks) and hardened (``harden_for_page``: fields nbconvert writes unescaped).

What the lab render and the grader both write is here too: the notebook page
(``notebook_page``, with a plain view when nbconvert fails: ``fallback_notebook_html``),
the index pages (``INDEX_CSS``, ``table_html``, ``write_index_page``), the status
badges (``BADGE_STYLES``, ``badge``, ``inline_badge``) and the check that an output
folder can be one (``out_folder_blocker``).

Light: imports nothing heavy at module level (nbconvert and bleach lazily).
"""
from __future__ import annotations

import html
import os
import re
import warnings
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "lab_offline"

# No script (the kit's pages have none of their own), nothing fetched: images and fonts
# only from data: URIs, inline styles (nbconvert's page is styled inline), no forms,
# no frames, no <base> that would re-point relative links.
CSP = ("default-src 'none'; script-src 'none'; object-src 'none'; img-src data:; "
       "font-src data:; media-src data:; style-src 'unsafe-inline'; base-uri 'none'; "
       "form-action 'none'")
CSP_META = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
# Half of a surrogate pair: valid in notebook JSON (an emoji cut in two), not in UTF-8.
SURROGATE_RE = re.compile("[\ud800-\udfff]")

# Shown where a widget or a script output was in the notebook.
WIDGET_PLACEHOLDER = "[interactive widget: not shown in this page]"
MIMES_NEVER_SHOWN = ("application/javascript", "text/vnd.mermaid",
                     "application/vnd.jupyter.widget-view+json",
                     "application/vnd.jupyter.widget-state+json")


def with_csp(page: str) -> str:
    """*page* with ``CSP_META`` as the first element of its ``<head>`` (before any
    content a browser could act on); a page without a head gets one."""
    m = re.search(r"<head\b[^>]*>", page, flags=re.IGNORECASE)
    if m:
        return page[: m.end()] + "\n" + CSP_META + page[m.end():]
    return f"<head>{CSP_META}</head>\n" + page


def write_text_atomic(path: Path, text: str) -> None:
    """Write *text* (UTF-8) to *path* through a temporary file in the same folder and
    ``os.replace``; on any failure the temporary file is removed and the old *path*
    stays as it was. Characters UTF-8 cannot hold (a lone half of a surrogate pair,
    valid in notebook JSON) are written as U+FFFD: a page is always valid UTF-8."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = utf8_safe(text)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def utf8_safe(text: str) -> str:
    """*text* with every half of a surrogate pair (``SURROGATE_RE``) as U+FFFD, so that it
    encodes to UTF-8; the same object where there is none (the common case)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return SURROGATE_RE.sub("\ufffd", text)


def document(title: str, body: str, *, head: str = "", body_attrs: str = "") -> str:
    """A complete page (doctype, charset, CSP, escaped *title*) around *body* (HTML)."""
    return with_csp(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title>{head}</head>\n"
        f"<body{(' ' + body_attrs) if body_attrs else ''}>\n{body}\n</body></html>\n"
    )


def simple_page(title: str, banner: str, body: str) -> str:
    """A plain page: *banner* (HTML) above *body* (HTML)."""
    return document(
        title,
        f"{banner}\n<div style=\"padding:0 16px;font:14px/1.45 system-ui,sans-serif\">{body}</div>",
        body_attrs='style="margin:0"',
    )


def inject_banner(page: str, banner: str) -> str:
    """*banner* (HTML) as the first thing in *page*'s body."""
    m = re.search(r"<body[^>]*>", page)
    if not m:
        return banner + page
    return page[: m.end()] + "\n" + banner + page[m.end():]


# --------------------------------------------------------------------------- sanitizing

_SAFE_TAGS = [
    "a", "abbr", "b", "blockquote", "br", "caption", "center", "cite", "code", "col",
    "colgroup", "dd", "del", "details", "div", "dl", "dt", "em", "figcaption", "figure",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol",
    "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary",
    "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
]
_SAFE_ATTRS = {"class", "id", "title", "alt", "align", "valign", "colspan", "rowspan",
               "width", "height", "border", "start", "style", "name"}
_STYLE_BLOCK_RE = re.compile(r"<style\b[^>]*>.*?</style\s*>", re.IGNORECASE | re.DOTALL)
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=\s]*$")


def clean_html(element) -> str:
    """nbconvert's ``clean_html`` with a wider allowlist (headings, paragraphs, tables,
    images) so that sanitised pages stay readable; scripts, event handlers, forms,
    iframes and ``<style>`` blocks do not survive."""
    import bleach
    from bleach.css_sanitizer import CSSSanitizer

    text = element.decode() if isinstance(element, bytes) else str(element)
    text = _STYLE_BLOCK_RE.sub("", text)

    def allow(tag, name, value):
        v = (value or "").strip().lower()
        if name in _SAFE_ATTRS:
            return True
        if name == "href":
            return not v.startswith("data:")
        if name == "src" and tag == "img":
            return not v.startswith("data:") or v.startswith("data:image/")
        return False

    return bleach.clean(
        text,
        tags=_SAFE_TAGS,
        attributes=allow,
        protocols=["http", "https", "mailto", "data"],
        css_sanitizer=CSSSanitizer(),
        strip_comments=True,
    )


def as_text(v) -> str | None:
    """A notebook text field (a string, or a list of strings as nbformat allows) as one
    string; None for anything else."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(s, str) for s in v):
        return "".join(v)
    return None


def drop_widgets_and_scripts(nb) -> int:
    """Remove widget state (``metadata.widgets``), widget views and JavaScript/Mermaid
    outputs from *nb* in place; an output left without data says what was there.
    Returns the number of outputs changed. Widget state is the notebook author's
    data (an ``HTMLModel`` value becomes innerHTML in the widget manager), never
    the page's."""
    changed = 0
    if isinstance(nb.get("metadata"), dict):
        nb["metadata"].pop("widgets", None)
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data")
            if not isinstance(data, dict):
                continue
            had = [m for m in MIMES_NEVER_SHOWN if m in data]
            for mime in had:
                del data[mime]
            if had:
                changed += 1
                if "text/plain" not in data and not any(k.startswith("image/") for k in data):
                    data["text/plain"] = (WIDGET_PLACEHOLDER if any("widget" in m for m in had)
                                          else "[script output: not run in this page]")
    return changed


def harden_for_page(nb) -> None:
    """Remove what nbconvert would put into the page without escaping.

    Stored notebooks are untrusted: execution counts, cell ids, image data and
    output metadata (width/height, filenames) reach the HTML, some unquoted."""
    drop_widgets_and_scripts(nb)
    for i, cell in enumerate(nb.cells):
        if not isinstance(cell.get("execution_count"), (int, type(None))) or isinstance(
                cell.get("execution_count"), bool):
            cell["execution_count"] = None
        cid = cell.get("id")
        if cid is not None and not (isinstance(cid, str) and re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cid)):
            cell["id"] = f"cell-{i}"
        tags = cell.get("metadata", {}).get("tags")
        if tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
            del cell["metadata"]["tags"]
        for out in cell.get("outputs", []) or []:
            if "execution_count" in out and (not isinstance(out["execution_count"], (int, type(None)))
                                             or isinstance(out["execution_count"], bool)):
                out["execution_count"] = None
            meta = out.get("metadata")
            if isinstance(meta, dict):
                meta.pop("filenames", None)
                for m in [meta, *[v for v in meta.values() if isinstance(v, dict)]]:
                    for key in ("width", "height"):
                        if key in m and (not isinstance(m[key], (int, float)) or isinstance(m[key], bool)):
                            del m[key]
            elif "metadata" in out:
                out["metadata"] = {}
            data = out.get("data")
            if isinstance(data, dict):
                for mime in list(data):
                    if mime.startswith("image/") and mime != "image/svg+xml":
                        s = as_text(data[mime])
                        if s is None or not _BASE64_RE.match(s):
                            del data[mime]
                if not data:
                    data["text/plain"] = "[output removed by the grader: not safe to display]"


def notebook_html(nb, title: str, *, untrusted: bool) -> str:
    """*nb* (a v4 NotebookNode, changed in place) as one offline page with the CSP.

    ``untrusted=True`` (hand-ins) also sanitizes markdown and HTML/SVG outputs and
    hardens fields nbconvert writes unescaped. Raises what nbconvert raises."""
    from nbconvert import HTMLExporter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs = {"sanitize_html": True, "filters": {"clean_html": clean_html}} if untrusted else {}
        exporter = HTMLExporter(template_name=TEMPLATE_NAME, extra_template_basedirs=[str(TEMPLATE_DIR)],
                                **kwargs)
        if untrusted:
            harden_for_page(nb)
        else:
            drop_widgets_and_scripts(nb)
        page, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": title}})
    return with_csp(page)


def notebook_page(nb, title: str, *, untrusted: bool, banner: str = "",
                  plain_on_failure: bool = False) -> str:
    """``notebook_html`` with *banner* (HTML) as the first thing in the body. With
    *plain_on_failure* (a damaged hand-in must still get a page), a notebook nbconvert
    fails on gets ``fallback_notebook_html`` under the banner instead of the exception."""
    try:
        page = notebook_html(nb, title, untrusted=untrusted)
    except Exception as e:
        if not plain_on_failure:
            raise
        body = fallback_notebook_html(nb) + (
            f"<p><small>nbconvert error: {html.escape(f'{type(e).__name__}: {e}')}</small></p>"
        )
        return simple_page(title, banner, body)
    return inject_banner(page, banner) if banner else page


def fallback_notebook_html(nb) -> str:
    """A plain rendering used when nbconvert fails on a (damaged) notebook."""
    parts = ["<p><i>nbconvert could not render this notebook; a plain view follows.</i></p>"]
    pre = 'style="white-space:pre-wrap;border:1px solid #ddd;padding:6px;background:#fafafa"'
    for i, cell in enumerate(nb.cells, 1):
        parts.append(f"<h4>Cell {i} ({html.escape(str(cell.get('cell_type')))})</h4>")
        parts.append(f"<pre {pre}>{html.escape(str(cell.get('source', '')))}</pre>")
        for out in cell.get("outputs", []) or []:
            kind = out.get("output_type")
            if kind == "stream":
                t = as_text(out.get("text")) or ""
            elif kind == "error":
                tb = out.get("traceback") or []
                t = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(str(x) for x in tb))
            else:
                t = as_text((out.get("data") or {}).get("text/plain")) or f"[{kind} output]"
            parts.append(f"<pre {pre}>{html.escape(t)}</pre>")
    return "".join(parts)


# Status badges: the classes every index and banner colours a status with.
BADGE_STYLES = {
    "ok": "background:#d7f5dc;color:#135c1f",
    "err": "background:#fff0c2;color:#6b4b00",
    "fail": "background:#fbd5d5;color:#8a1010",
    "bad": "background:#e6e0f0;color:#41295f",
}


def badge(text: str, cls: str) -> str:
    """*text* (escaped) as a status badge of class *cls* (a key of ``BADGE_STYLES``), on a
    page styled with ``INDEX_CSS``."""
    return f'<span class="st st-{cls}">{html.escape(text)}</span>'


def inline_badge(text: str, cls: str) -> str:
    """The same badge styled inline, for a page without ``INDEX_CSS`` (a notebook page)."""
    return (f'<span style="padding:1px 7px;border-radius:9px;{BADGE_STYLES[cls]}">'
            f"{html.escape(text)}</span>")


INDEX_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px;margin:0 0 6px 0} .meta{color:#555;margin-bottom:14px}
table{border-collapse:collapse;width:100%} th,td{border-bottom:1px solid #ddd;padding:6px 8px;
text-align:left;vertical-align:top} th{background:#f3f3f3;position:sticky;top:0}
td.num{text-align:right;white-space:nowrap} code{font-size:13px}
.st{padding:1px 8px;border-radius:10px;white-space:nowrap}
""" + " ".join(f".st-{cls}{{{style}}}" for cls, style in BADGE_STYLES.items()) + """
.summary span{margin-right:10px} .notes{color:#444;font-size:13px}
details{margin-top:18px} .warn{background:#fff4e5;border:1px solid #f0c27b;padding:8px 12px;margin:12px 0}
"""


def table_html(header: list[str], rows) -> str:
    """An index table. *header*: column titles (plain text); *rows*: ``(cells, row_class)``
    pairs (``row_class`` may be empty), each cell HTML or an ``(HTML, td_class)`` pair."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for cells, row_class in rows:
        tds = "".join(f"<td class='{c[1]}'>{c[0]}</td>" if isinstance(c, tuple) else f"<td>{c}</td>"
                      for c in cells)
        lines.append((f"<tr class='{row_class}'>" if row_class else "<tr>") + tds + "</tr>")
    return "<table><thead><tr>" + head + "</tr></thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody></table>"


def write_index_page(path: Path, title: str, body: str) -> Path:
    """Write an index page (``INDEX_CSS``) of *body* (HTML) to *path*, atomically."""
    write_text_atomic(path, document(title, body, head=f"<style>{INDEX_CSS}</style>"))
    return path


def out_folder_blocker(out: Path) -> Path | None:
    """What keeps *out* from being an output folder: the first of *out* and its parents that
    exists, or is a (broken) link, and is not a folder; None when there is none (a missing
    folder is created later)."""
    for path in (out, *out.parents):
        if path.is_dir():
            return None
        if path.exists() or path.is_symlink():
            return path
    return None
