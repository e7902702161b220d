"""render.sh: fail-fast parameter checks, a full small render, and a render
where some notebooks fail (pages still written, others still run, exit 1)."""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["-p", "probe_limit", "12", "-p", "steps", "3", "-p", "vis_size", "48", "-p", "n_neighbours", "2",
         "-p", "top_n", "5"]
# figures each notebook shows (offline: notebook 01 shows the demo images without predictions)
FIGURES = {"01_model_choice": 1, "02_filter_selection": 3, "03_channel_analysis": 2,
           "04_channel_visualization": 1, "05_summary": 4}


def render(*args, timeout=900):
    env = {**os.environ, "LAB_VENV": sys.prefix}  # render.sh reuses this environment
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
    out = tmp_path / "html"
    res = render(*SMALL, "--params", str(params), "-p", "filter_index", "31", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert notebooks_digest() == before  # render never writes notebooks/
    index = (out / "index.html").read_text()
    for name, n_fig in FIGURES.items():
        page = (out / f"{name}.html").read_text()
        assert f"href='{name}.html'" in index
        assert len(re.findall(r'src="data:image/png;base64', page)) == n_fig, name
        nb = nbformat.read(out / "notebooks" / f"{name}.ipynb", as_version=4)
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], name
        assert not [o for o in outputs if o.get("name") == "stderr"], name  # no logs, no progress bars
        assert "YOUR ANSWER" in page  # the student parts are there and open
    assert index.count("<tr class='ok'>") == 5
    # -p wins over --params; both show in the index
    assert "<td>filter_index</td><td><code>31</code></td><td>set</td>" in index
    assert "<td>seed</td><td><code>3</code></td><td>set</td>" in index


@pytest.mark.weights
@pytest.mark.slow
def test_failing_notebooks_still_get_pages(tmp_path, vgg16):
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "readme.txt").write_text("not an image")
    out = tmp_path / "html"
    res = render(*SMALL, "-p", "probe_set", str(empty), "--only", "02,03", "--out", str(out))
    assert res.returncode == 1
    assert "02_filter_selection: failed" in res.stderr and "03_channel_analysis: ok" in res.stderr
    page = (out / "02_filter_selection.html").read_text()
    assert "holds no readable image" in page  # the error is visible on the page
    index = (out / "index.html").read_text()
    assert "<tr class='failed'>" in index and "<tr class='ok'>" in index
    assert (out / "03_channel_analysis.html").exists()


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
