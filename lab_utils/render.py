"""``render.sh``: execute the lab notebooks with papermill and export them to HTML.

    ./render.sh [-p NAME VALUE]... [--params FILE.yaml] [--out DIR] [--only 02,03]

Writes ``OUT/NN_name.html`` for each notebook, the executed notebooks in
``OUT/notebooks/``, and ``OUT/index.html`` (links, parameters, status, time). The
notebook that computes the channel table (03, and 04/05) also leaves it machine-readable
as ``OUT/notebooks/channel-table.json`` (``circuits.ChannelTableRecord``).
The notebooks in ``notebooks/`` are only read. Parameters are checked before
anything runs; a notebook that fails still gets its page (error visible), the
others still run, and the exit status is 1 at the end.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import html
import os
import sys
import time
from pathlib import Path

from .config import KIT_ROOT, LabError, socket_safe_temp_parent, yaml_problem

NOTEBOOK_DIR = KIT_ROOT / "notebooks"
# Characters of a failure kept for the index and the terminal: room for a whole one-line
# LabError with its fix (a path and a download address), not for a traceback.
MESSAGE_LIMIT = 800


def lab_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def parse_value(text: str):
    """Command-line value -> Python value (YAML rules: 31 -> int, None/null -> None).

    An empty or blank value stays a string (YAML would make it None): ``check_values``
    then says it must not be empty, instead of "got None"."""
    import yaml

    if not text.strip():
        return text
    if text.strip() in ("None", "none", "null", "~"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="render.sh", description="Execute the lab notebooks and export them to HTML with an index page.",
        epilog=("Grading student notebooks instead: render.sh --submissions DIR --help. "
                "Every filter of a layer synthesized on one page: render.sh --atlas LAYER --help. "
                "The lab for many (layer, filter) pairs, compared on one index (one process per pair, "
                "locally or on a Dask cluster): render.sh --sweep FILE --help."))
    ap.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                    help="set a notebook parameter for every notebook (repeatable), e.g. -p filter_index 7")
    ap.add_argument("--params", metavar="FILE.yaml", help="YAML file of parameters (-p values win)")
    ap.add_argument("--out", default="build/html", help="output folder (default: build/html)")
    ap.add_argument("--only", help="comma-separated notebook numbers to run, e.g. 02,03")
    ap.add_argument("--cell-timeout", type=int, default=1800, help="seconds one cell may run (default 1800)")
    return ap


def _unique_key_loader():
    """A yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                seen: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        first = seen.setdefault(key, key_node.start_mark.line + 1)
                    except TypeError:  # an unhashable key: SafeLoader's own error follows
                        continue
                    if first != key_node.start_mark.line + 1:
                        raise _DuplicateKey(key, first, key_node.start_mark.line + 1)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


class _DuplicateKey(ValueError):
    def __init__(self, key, first: int, again: int):
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


def collect_parameters(args) -> dict:
    import yaml

    params: dict = {}
    if args.params:
        path = Path(args.params)
        if not path.is_file():
            raise LabError(f"--params file not found: {path}")
        try:
            loaded = yaml.load(path.read_text(), Loader=_unique_key_loader()) or {}
        except _DuplicateKey as exc:
            raise LabError(f"--params {path}: {exc.key!r} is set twice (lines {exc.first} and {exc.again}); "
                           f"keep one of them") from None
        except yaml.YAMLError as exc:
            raise LabError(f"--params {path} is not valid YAML ({yaml_problem(exc)}); "
                           f"write one 'name: value' per line") from None
        if not isinstance(loaded, dict):
            raise LabError(f"--params {path} must hold a mapping of name: value")
        params.update(loaded)
    for name, value in args.parameter:
        params[name] = parse_value(value)
    from .params import probe_source

    source = probe_source(params["probe_set"]) if isinstance(params.get("probe_set"), str) else None
    if source is not None and source.kind in ("folder", "file"):
        # the notebooks run in notebooks/: a path relative to where render.sh was called must not change meaning
        params["probe_set"] = str(source.path.resolve())
    return params


