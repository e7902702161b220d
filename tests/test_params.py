"""lab_utils.params.check_values on hostile values: upper bounds of every size and count,
the ascent's joint time and memory bound, empty strings, and an empty probe folder. All
of it runs without TensorFlow, in well under a second (render.sh runs it first)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab_utils import LabError, params
from lab_utils.params import DEFAULTS, LIMITS, ascent_cost, check_values

ROOT = Path(__file__).resolve().parent.parent
# the smallest ascent, so that one parameter at its maximum passes the joint bound
SMALL_ASCENT = {"steps": 1, "vis_size": 32, "n_neighbours": 0, "top_k": 1}


def test_defaults_pass_and_their_ascent_estimate_matches_the_benchmark():
    assert check_values({}) == DEFAULTS
    cost = ascent_cost(DEFAULTS)
    # bench/RESULTS.md: 0.437 s/step (9 images at block3_conv1) + 0.295 s/step (10 at block2_conv2), 64 steps
    assert cost["seconds"] == pytest.approx(64 * (0.437 + 0.295), rel=0.05)
    assert (cost["n_filter"], cost["n_channels"], cost["feeder"]) == (9, 10, "block2_conv2")
    assert cost["bytes"] < 0.5 * 2 ** 30


@pytest.mark.parametrize("name, maximum", [
    ("steps", 2048), ("vis_size", 1024), ("image_size", 512), ("top_n", 100), ("probe_limit", 20000),
    ("n_neighbours", 32), ("per_class", 1000),
])
def test_upper_bounds(name, maximum):
    assert LIMITS[name][1] == maximum
    others = {} if name in ("image_size", "top_n", "probe_limit", "per_class") else SMALL_ASCENT
    assert check_values({**others, name: maximum})[name] == maximum  # the maximum itself is fine
    for bad in (maximum + 1, 100_000_000):
        with pytest.raises(LabError) as info:
            check_values({**others, name: bad})
        msg = str(info.value)
        assert msg.startswith(f"{name} must be <= {maximum} (") and msg.endswith(f", got {bad}")
        assert "\n" not in msg


def test_the_limits_are_read_from_the_table(monkeypatch):
    monkeypatch.setitem(LIMITS, "top_n", (1, 7, "a test's maximum"))
    with pytest.raises(LabError, match=r"top_n must be <= 7 \(a test's maximum\), got 8"):
        check_values({"top_n": 8})
    assert check_values({"top_n": 7})["top_n"] == 7


def test_lower_bounds_still_hold():
    for name, (low, _, _) in LIMITS.items():
        with pytest.raises(LabError, match=f"{name} must be >= {low}, got {low - 1}"):
            check_values({name: low - 1})


def test_the_ascent_budget_bounds_the_joint_work():
    # each value alone is within its own maximum; together they are ~25 min of ascent
    with pytest.raises(LabError) as info:
        check_values({"steps": 2048})
    msg = str(info.value)
    assert "the gradient ascent would take about 24.9 min" in msg
    assert "2048 steps x 128^2 px x (9 images at block3_conv1 + 10 at block2_conv2)" in msg
    assert "10-minute budget" in msg and msg.endswith("lower steps, vis_size, n_neighbours or top_k")
    # the bound is ~12.8x the default's work at the default layer
    assert check_values({"steps": 800})["steps"] == 800
    with pytest.raises(LabError, match="would take about 10.1 min"):
        check_values({"steps": 830})
    with pytest.raises(LabError, match="would take about"):
        check_values({"vis_size": 512})  # 16x the default's pixels
    with pytest.raises(LabError, match="would take about"):
        check_values({"n_neighbours": 32, "top_k": 128, "steps": 256})


def test_the_ascent_budget_knows_deeper_layers_cost_more():
    # block5_conv3's ascent costs ~3.9x block3_conv1's per step (conv FLOPs before each layer)
    assert check_values({"steps": 256})["steps"] == 256
    with pytest.raises(LabError, match=r"about 12\.\d min .*at block5_conv3 \+ 10 at block5_conv2"):
        check_values({"steps": 256, "layer_name": "block5_conv3"})
    assert ascent_cost({**DEFAULTS, "layer_name": "block5_conv3"})["seconds"] > 3.5 * ascent_cost(DEFAULTS)["seconds"]


def test_the_ascent_memory_bound():
    # 1 step is fast, but 10 images of 1024 px hold ~15 GiB in the ascent (1.5 KB per pixel)
    with pytest.raises(LabError) as info:
        check_values({"vis_size": 1024, "steps": 1})
    msg = str(info.value)
    assert "would need about 14.6 GiB of memory" in msg and "(10 images of 1024x1024 px)" in msg
    assert "more than 6 GiB" in msg and msg.endswith("lower vis_size, n_neighbours or top_k")
    assert check_values({"vis_size": 1024, "steps": 1, "n_neighbours": 1, "top_k": 2})["vis_size"] == 1024


@pytest.mark.parametrize("name, value, valid", [
    ("layer_name", "", "valid: block1_conv2, block2_conv1, "),
    ("layer_name", "   ", "valid: block1_conv2, block2_conv1, "),
    ("model_name", "", "valid: vgg16, vgg19"),
    ("probe_set", "", "valid: None (the embedded set), a folder, or 'imagenet-mini'"),
])
def test_empty_strings_are_refused_by_name(name, value, valid):
    with pytest.raises(LabError) as info:
        check_values({name: value})
    msg = str(info.value)
    assert msg.startswith(f"{name} must not be empty, got {value!r}; ") and valid in msg
    assert "None" not in msg.split(";")[0]  # not "got None"


def test_layer_names_of_vgg19_are_listed_for_an_empty_layer_name():
    with pytest.raises(LabError, match="block3_conv4"):
        check_values({"model_name": "vgg19", "layer_name": ""})


def test_empty_probe_folder_fails_in_the_check(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    text_only = tmp_path / "text-only"
    text_only.mkdir()
    (text_only / "readme.txt").write_text("not an image")
    for folder in (empty, text_only):
        with pytest.raises(LabError) as info:
            check_values({"probe_set": str(folder)})
        assert str(folder) in str(info.value) and "holds no image file" in str(info.value)
    # a candidate image file is enough here (decoding is load_probe_set's job)
    (text_only / "broken.jpg").write_bytes(b"not a jpeg")
    assert check_values({"probe_set": str(text_only)})["probe_set"] == str(text_only)


def test_probe_folder_check_only_for_local_folders(tmp_path, monkeypatch):
    from lab_utils import images

    seen = []
    monkeypatch.setattr(images, "check_probe_folder", seen.append)
    for source in (None, "imagenet-mini", "https://example.org/x.jpg"):
        check_values({"probe_set": source, "per_class": 10})
    assert seen == []
    check_values({"probe_set": str(tmp_path)})
    assert seen == [str(tmp_path)]


def test_every_check_runs_fast_without_tensorflow(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [{}, {"steps": 100_000_000}, {"vis_size": 100_000}, {"steps": 2048}, {"vis_size": 1024, "steps": 1},
             {"layer_name": ""}, {"probe_set": str(empty)}, {"layer_name": "block5_conv3", "filter_index": 511}]
    code = """
