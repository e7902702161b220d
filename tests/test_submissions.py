"""Tests for lab_utils.submissions: grading a folder of student notebooks.

The crafted submissions folder is built here, in a temporary directory: a good
notebook, one raising in a cell, one looping forever, one calling os._exit, one
calling sys.exit, one deleting every file in its working folder, a corrupt file,
an empty file, a PDF named .ipynb, a text file, an old-nbformat notebook, one with
megabytes of stored outputs, and two students whose notebooks share a file name.
The real CLI runs over it twice (converted, then executed), in subprocesses.
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from lab_utils import submissions as S

KIT_ROOT = Path(__file__).resolve().parent.parent
EXEC_ARGS = ["--execute", "--timeout", "20", "--cell-timeout", "5", "--jobs", "2"]


# --------------------------------------------------------------------------- helpers


def write_nb(path: Path, *sources: str, outputs: dict | None = None) -> Path:
    """A v4 notebook with a markdown title and one code cell per source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=[new_markdown_cell("# Lab")] + [new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for idx, outs in (outputs or {}).items():
        nb.cells[idx].outputs = outs
    nbformat.write(nb, path)
    return path


def run_cli(*args: str, tmpdir: Path | None = None, timeout: float = 240):
    env = dict(os.environ, LAB_PROGRESS="0")
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "lab_utils.submissions", *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=KIT_ROOT,
    )


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def results(out: Path) -> dict[str, dict]:
    data = json.loads((out / "results.json").read_text())
    return {r["file"]: r for r in data["submissions"]}


def index_rows(out: Path) -> list[dict]:
    """(student, file, status, seconds, notes, href) of every row of index.html."""
    page = (out / "index.html").read_text()
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", page, flags=re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", tr, flags=re.S)
        if len(cells) != 7:
            continue
        strip = lambda s: html.unescape(re.sub(r"<[^>]+>", "", s)).strip()  # noqa: E731
        href = re.search(r'href="([^"]+)"', cells[6]).group(1)
        rows.append(dict(student=strip(cells[1]), file=strip(cells[2]), status=strip(cells[3]),
                         seconds=float(strip(cells[4])), notes=strip(cells[5]),
                         href=html.unescape(href)))
    return rows


def page_text(path: Path) -> str:
    """Visible text of a page (scripts and styles removed), whitespace collapsed."""
    s = path.read_text()
    s = re.sub(r"<(script|style)\b.*?</\1>", " ", s, flags=re.S | re.I)
    s = html.unescape(re.sub(r"<[^>]+>", " ", s))
    return re.sub(r"\s+", " ", s)


# The crafted folder: relative path -> (expected status executed, expected status converted)
EXPECTED = {
    "good/lab.ipynb": ("ok", "ok"),
    "raiser.ipynb": ("errors in 1 cell", "ok"),
    "stored_error.ipynb": ("errors in 1 cell", "errors in 1 cell"),
    "looper.ipynb": ("timed out", "ok"),
    "exiter.ipynb": ("kernel died", "ok"),
    "sysexit.ipynb": ("errors in 1 cell", "ok"),
    "deleter/lab.ipynb": ("ok", "ok"),
    "corrupt.ipynb": ("not a valid notebook", "not a valid notebook"),
    "empty.ipynb": ("empty", "empty"),
    "fake.ipynb": ("not a valid notebook", "not a valid notebook"),
    "alice/lab.ipynb": ("ok", "ok"),
    "bob/lab.ipynb": ("ok", "ok"),
    "oldie.ipynb": ("ok", "ok"),
    "huge.ipynb": ("ok", "ok"),
    "sentinel.ipynb": ("ok", "ok"),
}


