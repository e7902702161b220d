"""The index: ``OUT/index.html`` (``write_sweep_index``), one row per pair and the channel
tables side by side per layer, channels found in more than one table of a layer
highlighted (``recurring_channels``)."""
from __future__ import annotations

import html
from pathlib import Path

from .task import PairResult

STATUS_BADGE = {"ok": "ok", "failed": "fail"}
SWEEP_CSS = ("table.side{width:auto;min-width:40%} td.rec{background:#fff1b8;font-weight:600} "
             ".rec-key{background:#fff1b8;padding:0 6px;font-weight:600} "
             "table.side td,table.side th{white-space:nowrap} .share{color:#666}")


def recurring_channels(results: list[PairResult]) -> dict[str, dict[int, int]]:
    """Layer -> {input channel: number of the layer's channel tables it is in}, for the
    channels in at least two tables of pairs at the same layer (one model per sweep)."""
    out: dict[str, dict[int, int]] = {}
    for r in results:
        if r.channel_table is None:
            continue
        counts = out.setdefault(r.layer_name, {})
        for c in set(r.channel_table.channels):
            counts[c] = counts.get(c, 0) + 1
    return {layer: {c: n for c, n in sorted(counts.items()) if n > 1} for layer, counts in out.items()}


def _pair_link(r: PairResult, text: str) -> str:
    """*text* (escaped) linked to the pair's own index, where its folder was written."""
    if not r.written:
        return html.escape(text)
    return f"<a href='{html.escape(r.folder)}/index.html'>{html.escape(text)}</a>"


def _side_by_side(layer: str, results: list[PairResult], recurring: dict[int, int]) -> str:
    e = html.escape
    tables = [r for r in results if r.layer_name == layer]
    depth = max((len(r.channel_table.rows) for r in tables if r.channel_table), default=0)
    from ..pages import badge

    head = "".join(f"<th>{_pair_link(r, f'filter {r.filter_index}')}"
                   f"{' ' + badge(r.status, 'fail') if r.status != 'ok' else ''}</th>" for r in tables)
    rows = []
    for i in range(depth):
        cells = [f"<td class='num'>{i + 1}</td>"]
        for r in tables:
            row = r.channel_table.rows[i] if r.channel_table and i < len(r.channel_table.rows) else None
            if row is None:
                cells.append("<td>&ndash;</td>" if r.channel_table else "<td></td>")
                continue
            rec = row.channel in recurring
            cells.append(f"<td{' class=rec' if rec else ''} title='{e(row.category)}'>ch {row.channel}"
                         f"{' &#9733;' if rec else ''} <span class='share'>{row.l2_norm:.3f} &middot; "
                         f"{100 * row.share:.1f}%</span></td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    missing = [r for r in tables if r.channel_table is None]
    note = (f"<p class='notes'>No channel table for filter(s) {', '.join(str(r.filter_index) for r in missing)} "
            f"(failed, or notebook 03 not run).</p>") if missing else ""
    listed = ", ".join(f"{c} (in {n})" for c, n in recurring.items()) or "none"
    return (f"<h3>{e(layer)}</h3>\n<p class='notes'>Channels in more than one table of this layer: "
            f"{e(listed)}.</p>\n<table class='side'><thead><tr><th>rank</th>{head}</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>\n" + note)


def sweep_index_body(results: list[PairResult], started: str, settings: dict[str, str]) -> str:
    """The sweep index's HTML body for *results* (in FILE order); *settings*: name -> text
    shown under the tables (the shared parameters, the executor)."""
    from ..pages import badge, table_html

    e = html.escape
    recurring = recurring_channels(results)
    overview = table_html(["pair", "status", "time (s)", "top channels (L2 norm)", "message"], [
        ([_pair_link(r, f"{r.layer_name} filter {r.filter_index}"),
          badge(r.status, STATUS_BADGE.get(r.status, "fail")), (f"{r.seconds:.1f}", "num"),
          e(", ".join(f"{row.channel} ({row.l2_norm:.3f})" for row in r.channel_table.rows[:5]))
          if r.channel_table else "&ndash;", e(r.message)], r.status)
        for r in results])
    layers = list(dict.fromkeys(r.layer_name for r in results))
    n_ok = sum(r.status == "ok" for r in results)
    shown = table_html(["setting", "value"], [([e(k), f"<code>{e(v)}</code>"], "") for k, v in settings.items()])
    return f"""<style>{SWEEP_CSS}</style>
<h1>CNN Circuits Lab: sweep</h1>
<p class="meta">Rendered {e(started)}: {n_ok} of {len(results)} pairs ok. Each pair's notebooks are in its
folder (link). Filter indices and channels are 0-based.</p>
<h2>Pairs</h2>
{overview}
<h2>Channel tables</h2>
<p class="notes">Per layer, each filter's strongest input channels by the L2 norm of their single-channel
filter (rank 1 = strongest), shown as <code>ch C norm &middot; share</code>, where the share is the
channel's squared norm over the filter's sum of squared weights. <span class="rec-key">&#9733; highlighted</span>:
the channel is in the table of more than one filter of that layer.</p>
{chr(10).join(_side_by_side(layer, results, recurring.get(layer, {})) for layer in layers)}
<h2>Settings</h2>
{shown}"""


def write_sweep_index(out: Path, results: list[PairResult], started: str, settings: dict[str, str]) -> Path:
    """Write ``OUT/index.html`` (``pages.write_index_page``: CSP'd, offline, atomic)."""
    from ..pages import write_index_page

    return write_index_page(out / "index.html", "CNN Circuits Lab: sweep",
                            sweep_index_body(results, started, settings))
