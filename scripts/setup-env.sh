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
want="$("$VENV/bin/python" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$KIT_ROOT/pyproject.toml")"
have="$(cat "$VENV/.lab-installed" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "[setup] installing the kit and its dependencies (first run: about a minute)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$KIT_ROOT[test]" >&2
    "$VENV/bin/python" -m ipykernel install --prefix "$VENV" --name python3 >/dev/null
    echo "$want" > "$VENV/.lab-installed"
fi
# Offline weights: lab_utils looks in $LAB_WEIGHTS_DIR, else weights/ in the kit, else ../shared/weights.
export PATH="$VENV/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# oneDNN convolutions: ~1.3x faster than Eigen on AVX2 CPUs (bench/RESULTS.md); must be set before TF loads.
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-1}"