import json, sys, time
from lab_utils.config import LabError
from lab_utils.params import check_values
out = []
t0 = time.perf_counter()
for case in json.loads(sys.argv[1]):
    try:
        check_values(case)
        out.append("ok")
    except LabError as exc:
        out.append(str(exc).split(" ")[0])
print(json.dumps({"seconds": time.perf_counter() - t0, "results": out,
                  "modules": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""
    res = subprocess.run([sys.executable, "-c", code, json.dumps(cases)], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["modules"] == []
    assert report["results"] == ["ok", "steps", "vis_size", "the", "the", "layer_name", "the", "ok"]
    assert report["seconds"] < 0.5, report


def test_params_module_constants_are_consistent():
    # the joint bound is the render budget, and the default is far inside both of its parts
    assert params.ASCENT_MAX_SECONDS == 600
    assert ascent_cost(DEFAULTS)["seconds"] * 12 < params.ASCENT_MAX_SECONDS
    assert ascent_cost(DEFAULTS)["bytes"] * 20 < params.ASCENT_MAX_BYTES


def test_a_layer_outside_mid_level_is_a_note_not_a_refusal():
    from lab_utils.session import LabSetup

    full = check_values({"layer_name": "block1_conv2", "filter_index": 3})  # accepted
    text = LabSetup(params=full, model=None, feeder="block1_conv1").describe()
    assert text.splitlines()[1].startswith("note: block1_conv2 has 1 conv layer(s) before it")
    default = LabSetup(params=check_values({}), model=None, feeder="block2_conv2").describe()
    assert "note:" not in default and len(default.splitlines()) == 1


def test_probe_source_says_what_a_probe_set_value_means(tmp_path, monkeypatch):
    from lab_utils.params import probe_source

    (tmp_path / "imgs").mkdir()
    (tmp_path / "one.jpg").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    cases = {None: "embedded", "imagenet-mini": "imagenet-mini", "HTTPS://example.org/a.jpg": "url",
             "imgs": "folder", "one.jpg": "file", "nope": "missing", "ftp://x/y": "missing"}
    for value, kind in cases.items():
        assert probe_source(value).kind == kind, value
    assert probe_source("imgs").path == Path("imgs") and probe_source("imgs").is_local_folder
    assert probe_source(None).is_local_folder and not probe_source("one.jpg").is_local_folder
    assert probe_source(None).describe() == "embedded data/probe-224"
    with pytest.raises(LabError, match="'nope' does not exist"):
        check_values({"probe_set": "nope"})


def test_imagenet_mini_must_fit_the_probe_limit_through_per_class_or_probe_limit():
    with pytest.raises(LabError, match=r"about 38,668 images .* set per_class \(e\.g\. 10"):
        check_values({"probe_set": "imagenet-mini"})
    with pytest.raises(LabError, match="about 38,668 images"):
        check_values({"probe_set": "imagenet-mini", "per_class": 50})  # the seeds' 50: every image
    assert check_values({"probe_set": "imagenet-mini", "per_class": 20})["per_class"] == 20
    assert check_values({"probe_set": "imagenet-mini", "per_class": 50, "probe_limit": 20000})["probe_limit"] == 20000
    assert check_values({"per_class": 50})["per_class"] == 50  # the embedded set: at most 1 per class anyway


def test_test_image_is_a_file_or_a_url(tmp_path):
    photo = tmp_path / "my photo.jpg"
    photo.write_bytes(b"checked when it is decoded")
    assert check_values({"test_image": str(photo)})["test_image"] == str(photo)
    assert check_values({"test_image": "https://example.org/cat.jpg"})["test_image"].startswith("https://")
    with pytest.raises(LabError, match="test_image must be one image file .* got the folder"):
        check_values({"test_image": str(tmp_path)})
    with pytest.raises(LabError, match="test_image .*nope.jpg' does not exist"):
        check_values({"test_image": str(tmp_path / "nope.jpg")})
    with pytest.raises(LabError, match="test_image must be str or None"):
        check_values({"test_image": 3})
