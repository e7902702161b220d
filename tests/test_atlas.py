"""lab_utils.atlas: every filter of a layer in batches, its cache, its page and its
command line (``render.sh --atlas``), on the tiny model; one short real-weights run."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab_utils import LabError, atlas, featurevis
from lab_utils.pages import CSP_META
from test_pages_browser import browser  # noqa: F401  (the headless-Chromium fixture)

ROOT = Path(__file__).resolve().parent.parent
SIZE, STEPS = 32, 6


@pytest.fixture
def batch_calls(monkeypatch):
    """The channel lists render_channels is called with (it still runs)."""
    calls = []
    real = featurevis.render_channels

    def spy(model, layer_name, channels, **kw):
        calls.append(list(channels))
        return real(model, layer_name, channels, **kw)

    monkeypatch.setattr(featurevis, "render_channels", spy)
    return calls


def test_every_filter_in_uneven_batches_as_rendered_alone(tiny_model, cache_tmp, batch_calls):
    a = atlas.layer_atlas(tiny_model, "c3", size=SIZE, steps=STEPS, batch=2)
    assert batch_calls == [[0, 1], [2, 3], [4]]  # 5 filters, at most 2 at a time
    assert a.channels == [0, 1, 2, 3, 4] and a.layer_name == "c3" and not a.from_cache
    assert a.images.shape == (5, SIZE, SIZE, 3) and a.images.dtype == np.uint8
    assert a.objective_start.shape == a.objective_end.shape == (5,)
    assert (a.objective_end > a.objective_start).all()
    same_batch = featurevis.render_channels(tiny_model, "c3", [2, 3], size=SIZE, steps=STEPS, use_cache=False)
    np.testing.assert_array_equal(a.images[2:4], same_batch.images)
    np.testing.assert_array_equal(a.image(3), same_batch.images[1])
    assert atlas.batches_of(list(range(256)), 32) == [list(range(i, i + 32)) for i in range(0, 256, 32)]
    assert [len(b) for b in atlas.batches_of(list(range(100)), 32)] == [25, 25, 25, 25]  # one shape, one trace


def test_second_call_is_the_cached_atlas_without_computing(tiny_model, cache_tmp, monkeypatch):
    first = atlas.layer_atlas(tiny_model, "c2", size=SIZE, steps=STEPS, batch=4)

    def no_compute(*a, **kw):
        raise AssertionError("recomputed")

    monkeypatch.setattr(featurevis, "render_channels", no_compute)
    again = atlas.layer_atlas(tiny_model, "c2", size=SIZE, steps=STEPS, batch=4)
    assert again.from_cache and again.channels == first.channels == list(range(6))
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.objective_end, first.objective_end)
    np.testing.assert_array_equal(atlas.atlas_image(tiny_model, "c2", 5, size=SIZE, steps=STEPS), first.images[5])
    assert atlas.cached_atlas(tiny_model, "c2", size=SIZE, steps=STEPS, seed=1) is None  # other seed: not cached


def test_interrupted_atlas_resumes_from_the_per_channel_cache(tiny_model, cache_tmp, monkeypatch):
    done = featurevis.render_channels(tiny_model, "c2", [0, 1, 2], size=SIZE, steps=STEPS)  # the batch done before ^C
    saved = []
    real_save = featurevis.cache.save

    def save(kind, key, **arrays):
        saved.append(kind)
        return real_save(kind, key, **arrays)

    monkeypatch.setattr(featurevis.cache, "save", save)
    a = atlas.layer_atlas(tiny_model, "c2", size=SIZE, steps=STEPS, batch=3)
    np.testing.assert_array_equal(a.images[:3], done.images)
    assert saved.count("vis") == 3 and saved.count("atlas") == 1  # only filters 3, 4, 5 were computed


def test_same_seed_same_atlas_other_seed_other_atlas(tiny_model):
    kw = dict(size=SIZE, steps=STEPS, batch=4, use_cache=False, progress_bar=False)
    a = atlas.layer_atlas(tiny_model, "c2", seed=0, **kw)
    b = atlas.layer_atlas(tiny_model, "c2", seed=0, **kw)
    c = atlas.layer_atlas(tiny_model, "c2", seed=1, **kw)
    np.testing.assert_array_equal(a.images, b.images)
    assert np.abs(a.images.astype(int) - c.images).mean() > 2.0


@pytest.mark.parametrize("kw, words", [
    (dict(layer_name="c9"), ["unknown layer 'c9'", "c1, c2, c3"]),
    (dict(layer_name="p1"), ["'p1' is not a conv layer", "c1, c2, c3"]),
    (dict(layer_name="c2", channels=[1, 6]), ["out of range", "0..5"]),
    (dict(layer_name="c2", batch=0), ["batch must be an integer >= 1"]),
    (dict(layer_name="c2", size=8), ["size must be an integer >= 32"]),
])
def test_bad_input_is_one_clear_lab_error(tiny_model, kw, words):
    with pytest.raises(LabError) as err:
        atlas.layer_atlas(tiny_model, **{"size": SIZE, "steps": 1, "use_cache": False, **kw})
    assert all(w in str(err.value) for w in words), str(err.value)
    assert "\n" not in str(err.value)


def test_subset_of_filters_and_atlas_image(tiny_model, cache_tmp):
    a = atlas.layer_atlas(tiny_model, "c2", channels=[4, 1, 4], size=SIZE, steps=STEPS)
    assert a.channels == [4, 1] and a.images.shape[0] == 2
    with pytest.raises(LabError, match="not in this atlas"):
        a.image(0)
    with pytest.raises(LabError, match="out of range"):
        atlas.atlas_image(tiny_model, "c2", 6, size=SIZE, steps=STEPS)
    # no whole-layer atlas cached: the filter's own cached image (from the batch above)
    np.testing.assert_array_equal(atlas.atlas_image(tiny_model, "c2", 1, size=SIZE, steps=STEPS), a.image(1))


# ------------------------------------------------------------------ the page
def tiny_atlas(model) -> atlas.LayerAtlas:
    return atlas.layer_atlas(model, "c2", size=SIZE, steps=2, batch=4, use_cache=False, progress_bar=False)


def test_page_has_every_tile_no_script_the_csp_and_working_anchors(tiny_model, tmp_path):
    a = tiny_atlas(tiny_model)
    out = tmp_path / "out"
    path = atlas.write_atlas_page(a, out)
    assert path == out / "atlas-vgg16-c2.html" and sorted(os.listdir(out)) == [path.name]  # nothing else written
    page = path.read_text(encoding="utf-8")
    assert "<script" not in page.lower() and " on" + "click=" not in page.lower()
    head = page.split("<head>", 1)[1]
    assert head.lstrip().startswith(CSP_META) and "script-src 'none'" in CSP_META
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", page)  # nothing fetched, only in-page links
    for c in range(6):
        tile = re.search(rf'<figure class="tile" id="f{c}">(.*?)</figure>', page).group(1)
        assert f'<a href="#f{c}"' in tile and 'src="data:image/png;base64,' in tile
        assert f"<figcaption>{c}</figcaption>" in tile
    ids = set(re.findall(r'\bid="([^"]+)"', page))
    hrefs = set(re.findall(r'href="#([^"]*)"', page))
    assert hrefs and hrefs <= ids  # every zoom, previous/next and close link has its target
    assert {"f1", "c3"} <= hrefs and 'href="#f6"' not in page and 'href="#f-1"' not in page
    for size in ("s", "m", "l"):
        assert f'id="size-{size}"' in page and f'label for="size-{size}"' in page


def test_page_replaces_its_own_file_and_never_a_foreign_one(tiny_model, tmp_path):
    a = tiny_atlas(tiny_model)
    path = atlas.write_atlas_page(a, tmp_path)
    atlas.write_atlas_page(a, tmp_path)  # an earlier atlas page: replaced
    path.write_text("<html>an instructor's own page</html>")
    with pytest.raises(LabError, match="not written by the atlas"):
        atlas.write_atlas_page(a, tmp_path)
    assert path.read_text() == "<html>an instructor's own page</html>"


def test_page_zooms_and_resizes_without_script_in_a_browser(tiny_model, tmp_path, browser):
    path = atlas.write_atlas_page(tiny_atlas(tiny_model), tmp_path)
    browser.get(path.as_uri())
    grid_width = browser.find_element("css selector", "#f3 img").size["width"]
    browser.find_element("css selector", "#f3 > a").click()
    assert browser.execute_script("return location.hash") == "#f3"
    tile = browser.find_element("css selector", "#f3")
    assert tile.value_of_css_property("position") == "fixed"
    assert browser.find_element("css selector", "#f3 img").size["width"] > 3 * grid_width
    browser.find_element("css selector", "#f3 .zoom a[href='#f4']").click()
    assert browser.find_element("css selector", "#f4").value_of_css_property("position") == "fixed"
    browser.find_element("css selector", "#f4 .zoom a[href='#c4']").click()
    assert browser.find_element("css selector", "#f4").value_of_css_property("position") == "static"
    browser.find_element("css selector", "label[for=size-l]").click()
    assert browser.find_element("css selector", "#f0 img").size["width"] > 1.5 * grid_width


# ------------------------------------------------------------------ command line
def run_cli(*args, env_extra=None, via_render_sh=False):
    env = {**os.environ, "LAB_PROGRESS": "0", "LAB_VENV": sys.prefix, **(env_extra or {})}
    cmd = (["bash", str(ROOT / "render.sh"), "--atlas", *args] if via_render_sh
           else [sys.executable, "-m", "lab_utils.atlas", *args])
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_cli_unknown_layer_is_one_line_listing_the_valid_ones(tmp_path):
    res = run_cli("block9_conv1", "--out", str(tmp_path / "out"), via_render_sh=True)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("atlas: error: unknown layer 'block9_conv1'"), res.stderr
    assert "block3_conv1" in lines[0] and "block5_conv3" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, words", [
    (["block1_pool"], "is not a conv layer"),
    (["block3_conv1", "--model", "vgg99"], "unknown model 'vgg99'"),
    (["block3_conv1", "--size", "16"], "--size must be in 32..1024"),
    (["block3_conv1", "--size", "512", "--batch", "64"], "lower --batch"),
    (["block3_conv1", "--steps", "many"], "invalid int value"),
    ([], "give the conv layer"),
])
def test_cli_bad_arguments_are_one_line(args, words, tmp_path):
    res = run_cli(*args, "--out", str(tmp_path))
    assert res.returncode == 2 and words in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_cli_refuses_a_foreign_page_before_any_work(tmp_path):
    foreign = tmp_path / "atlas-vgg16-block3_conv1.html"
    foreign.write_text("mine")
    res = run_cli("block3_conv1", "--out", str(tmp_path), env_extra={"LAB_WEIGHTS_DIR": str(tmp_path / "none")})
    assert res.returncode == 2 and "not written by the atlas" in res.stderr, res.stderr
    assert foreign.read_text() == "mine"
    res = run_cli("block3_conv1", "--out", str(foreign))
    assert res.returncode == 2 and "is a file" in res.stderr


# ------------------------------------------------------------------ real weights
@pytest.mark.weights
def test_real_vgg16_atlas_of_a_few_filters(vgg16, tmp_path):
    a = atlas.layer_atlas(vgg16, "block3_conv1", channels=[0, 31, 255], size=32, steps=8, use_cache=False,
                          progress_bar=False)
    assert a.model_name == "vgg16" and a.images.shape == (3, 32, 32, 3)
    assert (a.objective_end > a.objective_start).all()
    page = atlas.write_atlas_page(a, tmp_path).read_text()
    assert all(f'id="f{c}"' in page for c in (0, 31, 255)) and 'href="#f255"' in page


def test_exported_from_lab_utils():
    import lab_utils

    assert lab_utils.layer_atlas is atlas.layer_atlas and lab_utils.write_atlas_page is atlas.write_atlas_page
    assert lab_utils.atlas_image is atlas.atlas_image and lab_utils.LayerAtlas is atlas.LayerAtlas