def craft(root: Path, sentinel: Path) -> None:
    write_nb(root / "good/lab.ipynb",
             "import lab_utils, os\nprint('hello', open('data.csv').read().strip())", "6 * 7")
    (root / "good/data.csv").write_text("a,b\n1,2\n")
    write_nb(root / "raiser.ipynb", "x = 1", "raise ValueError('boom from raiser')",
             "print('after the error')")
    err = new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                     traceback=["ZeroDivisionError: division by zero"])
    write_nb(root / "stored_error.ipynb", "1/0", outputs={1: [err]})
    write_nb(root / "looper.ipynb", "print('loop starts')", "while True:\n    pass",
             "print('never printed')")
    write_nb(root / "exiter.ipynb", "print('bye from exiter')", "import os\nos._exit(3)",
             "print('never printed')")
    write_nb(root / "sysexit.ipynb", "import sys\nsys.exit(1)", "print('after sys.exit')")
    write_nb(root / "deleter/lab.ipynb",
             "import os, shutil\nprint('before', sorted(os.listdir('.')))\n"
             "for f in os.listdir('.'):\n    (shutil.rmtree if os.path.isdir(f) else os.remove)(f)\n"
             "print('after', os.listdir('.'))")
    (root / "deleter/keep.csv").write_text("precious data\n")
    (root / "corrupt.ipynb").write_text('{"cells": [ {"cell_type": "code", ')
    (root / "empty.ipynb").write_bytes(b"")
    (root / "fake.ipynb").write_bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\n")
    (root / "notes.txt").write_text("not a notebook at all")
    write_nb(root / "alice/lab.ipynb", "print('I am alice')")
    write_nb(root / "bob/lab.ipynb", "print('I am bob')")
    v3 = {"nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
          "worksheets": [{"metadata": {}, "cells": [
              {"cell_type": "code", "input": "print('old format runs')", "language": "python",
               "metadata": {}, "outputs": [], "collapsed": False, "prompt_number": 1}]}]}
    (root / "oldie.ipynb").write_text(json.dumps(v3))
    big = [new_output("stream", name="stdout", text="x" * 3_000_000),
           new_output("display_data", data={"image/png": "A" * 3_000_000, "text/plain": "<Figure>"})]
    write_nb(root / "huge.ipynb", "print('x' * 3_000_000)", outputs={1: big})
    write_nb(root / "sentinel.ipynb", f"open({str(sentinel)!r}, 'w').write('ran')")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Crafted folder, converted (default mode) then executed by the real CLI."""
    base = tmp_path_factory.mktemp("grading")
    root, sentinel = base / "hand-ins", base / "sentinel.txt"
    craft(root, sentinel)
    before = snapshot(root)
    tmp_convert, tmp_exec = base / "tmp-convert", base / "tmp-exec"
    tmp_convert.mkdir()
    tmp_exec.mkdir()
    t0 = time.monotonic()
    conv = run_cli("--submissions", str(root), "--out", str(base / "out-converted"), "--jobs", "2",
                   tmpdir=tmp_convert)
    conv_seconds = time.monotonic() - t0
    sentinel_after_convert = sentinel.exists()
    ex = run_cli("--submissions", str(root), "--out", str(base / "out-executed"), *EXEC_ARGS,
                 tmpdir=tmp_exec)
    return dict(base=base, root=root, before=before, conv=conv, ex=ex,
                conv_out=base / "out-converted", ex_out=base / "out-executed",
                conv_seconds=conv_seconds, sentinel=sentinel,
                sentinel_after_convert=sentinel_after_convert,
                tmp_convert=tmp_convert, tmp_exec=tmp_exec)


# --------------------------------------------------------------------------- the real CLI



def process_ended(pid: int, wait_s: float = 5.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie, i.e. dead but not yet reaped) within ``wait_s``."""
    for _ in range(int(wait_s / 0.1)):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        time.sleep(0.1)
    return False

def test_executed_run_gives_every_status(graded):
    ex = graded["ex"]
    assert ex.returncode == 1, ex.stderr  # some failed: non-zero, after finishing all
    got = {f: r["status"] for f, r in results(graded["ex_out"]).items()}
    assert got == {f: want[0] for f, want in EXPECTED.items()}
    rows = {r["file"]: r for r in index_rows(graded["ex_out"])}
    assert {f: r["status"] for f, r in rows.items()} == got
    for status in ("ok", "errors in 1 cell", "timed out", "kernel died",
                   "not a valid notebook", "empty"):
        assert status in {r["status"] for r in rows.values()}
    assert "old nbformat (converted)" in rows["oldie.ipynb"]["notes"]
    assert "outputs truncated" in rows["huge.ipynb"]["notes"]
    assert "PDF" in rows["fake.ipynb"]["notes"]
    assert "JSON" in rows["corrupt.ipynb"]["notes"]
    # one progress line per notebook, then a summary
    progress = [ln for ln in ex.stderr.splitlines() if re.match(r"\[\d+/15\] ", ln)]
    assert len(progress) == 15
    assert "[submissions] 7 ok, 8 not ok" in ex.stderr


