#!/usr/bin/env bash
# The kit's test command: sets up .venv if needed, then runs the whole suite
# (unit tests, real-weight tests, notebook regression with nbval, papermill
# sweep, render.sh tests, benchmark smoke run).  Extra arguments go to pytest,
# e.g. ./run-tests.sh -k channel_table
set -euo pipefail
cd "$(dirname "$0")"
source scripts/setup-env.sh
# Stored notebook outputs must not contain progress bars.
export LAB_PROGRESS=0
set +e
python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "run-tests.sh: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
exit "$rc"
