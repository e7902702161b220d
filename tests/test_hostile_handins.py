"""Hostile hand-ins (issue 9): names that are not UTF-8 or hide characters, symbolic
links out of the folder, widget state and scripts in notebooks, student code that
looks for secrets and for the grader's paths, and a notebook too long for --timeout.

Each test makes its input itself and runs the real command line in a subprocess.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lab_utils import pages
from lab_utils.config import display_name
from lab_utils.submissions import handins
from lab_utils.submissions import student_kernel as K

from test_submissions import page_text, results, run_cli, write_nb  # noqa: E402

SECRETS = {"MYSQL_PWD": "hunter2", "DATABASE_URL": "postgres://u:s3cret@db/x",
           "MY_APP_KEY": "k-123", "SENTRY_DSN": "https://abc@sentry.example/1",
           "GITHUB_TOKEN": "ghp_x"}


def fs_path(folder: Path, raw: bytes) -> Path:
    """A path whose last part is the raw bytes *raw* (not necessarily UTF-8)."""
    return Path(os.fsdecode(os.path.join(os.fsencode(str(folder)), raw)))


def no_tmp_left(out: Path) -> list[str]:
    return [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# --------------------------------------------------------------------------- names


def test_shown_names_are_printable_utf8():
    latin1 = os.fsdecode(b"Jos\xe9")
    assert display_name(latin1) == "Jos\\xe9"
    assert display_name("\u202egpj.ipynb") == "\\u202egpj.ipynb"
    assert display_name("a\u200bb") == "a\\u200bb"  # zero-width space
    assert display_name("José Núñez 张伟") == "José Núñez 张伟"  # real names unchanged
    for raw in (latin1, "\u202egpj", "tab\there", "nl\nx"):
        s = display_name(raw)
        s.encode("utf-8")  # would raise for surrogates
        assert all(ch.isprintable() for ch in s), s
    assert handins.name_notes(latin1) and handins.name_notes("\u202ex") and not handins.name_notes("ok")


def test_undecodable_and_bidi_names_get_rows_index_and_results(tmp_path):
    root = tmp_path / "hand-ins"
    root.mkdir()
    write_nb(fs_path(root, b"Jos\xe9.ipynb"), "print('hola from jose')")
    sub = fs_path(root, b"Fran\xe7ois")
    write_nb(sub / "lab.ipynb", "print('salut')")
    write_nb(root / "\u202egpj.ipynb", "print('rtl')")
    write_nb(root / "plain.ipynb", "print('plain')")
    out = tmp_path / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    res = results(out)
    assert set(res) == {"Jos\\xe9.ipynb", "Fran\\xe7ois/lab.ipynb", "\\u202egpj.ipynb", "plain.ipynb"}
    assert all(r["status"] == "ok" for r in res.values())
    assert res["Jos\\xe9.ipynb"]["student"] == "Jos\\xe9"
    assert "not UTF-8" in " ".join(res["Jos\\xe9.ipynb"]["notes"])
    assert "direction-changing" in " ".join(res["\\u202egpj.ipynb"]["notes"])
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "Jos\\xe9" in index and "\u202e" not in index
    assert "hola from jose" in page_text(out / res["Jos\\xe9.ipynb"]["page"])
    assert no_tmp_left(out) == []
    assert "\u202e" not in proc.stderr
    # executed too: the copy keeps its odd name, the run and the page work
    out_exec = tmp_path / "out-exec"
    proc = run_cli("--submissions", str(root), "--out", str(out_exec), "--execute", "--timeout", "60")
    assert proc.returncode == 0, proc.stderr
    res = results(out_exec)
    assert all(r["status"] == "ok" for r in res.values()), res
    assert "hola from jose" in page_text(out_exec / res["Jos\\xe9.ipynb"]["page"])
    assert no_tmp_left(out_exec) == []


# --------------------------------------------------------------------------- symbolic links


def test_symlinks_are_listed_never_followed(tmp_path):
    secret = tmp_path / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("TOP-SECRET-PASSWD-LINE root:x:0:0")
    outside_nb = write_nb(tmp_path / "private" / "other.ipynb", "print('TOP-SECRET-NOTEBOOK')")
    root = tmp_path / "hand-ins"
    write_nb(root / "alice" / "lab.ipynb",
             "import os\nprint(open('data.txt').read() if os.path.exists('data.txt') else 'no data')")
    (root / "alice" / "data.txt").symlink_to(secret)  # a data file linking out: not copied
    (root / "evil.ipynb").symlink_to(secret)
    (root / "sneaky.ipynb").symlink_to(outside_nb)
    (root / "linked").symlink_to(tmp_path / "private", target_is_directory=True)
    (root / "alice" / "loop.ipynb").symlink_to(root / "alice" / "loop.ipynb")
    for mode in ([], ["--execute", "--timeout", "60", "--jobs", "2"]):
        out = tmp_path / ("out-exec" if mode else "out-conv")
        proc = run_cli("--submissions", str(root), "--out", str(out), *mode)
        assert proc.returncode == 1, proc.stderr  # links are not ok
        res = results(out)
        for rel in ("evil.ipynb", "sneaky.ipynb", "alice/loop.ipynb"):
            assert res[rel]["status"] == "symbolic link (not followed)", rel
            assert "never followed" in res[rel]["message"]
        assert str(secret) in res["evil.ipynb"]["message"]  # says where it points
        everything = " ".join(p.read_text(encoding="utf-8") for p in out.glob("*.html"))
        everything += (out / "results.json").read_text()
        assert "TOP-SECRET" not in everything
        assert "linked/ (symbolic link to" in (out / "index.html").read_text()
        assert res["alice/lab.ipynb"]["status"] == "ok"
    alice = results(tmp_path / "out-exec")["alice/lab.ipynb"]["page"]
    assert "no data" in page_text(tmp_path / "out-exec" / alice)  # the linked data file was not copied


def test_read_nofollow_refuses_a_link(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("x")
    (tmp_path / "l.txt").symlink_to(target)
    with pytest.raises(OSError):
        K.read_nofollow(tmp_path / "l.txt", 100)
    assert K.read_nofollow(target, 100) == b"x"


# --------------------------------------------------------------------------- widgets and scripts


def widget_notebook() -> nbformat.NotebookNode:
    """A notebook whose widget state and outputs carry payloads."""
    payload = "<img src=x onerror=\"document.title='PWNED-widget'\">"
    nb = new_notebook(cells=[
        new_markdown_cell("# Widgets"),
        new_code_cell("w", outputs=[
            new_output("display_data", data={
                "application/vnd.jupyter.widget-view+json": {"model_id": "m1", "version_major": 2,
                                                             "version_minor": 0}}),
            new_output("display_data", data={"application/javascript": "document.title='PWNED-js'",
                                             "text/plain": "<js>"}),
        ]),
    ])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {
        "version_major": 2, "version_minor": 0,
        "state": {"m1": {"model_name": "HTMLModel", "model_module": "evil-cdn-module",
                         "model_module_version": "*", "state": {"value": payload}}}}}
    return nb


def test_widget_state_never_reaches_a_page():
    page = pages.notebook_html(widget_notebook(), "w", untrusted=True)
    for bad in ("html-manager", "evil-cdn-module", "onerror", "PWNED", "<script",
                "widget-state+json", "unpkg", "cdn.jsdelivr", "cdnjs"):
        assert bad not in page, bad
    assert pages.WIDGET_PLACEHOLDER in page
    assert pages.CSP_META in page and page.index(pages.CSP_META) < page.index("<title>")


@pytest.mark.parametrize("untrusted", [True, False])
def test_every_notebook_page_is_offline_with_a_csp(untrusted):
    nb = new_notebook(cells=[new_markdown_cell("# T\n\n$e^{i\\pi}$\n\n```mermaid\ngraph TD; A-->B\n```"),
                             new_code_cell("1", outputs=[new_output("execute_result", data={"text/plain": "1"},
                                                                    execution_count=1)])])
    page = pages.notebook_html(nb, "t", untrusted=untrusted)
    assert re.findall(r"<script\b", page) == []
    assert not re.search(r"""(src|href)\s*=\s*["']?https?://""", page)
    assert "default-src 'none'" in page and "script-src 'none'" in page


