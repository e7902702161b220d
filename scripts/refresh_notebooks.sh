#!/usr/bin/env bash
# Re-run the lab notebooks with default parameters and store their outputs
# (the reference nbval checks). Optional arguments: notebook numbers, e.g. 02 04.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
export LAB_PROGRESS=0
python scripts/refresh_notebooks.py "$@"
