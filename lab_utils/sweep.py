"""``render.sh --sweep FILE``: the lab rendered for many (layer, filter) pairs, compared on one page.

    ./render.sh --sweep pairs.txt [--out DIR] [--jobs N] [--scheduler ADDRESS] [-p NAME VALUE]...

FILE lists the pairs (``read_pairs``): a text file, one ``layer_name filter_index`` per
line (``#`` starts a comment, blank lines are skipped), or, for a name ending in ``.yaml``
/ ``.yml``, a YAML list of ``{layer_name: ..., filter_index: ...}`` mappings. Filter
indices are 0-based. Every pair is checked up front with the kit's own parameter checks
(``params.check_values``, with the other ``-p`` / ``--params`` values and the lab choice);
every bad line is reported at once, with its line number, and nothing runs (exit 2).

Each pair is one task (``render_pair``) on ``cluster.open_executor``: a local pool of
``--jobs`` threads, or a Dask cluster with ``--scheduler``. A task runs the lab's own render
(``python -m lab_utils.render -p layer_name L -p filter_index F ...``) as a subprocess into a
temporary folder, so each pair has its own kernel and a crash stays in it, and returns
plain data (``PairResult``): its files as bytes, the channel table the render left
(``circuits.ChannelTableRecord``), status, time and message. Pairs share the caller's
``LAB_CACHE_DIR`` (pairs at one layer reuse the probe scan).

The client writes each pair's pages into ``OUT/<layer>-f<filter>/`` (``pair_folder``) and
``OUT/index.html`` (``write_sweep_index``): one row per pair and the channel tables side
by side per layer, channels found in more than one table of a layer highlighted. It keeps
a manifest (``MANIFEST``) of what it wrote and never overwrites anything else. Exit status
0 when every pair rendered, 1 when any failed (its row says why), 2 for bad input.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from .circuits import RECORD_DIR_ENV, RECORD_FILE, ChannelTableRecord
from .config import LabError, display_name

MANIFEST = ".sweep-manifest.json"  # in OUT: the pair folders this command wrote
DEFAULT_OUT = "build/sweep"
DEFAULT_PAIR_TIMEOUT = 3600.0  # seconds one pair's whole render may take
MESSAGE_LIMIT = 800  # characters of a failure kept (render.MESSAGE_LIMIT)
KILL_GRACE = 10.0  # seconds between Ctrl-C (the render stops its kernel) and SIGKILL
YAML_SUFFIXES = (".yaml", ".yml")


# --------------------------------------------------------------------------- the pairs file
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

    from .config import yaml_problem

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
    from .choice import INJECTED, resolve_arguments
    from .params import check_values

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


# --------------------------------------------------------------------------- one pair (a task)
@dataclass(frozen=True)
class PairTask:
    """What a worker needs to render one pair: plain data only (it may run on another
    machine). ``arguments``: the render's other command-line arguments (``-p`` values,
    ``--only``, ``--cell-timeout``); ``cache_dir``: the caller's ``LAB_CACHE_DIR`` (None:
    the worker's own); ``timeout``: seconds for the whole render."""

    layer_name: str
    filter_index: int
    arguments: tuple[str, ...] = ()
    cache_dir: str | None = None
    timeout: float = DEFAULT_PAIR_TIMEOUT


@dataclass
class PairResult:
    """One pair's outcome. ``status``: "ok" or "failed"; ``seconds``: wall time of its render;
    ``files``: path relative to the pair's folder (POSIX) -> bytes; ``channel_table``: the
    record its render left (None where no notebook computed it); ``written``: set by the
    client once ``OUT/<pair>/`` holds the files (which it then drops from memory)."""

    layer_name: str
    filter_index: int
    status: str
    seconds: float = 0.0
    message: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    channel_table: ChannelTableRecord | None = None
    written: bool = False

    @property
    def folder(self) -> str:
        return pair_folder(self.layer_name, self.filter_index)


def _failure_message(stderr: str, returncode: int) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    said = [ln for ln in lines if ": failed (" in ln or ln.startswith("render.sh: error:")]
    text = "; ".join(said) if said else " | ".join(lines[-3:])
    return (f"render exited with status {returncode}" + (f": {text}" if text else ""))[:MESSAGE_LIMIT]


