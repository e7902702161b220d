#!/usr/bin/env bash
# Open the lab's notebooks in JupyterLab, with the kit's kernel ("Python 3" of .venv).
# First use: sets up .venv (like render.sh) and installs JupyterLab into it (about a minute).
#   ./lab.sh                      # opens a browser tab on notebooks/
#   ./lab.sh --no-browser --port 8890
#   ./lab.sh --ServerApp.root_dir=~/my-copy   # another folder of notebooks
# Extra arguments go to `jupyter lab`.
set -euo pipefail
KIT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$KIT_ROOT/scripts/setup-env.sh"
JUPYTERLAB_SPEC="jupyterlab>=4,<5"
if ! python -c "import jupyterlab" >/dev/null 2>&1; then
    echo "[lab] installing JupyterLab into $KIT_ROOT/.venv (first use, about a minute)" >&2
    python -m pip install -q "$JUPYTERLAB_SPEC" >&2
fi
extra=()
if [ "$(id -u)" = 0 ]; then
    # Containers and CI run as root; Jupyter refuses that unless told.
    echo "[lab] running as root (a container?): starting JupyterLab with --allow-root" >&2
    extra+=(--allow-root)
fi
# notebooks/ unless the caller names another folder (a copy of the notebooks, say).
root=(--ServerApp.root_dir="$KIT_ROOT/notebooks")
for arg in "$@"; do
    case "$arg" in --ServerApp.root_dir=*|--notebook-dir=*) root=() ;; esac
done
cd "$KIT_ROOT/notebooks"
exec python -m jupyter lab ${root[@]+"${root[@]}"} ${extra[@]+"${extra[@]}"} "$@"