def check_out_folder(out: Path) -> None:
    """A LabError where ``out`` cannot be the output folder: it, or the nearest of its parents
    that exists, is not a folder (a file, a broken link). A missing folder is created later."""
    from .pages import out_folder_blocker

    path = out_folder_blocker(out)
    if path is not None:
        kind = "a file" if path.is_file() else "not a folder"
        where = f"{out} is {kind}" if path == out else f"{out}: {path} is {kind}"
        raise LabError(f"--out {where}; give a folder (created if missing), e.g. --out build/html")


def select_notebooks(only: str | None) -> list[Path]:
    books = lab_notebooks()
    if not only:
        return books
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    known = {b.name[:2]: b for b in books}
    bad = [w for w in wanted if w.zfill(2) not in known]
    if bad:
        raise LabError(f"--only: no notebook numbered {', '.join(bad)}; valid: {', '.join(known)}")
    return list(dict.fromkeys(known[w.zfill(2)] for w in wanted))  # "2,02" runs notebook 02 once


def to_html(notebook_path: Path, html_path: Path) -> int:
    """Export one notebook to HTML (images embedded); returns the number of figures."""
    import nbformat

    from .pages import notebook_page, write_text_atomic

    nb = nbformat.read(notebook_path, as_version=4)
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if {"image/png", "image/jpeg"} & set(o.get("data", {})))
    write_text_atomic(html_path, notebook_page(nb, notebook_path.stem, untrusted=False))
    return figures


class RenderKernel:
    """One Jupyter kernel that runs every notebook of a render, one after another.

    Starting a kernel and importing TensorFlow costs ~5 s per notebook; a render
    pays it once. Between notebooks the kernel's namespace is emptied
    (IPython ``reset(new_session=True)``: variables gone, execution counts back
    to 1), so each notebook still runs on its own; imported modules and their
    in-memory caches (loaded model, compiled functions, decoded probe set) stay,
    which is the point. A kernel that died or is stuck after a timeout is
    replaced by a fresh one before the next notebook.

    The kernel talks over ZeroMQ IPC (Unix sockets), not TCP: no port is open to
    other users of the machine, and ipykernel does not warn "Kernel is running over
    TCP without encryption" on every render. The sockets and the connection file
    live in a private temporary folder (mode 0700), removed when the kernel stops.
    """

    # Run by the kernel as it starts, before it answers: TensorFlow loads while the
    # parent imports papermill and nbconvert. __import__ binds no name in the namespace.
    PRELOAD = "__import__('lab_utils.models')"
    RESET = "get_ipython().reset(new_session=True)\nimport gc\ngc.collect()"

    def __init__(self, cwd: Path, kernel_name: str = "python3"):
        self.cwd, self.kernel_name, self.km = cwd, kernel_name, None
        self.used = False
        self.socket_dir: str | None = None  # the running kernel's private folder

    def start(self):
        """Launch a kernel without waiting for it (the first notebook's client waits)."""
        # The async manager matters: with a blocking one, nbclient waits on output
        # messages with a blocking call and never notices that the kernel died.
        import tempfile

        from jupyter_client.manager import AsyncKernelManager
        from jupyter_core.utils import run_sync

        self.shutdown()
        # mkdtemp: mode 0700, in $TMPDIR (short paths: a Unix socket path has at most ~100 bytes).
        # For ipc the manager's ip is the sockets' path prefix: <folder>/kernel-1 ... kernel-5.
        # Windows has no Unix sockets for ZeroMQ: TCP there, as before.
        self.socket_dir = tempfile.mkdtemp(prefix="lab-kernel-", dir=socket_safe_temp_parent())
        where = {"transport": "ipc", "ip": os.path.join(self.socket_dir, "kernel")} if os.name != "nt" else {}
        self.km = AsyncKernelManager(kernel_name=self.kernel_name,
                                     connection_file=os.path.join(self.socket_dir, "kernel.json"), **where)
        try:
            run_sync(self.km.start_kernel)(cwd=str(self.cwd),
                                           extra_arguments=[f"--IPKernelApp.exec_lines={[self.PRELOAD]!r}"])
        except Exception:
            self.shutdown()
            raise
        self.used = False
        return self

    def _run(self, code: str, timeout: int = 300):
        # A fresh nbclient client each time: a client kept across papermill runs stops getting replies.
        import nbformat
        from nbclient import NotebookClient

        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        NotebookClient(nb, km=self.km, timeout=timeout, kernel_name=self.kernel_name).execute()

    def fresh(self):
        """The kernel manager for the next notebook: an emptied namespace, or a new kernel.

        Raises when no kernel can be started (the caller reports it per notebook)."""
        from jupyter_core.utils import run_sync

        if self.km is None or not run_sync(self.km.is_alive)():
            return self.start().km
        if self.used:
            try:
                self._run(self.RESET, timeout=60)
            except Exception:  # busy after a timeout, or died meanwhile
                self.start()
        self.used = True
        return self.km

    def shutdown(self):
        if self.km is not None:
            from jupyter_core.utils import run_sync

            try:
                run_sync(self.km.shutdown_kernel)(now=True)
            except Exception:
                pass
            self.km = None
        if self.socket_dir is not None:
            import shutil

            shutil.rmtree(self.socket_dir, ignore_errors=True)
            self.socket_dir = None