def test_default_mode_converts_without_running_code(graded):
    conv = graded["conv"]
    assert conv.returncode == 1, conv.stderr  # corrupt/empty/stored error are not ok
    got = {f: r["status"] for f, r in results(graded["conv_out"]).items()}
    assert got == {f: want[1] for f, want in EXPECTED.items()}
    assert not graded["sentinel_after_convert"], "default mode must not run student code"
    assert graded["sentinel"].read_text() == "ran", "--execute must run it"
    assert graded["conv_seconds"] < 60  # the infinite loop was not run
    index = (graded["conv_out"] / "index.html").read_text()
    assert "converted as submitted (no code was run)" in index


def test_originals_are_untouched(graded):
    after = snapshot(graded["root"])
    assert after.keys() == graded["before"].keys(), "files appeared in or vanished from DIR"
    for rel, (data, mtime) in graded["before"].items():
        assert after[rel][0] == data, f"{rel} changed"
        assert after[rel][1] == mtime, f"{rel} mtime changed"


def test_deleting_submission_only_deleted_its_copy(graded):
    out = graded["ex_out"]
    text = page_text(out / "deleter.html")
    assert "before ['keep.csv', 'lab.ipynb']" in text  # it ran, on a copy with its data
    assert "after []" in text  # and emptied that copy
    assert (graded["root"] / "deleter/keep.csv").read_text() == "precious data\n"
    assert (graded["root"] / "deleter/lab.ipynb").exists()
    # the others still read their own data and wrote their pages
    assert "hello a,b 1,2" in page_text(out / "good.html")
    for r in results(out).values():
        assert (out / r["page"]).is_file()


def test_kernel_death_and_timeout_are_contained(graded):
    out = graded["ex_out"]
    res = results(out)
    exiter = page_text(out / "exiter.html")
    assert "bye from exiter" in exiter  # partial outputs are kept
    assert "The kernel died while running this cell" in exiter
    assert "os._exit" in res["exiter.ipynb"]["message"]
    looper = page_text(out / "looper.html")
    assert "loop starts" in looper
    assert "per-cell timeout of 5 s" in looper
    assert res["looper.ipynb"]["seconds"] < 20
    # sys.exit does not kill the kernel: the next cell still ran
    assert "after sys.exit" in page_text(out / "sysexit.html")
    raiser = page_text(out / "raiser.html")
    assert "boom from raiser" in raiser and "after the error" in raiser  # allow_errors
    # stored outputs are not shown as if they came from this run
    # stored outputs are not shown as if they came from this run; this run's
    # 3 MB print is cut while it streams
    huge = page_text(out / "huge.html")
    assert "image/png output" not in huge and "<Figure>" not in huge
    assert "[... 2,980,001 characters truncated by the grader ...]" in huge


def test_lab_utils_importable_and_temp_folders_removed(graded):
    assert results(graded["ex_out"])["good/lab.ipynb"]["status"] == "ok"  # import lab_utils
    for tmp in (graded["tmp_convert"], graded["tmp_exec"]):
        assert list(tmp.iterdir()) == [], f"left behind in {tmp}"


def test_pages_exist_and_index_links_resolve(graded):
    for out in (graded["conv_out"], graded["ex_out"]):
        rows = index_rows(out)
        assert len(rows) == len(EXPECTED)
        hrefs = [r["href"] for r in rows]
        assert len(set(hrefs)) == len(hrefs)
        for href in hrefs:
            assert "/" not in href and (out / href).is_file(), href
        for page in out.glob("*.html"):
            if page.name != "index.html":
                assert 'href="index.html"' in page.read_text()
        # the two lab.ipynb of alice and bob are two students, two pages
        assert (out / "alice.html").is_file() and (out / "bob.html").is_file()
        index = (out / "index.html").read_text()
        assert "notes.txt" in index  # listed under ignored files
    ex = graded["ex_out"]
    assert "I am alice" in page_text(ex / "alice.html")
    assert "I am bob" in page_text(ex / "bob.html")
    assert "I am bob" not in page_text(ex / "alice.html")


def test_huge_outputs_give_a_bounded_page(graded):
    page = graded["conv_out"] / "huge.html"
    assert page.stat().st_size < 1_000_000  # the notebook itself is over 6 MB
    text = page_text(page)
    assert "characters truncated by the grader" in text
    assert "image/png output of 3.0 MB dropped by the grader" in text


