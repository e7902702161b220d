"""The statuses of a graded hand-in: the exact words of the index, the page banner and
``results.json``, and the badge class each is shown with (``lab_utils.pages.badge``)."""
from __future__ import annotations

import re

OK = "ok"
TIMED_OUT = "timed out"
KERNEL_DIED = "kernel died"
INVALID = "not a valid notebook"
EMPTY = "empty"
TOO_LARGE = "too large"
LINK = "symbolic link (not followed)"
BAD_ARCHIVE = "not a readable archive"  # a top-level .zip hand-in that could not be opened
GRADER_ERROR = "grader error"
OLD_FORMAT_NOTE = "old nbformat (converted)"
TRUNCATED_NOTE = "outputs truncated"


def errors_status(n: int) -> str:
    """``errors in 3 cells`` / ``errors in 1 cell``."""
    return f"errors in {n} cell" + ("" if n == 1 else "s")


_ERRORS_RE = re.compile(r"^errors in \d+ cells?$")


_STATUS_CLASS = {OK: "ok", TIMED_OUT: "fail", KERNEL_DIED: "fail", INVALID: "bad",
                 EMPTY: "bad", TOO_LARGE: "bad", GRADER_ERROR: "bad", BAD_ARCHIVE: "bad"}


def status_class(status: str) -> str:
    if _ERRORS_RE.match(status):
        return "err"
    return _STATUS_CLASS.get(status, "bad")
