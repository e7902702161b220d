"""Render a folder of student submissions to HTML: one page per notebook plus an index.

    ./render.sh --submissions hand-ins/ [--out build/submissions] [--execute]
                [--timeout S] [--cell-timeout S] [--jobs N] [--shard I/N]
    ./render.sh --merge OUT_1 ... OUT_N --out OUT

Every ``.ipynb`` under the folder is one submission (``handins``: discovery and
names; symbolic links are listed, never followed).  A ``.zip`` directly in the folder
counts as a folder of that name (``archives``: extracted into the grader's private
temporary folder, unsafe entries skipped and listed; the hand-ins are only read).  By default each notebook is
converted as submitted (no code runs).  With ``--execute`` each one runs on a
*copy* in a fresh temporary folder, in its own process, with a per-cell and a
total timeout (``student_kernel``); errors are recorded, not fatal.  The
originals are only ever read.  Pages are written with ``lab_utils.pages`` (offline,
with a Content-Security-Policy, sanitized), as the lab render's are.

Per hand-in, two short-lived worker processes (``python -m lab_utils.submissions
--one -``, settings on stdin, never in a file or a command line):

1. with ``--execute``, the *run* worker, in the hand-in's workroot, started with
   the kernel's allow-list environment: it executes the copy and leaves
   ``run.json`` and the executed notebook there. The parent kills it, and every
   process of that workroot, at ``--timeout`` plus ``KILL_MARGIN`` seconds;
2. the *page* worker (no student code runs anywhere by then): it classifies the
   submitted bytes, bounds the outputs and writes the page.

Statuses written to the index (exact words):
``ok``, ``errors in N cells`` (``errors in 1 cell``), ``timed out``, ``kernel died``,
``not a valid notebook``, ``empty``, ``symbolic link (not followed)``, ``not a readable
archive`` (a ``.zip`` hand-in that could not be opened), and, rarely,
``too large`` (file over the read limit) or ``grader error`` (a bug or a crash of
the grading process itself).  Annotations such as ``old nbformat (converted)`` or
``outputs truncated`` go in the notes column and do not change the status.

Exit status: 0 when every submission is ``ok``, 1 when any is not (after all of
them were processed), 2 for a usage error.

The package, one module a stage:

- ``handins``: finding the hand-ins and naming them (names shown safely, links never
  followed);
- ``archives``: the ``.zip`` hand-ins, extracted defensively (paths, links, encryption,
  nested archives, entry count, per-file and total size limits) into the private folder;
- ``notebooks``: reading the submitted bytes (``load_notebook``) and bounding the
  outputs (``bound_notebook``);
- ``student_kernel``: executing a copy (workroot, allow-list environment, the bounded
  nbclient client); ``processes``: ending every process of a run;
- ``statuses``: the status words and their badge classes;
- ``student_pages``: a student's page and the batch's index;
- ``worker``: the run and page workers (``--one -``);
- ``reports``: one report per lab hand-in folder (or archive), ``grades.csv``;
- ``batch``: the parent: every hand-in through its workers, ``results.json``, the
  manifest of this command's pages;
- ``shards``: ``--shard I/N`` (a deterministic slice of the class, ``shard.json``) and
  ``--merge DIR...`` (the shards put together as one run of the class);
- ``cli``: the command line (``main``), ``__main__``: ``python -m lab_utils.submissions``.

This package must stay light: it imports no TensorFlow and no lab_utils module
that does.  nbformat/nbclient/nbconvert are imported lazily, in the workers.
"""

from __future__ import annotations

from ..pages import INDEX_CSS, fallback_notebook_html  # noqa: F401  (written here before)
from .batch import (  # noqa: F401
    KILL_GRACE, KILL_MARGIN, MANIFEST, RENDER_TIMEOUT, Result, manifest_files, grade_one, read_run_info,
    run_batch)
from .cli import (  # noqa: F401
    ARGS_FD_FLAG, DEFAULT_CELL_TIMEOUT, DEFAULT_JOBS, DEFAULT_OUT, DEFAULT_TIMEOUT, build_parser, main)
from .archives import MAX_ARCHIVE_BYTES, MAX_ENTRIES, MAX_TOTAL_BYTES, unpack_all  # noqa: F401
from .handins import Submission, assign_names, discover, scan, slugify  # noqa: F401
from .notebooks import (  # noqa: F401
    IMAGE_LIMIT, MAX_FILE_BYTES, NOTEBOOK_OUTPUT_BUDGET, RICH_TEXT_LIMIT, SOURCE_LIMIT, Loaded, bound_notebook,
    count_error_cells, load_notebook, truncate_text)
from .statuses import (  # noqa: F401
    BAD_ARCHIVE, EMPTY, GRADER_ERROR, INVALID, KERNEL_DIED, LINK, OK, OLD_FORMAT_NOTE, TIMED_OUT, TOO_LARGE, TRUNCATED_NOTE,
    errors_status, status_class)
from .processes import kill_group, kill_processes_of, rmtree_hard, run_with_hard_timeout  # noqa: F401
from .student_kernel import (  # noqa: F401
    COPY_LIMIT_BYTES, EXEC_CELL_BUDGET, EXEC_MAX_OUTPUTS, KIT_ROOT, TEXT_LIMIT, copy_student_files, execute_copy,
    grader_env, kernel_env, make_undumpable, make_workroot, marker_output, mb_text, read_nofollow,
    write_notebook_atomic)
from .student_pages import (  # noqa: F401
    banner_html, preview_html, render_notebook_page, write_banner_page, write_index)
from .worker import (  # noqa: F401
    CHECKPOINT_FILE, EXECUTED_FILE, RESULT_PREFIX, RUN_FILE, process_one, run_phase, worker_main)
