"""The workers: ``python -m lab_utils.submissions --one -``, settings on stdin.

A *run* worker (``phase: run``, with ``--execute``) executes the copy in its workroot
(``student_kernel.execute_copy``) and leaves ``RUN_FILE`` and ``EXECUTED_FILE`` there; a
*page* worker classifies the submitted bytes, takes the run's outputs, bounds them and
writes the student's page, then prints its result (``RESULT_PREFIX``) on stdout, with the
notebook's evidence (``evidence.notebook_evidence``); a *student* worker (``phase:
student``) writes a lab hand-in's report page (``reports.student_page``).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..evidence import notebook_evidence, to_json
from ..pages import write_text_atomic
from .notebooks import MAX_FILE_BYTES, bound_notebook, count_error_cells, load_notebook
from .statuses import (
    EMPTY, GRADER_ERROR, INVALID, KERNEL_DIED, OK, TIMED_OUT, TOO_LARGE, TRUNCATED_NOTE, errors_status)
from .student_kernel import (
    execute_copy, make_undumpable, marker_output, mb_text, read_nofollow, write_notebook_atomic)
from .reports import student_page
from .student_pages import banner_html, preview_html, render_notebook_page, write_banner_page

RUN_FILE = "run.json"  # in the workroot: what the run worker reports
EXECUTED_FILE = "executed.ipynb"  # the notebook with this run's outputs
CHECKPOINT_FILE = "checkpoint.ipynb"  # the same, saved while running (a killed run's outputs)


def run_phase(spec: dict) -> None:
    """The run worker: execute ``workroot/work/<notebook>`` and leave RUN_FILE and
    EXECUTED_FILE in the workroot. Its settings name nothing outside the workroot."""
    t0 = time.monotonic()
    workroot = Path(spec["workroot"])
    info: dict = {"executed": False}
    try:
        loaded = load_notebook((workroot / "work" / spec["notebook"]).read_bytes())
        if loaded.status is None:
            info = execute_copy(loaded.nb, workroot, float(spec["timeout"]), float(spec["cell_timeout"]),
                                t0, checkpoint=workroot / CHECKPOINT_FILE, run_file=workroot / RUN_FILE)
            write_notebook_atomic(loaded.nb, workroot / EXECUTED_FILE)
            info["executed"] = True
    except Exception as e:  # noqa: BLE001 - reported on the page, never a crash
        info = {"executed": False, "error": f"the run worker failed: {type(e).__name__}: {e}"}
    write_text_atomic(workroot / RUN_FILE, json.dumps(info))


def process_one(spec: dict) -> dict:
    """The page worker: classify the submitted bytes, take this run's outputs (with
    ``--execute``: ``spec['run']``, ``spec['executed']``), bound them and write the
    page to ``spec['page']``.  Never raises; returns the result dict (status,
    n_error_cells, notes, message, seconds, page_written)."""
    t0 = time.monotonic()
    res = {"status": GRADER_ERROR, "n_error_cells": 0, "notes": [], "message": "",
           "page_written": False}
    page_path = Path(spec["page"])
    try:
        _process_one(spec, res)
    except BaseException as e:  # noqa: BLE001 - the worker must report, not crash
        res["status"] = GRADER_ERROR
        res["message"] = f"{type(e).__name__}: {e}"
    if not res["page_written"]:
        try:
            write_banner_page(page_path, spec, res["status"], res["notes"], res["message"])
            res["page_written"] = True
        except OSError:
            pass
    res["seconds"] = round(time.monotonic() - t0, 2)
    return res


def _executed_notebook(path: str | None):
    """The run's notebook (a file the student's processes could have written: parsed
    like any hand-in), or None."""
    if not path:
        return None
    try:
        loaded = load_notebook(read_nofollow(Path(path), MAX_FILE_BYTES))
    except OSError:
        return None
    return loaded.nb if loaded.status is None else None


def _mark_first_unrun_cell(nb, text: str) -> int | None:
    """Append the grader's *text* to the first code cell this run did not finish; its
    1-based number (None when every cell ran)."""
    for idx, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.strip() and cell.get("execution_count") is None:
            cell.outputs.append(marker_output(text))
            return idx + 1
    return None


def _process_one(spec: dict, res: dict) -> None:
    src = Path(spec["src"])
    page_path = Path(spec["page"])
    notes = res["notes"]
    data = read_nofollow(src, MAX_FILE_BYTES + 1)  # read-only: the original is never written
    if len(data) > MAX_FILE_BYTES:
        res["status"] = TOO_LARGE
        res["message"] = f"over the {mb_text(MAX_FILE_BYTES)} limit; not read"
        return
    loaded = load_notebook(data)
    notes += loaded.notes
    res["message"] = loaded.message
    if loaded.status == INVALID:
        res["status"] = INVALID
        write_banner_page(page_path, spec, INVALID, notes, loaded.message, preview_html(data))
        res["page_written"] = True
        return
    if loaded.status == EMPTY and loaded.nb is None:
        res["status"] = EMPTY
        return
    nb = loaded.nb
    cuts = 0
    if loaded.status == EMPTY:
        status = EMPTY
    elif spec["execute"]:
        run = spec.get("run") or {}
        executed = _executed_notebook(spec.get("executed"))
        if executed is not None:
            nb = executed
        else:  # stored outputs must not pass for this run's
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
        notes += run.get("notes", [])
        cuts += run.get("cuts", 0)
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        if run.get("killed"):
            status = TIMED_OUT
            text = (f"[grader] The run was stopped here: {run['message']}. "
                    "This cell and later cells did not finish.\n")
            at = run.get("stopped_at")
            if isinstance(at, int) and 1 <= at <= len(nb.cells) and nb.cells[at - 1].cell_type == "code":
                nb.cells[at - 1].outputs.append(marker_output(text))
            elif executed is not None:  # the saved notebook shows where the run was
                at = _mark_first_unrun_cell(nb, text)
            else:  # nothing was saved: no cell number to claim
                at = None
            res["message"] = run["message"] + (f"; stopped in cell {at}" if at else "")
        elif run.get("error"):
            status = GRADER_ERROR
            res["message"] = run["error"]  # says what failed: the copy, the kernel, the worker
        elif run.get("timed_out"):
            status = TIMED_OUT
            what = ("per-cell timeout" if run["timed_out"] == "cell" else "total timeout")
            res["message"] = f"stopped in cell {run.get('stopped_at')} ({what})"
        elif run.get("died"):
            status = KERNEL_DIED
            res["message"] = (
                f"the kernel died in cell {run.get('stopped_at')} (os._exit, a crash, or out of memory)"
            )
        elif not run.get("executed") or executed is None:
            status = GRADER_ERROR
            res["message"] = "the run ended without saving the notebook"
        else:
            status = errors_status(n_err) if n_err else OK
        if status in (TIMED_OUT, KERNEL_DIED) and n_err:
            notes.append(errors_status(n_err) + " before that")
    else:
        n_err = count_error_cells(nb)
        res["n_error_cells"] = n_err
        status = errors_status(n_err) if n_err else OK
    cuts += bound_notebook(nb)
    if cuts:
        notes.append(f"{TRUNCATED_NOTE} ({cuts})")
    res["status"] = status
    # what the grader's reports read (lab step, answers, parameters, checks), from this run's outputs
    res["evidence"] = to_json(notebook_evidence(nb, spec["rel"]))
    if spec.get("bounded"):  # a lab hand-in's notebook: its report page shows this bounded copy
        write_notebook_atomic(nb, Path(spec["bounded"]))
    banner = banner_html(spec, status, notes, res["message"])
    write_text_atomic(page_path, render_notebook_page(nb, spec, banner))
    res["page_written"] = True


RESULT_PREFIX = "LAB-RESULT "


def worker_main() -> int:
    """``--one -``: read the settings (JSON) from stdin; a run worker leaves its results
    in its workroot, a page worker prints its result as the last stdout line."""
    spec = json.loads(sys.stdin.read())
    make_undumpable()  # what it read (the page worker: the hand-in's path) stays its own
    if spec.get("phase") == "run":
        run_phase(spec)
    elif spec.get("phase") == "student":
        sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(student_page(spec)) + "\n")
    else:
        res = process_one(spec)
        sys.stdout.write("\n" + RESULT_PREFIX + json.dumps(res) + "\n")
    # Do not wait for stray threads (nbclient, zmq) to wind down.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