def test_index_and_simple_pages_carry_the_csp(tmp_path):
    root = tmp_path / "hand-ins"
    write_nb(root / "a.ipynb", "1")
    (root / "broken.ipynb").write_text("{not json")
    out = tmp_path / "out"
    run_cli("--submissions", str(root), "--out", str(out))
    for page in out.glob("*.html"):
        text = page.read_text()
        assert pages.CSP_META in text, page.name
        assert "<script" not in text, page.name


def test_write_text_atomic_leaves_no_tmp_on_failure(tmp_path):
    target = tmp_path / "page.html"
    target.mkdir()  # os.replace onto a folder fails after the temporary file was written
    with pytest.raises(OSError):
        pages.write_text_atomic(target, "new")
    assert [p.name for p in tmp_path.iterdir()] == ["page.html"] and target.is_dir()
    ok = tmp_path / "ok.html"
    pages.write_text_atomic(ok, "half \ud83d")  # a lone surrogate is written as U+FFFD
    assert ok.read_bytes().decode("utf-8") == "half \ufffd"


# --------------------------------------------------------------------------- executed code


def test_kernel_env_is_an_allow_list(tmp_path):
    base = {"PATH": "/venv/bin:/usr/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "LAB_WEIGHTS_DIR": "/w",
            "HOME": "/home/prof", "PWD": "/home/prof/course", "OLDPWD": "/home/prof",
            "PYTHONPATH": "/home/prof/private", **SECRETS}
    env = K.kernel_env(tmp_path, base)
    for name in (*SECRETS, "PWD", "OLDPWD"):
        assert name not in env, name
    assert "/home/prof" not in " ".join(env.values())
    assert env["PATH"] == base["PATH"] and env["LAB_WEIGHTS_DIR"] == "/w" and env["LC_ALL"] == "C.UTF-8"


