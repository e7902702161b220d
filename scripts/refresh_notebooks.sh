#!/usr/bin/env bash
# Re-run the lab notebooks with default parameters and store their outputs
# (the reference nbval checks). Optional arguments: notebook numbers, e.g. 02 04.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup-env.sh
export LAB_PROGRESS=0
# The same oneDNN kernels as run-tests.sh, whatever this CPU has (see there).
export ONEDNN_MAX_CPU_ISA="${ONEDNN_MAX_CPU_ISA:-AVX2}"
# Reference outputs are the kit's defaults, never this checkout's lab-choice.yaml.
CHOICE_DIR="$(mktemp -d)"
trap 'rm -rf "$CHOICE_DIR"' EXIT
export LAB_CHOICE_FILE="$CHOICE_DIR/lab-choice.yaml"
python scripts/refresh_notebooks.py "$@"
