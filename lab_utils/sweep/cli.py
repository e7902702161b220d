"""The command line: ``render.sh --sweep FILE`` (``python -m lab_utils.sweep``).
``build_parser``; ``plan`` checks everything before anything runs; ``pair_tasks`` makes
one task per pair; ``main`` submits them, writes each pair's folder as its result comes
in, then the index."""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import sys
from pathlib import Path

from ..arguments import OneLineParser, positive_int
from ..config import LabError, display_name
from .index import write_sweep_index
from .output import check_out, read_manifest, remove_stale, write_manifest, write_pair_files
from .pairs import SweepPair, read_pairs
from .task import DEFAULT_PAIR_TIMEOUT, MESSAGE_LIMIT, PairResult, PairTask, render_pair, stop_local_renders

DEFAULT_OUT = "build/sweep"


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
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
               "one layer reuse its probe scan (with --scheduler, each worker's own cache). OUT keeps only "
               "what the sweep wrote (.sweep-manifest.json); anything else there is never overwritten.")
    ap.add_argument("--sweep", metavar="FILE", required=True, help="the pairs (see below)")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--jobs", type=positive_int("--jobs"), default=1,
                    help="pairs rendered at once here (default 1: one render already uses every core)")
    ap.add_argument("--scheduler", metavar="ADDRESS",
                    help="run the pairs on a Dask cluster (tcp://host:port; --jobs is then ignored); "
                         "its workers need the kit and the weights, and use their own LAB_CACHE_DIR")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                    help="a notebook parameter for every pair (repeatable; not layer_name or filter_index)")
    ap.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters for every pair (-p wins)")
    ap.add_argument("--only", help="comma-separated notebook numbers to run per pair, e.g. 02,03 "
                                   "(the channel table needs 03, 04 or 05)")
    ap.add_argument("--cell-timeout", type=positive_int("--cell-timeout"), default=1800,
                    help="seconds one cell may run (default 1800)")
    ap.add_argument("--pair-timeout", type=positive_int("--pair-timeout"), default=int(DEFAULT_PAIR_TIMEOUT),
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
    from ..params import PARAMETERS
    from ..render import NOTEBOOK_DIR, collect_parameters, select_notebooks

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


def pair_tasks(pairs: list[SweepPair], arguments: list[str], timeout: float, cache_dir: str | None,
               scheduler: str | None) -> list[PairTask]:
    """One task per pair, in order. *cache_dir* (the caller's ``LAB_CACHE_DIR``) goes only to
    renders on this machine: with a *scheduler* the task carries None, since a path here means
    nothing on a worker, which then uses its own cache."""
    cache = None if scheduler else cache_dir
    return [PairTask(p.layer_name, p.filter_index, tuple(arguments), cache, float(timeout)) for p in pairs]


def _collect(future, pair: SweepPair) -> PairResult:
    from ..cluster import is_lost_worker

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

    from ..cluster import open_executor

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
            tasks = pair_tasks(pairs, arguments, args.pair_timeout, cache, args.scheduler)
            futures = {executor.submit(render_pair, task): p for p, task in zip(pairs, tasks)}
            out.mkdir(parents=True, exist_ok=True)
            written = set(read_manifest(out))
            try:
                for future in as_completed(futures):
                    pair = futures[future]
                    result = _collect(future, pair)
                    if result.files:
                        written.add(pair.folder)
                        write_manifest(out, written)  # before the folder: a crash leaves it ours
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
    remove_stale(out, keep)
    write_manifest(out, keep)
    ordered = [results[p] for p in pairs]
    settings = {name: repr(value) for name, value in params.items()}
    settings.update({"notebooks": args.only or "all", "ran on": where, "pairs file": display_name(args.sweep)})
    index = write_sweep_index(out, ordered, started, settings)
    failed = [f"{r.layer_name} {r.filter_index}" for r in ordered if r.status != "ok"]
    print(f"index: {index}" + (f"\nfailed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