LEAK_PROBE = r'''
import os, json
needles = [n[::-1] for n in json.loads({needles!r})]  # stored reversed: not in this file
found = []
def look(where, data):
    if isinstance(data, str):
        data = data.encode()
    for n in needles:
        if n.encode() in data:
            found.append((where, n))
for k, v in os.environ.items():
    look("env " + k, k + "=" + v)
pid = os.getpid()
while pid > 1:
    base = f"/proc/{{pid}}"
    for part in ("cmdline", "environ"):
        try:
            look(f"{{base}}/{{part}}", open(f"{{base}}/{{part}}", "rb").read())
        except OSError:
            pass
    for link in ("cwd", "exe"):
        try:
            who = open(f"{{base}}/cmdline", "rb").read().replace(b"\\0", b" ").decode()[:200]
            look(f"{{base}}/{{link}} of {{who}}", os.readlink(f"{{base}}/{{link}}"))
        except OSError:
            pass
    try:
        for fd in os.listdir(f"{{base}}/fd"):
            try:
                look(f"{{base}}/fd/{{fd}}", os.readlink(f"{{base}}/fd/{{fd}}"))
            except OSError:
                pass
    except OSError:
        pass
    pid = int(open(f"{{base}}/stat").read().rsplit(")", 1)[1].split()[1])
for dirpath, dirnames, filenames in os.walk(os.path.dirname(os.getcwd())):
    for f in filenames:
        try:
            look(os.path.join(dirpath, f), open(os.path.join(dirpath, f), "rb").read())
        except OSError:
            pass
print("SECRETS", sorted(k for k in {secrets!r} if k in os.environ))
print("LEAKS", found)
print("ENV", sorted(os.environ))
'''


