"""./lab.sh, the students' one command: it installs JupyterLab into the kit's
environment when missing and serves notebooks/ with the kit's kernel. The test
starts it headless on 127.0.0.1 with a free port, asks the server's REST API for
the notebooks, starts a kernel through the server and runs `import lab_utils` in
it, then stops the server."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, token: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                 headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


@contextlib.contextmanager
def lab_server(tmp_path, *args, **env_extra):
    """./lab.sh headless on 127.0.0.1 with a free port and private Jupyter folders; yields
    (base URL, token, runtime folder); stops the server and everything it started."""
    port, token = free_port(), secrets.token_hex(16)
    runtime = tmp_path / "runtime"
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), LAB_PROGRESS="0", **env_extra)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "lab.sh"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # the first use installs JupyterLab
        while True:
            try:
                api(base, "/api/status", token)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.5)
        yield base, token, runtime
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:  # it had ended already
            pass


def test_lab_command_serves_the_notebooks_with_the_kits_kernel(tmp_path):
    with lab_server(tmp_path) as (base, token, runtime):
        listing = api(base, "/api/contents", token)
        names = sorted(item["name"] for item in listing["content"] if item["type"] == "notebook")
        assert names == ["01_model_choice.ipynb", "02_filter_selection.ipynb", "03_channel_analysis.ipynb",
                         "04_channel_visualization.ipynb", "05_summary.ipynb"]
        with urllib.request.urlopen(urllib.request.Request(f"{base}/lab?token={token}"), timeout=10) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        kernel = api(base, "/api/kernels", token, "POST", {"name": "python3"})
        from jupyter_client import BlockingKernelClient

        client = BlockingKernelClient()
        client.load_connection_file(runtime / f"kernel-{kernel['id']}.json")
        client.start_channels()
        client.wait_for_ready(timeout=60)
        client.execute("import lab_utils, sys; print(lab_utils.__file__, sys.prefix)")
        out = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = client.get_iopub_msg(timeout=60)
            if msg["msg_type"] == "stream":
                out += msg["content"]["text"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle" and out:
                break
        client.stop_channels()
        file, prefix = out.split()
        assert Path(file) == ROOT / "lab_utils" / "__init__.py"
        assert Path(prefix).resolve() == Path(os.environ.get("LAB_VENV") or ROOT / ".venv").resolve()
