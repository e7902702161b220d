"""Grading on a real dask.distributed cluster (``--scheduler``): a scheduler and two workers
started here as processes on 127.0.0.1 (bounded, stopped by the fixture), one of them
killed during a run. The notebooks are small (no TensorFlow): what is tested is the
machinery, the same ``grade_one`` as the local pool."""
from __future__ import annotations

import html
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_submissions import KIT_ROOT, index_rows, results, run_cli, write_nb

pytest.importorskip("distributed")

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and two single-thread workers (lab_utils.cluster.LocalCluster), stopped after."""
    from lab_utils.cluster import LocalCluster

    env = {**os.environ, "PYTHONPATH": str(KIT_ROOT), "LAB_PROGRESS": "0", "TMPDIR": str(tmp_path)}
    with LocalCluster(2, env, tmp_path, idle_s=300) as c:
        yield c


def small_class(root: Path, pid_file: Path | None = None) -> None:
    write_nb(root / "ada" / "lab.ipynb", "print('ADA', 6 * 7)")
    (root / "ada" / "data.csv").write_text("x\n41\n")
    write_nb(root / "ada" / "reads.ipynb", "print('READ', open('data.csv').read().split()[1])")
    write_nb(root / "bob.ipynb", "print('BOB', sum(range(10)))")
    write_nb(root / "cyd.ipynb", "raise ValueError('cyd broke it')")
    if pid_file is not None:  # the Dask worker's pid: the kernel's grandparent (kernel <- run worker <- task)
        write_nb(root / "zed.ipynb",
                 "import os, time\n"
                 "ppid = int(open(f'/proc/{os.getppid()}/stat').read().split(')')[1].split()[1])\n"
                 f"open({str(pid_file)!r}, 'w').write(str(ppid))\n"
                 "time.sleep(40)\nprint('ZED done')")


def page_text(out: Path, name: str) -> str:
    return html.unescape((out / results(out)[name]["page"]).read_text())


def test_a_class_on_the_cluster_matches_the_local_pool(cluster, tmp_path):
    root = tmp_path / "hand-ins"
    small_class(root)
    local, remote = tmp_path / "local", tmp_path / "remote"
    args = ["--execute", "--timeout", "60", "--cell-timeout", "30", "--no-shared-cache"]
    r1 = run_cli("--submissions", str(root), "--out", str(local), *args, tmpdir=tmp_path)
    r2 = run_cli("--submissions", str(root), "--out", str(remote), *args, "--scheduler", cluster.address,
                 tmpdir=tmp_path)
    assert "on the Dask cluster at" in r2.stderr and "2 worker thread(s)" in r2.stderr, r2.stderr
    assert r1.returncode == r2.returncode == 1  # cyd's error
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in index_rows(local)]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in index_rows(remote)]
    assert {k: v["status"] for k, v in results(remote).items()} == {
        "ada/lab.ipynb": "ok", "ada/reads.ipynb": "ok", "bob.ipynb": "ok", "cyd.ipynb": "errors in 1 cell"}
    assert "ADA 42" in page_text(remote, "ada/lab.ipynb")
    assert "READ 41" in page_text(remote, "ada/reads.ipynb")  # the data file travelled with it
    assert "BOB 45" in page_text(remote, "bob.ipynb")
    assert "cyd broke it" in page_text(remote, "cyd.ipynb")


def test_a_killed_worker_fails_only_its_hand_in(cluster, tmp_path):
    root = tmp_path / "hand-ins"
    pid_file = tmp_path / "worker.pid"
    small_class(root, pid_file)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "lab_utils.submissions", "--submissions", str(root), "--out", str(out),
           "--execute", "--timeout", "50", "--cell-timeout", "45", "--no-shared-cache",
           "--scheduler", cluster.address]
    grader = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=KIT_ROOT,
                              env={**os.environ, "LAB_PROGRESS": "0", "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline and grader.poll() is None, "zed never started"
        time.sleep(0.2)
    worker_pid = int(pid_file.read_text())
    assert worker_pid in {w.pid for w in cluster.workers}  # the kill hits a Dask worker, nothing else
    os.kill(worker_pid, signal.SIGKILL)
    stdout, stderr = grader.communicate(timeout=180)
    res = results(out)
    assert res["zed.ipynb"]["status"] == "grader error", stderr
    assert "Dask worker grading it was lost" in res["zed.ipynb"]["message"]
    assert "ZED done" not in page_text(out, "zed.ipynb")
    assert res["bob.ipynb"]["status"] == "ok" and res["ada/lab.ipynb"]["status"] == "ok"
    assert res["cyd.ipynb"]["status"] == "errors in 1 cell"
    assert (out / "index.html").exists() and grader.returncode == 1


def test_timeout_holds_on_the_cluster(cluster, tmp_path):
    root = tmp_path / "hand-ins"
    write_nb(root / "slow.ipynb", "print('STA' + 'RTED')", "import time\ntime.sleep(120)", "print('FIN' + 'ISHED')")
    out = tmp_path / "out"
    t0 = time.monotonic()
    run_cli("--submissions", str(root), "--out", str(out), "--execute", "--timeout", "8", "--cell-timeout", "60",
            "--no-shared-cache", "--scheduler", cluster.address, tmpdir=tmp_path)
    assert time.monotonic() - t0 < 60
    res = results(out)["slow.ipynb"]
    assert res["status"] == "timed out", res
    page = page_text(out, "slow.ipynb")
    assert "STARTED" in page and "FINISHED" not in page  # outputs, not the sources shown


def test_the_shared_cache_reaches_the_workers(cluster, tmp_path):
    from test_shared_cache import build_class

    root, instructor = build_class(tmp_path)
    out = tmp_path / "out"
    r = run_cli("--submissions", str(root), "--out", str(out), "--execute", "--timeout", "60",
                "--shared-cache", str(instructor), "--scheduler", cluster.address, tmpdir=tmp_path)
    assert "HOSTILE-READ 6" in page_text(out, "a_hostile/work.ipynb"), r.stderr
    assert "CLEAN-SUM 6" in page_text(out, "b_clean/work.ipynb")


def test_an_unreachable_scheduler_is_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    write_nb(tmp_path / "in" / "a.ipynb", "1")
    r = run_cli("--submissions", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                "--scheduler", f"tcp://127.0.0.1:{free_port()}", timeout=120)
    assert r.returncode == 2, r.stderr
    assert "could not reach the Dask scheduler" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.weights
@pytest.mark.slow
def test_a_sweep_on_the_cluster(cluster, tmp_path, vgg16):
    """``render.sh --sweep FILE --scheduler``: each pair rendered on a worker, its pages
    brought back, the comparison index written here."""
    import json

    pairs = tmp_path / "pairs.txt"
    pairs.write_text("block3_conv1 31\nblock3_conv1 7\n")
    out = tmp_path / "sweep"
    r = subprocess.run([sys.executable, "-m", "lab_utils.sweep", "--sweep", str(pairs), "--out", str(out),
                        "--only", "03", "--scheduler", cluster.address], capture_output=True, text=True,
                       timeout=600, cwd=KIT_ROOT, env={**os.environ, "PYTHONPATH": str(KIT_ROOT)})
    assert r.returncode == 0, r.stderr[-3000:]
    for f in (31, 7):
        folder = out / f"block3_conv1-f{f}"
        assert (folder / "03_channel_analysis.html").is_file()
        record = json.loads((folder / "notebooks" / "channel-table.json").read_text())
        assert record["filter_index"] == f
    assert "2 of 2 pairs ok" in (out / "index.html").read_text()