def test_executed_code_sees_no_secret_and_no_grader_path(tmp_path):
    """The kernel's environment, its ancestors' command lines, environments, working
    folders and open files, and its own workroot name neither the hand-ins folder, nor
    the output folder, nor the folder the grader was started in, nor hold any secret of
    the grader's environment. (As root, /proc of a non-dumpable process stays readable:
    this test does not rely on make_undumpable.)"""
    base = tmp_path / "course"
    root, out = base / "hand-ins", base / "graded"
    # Paths, and the secret values: the grader's own environment must not hold them either.
    needles = [str(root), str(out), str(base), *SECRETS.values()]
    write_nb(root / "mallory" / "lab.ipynb",
             LEAK_PROBE.format(needles=json.dumps([n[::-1] for n in needles]), secrets=sorted(SECRETS)))
    env = dict(os.environ, LAB_PROGRESS="0", **SECRETS)
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, "-m", "lab_utils.submissions", "--submissions", "hand-ins",
                           "--out", "graded", "--execute", "--timeout", "60", "--jobs", "1"],
                          capture_output=True, text=True, timeout=240, env=env, cwd=base)
    assert proc.returncode == 0, proc.stderr
    text = page_text(out / "mallory.html")
    assert "SECRETS []" in text, text[-2000:]
    assert "LEAKS []" in text, text[-3000:]
    names = re.search(r"ENV \[(.*?)\]", text).group(1)
    env_names = set(re.findall(r"'([^']+)'", names))
    allowed = set(K.kernel_env(tmp_path, {})) | set(K.KERNEL_ENV_ALLOWED)
    # Whatever else the kernel has, ipykernel set itself (CLICOLOR, PAGER...): none came from us.
    passed_on = {n for n in env_names if n in env and n not in allowed and not n.startswith("LC_")}
    assert passed_on == set(), passed_on


def test_timeout_holds_and_the_page_keeps_the_outputs_so_far(tmp_path):
    """A notebook of thousands of quick cells: the run stops at --timeout (+ a few s),
    and the page shows the outputs up to the cell that was cut."""
    root = tmp_path / "hand-ins"
    cells = [f"print('out-{i}')" for i in range(4000)]
    write_nb(root / "long.ipynb", *cells)
    out = tmp_path / "out"
    timeout = 6
    t0 = time.monotonic()
    proc = run_cli("--submissions", str(root), "--out", str(out), "--execute", "--timeout", str(timeout),
                   "--cell-timeout", "5", "--jobs", "1")
    assert proc.returncode == 1
    r = results(out)["long.ipynb"]
    assert r["status"] == "timed out", r
    assert r["run_seconds"] <= timeout + 5, r
    cut = int(re.search(r"stopped in cell (\d+)", r["message"]).group(1))
    assert 10 < cut < 4001
    text = page_text(out / r["page"])
    assert "out-0 " in text and f"out-{cut - 3} " in text  # cell k prints out-(k-2)
    assert f"out-{cut - 1} " not in text
    assert "total timeout" in text
    assert time.monotonic() - t0 < 120


# --------------------------------------------------------------------------- review findings


def test_lone_surrogate_in_a_notebook_still_gives_a_page(tmp_path):
    """A half emoji (JSON "\\ud83d", valid JSON, accepted by nbformat) must not turn into a
    grader error: the page is valid UTF-8, and an executed run is not stopped by it."""
    root = tmp_path / "hand-ins"
    root.mkdir()
    cells = [{"cell_type": "markdown", "metadata": {}, "source": "half emoji: \ud83d!"},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": "print('first \ud83d')"},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": "import time; time.sleep(3.5); print('second')"},
             {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
              "source": "print('third')"}]
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}
    (root / "half.ipynb").write_text(json.dumps(nb))  # ensure_ascii: the file itself is ASCII
    for mode in ([], ["--execute", "--timeout", "60"]):
        out = tmp_path / ("out-exec" if mode else "out-conv")
        proc = run_cli("--submissions", str(root), "--out", str(out), *mode)
        r = results(out)["half.ipynb"]
        assert r["status"] == "ok", (r, proc.stderr[-2000:])
        text = (out / r["page"]).read_bytes().decode("utf-8")  # strict: valid UTF-8
        assert "half emoji" in text
    assert "third" in page_text(tmp_path / "out-exec" / "half.html")  # the checkpoint did not stop it


