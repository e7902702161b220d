"""The command line: ``render.sh --submissions DIR`` (``python -m lab_utils.submissions``).

Checks the arguments (one line and exit status 2 for a usage error), hides the
folders from the process's command line before student code runs
(``_reexec_hiding_paths``), and runs the batch. ``--one -`` (a worker) and
``--settings-from-fd`` (after the re-execution) are internal.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from ..arguments import positive_int
from ..config import LabError, cache_dir, display_name
from ..pages import out_folder_blocker
from ..rubric import load_rubric
from .batch import MANIFEST, _with_kit_on_path, run_batch
from .shards import ShardError, merge, parse_shard
from .student_kernel import grader_env, make_undumpable
from .worker import worker_main

DEFAULT_OUT = "build/submissions"
DEFAULT_TIMEOUT = 900.0
DEFAULT_CELL_TIMEOUT = 300.0
DEFAULT_JOBS = max(1, min(4, os.cpu_count() or 1))


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, no usage dump or traceback
        self.exit(2, f"submissions: error: {message} (see --help)\n")


def _positive_seconds(flag):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a number of seconds (got {text!r})")
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number of seconds (got {text})")
        return v
    return parse


def _shard(text):
    try:
        return parse_shard(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="render.sh --submissions",
        usage="render.sh --submissions DIR [--out DIR] [--execute [--warm] [--shared-cache DIR | "
              "--no-shared-cache]] [--timeout S] [--cell-timeout S] [--jobs N | --scheduler ADDRESS] "
              "[--rubric FILE] [--verify] [--shard I/N]\n"
              "       render.sh --merge DIR [DIR ...] --out DIR [--rubric FILE]",
        description=(
            "Render every .ipynb under DIR (a folder of student submissions) to "
            "OUT/<student>.html and write OUT/index.html, a table of every submission with "
            "its status. The student's name is the first folder under DIR, or the file name "
            "for notebooks directly in DIR. A folder holding the lab's notebooks (recognized by "
            "the kit's metadata, their numbers or headings) also gets one report page: its "
            "notebooks in lab order under a score sheet (the rubric's items with their automatic "
            "evidence; the points are yours), and OUT/grades.csv has one row per such folder. "
            "Submitted files are only read, never written. "
            "--shard I/N grades one slice of the class (CI matrices, Slurm arrays): the hand-ins "
            "(top-level folders, .zip files and notebooks), sorted by name, are dealt round-robin "
            "(the k-th, from 0, to shard k%N+1); OUT also gets shard.json. --merge DIR... puts the "
            "--out folders of shards 1..N together into --out as one run of the whole class."
        ),
        epilog=(
            "A .zip archive directly in DIR counts as a folder (extracted into the grader's private "
            "temporary folder; unsafe entries are skipped and listed). "
            "Statuses: ok, errors in N cells, timed out, kernel died, not a valid notebook, "
            "empty, not a readable archive. Exit status: 0 if every submission is ok, 1 if any is not (all are still "
            "processed), 2 for a usage error. SECURITY: --execute runs untrusted student code "
            "with your user's permissions; the kit adds timeouts, a separate process and "
            "temporary folder per notebook and network-free proxy settings, but it is not a "
            "sandbox. Without --execute no student code runs."
        ),
    )
    what = p.add_mutually_exclusive_group()  # one of them: main() says so
    what.add_argument("--submissions", metavar="DIR",
                      help="folder of submissions (searched recursively for .ipynb files; a .zip "
                           "directly in it counts as a folder)")
    what.add_argument("--merge", metavar="DIR", nargs="+", default=None,
                      help="the --out folders of the shards 1..N of one class (each holding shard.json): "
                           "put them together into --out (which must be a new or an earlier merge's folder, "
                           "not one of them) as one run of the whole class would have written it; reads "
                           "only --out and --rubric of the other options")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                   help=f"where the pages go (default: {DEFAULT_OUT}, relative to the current "
                        "folder); must not be inside the submissions folder")
    p.add_argument("--execute", action="store_true",
                   help="run each notebook (on a copy, in a temporary folder) before rendering; "
                        "default: render the outputs as submitted, running nothing")
    p.add_argument("--timeout", metavar="S", type=_positive_seconds("--timeout"),
                   default=DEFAULT_TIMEOUT,
                   help=f"total seconds per notebook (default: {DEFAULT_TIMEOUT:g})")
    p.add_argument("--cell-timeout", metavar="S", type=_positive_seconds("--cell-timeout"),
                   default=DEFAULT_CELL_TIMEOUT,
                   help=f"seconds per cell with --execute (default: {DEFAULT_CELL_TIMEOUT:g})")
    p.add_argument("--jobs", metavar="N", type=positive_int("--jobs"), default=DEFAULT_JOBS,
                   help=f"notebooks processed at the same time, each in its own process "
                        f"(default: {DEFAULT_JOBS})")
    p.add_argument("--rubric", metavar="FILE", default=None,
                   help="the rubric of the lab hand-ins' score sheets and grades.csv "
                        "(default: the kit's data/rubric.yaml)")
    p.add_argument("--verify", action="store_true",
                   help="recompute each lab hand-in's channel table (notebook 03) and top classes (02) for "
                        "the parameters it printed, and flag tables that differ (stale or edited outputs); "
                        "runs the kit's code, never the student's")
    p.add_argument("--shared-cache", metavar="DIR", default=None,
                   help="with --execute: the cache every executed hand-in may read, read-only, its entries "
                        "checked against the hashes taken when the batch starts (default: your cache, the one "
                        "./render.sh fills: $LAB_CACHE_DIR or the kit's .lab_cache); each hand-in still writes "
                        "only into a cache of its own")
    p.add_argument("--no-shared-cache", action="store_true",
                   help="with --execute: every hand-in starts from an empty cache (each repeats the probe "
                        "scans and the visualizations)")
    p.add_argument("--warm", action="store_true",
                   help="with --execute: first scan the kit's probe set at every layer the hand-ins' parameter "
                        "cells and lab-choice.yaml files name (read, never run) into the shared cache")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="send each notebook's run and page to the dask.distributed cluster at ADDRESS "
                        "(tcp://host:8786; its workers need this kit installed); pages, index and grades.csv "
                        "are written here. Default: a local pool of --jobs processes")
    p.add_argument("--shard", metavar="I/N", type=_shard, default=None,
                   help="grade only shard I of N (1 <= I <= N) of the class; page names are the whole "
                        "class's; OUT also gets shard.json for --merge")
    return p


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


ARGS_FD_FLAG = "--settings-from-fd"


def _reexec_hiding_paths(args, root: Path, out: Path) -> None:
    """Replace this process (same pid) by one whose command line, working folder and
    environment name neither the hand-ins nor the output folder: the arguments travel
    through an inherited pipe. Student code can read every process's command line
    (``ps``); with ``--execute`` it must not learn where the hand-ins are from ours. The
    new process keeps only ``grader_env`` of the environment (no credentials) and marks
    itself non-dumpable (its working folder, open files and memory: ``make_undumpable``).
    Does nothing where there is no ``execve`` or the pipe would not hold the arguments."""
    if not hasattr(os, "execve") or not hasattr(os, "pipe"):
        return
    argv = ["--submissions", str(root), "--out", str(out), "--timeout", repr(args.timeout),
            "--cell-timeout", repr(args.cell_timeout), "--jobs", str(args.jobs)]
    argv += ["--execute"] if args.execute else []
    argv += ["--verify"] if args.verify else []
    argv += ["--rubric", args.rubric] if args.rubric else []
    argv += ["--warm"] if args.warm else []
    argv += ["--no-shared-cache"] if args.no_shared_cache else []
    argv += ["--shared-cache", args.shared_cache] if args.shared_cache else []
    argv += ["--scheduler", args.scheduler] if args.scheduler else []
    argv += ["--shard", str(args.shard)] if args.shard else []
    data = json.dumps(argv).encode()
    if len(data) > 60_000:  # a pipe buffer holds 64 KiB: never block here
        return
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    os.set_inheritable(r, True)
    env = _with_kit_on_path(grader_env())
    sys.stdout.flush()
    sys.stderr.flush()
    here = os.getcwd()
    os.chdir("/")
    try:
        os.execve(sys.executable, [sys.executable, "-m", "lab_utils.submissions", ARGS_FD_FLAG, str(r)], env)
    except OSError as e:  # go on without hiding, and say so
        os.chdir(here)
        os.close(r)
        print(f"submissions: warning: could not re-execute to hide the folders ({e}); "
              "student code may find them in this process's command line", file=sys.stderr)


def _argv_from_fd(fd_text: str) -> list[str]:
    fd = int(fd_text)
    with os.fdopen(fd, "rb") as fh:
        return json.loads(fh.read().decode())


def main(argv: list[str] | None = None, *, hide_paths: bool = False) -> int:
    """The command line. *hide_paths* (the ``python -m`` entry point): with ``--execute``,
    re-execute without the folders in the command line (``_reexec_hiding_paths``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 2 and argv[0] == "--one":  # internal: one worker, settings on stdin
        return worker_main()
    if len(argv) == 2 and argv[0] == ARGS_FD_FLAG:  # internal: after _reexec_hiding_paths
        argv = _argv_from_fd(argv[1])
        hide_paths = False  # hidden already
        make_undumpable()  # its cwd, open files and memory: unreadable to student code
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.submissions is None and args.merge is None:
        parser.error("the following arguments are required: --submissions (or --merge DIR... to merge shards)")
    if args.merge is not None:
        return _merge_main(parser, args)
    src = Path(args.submissions).expanduser()
    if not src.exists():
        parser.error(f"--submissions {display_name(args.submissions)}: no such folder")
    if not src.is_dir():
        parser.error(f"--submissions {display_name(args.submissions)}: not a folder")
    root = src.resolve()
    out = Path(args.out).expanduser().resolve()
    if out == root or _inside(out, root):
        parser.error(f"--out {display_name(args.out)} is inside the submissions folder; choose a folder "
                     "outside it (submissions are never written to)")
    _check_out(parser, args, out)
    _load_rubric(parser, args)
    if args.rubric is not None:
        args.rubric = str(Path(args.rubric).expanduser().resolve())
    if (args.warm or args.shared_cache or args.no_shared_cache) and not args.execute:
        parser.error("--warm, --shared-cache and --no-shared-cache are for executed hand-ins; add --execute")
    if args.no_shared_cache and (args.warm or args.shared_cache):
        parser.error("--no-shared-cache cannot be combined with --warm or --shared-cache")
    if args.execute and not args.no_shared_cache:
        shared = Path(args.shared_cache).expanduser() if args.shared_cache else cache_dir()
        if not shared.is_dir():
            parser.error(f"--shared-cache {display_name(str(shared))}: no such folder")
        shared = shared.resolve()
        if shared == root or _inside(shared, root) or _inside(root, shared):
            parser.error("--shared-cache must be outside the submissions folder (and not hold it)")
        if shared == out or _inside(shared, out) or _inside(out, shared):
            parser.error("--shared-cache must be outside --out (and not hold it)")
        args.shared_cache = str(shared)
    elif args.no_shared_cache:
        args.shared_cache = None
    if hide_paths and args.execute:
        _reexec_hiding_paths(args, root, out)
    try:
        return run_batch(args, root, out)
    except LabError as e:  # e.g. the Dask scheduler cannot be reached
        print(f"submissions: error: {display_name(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"submissions: error: {display_name(str(e))}", file=sys.stderr)
        return 1


def _check_out(parser, args, out: Path) -> None:
    blocker = out_folder_blocker(out)
    if blocker == out:
        parser.error(f"--out {display_name(args.out)} exists and is not a folder")
    if blocker is not None:
        parser.error(f"--out {display_name(args.out)}: {display_name(str(blocker))} is a file, not a folder")
    if (out / "index.html").exists() and not (out / MANIFEST).exists():
        parser.error(f"--out {display_name(args.out)} holds an index.html that this command did not "
                     "write (a lab render?); choose another folder, nothing there is overwritten")


def _load_rubric(parser, args) -> None:
    try:
        args.rubric_loaded = load_rubric(args.rubric)
    except LabError as e:
        parser.error(f"--rubric: {display_name(str(e))}")


def _merge_main(parser, args) -> int:
    """``--merge DIR... --out OUT`` (``shards.merge``): a refusal is one line, exit 2."""
    for flag, given in (("--shard", args.shard is not None), ("--execute", args.execute),
                        ("--verify", args.verify), ("--scheduler", args.scheduler is not None),
                        ("--warm", args.warm), ("--shared-cache", args.shared_cache is not None),
                        ("--no-shared-cache", args.no_shared_cache)):
        if given:
            parser.error(f"{flag} cannot be used with --merge (the shards were graded already)")
    for d in args.merge:
        if not Path(d).expanduser().is_dir():
            parser.error(f"--merge {display_name(d)}: no such folder")
    out = Path(args.out).expanduser().resolve()
    _check_out(parser, args, out)
    _load_rubric(parser, args)
    try:
        return merge([Path(d) for d in args.merge], out, args.rubric_loaded)
    except ShardError as e:
        parser.error(display_name(str(e)))
    except OSError as e:
        print(f"submissions: error: {display_name(str(e))}", file=sys.stderr)
        return 1
