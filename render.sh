#!/usr/bin/env bash
# Render the lab to HTML (the kit's main command), or a folder of student
# submissions with --submissions DIR (--merge DIR... for shards).  Sets up .venv on first use.
#   ./render.sh                          # the five notebooks, default parameters
#   ./render.sh -p filter_index 7 --out build/f7
#   ./render.sh --submissions hand-ins/ --out build/grading [--execute]
#   ./render.sh --atlas block3_conv1 [--out build/atlas]   # every filter of a layer, one page
#   ./render.sh --sweep pairs.txt [--out build/sweep] [--jobs N] [--scheduler ADDR]  # many (layer, filter) pairs
# ./render.sh --help lists every option.
set -euo pipefail
KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$KIT_ROOT/scripts/setup-env.sh"
# The atlas writes no notebook: its progress bar stays on (LAB_PROGRESS=0 still hides it).
for arg in "$@"; do
    case "$arg" in
        --atlas|--atlas=*) exec python -m lab_utils.atlas "$@" ;;
    esac
done
# Progress bars belong on the terminal, never in stored notebook outputs.
export LAB_PROGRESS=0
for arg in "$@"; do
    if [ "$arg" = "--submissions" ] || [ "$arg" = "--merge" ]; then
        exec python -m lab_utils.submissions "$@"
    fi
done
for arg in "$@"; do
    case "$arg" in
        --sweep|--sweep=*) exec python -m lab_utils.sweep "$@" ;;
    esac
done
exec python -m lab_utils.render "$@"