def test_all_ok_exits_zero(tmp_path):
    root = tmp_path / "subs"
    write_nb(root / "ann/lab.ipynb", "print(1 + 1)")
    write_nb(root / "ben.ipynb", "print('fine')")
    proc = run_cli("--submissions", str(root), "--out", str(tmp_path / "out"), *EXEC_ARGS)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in index_rows(tmp_path / "out")] == ["ok", "ok"]
    assert "All 2 submissions are" in (tmp_path / "out/index.html").read_text()


def test_total_timeout_across_cells(tmp_path):
    root = tmp_path / "subs"
    write_nb(root / "slow.ipynb", *["import time; time.sleep(2)"] * 6)
    proc = run_cli("--submissions", str(root), "--out", str(tmp_path / "out"), "--execute",
                   "--timeout", "6", "--cell-timeout", "5")
    assert proc.returncode == 1
    r = results(tmp_path / "out")["slow.ipynb"]
    assert r["status"] == "timed out"
    assert "total timeout" in r["message"]
    assert r["seconds"] < 15


def test_duplicate_and_hostile_names(tmp_path):
    root = tmp_path / "subs"
    write_nb(root / "carol/lab.ipynb", "1")
    write_nb(root / "carol/lab_v2.ipynb", "2")
    write_nb(root / "carol.ipynb", "3")
    write_nb(root / "index.ipynb", "4")
    hostile = "<img src=x onerror=alert(1)>"
    write_nb(root / hostile / "lab.ipynb", "5")
    (root / ".ipynb_checkpoints").mkdir()
    write_nb(root / ".ipynb_checkpoints/lab-checkpoint.ipynb", "6")
    out = tmp_path / "out"
    proc = run_cli("--submissions", str(root), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = {r["file"]: r for r in index_rows(out)}
    assert set(rows) == {"carol/lab.ipynb", "carol/lab_v2.ipynb", "carol.ipynb",
                         "index.ipynb", f"{hostile}/lab.ipynb"}
    assert rows["carol/lab.ipynb"]["href"] == "carol__lab.html"
    assert rows["carol/lab_v2.ipynb"]["href"] == "carol__lab_v2.html"
    assert rows["carol.ipynb"]["href"] == "carol.html"
    assert "duplicate name" in rows["carol/lab.ipynb"]["notes"]
    assert rows["index.ipynb"]["href"] == "index-2.html"  # never overwrites the index
    assert rows[f"{hostile}/lab.ipynb"]["student"] == hostile
    index = (out / "index.html").read_text()
    assert hostile not in index and html.escape(hostile) in index
    assert "<img" not in index
    for r in rows.values():
        assert (out / r["href"]).is_file()
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.html", r["href"])


def test_stale_pages_from_an_earlier_run_are_removed(tmp_path):
    out = tmp_path / "out"
    first, second = tmp_path / "first", tmp_path / "second"
    write_nb(first / "dora.ipynb", "1")
    write_nb(second / "eve.ipynb", "1")
    out.mkdir()
    (out / "mine.txt").write_text("not produced by the grader")
    assert run_cli("--submissions", str(first), "--out", str(out)).returncode == 0
    assert (out / "dora.html").is_file()
    assert run_cli("--submissions", str(second), "--out", str(out)).returncode == 0
    assert not (out / "dora.html").exists() and (out / "eve.html").is_file()
    assert (out / "mine.txt").read_text() == "not produced by the grader"
    # an .html file of the instructor's own is never overwritten by a student's page
    (out / "frank.html").write_text("my notes")
    write_nb(second / "frank.ipynb", "1")
    assert run_cli("--submissions", str(second), "--out", str(out)).returncode == 0
    assert (out / "frank.html").read_text() == "my notes"
    assert results(out)["frank.ipynb"]["page"] == "frank-2.html" and (out / "frank-2.html").is_file()
    assert run_cli("--submissions", str(second), "--out", str(out)).returncode == 0  # stable
    assert results(out)["frank.ipynb"]["page"] == "frank-2.html"


def test_empty_folder_fails_with_an_index(tmp_path):
    (tmp_path / "subs").mkdir()
    proc = run_cli("--submissions", str(tmp_path / "subs"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "No <code>.ipynb</code> files" in (tmp_path / "out/index.html").read_text()


# --------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("extra, message", [
    ([], "required: --submissions"),
    (["--submissions", "{missing}"], "no such folder"),
    (["--submissions", "{file}"], "not a folder"),
    (["--submissions", "{dir}", "--jobs", "0"], "--jobs must be at least 1"),
    (["--submissions", "{dir}", "--jobs", "two"], "--jobs must be a whole number"),
    (["--submissions", "{dir}", "--timeout", "0"], "--timeout must be a positive"),
    (["--submissions", "{dir}", "--timeout", "nan"], "--timeout must be a positive"),
    (["--submissions", "{dir}", "--cell-timeout", "-3"], "--cell-timeout must be a positive"),
    (["--submissions", "{dir}", "--out", "{dir}"], "inside the submissions folder"),
    (["--submissions", "{dir}", "--out", "{dir}/graded"], "inside the submissions folder"),
    (["--submissions", "{dir}", "--out", "{file}"], "is not a folder"),
    (["--submissions", "{dir}", "--bogus"], "unrecognized arguments"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, extra, message):
    d = tmp_path / "subs"
    d.mkdir()
    f = tmp_path / "file.txt"
    f.write_text("x")
    argv = [a.format(dir=d, file=f, missing=tmp_path / "nope") for a in extra]
    with pytest.raises(SystemExit) as exc:
        S.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (d / "graded").exists()


def test_bad_arguments_through_the_cli(tmp_path):
    proc = run_cli("--submissions", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_statuses_and_security():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for words in ("--submissions DIR", "--execute", "--cell-timeout", "--jobs",
                  "errors in N cells", "timed out", "kernel died", "not a valid notebook",
                  "not a sandbox"):
        assert words in " ".join(proc.stdout.split()), words


def test_submissions_module_stays_light():
    code = ("import sys, lab_utils.submissions; "
            "heavy = [m for m in ('tensorflow', 'keras', 'nbconvert', 'nbclient') if m in sys.modules]; "
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=KIT_ROOT)
    assert out.stdout.strip() == "[]", out.stderr


# --------------------------------------------------------------------------- pieces


def test_discover_and_names(tmp_path):
    root = tmp_path
    for rel in ["alice/lab.ipynb", "bob/lab.ipynb", "zed.IPYNB", "sec1/ann/lab.ipynb",
                "sec1/bo/lab.ipynb", "notes.txt", ".hidden.ipynb",
                ".ipynb_checkpoints/x-checkpoint.ipynb", "__MACOSX/alice/._lab.ipynb"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("{}")
    notebooks, ignored = S.discover(root)
    assert notebooks == ["alice/lab.ipynb", "bob/lab.ipynb", "sec1/ann/lab.ipynb",
                         "sec1/bo/lab.ipynb", "zed.IPYNB"]
    assert "notes.txt" in ignored and ".hidden.ipynb" in ignored
    assert ".ipynb_checkpoints/" in ignored and "__MACOSX/" in ignored
    subs = {s.rel: s for s in S.assign_names(notebooks)}
    assert subs["alice/lab.ipynb"].name == "alice" and subs["alice/lab.ipynb"].slug == "alice"
    assert subs["zed.IPYNB"].name == "zed"
    assert subs["sec1/ann/lab.ipynb"].name == "sec1/ann/lab"
    assert subs["sec1/ann/lab.ipynb"].slug == "sec1__ann__lab"
    assert subs["sec1/bo/lab.ipynb"].notes and not subs["bob/lab.ipynb"].notes
    # deterministic, unique case-insensitively, "index" reserved
    subs2 = S.assign_names(["Amy.ipynb", "amy/lab.ipynb", "index.ipynb", "a b.ipynb", "a_b.ipynb"])
    slugs = [s.slug for s in subs2]
    assert len({s.lower() for s in slugs}) == len(slugs) and "index" not in slugs
    assert slugs == [s.slug for s in S.assign_names(["a_b.ipynb", "index.ipynb", "amy/lab.ipynb",
                                                    "a b.ipynb", "Amy.ipynb"])]


@pytest.mark.parametrize("name, slug", [
    ("alice", "alice"), ("José Núñez", "Jose_Nunez"), ("../../etc", "__..__etc"),
    ("a/b", "a__b"), ("x<y>z", "x_y_z"), (".bashrc", "bashrc"), ("...", None), ("张伟", None),
])
def test_slugify(name, slug):
    got = S.slugify(name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]*", got)  # no '/', no leading '.'
    if slug:
        assert got == slug
    else:
        assert got.startswith("student-") and got == S.slugify(name)


def test_load_notebook_classifies():
    assert S.load_notebook(b"").status == "empty"
    assert S.load_notebook(b"  \n").status == "empty"
    pdf = S.load_notebook(b"%PDF-1.5\n\xff\xfe")
    assert pdf.status == "not a valid notebook" and "PDF" in pdf.message
    assert S.load_notebook(b'{"cells": [').status == "not a valid notebook"
    assert S.load_notebook(b"[1, 2]").status == "not a valid notebook"
    assert S.load_notebook(b'{"hello": 1}').status == "not a valid notebook"
    assert S.load_notebook(b'{"nbformat": 5, "cells": []}').status == "not a valid notebook"
    assert S.load_notebook(b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
                           b'"cells": "oops"}').status == "not a valid notebook"
    blank = nbformat.writes(new_notebook()).encode()
    assert S.load_notebook(blank).status == "empty"
    v3 = json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [
        {"metadata": {}, "cells": [{"cell_type": "markdown", "source": "hi", "metadata": {}}]}]})
    old = S.load_notebook(v3.encode())
    assert old.status is None and "old nbformat (converted)" in old.notes
    assert old.nb.nbformat == 4 and old.nb.cells[0].source == "hi"
    good = S.load_notebook(("\ufeff" + nbformat.writes(new_notebook(cells=[new_code_cell("1")])))
                           .encode())
    assert good.status is None and good.notes == []


def test_bound_notebook_truncates_with_visible_markers():
    tb = [f"frame {i} " + "y" * 100 for i in range(1000)]
    nb = new_notebook(cells=[new_code_cell("x", outputs=[
        new_output("stream", name="stdout", text="a" * 50_000),
        new_output("display_data", data={"image/png": "B" * 2_500_000, "text/plain": "<Figure>"}),
        new_output("display_data", data={"text/html": "<p>" + "c" * 600_000, "text/plain": "df"}),
        new_output("error", ename="E", evalue="v", traceback=tb),
        new_output("stream", name="stdout", text="short"),
    ])])
    cuts = S.bound_notebook(nb)
    assert cuts == 4
    outs = nb.cells[0].outputs
    assert outs[0].text.startswith("a" * S.TEXT_LIMIT)
    assert "[... 30,000 characters truncated by the grader ...]" in outs[0].text
    assert "image/png" not in outs[1].data and "dropped by the grader" in outs[1].data["text/plain"]
    assert "text/html" not in outs[2].data and "dropped by the grader" in outs[2].data["text/plain"]
    joined = "\n".join(outs[3].traceback)
    assert "frame 0 " in joined and "frame 999 " in joined and "truncated by the grader" in joined
    assert len(joined) < S.TEXT_LIMIT + 200
    assert outs[4].text == "short"
    small = new_notebook(cells=[new_code_cell("x", outputs=[new_output("stream", name="stdout",
                                                                       text="ok")])])
    assert S.bound_notebook(small) == 0


def test_notebook_output_budget(monkeypatch):
    from lab_utils.submissions import notebooks

    monkeypatch.setattr(notebooks, "NOTEBOOK_OUTPUT_BUDGET", 5_000)  # what bound_notebook reads
    outs = [new_output("stream", name="stdout", text="z" * 2_000) for _ in range(10)]
    nb = new_notebook(cells=[new_code_cell("x", outputs=outs)])
    S.bound_notebook(nb)
    kept = nb.cells[0].outputs
    assert len(kept) == 4  # three fit the budget, then one marker
    assert "more output(s)" in kept[-1].text and "dropped by the grader" in kept[-1].text


def test_pages_are_sanitised():
    nb = new_notebook(cells=[
        new_markdown_cell("# Title\n\n<script>alert('md')</script> <img src=x onerror=alert(1)>\n\n"
                          "[link](javascript:alert(2))\n\n|a|b|\n|-|-|\n|1|2|"),
        new_code_cell("x", outputs=[
            new_output("display_data", data={"text/html": "<table><tr><td>cell</td></tr></table>"
                                             "<script>alert('out')</script>",
                                             "text/plain": "t"}),
            new_output("display_data", data={"image/png": "AA' onerror='alert(3)",
                                             "text/plain": "fig"}, metadata={"width": "1 onload=alert(4)"}),
            new_output("display_data", data={"text/vnd.mermaid": "</pre><script>alert(5)</script>"}),
            new_output("display_data", data={"application/javascript": "alert(6)"}),
        ]),
    ])
    nb.cells[1].execution_count = "<script>alert(7)</script>"
    page = S.render_notebook_page(nb, {"slug": "x"}, "<div id='banner'>B</div>")
    body = page[page.index("<main"):]
    for bad in ("<script>alert", "onerror=", "onload=", "javascript:alert", "alert(6)"):
        assert bad not in body, bad
    assert '<h1 id="Title">' in body and "<table>" in body and "<td>cell</td>" in body
    assert "<div id='banner'>B</div>" in page


def test_banner_and_index_escape_student_strings(tmp_path):
    spec = {"name": "<b>x</b>", "rel": "<i>y</i>.ipynb", "mode_text": "m"}
    b = S.banner_html(spec, "ok", ["<script>n</script>"], "<u>m</u>")
    assert "<b>x</b>" not in b and "&lt;b&gt;x&lt;/b&gt;" in b and "<script>" not in b


def test_kernel_env_is_network_free_and_secret_free(tmp_path):
    base = {"PATH": "/venv/bin:/usr/bin", "HOME": "/home/prof", "GITHUB_TOKEN": "t",
            "KAGGLE_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s", "MY_PASSWORD": "p",
            "LAB_WEIGHTS_DIR": "/w", "LAB_CACHE_DIR": "/prof/cache", "PYTHONPATH": "/extra"}
    env = S.kernel_env(tmp_path, base)
    assert env["PATH"] == base["PATH"] and env["LAB_WEIGHTS_DIR"] == "/w"
    for secret in ("GITHUB_TOKEN", "KAGGLE_KEY", "AWS_SECRET_ACCESS_KEY", "MY_PASSWORD"):
        assert secret not in env
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        assert env[var] == "http://127.0.0.1:9"
    assert env["no_proxy"] == "" and env["LAB_PROGRESS"] == "0" and env["MPLBACKEND"] == "Agg"
    for var in ("HOME", "TMPDIR", "KERAS_HOME", "KAGGLE_CONFIG_DIR", "XDG_CACHE_HOME",
                "LAB_CACHE_DIR"):
        assert Path(env[var]).is_relative_to(tmp_path), var
    assert env["PYTHONPATH"] == str(KIT_ROOT)  # the kit, not the grader's own paths


def test_hard_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    code = ("import subprocess, sys, time, pathlib; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
            f"pathlib.Path({str(pidfile)!r}).write_text(str(p.pid)); time.sleep(300)")
    t0 = time.monotonic()
    rc, killed, _ = S.run_with_hard_timeout([sys.executable, "-c", code], 3)
    assert killed and time.monotonic() - t0 < 30
    gpid = int(pidfile.read_text())
    # the grandchild is killed too (it may linger as a zombie briefly)
    assert process_ended(gpid), "grandchild still running"


def test_worker_reports_instead_of_crashing(tmp_path):
    spec = {"src": str(tmp_path / "vanished.ipynb"), "root": str(tmp_path), "rel": "vanished.ipynb",
            "name": "vanished", "slug": "vanished", "page": str(tmp_path / "vanished.html"),
            "execute": False, "timeout": 10, "cell_timeout": 5, "mode_text": "m", "workroot": ""}
    res = S.process_one(spec)
    assert res["status"] == "grader error" and "FileNotFoundError" in res["message"]
    assert (tmp_path / "vanished.html").is_file()


def test_rmtree_hard_removes_read_only_leftovers(tmp_path):
    d = tmp_path / "work" / "locked"
    d.mkdir(parents=True)
    (d / "f.txt").write_text("x")
    d.chmod(0o500)
    S.rmtree_hard(tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_copy_student_files_skips_other_notebooks_and_top_level(tmp_path):
    root = tmp_path / "subs"
    write_nb(root / "fay/lab.ipynb", "1")
    write_nb(root / "fay/other.ipynb", "1")
    (root / "fay/data").mkdir()
    (root / "fay/data/x.csv").write_text("1")
    (root / "fay/.ipynb_checkpoints").mkdir()
    (root / "fay/.ipynb_checkpoints/junk.txt").write_text("1")
    write_nb(root / "gus.ipynb", "1")
    (root / "shared.csv").write_text("someone else's")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert S.copy_student_files(root / "fay/lab.ipynb", root, dest) == []
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "data/x.csv"]
    dest2 = tmp_path / "dest2"
    dest2.mkdir()
    S.copy_student_files(root / "gus.ipynb", root, dest2)
    assert list(dest2.iterdir()) == []
    # sec1/ann.ipynb beside sec1/bo/lab.ipynb: bo's folder is another submission's, not ann's data
    write_nb(root / "sec1/ann.ipynb", "1")
    (root / "sec1/ann.csv").write_text("ann")
    write_nb(root / "sec1/bo/lab.ipynb", "1")
    (root / "sec1/bo/secret.csv").write_text("bo")
    dest3 = tmp_path / "dest3"
    dest3.mkdir()
    S.copy_student_files(root / "sec1/ann.ipynb", root, dest3)
    assert sorted(p.relative_to(dest3).as_posix() for p in dest3.rglob("*") if p.is_file()) == ["ann.csv"]



def test_hung_worker_is_killed_with_its_kernel(tmp_path, monkeypatch):
    """The parent's wall-clock kill: worker and kernel both end, the batch goes on."""
    root = tmp_path / "subs"
    pidfile = tmp_path / "kernel.pid"
    write_nb(root / "hang.ipynb",
             f"import os; open({str(pidfile)!r}, 'w').write(str(os.getpid())); print('pid written')",
             "while True:\n    pass")
    write_nb(root / "fine.ipynb", "print('fine')")
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    # Kill the worker 3 s before its own timeout would stop the cell.
    from lab_utils.submissions import batch

    monkeypatch.setattr(batch, "KILL_MARGIN", -3.0)  # what _run_copy reads
    rc = S.main(["--submissions", str(root), "--out", str(tmp_path / "out"), "--execute",
                 "--timeout", "8", "--cell-timeout", "8", "--jobs", "2"])
    assert rc == 1
    res = results(tmp_path / "out")
    assert res["fine.ipynb"]["status"] == "ok"
    assert res["hang.ipynb"]["status"] == "timed out"
    assert "the run was stopped after" in res["hang.ipynb"]["message"]
    assert "stopped in cell 3" in res["hang.ipynb"]["message"]  # cell 1 is the title
    # the outputs before the cut are on the page (the worker saved them when told to stop)
    assert "pid written" in page_text(tmp_path / "out/hang.html")
    assert (tmp_path / "out/hang.html").is_file()
    kpid = int(pidfile.read_text())
    assert process_ended(kpid), "the kernel of the killed worker is still running"
    assert list((tmp_path / "tmp").iterdir()) == []



def test_invalid_notebook_message_is_never_empty(monkeypatch):
    """nbformat can raise a bare AssertionError (no text): the reason still names it."""
    import nbformat as nbf

    def bare(*_a, **_kw):
        raise AssertionError()

    monkeypatch.setattr(nbf, "reads", bare)
    loaded = S.load_notebook(b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}')
    assert loaded.status == "not a valid notebook"
    assert loaded.message == "could not be read as a notebook (AssertionError)"


def test_an_executed_hand_in_uses_its_own_lab_choice_and_never_writes_the_kits(tmp_path):
    from lab_utils.choice import CHOICE_FILE_NAME, choice_path
    from lab_utils.config import KIT_ROOT

    root = tmp_path / "hand-ins"
    write_nb(root / "alice" / "02.ipynb",
             "from lab_utils.choice import load_lab_choice, save_lab_choice, choice_path\n"
             "print('alice-choice', load_lab_choice().filter_index)\n"
             "save_lab_choice({'filter_index': 3})  # what 02's check cell does with a typed value\n"
             "print('saved-to', choice_path())")
    (root / "alice" / CHOICE_FILE_NAME).write_text("filter_index: 12\n")  # handed in beside the notebook
    write_nb(root / "bob.ipynb", "from lab_utils.choice import load_lab_choice\n"
             "print('bob-choice', load_lab_choice().filter_index)")
    kit_choice = KIT_ROOT / CHOICE_FILE_NAME
    kit_before = kit_choice.read_bytes() if kit_choice.exists() else None
    mine_before = choice_path().read_bytes() if choice_path().exists() else None
    out = tmp_path / "out"
    assert run_cli("--submissions", str(root), "--out", str(out), "--execute").returncode == 0
    alice, bob = page_text(out / "alice.html"), page_text(out / "bob.html")
    assert "alice-choice 12" in alice and "bob-choice 31" in bob  # bob handed in none: the defaults
    saved_to = re.search(r"saved-to (\S+)", alice).group(1)
    assert str(KIT_ROOT) not in saved_to and saved_to.endswith(f"work/{CHOICE_FILE_NAME}")
    assert (root / "alice" / CHOICE_FILE_NAME).read_text() == "filter_index: 12\n"  # originals only read
    assert (kit_choice.read_bytes() if kit_choice.exists() else None) == kit_before
    assert (choice_path().read_bytes() if choice_path().exists() else None) == mine_before
