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
``LAB_CACHE_DIR`` (pairs at one layer reuse the probe scan); on a Dask cluster each worker
uses its own.

The client writes each pair's pages into ``OUT/<layer>-f<filter>/`` (``pair_folder``) and
``OUT/index.html`` (``write_sweep_index``): one row per pair and the channel tables side
by side per layer, channels found in more than one table of a layer highlighted. It keeps
a manifest (``MANIFEST``) of what it wrote and never overwrites anything else. Exit status
0 when every pair rendered, 1 when any failed (its row says why), 2 for bad input.

The package, one module a stage:

- ``pairs``: the pairs file (``read_pairs``, ``SweepPair``, ``pair_folder``);
- ``task``: one pair, a task (``PairTask``, ``render_pair``, ``PairResult``;
  ``stop_local_renders``);
- ``output``: the output folder (``check_out``, ``write_pair_files``, the ``MANIFEST``:
  ``read_manifest``, ``write_manifest``, ``remove_stale``);
- ``index``: ``OUT/index.html`` (``write_sweep_index``, ``recurring_channels``);
- ``cli``: the command line (``build_parser``, ``plan``, ``pair_tasks``, ``main``), ``__main__``:
  ``python -m lab_utils.sweep``.
"""
from __future__ import annotations

from .cli import DEFAULT_OUT, build_parser, main, pair_tasks, plan
from .index import STATUS_BADGE, SWEEP_CSS, recurring_channels, sweep_index_body, write_sweep_index
from .output import MANIFEST, check_out, write_pair_files
from .pairs import YAML_SUFFIXES, SweepPair, pair_folder, parse_text, parse_yaml, read_pairs
from .task import DEFAULT_PAIR_TIMEOUT, KILL_GRACE, MESSAGE_LIMIT, PairResult, PairTask, render_pair, stop_local_renders

__all__ = [
    "DEFAULT_OUT", "DEFAULT_PAIR_TIMEOUT", "KILL_GRACE", "MANIFEST", "MESSAGE_LIMIT", "STATUS_BADGE",
    "SWEEP_CSS", "YAML_SUFFIXES", "PairResult", "PairTask", "SweepPair", "build_parser", "check_out", "main",
    "pair_folder", "pair_tasks", "parse_text", "parse_yaml", "plan", "read_pairs", "recurring_channels", "render_pair",
    "stop_local_renders", "sweep_index_body", "write_pair_files", "write_sweep_index",
]
