"""render.sh: fail-fast parameter checks, a full small render, and a render
where some notebooks fail (pages still written, others still run, exit 1)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lab_utils.pages import CSP_META

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["-p", "probe_limit", "12", "-p", "steps", "3", "-p", "vis_size", "48", "-p", "n_neighbours", "2",
         "-p", "top_n", "5"]
# figures each notebook shows (offline: notebook 01 shows the demo images without predictions)
FIGURES = {"01_model_choice": 2, "02_filter_selection": 5, "03_channel_analysis": 2,
           "04_channel_visualization": 5, "05_summary": 4}


def render(*args, timeout=900, **env_extra):
    env = {**os.environ, "LAB_VENV": sys.prefix, **env_extra}  # render.sh reuses this environment
    return subprocess.run(["bash", str(ROOT / "render.sh"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def notebooks_digest():
    h = hashlib.sha256()
    for p in sorted((ROOT / "notebooks").glob("*.ipynb")):
        h.update(p.read_bytes())
        h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


@pytest.mark.parametrize("args,message", [
    (["-p", "layer_name", "block9_conv9"], "unknown layer 'block9_conv9'"),
    (["-p", "filter_index", "256"], "filter_index of block3_conv1 256 is out of range; valid: 0..255"),
    (["-p", "layer_name", "block1_conv1"], "no feeding conv layer"),
    (["-p", "colour", "red"], "unknown parameter(s) colour; valid: model_name"),
    (["-p", "top_k", "0"], "top_k must be >= 1"),
    (["--only", "07"], "--only: no notebook numbered 07"),
    (["--params", "/nonexistent.yaml"], "--params file not found"),
    (["-p", "layer_name", ""], "layer_name must not be empty, got ''; valid: block1_conv2, "),
    (["-p", "steps", "100000000"], "steps must be <= 2048 ("),
    (["-p", "vis_size", "100000"], "vis_size must be <= 1024 ("),
    (["-p", "steps", "2048"], "the gradient ascent would take about 24.9 min"),
])
def test_bad_parameters_fail_fast(tmp_path, args, message):
    out = tmp_path / "out"
    res = render(*args, "--out", str(out), timeout=120)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr
    assert not out.exists()  # nothing ran


@pytest.mark.weights
@pytest.mark.slow
def test_render_writes_five_pages_and_index(tmp_path, vgg16):
    before = notebooks_digest()
    params = tmp_path / "p.yaml"
    params.write_text("filter_index: 12\nseed: 3\n")
    choice = tmp_path / "lab-choice.yaml"  # a student's lab choice: used where -p says nothing
    choice.write_text("top_k: 6\nfilter_index: 40\n")
    out = tmp_path / "html"
    res = render(*SMALL, "--params", str(params), "-p", "filter_index", "31", "--out", str(out),
                 LAB_CHOICE_FILE=str(choice))
    assert res.returncode == 0, res.stderr[-3000:]
    assert notebooks_digest() == before  # render never writes notebooks/
    index = (out / "index.html").read_text()
    for name, n_fig in FIGURES.items():
        page = (out / f"{name}.html").read_text()
        assert f"href='{name}.html'" in index
        assert len(re.findall(r'src="data:image/(?:png|jpeg);base64', page)) == n_fig, name
        nb = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert not [o for o in outputs if o.get("name") == "stderr"], name  # no logs, no progress bars
        assert "YOUR ANSWER" in page  # the student parts are there and open
        # offline: no script, nothing fetched from a CDN, a CSP that forbids both
        assert "<script" not in page and not re.search(r"""(src|href)=["']?https?://""", page), name
        assert CSP_META in page, name
    assert CSP_META in index and "<script" not in index
    # 02's explorer: its text in the page, never a bare widget repr; the atlas is the JPEG after it
    page02 = (out / "02_filter_selection.html").read_text()
    assert "filter explorer: interactive in Jupyter" in page02 and "VBox(" not in page02
    assert 'src="data:image/jpeg;base64' in page02
    assert index.count("<tr class='ok'>") == 5
    # -p wins over --params; both show in the index
    assert "<td>filter_index</td><td><code>31</code></td><td>papermill / render.sh -p</td>" in index
    assert "<td>seed</td><td><code>3</code></td><td>papermill / render.sh -p</td>" in index
    # -p over the lab choice over the kit's defaults; a render never writes the choice
    assert "<td>top_k</td><td><code>6</code></td><td>lab choice (lab-choice.yaml)</td>" in index
    assert "<td>image_size</td><td><code>224</code></td><td>kit default</td>" in index
    assert choice.read_text() == "top_k: 6\nfilter_index: 40\n"
    for name in ("03_channel_analysis", "05_summary"):
        cells = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4).cells
        described = next(c for c in cells if "check_parameters_from" in c.source).outputs[0]["text"]
        assert "block3_conv1 filter 31 (0-based)" in described and "top_k=6 " in described, described
        assert "top_k        = 6                lab choice (lab-choice.yaml)" in described, described