def execute(book: Path, out_nb: Path, params: dict, cell_timeout: int, kernel: RenderKernel | None = None
            ) -> tuple[str, str]:
    """Run one notebook with papermill (in ``kernel`` if given); returns (status, message)."""
    import papermill as pm

    try:
        extra = {"km": kernel.fresh()} if kernel is not None else {}
    except Exception as exc:
        return "failed", f"the python3 Jupyter kernel could not start: {type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]
    try:
        pm.execute_notebook(str(book), str(out_nb), parameters=params, cwd=str(book.parent), kernel_name="python3",
                            progress_bar=False, log_output=False, execution_timeout=cell_timeout, **extra)
        return "ok", ""
    except pm.PapermillExecutionError as exc:
        return "failed", f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"[:MESSAGE_LIMIT]
    except Exception as exc:  # kernel death, timeouts: the shared kernel cannot be trusted any more
        if kernel is not None:
            kernel.shutdown()
        return "failed", f"{type(exc).__name__}: {exc}"[:MESSAGE_LIMIT]


def not_run_page(book: Path, out_nb: Path, message: str) -> None:
    """Where papermill wrote nothing (no kernel), the page shows the notebook
    without the stored reference outputs, under a line saying why it did not run."""
    import nbformat

    nb = nbformat.read(book, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"**render.sh: this notebook did not run.** {message}"))
    nbformat.write(nb, out_nb)


# A notebook's status in the index: its row's class and the badge (``pages.BADGE_STYLES``) it shows.
STATUS_BADGE = {"ok": "ok", "failed": "fail"}


