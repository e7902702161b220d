"""Store a reference run's outputs in notebooks/ (what nbval compares against).

    ./scripts/refresh_notebooks.sh      # sets up the environment, then runs this

Executes each lab notebook with its default parameters (papermill), then
removes what varies between runs and is not output (papermill's timings and
metadata) and writes it back. This is the only tool that writes notebooks/.
"""
import sys
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parent.parent


def clean(nb):
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # the explorer's widget state: thumbnails, megabytes, no use offline
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    return nb


def main(names):
    books = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    for book in books:
        if names and book.name[:2] not in names:
            continue
        print("executing", book.name, file=sys.stderr, flush=True)
        nb = pm.execute_notebook(str(book), None, cwd=str(book.parent), kernel_name="python3",
                                 progress_bar=False, log_output=False)
        nbformat.write(clean(nb), book)


if __name__ == "__main__":
    main(sys.argv[1:])