@pytest.mark.weights
@pytest.mark.slow
def test_failing_notebooks_still_get_pages(tmp_path, vgg16):
    broken = tmp_path / "no-readable-images"  # passes the check (an image file name), fails to decode
    broken.mkdir()
    (broken / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "html"
    res = render(*SMALL, "-p", "probe_set", str(broken), "--only", "02,03", "--out", str(out))
    assert res.returncode == 1
    assert "02_filter_selection: failed" in res.stderr and "03_channel_analysis: ok" in res.stderr
    page = (out / "02_filter_selection.html").read_text()
    assert "holds no readable image" in page  # the error is visible on the page
    index = (out / "index.html").read_text()
    assert "<tr class='failed'>" in index and "<tr class='ok'>" in index
    assert (out / "03_channel_analysis.html").exists()


def test_parse_value_keeps_empty_strings():
    from lab_utils.render import parse_value

    assert parse_value("") == "" and parse_value("  ") == "  "  # check_values then says "must not be empty"
    assert parse_value("None") is None and parse_value("null") is None and parse_value("~") is None
    assert parse_value("31") == 31 and parse_value("block3_conv1") == "block3_conv1"


@pytest.fixture
def no_kernel(monkeypatch):
    """main() in this process; a kernel start is recorded and refused (usage errors come first)."""
    from lab_utils import render as R

    started = []

    def refuse(self):
        started.append(self)
        raise RuntimeError("a kernel was started")

    monkeypatch.setattr(R.RenderKernel, "start", refuse)
    return started


def test_duplicate_keys_in_params_file_are_refused(tmp_path, capsys, no_kernel):
    from lab_utils import render as R

    path = tmp_path / "p.yaml"
    path.write_text("filter_index: 12\nseed: 3\n# the same key again\nfilter_index: 7\n")
    with pytest.raises(R.LabError) as info:
        R.collect_parameters(R.build_parser().parse_args(["--params", str(path)]))
    assert str(info.value) == (f"--params {path}: 'filter_index' is set twice (lines 1 and 4); keep one of them")
    assert R.main(["--params", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'filter_index' is set twice" in err
    assert no_kernel == [] and not (tmp_path / "out").exists()
    # nested mappings too; distinct keys, and a key repeated in different mappings, are fine
    path.write_text("seed: 3\nextra:\n  a: 1\n  a: 2\n")
    with pytest.raises(R.LabError, match=r"'a' is set twice \(lines 3 and 4\)"):
        R.collect_parameters(R.build_parser().parse_args(["--params", str(path)]))
    path.write_text("filter_index: 7\nseed: 3\n")
    assert R.collect_parameters(R.build_parser().parse_args(["--params", str(path)])) == {"filter_index": 7, "seed": 3}


def test_invalid_yaml_is_one_line(tmp_path):
    from lab_utils import render as R

    path = tmp_path / "p.yaml"
    path.write_text("seed: 3\nfilter_index: [7\n")
    with pytest.raises(R.LabError) as info:
        R.collect_parameters(R.build_parser().parse_args(["--params", str(path)]))
    assert str(info.value).startswith(f"--params {path} is not valid YAML (line ") and "\n" not in str(info.value)


def test_out_must_be_a_folder(tmp_path, capsys, no_kernel):
    from lab_utils import render as R

    a_file = tmp_path / "report.html"
    a_file.write_text("keep me")
    for out, message in [(a_file, f"--out {a_file} is a file; give a folder"),
                         (a_file / "html", f"--out {a_file / 'html'}: {a_file} is a file; give a folder"),
                         (a_file / "a" / "b", f"--out {a_file / 'a' / 'b'}: {a_file} is a file; give a folder")]:
        assert R.main(["--only", "01", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"render.sh: error: {message} (created if missing), e.g. --out build/html\n"
    assert no_kernel == [] and a_file.read_text() == "keep me"
    R.check_out_folder(tmp_path / "new" / "deeper")  # missing folders are fine: created later
    R.check_out_folder(tmp_path)


def test_out_naming_a_file_is_a_usage_error_of_render_sh(tmp_path):
    a_file = tmp_path / "out.txt"
    a_file.write_text("")
    res = render("--only", "01", "--out", str(a_file), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"render.sh: error: --out {a_file} is a file; give a folder (created if missing), e.g. --out build/html"]


def test_empty_probe_folder_fails_before_any_kernel(tmp_path):
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "readme.txt").write_text("not an image")
    out = tmp_path / "out"
    res = render("-p", "probe_set", str(empty), "--out", str(out), timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "holds no image file" in res.stderr and str(empty) in res.stderr
    assert "[1/" not in res.stderr and not out.exists()  # no notebook started


def test_render_kernel_talks_over_private_ipc_sockets(tmp_path):
    """No TCP port, no "running over TCP without encryption" warning on every render; the
    sockets live in a private folder (0700) that is gone after shutdown, never in the cwd."""
    book = _notebook(tmp_path / "k.ipynb", "print(6 * 7)")
    code = f"""
import json, os, sys
from pathlib import Path
from lab_utils.render import RenderKernel, execute
kernel = RenderKernel(Path({str(tmp_path)!r})).start()
folder = kernel.socket_dir
status, message = execute(Path({str(book)!r}), Path({str(tmp_path / 'out.ipynb')!r}), {{}}, 60, kernel)
info = json.loads(Path(kernel.km.connection_file).read_text())
report = {{"status": status, "message": message, "folder": folder, "transport": info["transport"],
          "ip": info["ip"], "mode": oct(os.stat(folder).st_mode & 0o777),
          "sockets": sorted(p.name for p in Path(folder).iterdir() if p.is_socket()),
          "connection_file": kernel.km.connection_file}}
kernel.shutdown()
report["left"] = os.path.exists(folder)
print(json.dumps(report))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["status"] == "ok", report["message"]
    assert "without encryption" not in res.stderr and "TCP" not in res.stderr, res.stderr[-2000:]
    assert report["transport"] == "ipc"
    folder = Path(report["folder"])
    assert report["ip"] == str(folder / "kernel") and Path(report["connection_file"]).parent == folder
    assert report["mode"] == "0o700"
    assert len(report["sockets"]) >= 4 and all(n.startswith("kernel-") for n in report["sockets"])
    assert tmp_path not in folder.parents and ROOT not in folder.parents  # not in the cwd, not in notebooks/
    assert not report["left"]  # removed at shutdown, sockets and connection file with it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k.ipynb", "out.ipynb"]


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_shared_kernel_isolates_notebooks_and_survives_death_and_timeouts(tmp_path):
    """render.py runs all notebooks in one kernel: namespaces must not leak, and a
    notebook that kills or hangs the kernel must not take the next ones with it."""
    from lab_utils.render import RenderKernel, execute

    define = _notebook(tmp_path / "a.ipynb", "secret = 42\nimport os\npid = os.getpid()\nprint(pid)")
    probe = _notebook(tmp_path / "b.ipynb", "import os\nprint(os.getpid())\nprint('secret' in dir())")
    die = _notebook(tmp_path / "c.ipynb", "import os\nos._exit(3)")
    hang = _notebook(tmp_path / "d.ipynb", "import time\nwhile True: time.sleep(0.1)")
    kernel = RenderKernel(tmp_path).start()
    try:
        def run(book, timeout=60):
            out = tmp_path / "out" / book.name
            out.parent.mkdir(exist_ok=True)
            status, message = execute(book, out, {}, timeout, kernel)
            nb = nbformat.read(out, as_version=4) if out.exists() else None
            return status, message, nb

        status, _, nb = run(define)
        assert status == "ok"
        first_pid = nb.cells[0].outputs[0]["text"].strip()
        status, _, nb = run(probe)
        assert status == "ok"
        pid, leaked = nb.cells[0].outputs[0]["text"].split()
        assert pid == first_pid  # the same kernel (that is the speed-up) ...
        assert leaked == "False"  # ... with the previous notebook's variables gone
        assert nb.cells[0].execution_count == 1  # counts restart: stored outputs look like a fresh run
        status, message, _ = run(die)
        assert status == "failed" and "Dead" in message
        status, _, nb = run(probe)
        assert status == "ok" and nb.cells[0].outputs[0]["text"].split()[0] != first_pid  # a new kernel
        status, message, _ = run(hang, timeout=3)
        assert status == "failed" and "timed out" in message.lower()
        status, _, nb = run(probe)
        assert status == "ok"
    finally:
        kernel.shutdown()