def write_index(out: Path, rows: list[dict], resolved, started: str) -> Path:
    """``resolved``: the render's ``choice.ResolvedParameters`` (values and their sources)."""
    from .pages import badge, table_html, write_index_page

    e = html.escape
    notebooks = table_html(["notebook", "status", "time (s)", "figures", "message"], [
        ([f"<a href='{e(r['html'])}'>{e(r['name'])}</a>", badge(r["status"], STATUS_BADGE.get(r["status"], "fail")),
          (f"{r['seconds']:.1f}", "num"), (str(r["figures"]), "num"), e(r["message"])], r["status"])
        for r in rows])
    parameters = table_html(["name", "value", "from"], [
        ([e(k), f"<code>{e(repr(v))}</code>", e(resolved.sources[k])], "") for k, v in resolved.values.items()])
    n_ok = sum(r["status"] == "ok" for r in rows)
    body = f"""<h1>CNN Circuits Lab</h1>
<p>Rendered {e(started)}: {n_ok} of {len(rows)} notebooks ok.</p>
<h2>Notebooks</h2>
{notebooks}
<h2>Parameters</h2>
{parameters}"""
    return write_index_page(out / "index.html", "CNN Circuits Lab: rendered notebooks", body)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        params = collect_parameters(args)
        books = select_notebooks(args.only)
        if not books:
            raise LabError(f"no notebooks found in {NOTEBOOK_DIR}")
        if args.cell_timeout < 1:
            raise LabError("--cell-timeout must be >= 1 second")
        from .choice import INJECTED, resolve_arguments
        from .params import check_values

        # -p values over the student's lab choice over the kit's defaults; only -p values are
        # injected (the notebooks read the lab choice themselves) and none is ever saved.
        resolved = resolve_arguments(params, source=INJECTED)
        check_values(resolved.values)  # everything, layer and filter included, without TensorFlow: before any kernel starts
        check_out_folder(Path(args.out).expanduser())
    except LabError as exc:
        print(f"render.sh: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    if out == NOTEBOOK_DIR.resolve() or NOTEBOOK_DIR.resolve() in out.parents:
        print("render.sh: error: --out must not be inside notebooks/ (render never writes there)", file=sys.stderr)
        return 2
    for var in ("LAB_CACHE_DIR", "LAB_WEIGHTS_DIR"):  # the kernel runs in notebooks/: keep their meaning
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())
    from .circuits import RECORD_DIR_ENV, RECORD_FILE

    # notebooks leave their channel table as JSON next to them (circuits.write_record): the
    # sweep reads it; a previous render's record is never taken for this one's
    record_dir_before = os.environ.get(RECORD_DIR_ENV)
    os.environ[RECORD_DIR_ENV] = str(out / "notebooks")  # inherited by the kernel (and its restarts)
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    (out / "notebooks" / RECORD_FILE).unlink(missing_ok=True)
    kernel = RenderKernel(books[0].parent)
    try:
        kernel.start()
    except Exception as exc:  # reported again on each notebook's page
        print(f"render.sh: the python3 Jupyter kernel could not start: {type(exc).__name__}: {exc}",
              file=sys.stderr)
    try:
        return _render_all(args, params, resolved, books, out, kernel)
    finally:
        kernel.shutdown()
        if record_dir_before is None:  # main() called in a process that goes on (bench, tests)
            os.environ.pop(RECORD_DIR_ENV, None)
        else:
            os.environ[RECORD_DIR_ENV] = record_dir_before


def _render_all(args, params: dict, resolved, books: list[Path], out: Path, kernel: RenderKernel) -> int:
    from concurrent.futures import ThreadPoolExecutor

    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows = []
    exporter = ThreadPoolExecutor(1)  # HTML export of notebook k runs while notebook k+1 executes
    for i, book in enumerate(books, 1):
        print(f"[{i}/{len(books)}] {book.stem} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out_nb = out / "notebooks" / book.name
        out_nb.unlink(missing_ok=True)  # never export a previous render's notebook as this one's
        status, message = execute(book, out_nb, params, args.cell_timeout, kernel)
        seconds = time.perf_counter() - t0
        if not out_nb.exists():
            not_run_page(book, out_nb, message)
        row = {"name": book.stem, "html": f"{book.stem}.html", "status": status, "message": message,
               "seconds": seconds}
        row["export"] = exporter.submit(to_html, out_nb, out / row["html"])
        rows.append(row)
        print(f"[{i}/{len(books)}] {book.stem}: {status} ({seconds:.1f} s){': ' + message if message else ''}",
              file=sys.stderr, flush=True)
    for row in rows:
        try:
            row["figures"] = row.pop("export").result()
        except Exception as exc:
            row["figures"] = 0
            note = f"HTML export failed: {type(exc).__name__}: {exc}"
            row["status"], row["message"] = "failed", "; ".join(m for m in (row["message"], note) if m)[:MESSAGE_LIMIT]
            print(f"{row['name']}: {note}", file=sys.stderr)
    exporter.shutdown()
    index = write_index(out, rows, resolved, started)
    failed = [r["name"] for r in rows if r["status"] != "ok"]
    print(f"index: {index}" + (f"\nfailed: {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
