"""render.sh --sweep (lab_utils.sweep): the pairs file (both formats, every bad line with
its number, duplicates), the channel-table record a render leaves, the sweep's index on
synthetic results (comparison, recurring channels, escaping), the output folder's
ownership, one real sweep of two pairs, and the index in headless Chromium."""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_utils import LabError, circuits, sweep
from lab_utils.circuits import ChannelRow, ChannelTableRecord
from lab_utils.pages import CSP_META
from lab_utils.sweep import PairResult, PairTask, SweepPair

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_sweep(*args, timeout=600, **env_extra):
    """``python -m lab_utils.sweep`` (what render.sh --sweep execs) in this environment."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.run([sys.executable, "-m", "lab_utils.sweep", *args], capture_output=True, text=True, check=False,
                          timeout=timeout, env=env, cwd=ROOT)


def test_text_format_comments_blank_lines_and_line_numbers(tmp_path):
    path = write(tmp_path, "pairs.txt", "# the sweep\n\nblock3_conv1 31\n  block3_conv1\t7   # tabs, comment\n"
                                        "block2_conv2 5\n")
    assert sweep.read_pairs(path) == [SweepPair("block3_conv1", 31, 3), SweepPair("block3_conv1", 7, 4),
                                      SweepPair("block2_conv2", 5, 5)]


def test_yaml_format(tmp_path):
    path = write(tmp_path, "pairs.yaml", "# the sweep\n- {layer_name: block3_conv1, filter_index: 31}\n"
                                         "- layer_name: block4_conv1\n  filter_index: 7\n")
    assert sweep.read_pairs(path) == [SweepPair("block3_conv1", 31, 2), SweepPair("block4_conv1", 7, 3)]
    assert sweep.read_pairs(write(tmp_path, "p.yml", "[{layer_name: block2_conv2, filter_index: 0}]\n")) == [
        SweepPair("block2_conv2", 0, 1)]


def test_every_bad_text_line_in_one_error(tmp_path):
    path = write(tmp_path, "pairs.txt", "\n".join([
        "block3_conv1 31",          # 1 ok
        "block9_conv9 3",           # 2 unknown layer
        "block3_conv1 x",           # 3 not a number
        "block3_conv1 999",         # 4 out of range
        "only_one",                 # 5 one word
        "block2_conv2 5 extra",     # 6 three words
        "block1_conv1 0",           # 7 no feeding layer
        "block3_conv1 31  # again",  # 8 duplicate of 1
        "block3_conv1 -1",          # 9 negative
    ]) + "\n")
    with pytest.raises(LabError) as err:
        sweep.read_pairs(path)
    text = str(err.value)
    assert text.startswith("--sweep ") and "8 bad lines, nothing ran:" in text
    lines = text.splitlines()[1:]
    assert [ln.split(":")[0].strip() for ln in lines] == [f"line {n}" for n in range(2, 10)]  # in file order
    assert "line 2: unknown layer 'block9_conv9'; conv layers of vgg16" in text
    assert "line 3: filter_index must be a whole number, got 'x'" in text
    assert "line 4: filter_index of block3_conv1 999 is out of range; valid: 0..255" in text
    assert "line 5: expected 'layer_name filter_index', got 'only_one'" in text
    assert "line 6: expected 'layer_name filter_index', got 'block2_conv2 5 extra'" in text
    assert "line 7: layer 'block1_conv1' reads the model input directly" in text
    assert "line 8: block3_conv1 31 repeats line 1" in text
    assert "line 9: filter_index of block3_conv1 -1 is out of range" in text


def test_every_bad_yaml_item_in_one_error(tmp_path):
    path = write(tmp_path, "pairs.yaml", "\n".join([
        "- {layer_name: block3_conv1, filter_index: 31}",             # 1 ok
        "- layer_name: block3_conv1",                                  # 2-3 a string index
        "  filter_index: '7'",
        "- {layer_name: block3_conv1}",                                # 4 missing
        "- {layer_name: block3_conv1, filter_index: 2, colour: red}",  # 5 unknown key
        "- 5",                                                         # 6 not a mapping
        "- {layer_name: block3_conv1, filter_index: 31}",              # 7 duplicate
        "- {layer_name: block3_conv1, filter_index: 1, filter_index: 2}",  # 8 key twice
        "- {layer_name: 12, filter_index: 2}",                         # 9 layer not a string
    ]) + "\n")
    with pytest.raises(LabError) as err:
        sweep.read_pairs(path)
    text = str(err.value)
    assert "7 bad lines" in text
    for expected in ["line 2: filter_index must be a whole number, got '7'",
                     "line 4: missing filter_index", "line 5: unknown key(s) colour",
                     "line 6: expected a mapping", "line 7: block3_conv1 31 repeats line 1",
                     "line 8: filter_index given twice", "line 9: layer_name must be a string, got 12"]:
        assert expected in text


@pytest.mark.parametrize("name,text,message", [
    ("p.yaml", "- [unclosed\n", "not valid YAML (line 2"),
    ("p.yaml", "layer_name: block3_conv1\n", "line 1: expected a list of"),
    ("p.yaml", "# nothing\n", "lists no pair; write a YAML list"),
    ("p.txt", "# nothing\n\n", "lists no pair; write one 'layer_name filter_index' per line"),
])
def test_malformed_or_empty_files(tmp_path, name, text, message):
    with pytest.raises(LabError, match=re.escape(message)):
        sweep.read_pairs(write(tmp_path, name, text))


def test_pairs_checked_with_the_other_parameters(tmp_path):
    # top_k's maximum is the layer's input channels: 64 for block2_conv1, 128 for block3_conv1
    path = write(tmp_path, "pairs.txt", "block3_conv1 1\nblock2_conv1 1\n")
    with pytest.raises(LabError, match=r"1 bad line, nothing ran:\n  line 2: top_k"):
        sweep.read_pairs(path, {"top_k": 100})


def test_command_line_errors_are_one_line_exit_2_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    bad = write(tmp_path, "pairs.txt", "block3_conv1 31\nblock3_conv1 31\nnope 1\n")
    res = run_sweep("--sweep", str(bad), "--out", str(out))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"render.sh --sweep: error: --sweep {bad}: 2 bad lines, nothing ran:" in res.stderr
    assert "line 2: block3_conv1 31 repeats line 1" in res.stderr and "line 3: unknown layer 'nope'" in res.stderr
    good = write(tmp_path, "good.txt", "block3_conv1 31\n")
    for args, message in [(["-p", "filter_index", "3"], "-p filter_index: the sweep file gives"),
                          (["-p", "colour", "red"], "unknown parameter(s) colour"),
                          (["--only", "09"], "--only: no notebook numbered 09"),
                          (["--jobs", "0"], "--jobs must be at least 1"),
                          ([], None)]:
        if message is None:  # a missing file
            args, message = [], "missing.txt: no such file"
            res = run_sweep("--sweep", str(tmp_path / "missing.txt"), "--out", str(out))
        else:
            res = run_sweep("--sweep", str(good), "--out", str(out), *args)
        assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not out.exists()


def test_render_sh_dispatches_sweep():
    text = (ROOT / "render.sh").read_text()
    assert "--sweep|--sweep=*) exec python -m lab_utils.sweep" in text
    assert "*.yaml/*.yml" in " ".join(sweep.build_parser().format_help().split())
    from lab_utils.render import build_parser

    assert "render.sh --sweep FILE --help" in " ".join(build_parser().format_help().split())


def test_record_of_a_channel_table(tiny_model, tmp_path, monkeypatch):
    table = circuits.channel_table(tiny_model, "c2", 2, top_k=10)
    record = circuits.channel_table_record(table, "vgg16", 10)
    assert record.channels == [int(c) for c in table["channel"]]
    assert [r.rank for r in record.rows] == list(range(1, len(table) + 1))
    norms = circuits.channel_norms(tiny_model, "c2", 2)
    assert [r.l2_norm for r in record.rows] == pytest.approx(list(table["l2_norm"]))
    for r in record.rows:  # share: squared norm over the filter's sum of squared weights (all channels)
        assert r.share == pytest.approx(norms[r.channel] ** 2 / (norms ** 2).sum())
    assert sum(r.share for r in record.rows) == pytest.approx(1.0, abs=1e-6)  # all 4 channels but a near-zero one
    assert ChannelTableRecord.from_json(record.to_json()) == record
    with pytest.raises(ValueError, match="not a lab_utils.channel_table/1 record"):
        ChannelTableRecord.from_json('{"rows": []}')
    with pytest.raises(ValueError, match="malformed"):
        ChannelTableRecord.from_json("[1, 2")
    monkeypatch.delenv(circuits.RECORD_DIR_ENV, raising=False)
    assert circuits.write_record(record) is None  # outside a render: nothing written
    monkeypatch.setenv(circuits.RECORD_DIR_ENV, str(tmp_path / "gone"))
    assert circuits.write_record(record) is None  # a stale variable never breaks a notebook
    monkeypatch.setenv(circuits.RECORD_DIR_ENV, str(tmp_path))
    path = circuits.write_record(record)
    assert path == tmp_path / "channel-table.json"
    assert ChannelTableRecord.from_json(path.read_text()) == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["channel-table.json"]  # atomic: no temp file left


def record(layer: str, f: int, channels: list[int]) -> ChannelTableRecord:
    rows = tuple(ChannelRow(i + 1, c, 0.5 / (i + 1), 0.2 / (i + 1), "excitatory") for i, c in enumerate(channels))
    return ChannelTableRecord("vgg16", layer, f, len(channels), 128, 0, "by_sum", rows)


def synthetic_results() -> list[PairResult]:
    return [
        PairResult("block3_conv1", 31, "ok", 12.34, channel_table=record("block3_conv1", 31, [63, 23, 13]),
                   written=True),
        PairResult("block3_conv1", 7, "ok", 9.0, channel_table=record("block3_conv1", 7, [100, 63, 5]),
                   written=True),
        PairResult("block3_conv1", 9, "failed", 3.0, "cell 4: ValueError: <script>alert(1)</script> & more",
                   channel_table=record("block3_conv1", 9, [13, 63, 7]), written=True),
        PairResult("block4_conv1", 7, "ok", 20.0, channel_table=record("block4_conv1", 7, [63, 1, 2]), written=True),
        PairResult("block4_conv1", 8, "failed", 0.5, "the worker running this pair died: KilledWorker: x"),
    ]


def test_recurring_channels_per_layer():
    rec = sweep.recurring_channels(synthetic_results())
    # 63 is in all three block3_conv1 tables, 13 in two; block4_conv1's 63 is another layer's channel
    assert rec == {"block3_conv1": {13: 2, 63: 3}, "block4_conv1": {}}


def test_index_compares_pairs_marks_recurring_channels_and_escapes(tmp_path):
    index = sweep.write_sweep_index(tmp_path, synthetic_results(), "2026-01-02 03:04",
                                    {"steps": "3", "pairs file": "<b>pairs</b>.txt"})
    page = index.read_text()
    assert CSP_META in page and "<script" not in page.replace("&lt;script", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "&lt;b&gt;pairs&lt;/b&gt;.txt" in page
    assert "3 of 5 pairs ok" in page
    overview = page.split("<h2>Pairs</h2>")[1].split("<h2>Channel tables</h2>")[0]
    rows = re.findall(r"<tr class='(\w+)'>(.*?)</tr>", overview)
    assert [cls for cls, _ in rows] == ["ok", "ok", "failed", "ok", "failed"]
    assert "<a href='block3_conv1-f31/index.html'>block3_conv1 filter 31</a>" in rows[0][1]
    assert "12.3" in rows[0][1] and "63 (0.500), 23 (0.250), 13 (0.167)" in rows[0][1]
    assert "st-fail" in rows[2][1] and "ValueError" in rows[2][1]
    assert "<a " not in rows[4][1] and "KilledWorker" in rows[4][1]  # nothing written: no link
    sides = page.split("<h2>Channel tables</h2>")[1].split("<h2>Settings</h2>")[0]
    b3, b4 = sides.split("<h3>block4_conv1</h3>")
    assert "Channels in more than one table of this layer: 13 (in 2), 63 (in 3)." in b3
    assert [h for h in re.findall(r"<th>(.*?)</th>", b3)] == [
        "rank", "<a href='block3_conv1-f31/index.html'>filter 31</a>",
        "<a href='block3_conv1-f7/index.html'>filter 7</a>",
        "<a href='block3_conv1-f9/index.html'>filter 9</a> <span class=\"st st-fail\">failed</span>"]
    body_rows = re.findall(r"<tr>(.*?)</tr>", b3.split("<tbody>")[1])
    assert len(body_rows) == 3  # ranks 1..3, filters side by side
    cells = [re.findall(r"<td( class=rec)?[^>]*>ch (\d+)", r) for r in body_rows]
    # filters 31, 7, 9 side by side; 63 and 13 recur (highlighted), the others do not
    assert [[(int(c), bool(rec)) for rec, c in row] for row in cells] == [
        [(63, True), (100, False), (13, True)],
        [(23, False), (63, True), (63, True)],
        [(13, True), (5, False), (7, False)]]
    assert "0.500 &middot; 20.0%" in body_rows[0]
    assert "Channels in more than one table of this layer: none." in b4
    assert "class=rec" not in b4  # 63 recurs in block3_conv1, not in block4_conv1
    assert "No channel table for filter(s) 8" in b4


def test_out_folder_ownership(tmp_path):
    pairs = [SweepPair("block3_conv1", 31, 1)]
    lab = tmp_path / "render"
    lab.mkdir()
    (lab / "index.html").write_text("a lab render's index")
    with pytest.raises(LabError, match="holds an index.html that the sweep did not write"):
        sweep.check_out(lab, pairs)
    other = tmp_path / "other"
    (other / "block3_conv1-f31").mkdir(parents=True)
    with pytest.raises(LabError, match="block3_conv1-f31 exist"):
        sweep.check_out(other, pairs)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(LabError, match="is a file"):
        sweep.check_out(a_file, pairs)
    # what the sweep wrote (its manifest) is its own: a later sweep replaces it
    ours = tmp_path / "ours"
    ours.mkdir()
    result = PairResult("block3_conv1", 31, "ok", files={"index.html": b"new", "notebooks/a.ipynb": b"{}",
                                                          "../escape.html": b"x", "/abs.html": b"x"})
    sweep.output.write_manifest(ours, {result.folder})
    (ours / "index.html").write_text("old sweep index")
    (ours / result.folder).mkdir()
    (ours / result.folder / "stale.html").write_text("old")
    sweep.check_out(ours, pairs)
    sweep.write_pair_files(ours, result)
    written = sorted(p.relative_to(ours).as_posix() for p in ours.rglob("*"))
    assert written == [".sweep-manifest.json", "block3_conv1-f31", "block3_conv1-f31/index.html",
                       "block3_conv1-f31/notebooks", "block3_conv1-f31/notebooks/a.ipynb", "index.html"]
    assert not (tmp_path / "escape.html").exists()


def test_task_and_result_are_plain_picklable_data():
    # on a Dask cluster the task function is imported by name and its arguments/results pickled
    assert sweep.render_pair.__module__ == "lab_utils.sweep.task"
    assert pickle.loads(pickle.dumps(sweep.render_pair)) is sweep.render_pair
    task = PairTask("block3_conv1", 31, ("-p", "steps", "3"), "/tmp/cache", 60.0)
    assert pickle.loads(pickle.dumps(task)) == task
    result = PairResult("block3_conv1", 31, "ok", 1.5, "", {"index.html": b"<html>"},
                        record("block3_conv1", 31, [1, 2]))
    assert pickle.loads(pickle.dumps(result)) == result


def test_the_caller_cache_goes_only_to_local_renders():
    # a path on this machine means nothing on a Dask worker: it then uses its own cache
    pairs = [SweepPair("block3_conv1", 31, 1), SweepPair("block3_conv1", 7, 2)]
    arguments = ["--only", "03"]
    local = sweep.pair_tasks(pairs, arguments, 60, "/home/me/.lab_cache", None)
    assert local == [PairTask("block3_conv1", 31, ("--only", "03"), "/home/me/.lab_cache", 60.0),
                     PairTask("block3_conv1", 7, ("--only", "03"), "/home/me/.lab_cache", 60.0)]
    remote = sweep.pair_tasks(pairs, arguments, 60, "/home/me/.lab_cache", "tcp://10.0.0.5:8786")
    assert [t.cache_dir for t in remote] == [None, None]
    assert [(t.layer_name, t.filter_index, t.arguments) for t in remote] == [
        (t.layer_name, t.filter_index, t.arguments) for t in local]
    assert [t.cache_dir for t in sweep.pair_tasks(pairs, arguments, 60, None, None)] == [None, None]


def test_a_failing_render_is_a_failed_result_not_an_exception():
    # the render refuses --only 99 before any kernel starts: a quick, real failing subprocess
    result = sweep.render_pair(PairTask("block3_conv1", 31, ("--only", "99"), None, 120.0))
    assert result.status == "failed" and result.channel_table is None and result.files == {}
    assert "render exited with status 2" in result.message and "--only: no notebook numbered 99" in result.message


@pytest.mark.weights
@pytest.mark.slow
def test_real_sweep_of_two_pairs(tmp_path, vgg16):
    pairs = write(tmp_path, "pairs.txt", "# two filters of one layer\nblock3_conv1 31\nblock3_conv1 7\n")
    out = tmp_path / "sweep"
    res = run_sweep("--sweep", str(pairs), "--out", str(out), "--only", "03", "-p", "top_k", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    progress = [ln for ln in res.stderr.splitlines() if re.match(r"\[\d/2\] block3_conv1 filter (31|7): ok", ln)]
    assert len(progress) == 2, res.stderr
    tables = {}
    for f in (31, 7):
        folder = out / f"block3_conv1-f{f}"
        assert (folder / "index.html").is_file() and (folder / "03_channel_analysis.html").is_file()
        assert CSP_META in (folder / "03_channel_analysis.html").read_text()
        rec = ChannelTableRecord.from_json((folder / "notebooks" / "channel-table.json").read_text())
        expected = circuits.channel_table(vgg16, "block3_conv1", f, 8)  # the kit's own computation
        assert rec.channels == [int(c) for c in expected["channel"]]
        assert [r.l2_norm for r in rec.rows] == pytest.approx(list(expected["l2_norm"]), rel=1e-6)
        assert [r.category for r in rec.rows] == list(expected["category"])
        norms = circuits.channel_norms(vgg16, "block3_conv1", f)
        assert [r.share for r in rec.rows] == pytest.approx(list(expected["l2_norm"] ** 2 / (norms ** 2).sum()))
        assert (rec.layer_name, rec.filter_index, rec.top_k, rec.n_channels) == ("block3_conv1", f, 8, 128)
        tables[f] = rec
    assert tables[31].channels != tables[7].channels
    index = (out / "index.html").read_text()
    assert CSP_META in index and "2 of 2 pairs ok" in index
    for f in (31, 7):
        assert f"<a href='block3_conv1-f{f}/index.html'>block3_conv1 filter {f}</a>" in index
        assert f"ch {tables[f].channels[0]} " in index
    shared = set(tables[31].channels) & set(tables[7].channels)
    assert len(re.findall(r"<td class=rec", index)) == 2 * len(shared)
    assert json.loads((out / ".sweep-manifest.json").read_text()) == {
        "folders": ["block3_conv1-f31", "block3_conv1-f7"]}
    # a second sweep into the same folder replaces its own pairs and removes the one it drops
    res = run_sweep("--sweep", str(write(tmp_path, "one.txt", "block3_conv1 31\n")), "--out", str(out),
                    "--only", "03", "-p", "top_k", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [".sweep-manifest.json", "block3_conv1-f31", "index.html"]


def test_sweep_index_in_chromium(tmp_path):
    from test_pages_browser import _browser_or_skip

    _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from test_pages_browser import CHROMEDRIVER, CHROMIUM

    sweep.write_sweep_index(tmp_path, synthetic_results(), "2026-01-02 03:04", {"steps": "3"})
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--window-size=1300,1200", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.get((tmp_path / "index.html").as_uri())
        assert driver.title == "CNN Circuits Lab: sweep"
        marked = driver.find_elements("css selector", "td.rec")
        assert len(marked) == 5
        assert {m.value_of_css_property("background-color") for m in marked} == {"rgba(255, 241, 184, 1)"}
        plain = driver.find_elements("css selector", "table.side td:not(.rec)")
        assert all(p.value_of_css_property("background-color") == "rgba(0, 0, 0, 0)" for p in plain)
        shot = tmp_path / "sweep-index.png"
        driver.save_screenshot(str(shot))  # kept for a person to look at
        assert shot.stat().st_size > 10_000
        if os.environ.get("LAB_SCREENSHOT_DIR"):
            import shutil

            shutil.copy(shot, Path(os.environ["LAB_SCREENSHOT_DIR"]) / shot.name)
    finally:
        driver.quit()


def test_a_render_past_its_timeout_is_stopped():
    t0 = time.perf_counter()
    result = sweep.render_pair(PairTask("block3_conv1", 31, ("--only", "03"), None, 1.0))
    assert result.status == "failed" and result.message.startswith("timed out after 1 s")
    assert time.perf_counter() - t0 < 30 and not sweep.task._LIVE