# The renders running on this machine's threads: each is a session of its own (so that a
# timeout can end it with its kernel), which a Ctrl-C on the terminal does not reach.
_LIVE: set = set()
_LIVE_LOCK = threading.Lock()


def stop_local_renders() -> None:
    """Stop every pair's render still running here (Ctrl-C of the sweep)."""
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """Ctrl-C the render's process group (it shuts its kernel down), then SIGKILL."""
    for sig, wait in ((signal.SIGINT, KILL_GRACE), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def render_pair(task: PairTask) -> PairResult:
    """Render the lab for one pair in a subprocess (``python -m lab_utils.render``) into a
    temporary folder and return its files and channel table (``PairResult``). Never raises
    for a failing render: its status says so. Module-level, plain data in and out: runs the
    same on a local thread or a Dask worker."""
    env = {**os.environ, "LAB_PROGRESS": "0"}
    if task.cache_dir:
        env["LAB_CACHE_DIR"] = task.cache_dir
    env.pop(RECORD_DIR_ENV, None)  # the render sets its own
    result = PairResult(task.layer_name, task.filter_index, "failed")
    work = Path(tempfile.mkdtemp(prefix="lab-sweep-"))
    out = work / "out"
    cmd = [sys.executable, "-m", "lab_utils.render", "-p", "layer_name", task.layer_name,
           "-p", "filter_index", str(task.filter_index), *task.arguments, "--out", str(out)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", env=env, cwd=str(work), start_new_session=True)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            _stdout, stderr = proc.communicate(timeout=task.timeout)
        except subprocess.TimeoutExpired:
            _stop(proc)
            proc.communicate()
            result.message = f"timed out after {task.timeout:g} s (the pair's render was stopped)"
        except BaseException:
            _stop(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
        if not result.message:  # not timed out
            if proc.returncode == 0:
                result.status = "ok"
            else:
                result.message = _failure_message(stderr, proc.returncode)
        result.seconds = time.perf_counter() - t0
        if out.is_dir():
            for path in sorted(out.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    result.files[path.relative_to(out).as_posix()] = path.read_bytes()
        record = result.files.get(f"notebooks/{RECORD_FILE}")
        if record is not None:
            try:
                result.channel_table = ChannelTableRecord.from_json(record.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                result.message = "; ".join(m for m in (result.message, f"channel table: {exc}") if m)
    except OSError as exc:
        result.seconds = time.perf_counter() - t0
        result.message = f"the render could not run: {type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- the output folder
def _manifest(out: Path) -> list[str]:
    try:
        folders = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("folders", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [f for f in folders if isinstance(f, str) and f and "/" not in f and "\\" not in f
            and not f.startswith(".")] if isinstance(folders, list) else []


def check_out(out: Path, pairs: list[SweepPair]) -> None:
    """A LabError where the sweep would overwrite something it did not write: OUT's
    index.html without the sweep's manifest (a lab render, the grader), or a pair's
    folder that no earlier sweep into OUT wrote."""
    from .render import check_out_folder

    check_out_folder(out)
    if not out.is_dir():
        return
    ours = set(_manifest(out))
    has_manifest = (out / MANIFEST).is_file()
    index = out / "index.html"
    if (index.exists() or index.is_symlink()) and not has_manifest:
        raise LabError(f"--out {display_name(str(out))} holds an index.html that the sweep did not write; "
                       "choose another folder (nothing there is overwritten)")
    foreign = [p.folder for p in pairs
               if ((out / p.folder).exists() or (out / p.folder).is_symlink()) and p.folder not in ours]
    if foreign:
        raise LabError(f"--out {display_name(str(out))}: {', '.join(foreign)} exist(s) and the sweep did not "
                       "write them; choose another folder (nothing there is overwritten)")


def _safe_relative(name: str) -> PurePosixPath | None:
    rel = PurePosixPath(name)
    if rel.is_absolute() or not rel.parts or any(p in ("", ".", "..") or "\\" in p for p in rel.parts):
        return None
    return rel


def write_pair_files(out: Path, result: PairResult) -> None:
    """Replace ``OUT/<pair>/`` by *result*'s files (names that would leave the folder are
    skipped). The new folder is filled beside it, then swapped in."""
    final = out / result.folder
    tmp = out / f".{result.folder}.{os.getpid()}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for name, data in result.files.items():
            rel = _safe_relative(name)
            if rel is None:
                continue
            target = tmp.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if final.is_symlink() or final.is_file():
            final.unlink()
        elif final.is_dir():
            old = out / f".{result.folder}.{os.getpid()}.old"
            os.replace(final, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_manifest(out: Path, folders: set[str]) -> None:
    from .pages import write_text_atomic

    write_text_atomic(out / MANIFEST, json.dumps({"folders": sorted(folders)}, indent=1))


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Remove pair folders an earlier sweep into OUT wrote that this one does not."""
    for name in _manifest(out):
        path = out / name
        if name not in keep and path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- the index
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
    from .pages import badge

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
    from .pages import badge, table_html

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
    from .pages import write_index_page

    return write_index_page(out / "index.html", "CNN Circuits Lab: sweep",
                            sweep_index_body(results, started, settings))


# --------------------------------------------------------------------------- command line
class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump or traceback
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(flag):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a whole number (got {text!r})")
        if v < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be at least 1 (got {v})")
        return v
    return parse


def build_parser() -> argparse.ArgumentParser:
    ap = _OneLineParser(
        prog="render.sh --sweep",
        usage="render.sh --sweep FILE [--out DIR] [--jobs N] [--scheduler ADDRESS] [-p NAME VALUE]... "
              "[--params F.yaml] [--only 02,03]",
        description="Render the lab once per (layer, filter) pair of FILE, each in its own process, into "
                    "OUT/<layer>-f<filter>/, and write OUT/index.html comparing the pairs (status, time, "
                    "channel tables side by side, channels shared by filters of one layer highlighted).",
        epilog="FILE: one 'layer_name filter_index' per line (# comments, blank lines skipped), or, named "
               "*.yaml/*.yml, a YAML list of {layer_name: L, filter_index: F}. Filter indices are 0-based. "
               "Every pair is checked before anything runs; bad lines are listed with their numbers (exit 2). "
               "Exit status 1 when a pair failed (its row says why). Pairs share LAB_CACHE_DIR: pairs at "
               "one layer reuse its probe scan. OUT keeps only what the sweep wrote (.sweep-manifest.json); "
               "anything else there is never overwritten.")
    ap.add_argument("--sweep", metavar="FILE", required=True, help="the pairs (see below)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--jobs", type=_positive_int("--jobs"), default=1,
                    help="pairs rendered at once here (default 1: one render already uses every core)")
    ap.add_argument("--scheduler", metavar="ADDRESS",
                    help="run the pairs on a Dask cluster (tcp://host:port; --jobs is then ignored); "
                         "its workers need the kit and the weights")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                    help="a notebook parameter for every pair (repeatable; not layer_name or filter_index)")
    ap.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters for every pair (-p wins)")
    ap.add_argument("--only", help="comma-separated notebook numbers to run per pair, e.g. 02,03 "
                                   "(the channel table needs 03, 04 or 05)")
    ap.add_argument("--cell-timeout", type=_positive_int("--cell-timeout"), default=1800,
                    help="seconds one cell may run (default 1800)")
    ap.add_argument("--pair-timeout", type=_positive_int("--pair-timeout"), default=int(DEFAULT_PAIR_TIMEOUT),
                    help=f"seconds one pair's whole render may take (default {DEFAULT_PAIR_TIMEOUT:g})")
    return ap


def _value_text(value) -> str:
    """A parameter value as ``render.parse_value`` reads it back (YAML)."""
    import yaml

    return "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def plan(args) -> tuple[list[SweepPair], list[str], Path, dict]:
    """Check everything before anything runs: the pairs, the shared parameters, --only and
    --out. Returns (pairs, the render's other arguments, out, the shared parameters)."""
    from .params import PARAMETERS
    from .render import NOTEBOOK_DIR, collect_parameters, select_notebooks

    fixed = sorted({name for name, _ in args.parameter} & {"layer_name", "filter_index"})
    if fixed:
        raise LabError(f"-p {', '.join(fixed)}: the sweep file gives each pair's layer_name and filter_index")
    params = collect_parameters(args)
    for name in ("layer_name", "filter_index"):  # a --params file's values are the file's job too
        if name in params:
            raise LabError(f"--params sets {name}: the sweep file gives each pair's layer_name and filter_index")
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:  # once, not on every line of FILE
        raise LabError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(PARAMETERS)}")
    select_notebooks(args.only)
    pairs = read_pairs(args.sweep, params)
    out = Path(args.out).expanduser()
    if out.resolve() == NOTEBOOK_DIR.resolve() or NOTEBOOK_DIR.resolve() in out.resolve().parents:
        raise LabError("--out must not be inside notebooks/ (render never writes there)")
    check_out(out, pairs)
    arguments = [a for name, value in params.items() for a in ("-p", name, _value_text(value))]
    if args.only:
        arguments += ["--only", args.only]
    arguments += ["--cell-timeout", str(args.cell_timeout)]
    return pairs, arguments, out.resolve(), params


def _collect(future, pair: SweepPair) -> PairResult:
    from .cluster import is_lost_worker

    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - one pair's failure is its row, the others go on
        why = ("the worker running this pair died" if is_lost_worker(exc)
               else "the sweep task failed")
        return PairResult(pair.layer_name, pair.filter_index, "failed",
                          message=f"{why}: {type(exc).__name__}: {exc}"[:MESSAGE_LIMIT])


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pairs, arguments, out, params = plan(args)
    except LabError as exc:
        print(f"render.sh --sweep: error: {exc}", file=sys.stderr)
        return 2
    from concurrent.futures import as_completed

    from .cluster import open_executor

    cache = os.environ.get("LAB_CACHE_DIR")
    cache = str(Path(cache).expanduser().resolve()) if cache else None
    weights = os.environ.get("LAB_WEIGHTS_DIR")
    if weights:  # the renders run elsewhere (a temporary folder): keep its meaning
        os.environ["LAB_WEIGHTS_DIR"] = str(Path(weights).expanduser().resolve())
    def _interrupt(signum, _frame):  # SIGTERM / SIGHUP end the renders as Ctrl-C does
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    where = f"Dask scheduler {args.scheduler}" if args.scheduler else f"{args.jobs} local job(s)"
    print(f"sweep: {len(pairs)} pairs on {where}", file=sys.stderr, flush=True)
    results: dict[SweepPair, PairResult] = {}
    try:
        with open_executor(args.scheduler, args.jobs) as executor:
            futures = {executor.submit(render_pair, PairTask(p.layer_name, p.filter_index, tuple(arguments),
                                                             cache, float(args.pair_timeout))): p
                       for p in pairs}
            out.mkdir(parents=True, exist_ok=True)
            written = set(_manifest(out))
            try:
                for future in as_completed(futures):
                    pair = futures[future]
                    result = _collect(future, pair)
                    if result.files:
                        written.add(pair.folder)
                        _write_manifest(out, written)  # before the folder: a crash leaves it ours
                        write_pair_files(out, result)
                        result.files, result.written = {}, True
                    results[pair] = result
                    print(f"[{len(results)}/{len(pairs)}] {pair.layer_name} filter {pair.filter_index}: "
                          f"{result.status} ({result.seconds:.1f} s)"
                          f"{': ' + result.message if result.message else ''}", file=sys.stderr, flush=True)
            except KeyboardInterrupt:
                for future in futures:
                    future.cancel()
                stop_local_renders()  # their threads then return at once and the pool closes
                raise
    except LabError as exc:  # the scheduler cannot be reached, or its workers lack the kit
        print(f"render.sh --sweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"render.sh --sweep: interrupted after {len(results)} of {len(pairs)} pairs; "
              f"OUT/index.html not written", file=sys.stderr)
        return 130
    keep = {p.folder for p in pairs if results[p].written}
    _remove_stale(out, keep)
    _write_manifest(out, keep)
    ordered = [results[p] for p in pairs]
    settings = {name: repr(value) for name, value in params.items()}
    settings.update({"notebooks": args.only or "all", "ran on": where, "pairs file": display_name(args.sweep)})
    index = write_sweep_index(out, ordered, started, settings)
    failed = [f"{r.layer_name} {r.filter_index}" for r in ordered if r.status != "ok"]
    print(f"index: {index}" + (f"\nfailed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
