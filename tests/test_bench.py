"""The benchmark keeps working: one ``python -m bench --quick`` run (tiny sizes,
no timing asserted; targets are only reported, see bench/README.md)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.weights
@pytest.mark.slow
def test_bench_quick_writes_its_table_and_keeps_hand_written_notes(tmp_path, vgg16):
    from bench.__main__ import BEGIN, END

    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\nintro kept\n\n{BEGIN}\nold table\n{END}\n\n## Notes\nnotes kept\n")
    env = {**os.environ, "LAB_VENV": sys.prefix}  # the render rows reuse this environment
    res = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(results),
                          "--workdir", str(tmp_path / "work")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    text = results.read_text()
    assert "old table" not in text and "intro kept" in text and "notes kept" in text
    table = text.split(BEGIN, 1)[1].split(END, 1)[0]
    for row in ("bound: float32 matmul", "scan block3_conv1", "naive loop block3_conv1", "re-rank",
                "ascent block3_conv1", "ascent block2_conv2", "compute of a render",
                "atlas block3_conv1: batch of 32 filters", "atlas block3_conv1: all 256 filters", "render cold",
                "render warm", "peak RSS"):
        assert row in table, row
    assert "GFLOP/s" in table and "Summary:" in table
    assert res.stdout.count("| measure") == 1  # one table printed


def test_bench_without_weights_is_one_clear_line(tmp_path):
    env = {**os.environ, "LAB_WEIGHTS_DIR": str(tmp_path / "none"), "KERAS_HOME": str(tmp_path / "keras")}
    res = subprocess.run([sys.executable, "-m", "bench", "--quick"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("bench: error: no VGG16 ImageNet weights found")
    assert "Traceback" not in res.stderr


@pytest.mark.weights
@pytest.mark.slow
def test_bench_grading_quick_writes_its_own_block(tmp_path, vgg16):
    """``python -m bench.grading --quick``: the class rows, in their own block of RESULTS.md
    (the main benchmark's block and the notes around it kept)."""
    from bench.__main__ import BEGIN, END
    from bench.grading import BEGIN as G_BEGIN, END as G_END

    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Benchmark results\n\n{BEGIN}\nmain table\n{END}\n\n## Notes\nnotes kept\n")
    env = {**os.environ, "LAB_VENV": sys.prefix}
    res = subprocess.run([sys.executable, "-m", "bench.grading", "--quick", "--out", str(results),
                          "--workdir", str(tmp_path / "work")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    text = results.read_text()
    assert "main table" in text and "notes kept" in text
    block = text.split(G_BEGIN, 1)[1].split(G_END, 1)[0]
    for row in ("instructor render", "shared read-only cache", "cold (--no-shared-cache)", "shared vs cold",
                "local Dask cluster", "projection: 300 hand-ins on 16 machine(s)"):
        assert row in block, row
    # every hand-in of the class was graded ok, in each of the three runs
    for out in ("out-shared", "out-cold", "out-dask"):
        import json

        subs = json.loads((tmp_path / "work" / out / "results.json").read_text())["submissions"]
        assert subs and all(s["status"] == "ok" for s in subs), (out, subs)