def test_a_worker_killed_by_student_code_is_not_called_a_kernel_start_failure(tmp_path):
    root = tmp_path / "hand-ins"
    write_nb(root / "parricide.ipynb", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    out = tmp_path / "out"
    run_cli("--submissions", str(root), "--out", str(out), "--execute", "--timeout", "60")
    r = results(out)["parricide.ipynb"]
    assert r["status"] == "grader error"
    assert "the run worker ended (signal 9)" in r["message"]
    assert "could not be started" not in r["message"]


def test_sigterm_ends_the_batch_its_kernels_and_keeps_its_pages_names(tmp_path):
    import signal
    import subprocess
    import sys

    from test_submissions import process_ended

    root = tmp_path / "hand-ins"
    pidfile = tmp_path / "kernel.pid"
    write_nb(root / "quick.ipynb", "print('quick')")
    write_nb(root / "slow.ipynb", f"import os; open({str(pidfile)!r}, 'w').write(str(os.getpid()))",
             "while True:\n    pass")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "lab_utils.submissions", "--submissions", str(root),
                             "--out", str(out), "--execute", "--timeout", "120", "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LAB_PROGRESS="0"))
    deadline = time.monotonic() + 60
    while not ((out / "quick.html").exists() and pidfile.exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pidfile.exists() and (out / "quick.html").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert process_ended(int(pidfile.read_text())), "the looping kernel outlived the batch"
    # the page written before the interrupt stays this command's: the next run reuses its name
    write_nb(root / "slow.ipynb", "print('fixed')")
    assert run_cli("--submissions", str(root), "--out", str(out)).returncode == 0
    assert results(out)["quick.ipynb"]["page"] == "quick.html"


def test_page_on_disk_before_its_result_returns_is_kept_by_an_interrupt(tmp_path, monkeypatch):
    """The race CI once hit: a worker wrote its page, SIGTERM came before its result reached
    the batch loop; the page must still count as this command's (the next run reuses its name)."""
    import signal
    import threading

    from lab_utils import submissions as S
    from lab_utils.submissions import batch

    root = tmp_path / "hand-ins"
    write_nb(root / "quick.ipynb", "print('quick')")
    out = tmp_path / "out"
    page_written = threading.Event()

    def grade_slowly(sub, args, root_, out_, live, bounded=None, snapshot=None):
        (out_ / f"{sub.slug}.html").write_text("<p>page</p>", encoding="utf-8")
        page_written.set()
        live.stop.wait(30)  # the result never returns before the interrupt
        raise RuntimeError("interrupted")

    def terminate_when_written():
        if page_written.wait(30):  # never signal pytest itself when the batch failed before the page
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(batch, "grade_one", grade_slowly)  # what run_batch calls
    threading.Thread(target=terminate_when_written, daemon=True).start()
    args = S.build_parser().parse_args(["--submissions", str(root), "--out", str(out)])
    assert S.run_batch(args, root, out) == 130
    assert "quick.html" in S.manifest_files(out)
    monkeypatch.undo()
    assert run_cli("--submissions", str(root), "--out", str(out)).returncode == 0
    assert results(out)["quick.ipynb"]["page"] == "quick.html"


def test_out_holding_someone_elses_index_is_refused(tmp_path):
    root = tmp_path / "hand-ins"
    write_nb(root / "a.ipynb", "1")
    out = tmp_path / "lab-pages"
    out.mkdir()
    (out / "index.html").write_text("the lab render's index")
    proc = run_cli("--submissions", str(root), "--out", str(out))
    assert proc.returncode == 2 and "did not write" in proc.stderr
    assert (out / "index.html").read_text() == "the lab render's index"


def test_read_nofollow_refuses_a_fifo_without_waiting(tmp_path):
    fifo = tmp_path / "x.ipynb"
    os.mkfifo(fifo)
    t0 = time.monotonic()
    with pytest.raises(OSError, match="not a regular file"):
        K.read_nofollow(fifo, 100)
    assert time.monotonic() - t0 < 2
