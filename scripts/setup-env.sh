#!/usr/bin/env bash
# Create (once) and refresh the kit's virtual environment in .venv.
# Sourced by run-tests.sh and render.sh; needs only python3 (>= 3.10) and pip.
# Re-installs when pyproject.toml changes (a stamp in .venv keeps its hash).
set -euo pipefail
KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LAB_VENV:-$KIT_ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtual environment in $VENV" >&2
    "$PY" -m venv "$VENV"
fi
want="$(sha256sum "$KIT_ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$VENV/.lab-installed" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "[setup] installing the kit and its dependencies (first run: about a minute)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$KIT_ROOT[test]" >&2
    "$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python3 >/dev/null
    echo "$want" > "$VENV/.lab-installed"
fi
# Offline weights: ../shared/weights beside the kit, unless the user chose a folder.
if [ -z "${LAB_WEIGHTS_DIR:-}" ] && [ -d "$KIT_ROOT/../shared/weights" ]; then
    export LAB_WEIGHTS_DIR="$(cd "$KIT_ROOT/../shared/weights" && pwd)"
fi
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# oneDNN convolutions: ~1.3x faster than Eigen on AVX2 CPUs (bench/RESULTS.md); must be set before TF loads.
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
