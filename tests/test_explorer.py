"""The filter explorer of notebook 02 (issue 10, points 2 and 3): its facts from the
cached scan (tiny models and hand-made numbers), the static atlas, and the widgets
driven from Python on the real VGG16 (set values, ``.click()``)."""
from __future__ import annotations

import time

import numpy as np
import pytest

import lab_utils
from lab_utils import explorer as E
from lab_utils import probe


def test_weight_mass_counts_the_fewest_channels_carrying_each_share():
    mass = E.weight_mass([3.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # squared: 9 of 15 in channel 0
    assert mass.counts == {0.5: 1, 0.8: 4, 0.9: 6}  # 9+1+1+1 = 12 = 0.8 x 15
    assert "50% of the L2 mass in 1 of 8 input channels" in mass.text()
    assert E.weight_mass(np.ones(4)).counts == {0.5: 2, 0.8: 4, 0.9: 4}  # even spread: exact shares count
    assert E.weight_mass(np.zeros(3)).counts == {0.5: 1, 0.8: 1, 0.9: 1}  # no weight at all: no crash


def test_correlations_are_pearson_and_silent_filters_correlate_with_nothing():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    means = np.stack([a, 2 * a + 1, -a, np.zeros(50), rng.normal(size=50)], axis=1)
    corr = E.filter_correlations(means)
    assert corr[0, 1] == pytest.approx(1.0, abs=1e-6) and corr[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert np.all(corr[3, [0, 1, 2, 4]] == 0) and corr[3, 3] == 1.0
    live = [0, 1, 2, 4]
    assert np.allclose(corr[np.ix_(live, live)], np.corrcoef(means[:, live].T), atol=1e-6)


def _view(tiny_model, probe_images):
    scan = lab_utils.scan_images(tiny_model, "c2", probe_images, use_cache=False)
    return E.layer_view(tiny_model, "c2", scan)


def test_similar_filters_are_the_highest_correlations_with_their_top_images(tiny_model, probe_images):
    view = _view(tiny_model, probe_images)
    similar = E.similar_filters(view, 2, n=3)
    corr = view.correlations[2]
    others = sorted((c for c in range(view.n_filters) if c != 2), key=lambda c: (-corr[c], c))
    assert [s.filter_index for s in similar] == others[:3]
    for s in similar:
        assert s.correlation == pytest.approx(float(corr[s.filter_index]))
        assert s.top_image == int(np.argmax(view.scan.means[:, s.filter_index]))
    with pytest.raises(lab_utils.LabError):
        E.similar_filters(view, view.n_filters)


def test_filter_facts_agree_with_the_rankings_and_the_circuit_norms(tiny_model, probe_images):
    from lab_utils.circuits import channel_norms

    view = _view(tiny_model, probe_images)
    facts = E.filter_facts(view, 4, n_images=3, n_classes=2, n_similar=2)
    assert facts.top_images["image"].tolist() == probe.rank_images(view.scan, 4, 3)["image"].tolist()
    assert facts.top_classes["n_images"].tolist() == probe.rank_classes(view.scan, 4, 2)["n_images"].tolist()
    assert np.allclose(facts.mass.norms, channel_norms(tiny_model, "c2", 4))  # one definition of the norm
    assert facts.peak_mean_activation == pytest.approx(float(view.scan.means[:, 4].max()))
    assert len(facts.similar) == 2


def test_crops_are_centred_on_the_peak_and_stay_inside_the_image(tiny_model, probe_images):
    view = _view(tiny_model, probe_images)
    pixels = E.ProbePixels(view.scan, 24, probe_images)
    for image in range(len(probe_images)):
        for f in range(view.n_filters):
            crop = pixels.crop(image, f, 10)
            assert crop.shape == (10, 10, 3)
            y, x = view.scan.peak_position(image, f)
            top = int(np.clip(round(y * 24 - 5), 0, 14))
            left = int(np.clip(round(x * 24 - 5), 0, 14))
            assert np.array_equal(crop, probe_images[image][top:top + 10, left:left + 10])
    assert pixels.crop(0, 0, None).shape == (24, 24, 3)  # unknown receptive field: the whole image
    assert pixels.png(0, 1, 10) is pixels.png(0, 1, 10)  # thumbnails are made once


def test_atlas_mosaic_has_one_tile_per_filter_and_greys_silent_ones(tiny_model, probe_images):
    view = _view(tiny_model, probe_images)
    view.scan.means[:, 5] = 0.0  # a filter silent on every image
    pixels = E.ProbePixels(view.scan, 24, probe_images)
    mosaic = E.atlas_mosaic(view, pixels, tile=8, columns=4)
    assert mosaic.shape == (2 * 8, 4 * 8, 3)  # 6 filters in rows of 4
    assert np.all(mosaic[8:16, 8:16] == 200)  # filter 5: row 1, column 1
    assert np.all(mosaic[8:16, 16:] == 235)  # no filter 6 or 7: background
    live = next(f for f in range(4) if view.scan.means[:, f].max() > 0)  # a tile of row 0 from an image
    crop = E.ProbePixels(view.scan, 24, probe_images).crop(view.top_image(live), live, E.crop_side(view))
    assert not np.all(mosaic[:8, 8 * live:8 * live + 8] == 200) and crop.shape == (24, 24, 3)
    fig = E.atlas_figure(view, pixels, chosen=2, columns=4)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[2].startswith("2: ") and len(texts) == 6
    similar = {s.filter_index for s in E.similar_filters(view, 2)}
    coloured = {int(t.get_text().split(":")[0]) for t in fig.axes[0].texts if t.get_color() != "#222"}
    assert coloured == similar | {2}


# ------------------------------------------------------------------ widgets, real VGG16


@pytest.fixture
def small_setup(vgg16, tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CHOICE_FILE", str(tmp_path / "lab-choice.yaml"))
    return lab_utils.check_parameters(probe_limit=40, steps=2, vis_size=32)


@pytest.mark.weights
def test_explorer_answers_from_the_scan_and_writes_the_choice(small_setup):
    from lab_utils.choice import load_lab_choice

    explorer = small_setup.explorer()
    assert explorer.facts.filter_index == 31 and explorer.layer.value == "block3_conv1"
    scan = small_setup.scan()
    explorer.filter.value = 7
    facts = explorer.facts
    assert facts.filter_index == 7
    assert facts.top_images["image"].tolist() == probe.rank_images(scan, 7, E.N_TOP_IMAGES)["image"].tolist()
    assert len(explorer.top_box.children) == E.N_TOP_IMAGES and len(explorer.similar_box.children) == E.N_SIMILAR
    assert "block3_conv1 filter 7" in explorer.status.value
    assert facts.top_classes["class"].iloc[0] in explorer.classes_html.value
    # clicking a similar filter's "open" button explores that filter
    first = facts.similar[0].filter_index
    explorer.similar_box.children[0].children[1].click()
    assert explorer.filter.value == first and explorer.facts.filter_index == first
    # the synthesized image on request: notebook 02's recipe, cached
    vis = explorer.visualize()
    assert vis.images.shape == (1, 32, 32, 3) and len(explorer.synthesized.children) == 2
    # "use this filter" writes the layer and the filter, nothing else
    explorer.use_button.click()
    assert load_lab_choice().chosen == {"layer_name": "block3_conv1", "filter_index": first}
    assert "Saved: block3_conv1 filter" in explorer.status.value
    # another layer: scanned once, the slider's range follows the layer
    explorer.layer.value = "block4_conv1"
    assert explorer.filter.max == 511 and explorer.facts.layer_name == "block4_conv1"
    explorer.filter.value = 300
    explorer.use_button.click()
    assert load_lab_choice().chosen == {"layer_name": "block4_conv1", "filter_index": 300}
    # what a page without widgets shows: our sentence, never the widget's repr
    bundle = explorer._repr_mimebundle_()
    assert bundle["text/plain"] == E.WIDGET_TEXT and "application/vnd.jupyter.widget-view+json" in bundle


@pytest.mark.weights
def test_switching_filter_answers_fast_with_the_scan_cached(small_setup):
    explorer = small_setup.explorer()
    times = []
    for f in (3, 90, 200, 4):
        t0 = time.perf_counter()
        explorer.filter.value = f
        times.append(time.perf_counter() - t0)
    assert explorer.facts.filter_index == 4
    # a correctness bound, not a benchmark (bench/ has the 0.5 s target): a new pass over
    # the images (several seconds here) would show
    assert min(times) < 2.0, times


@pytest.mark.weights
def test_atlas_image_is_a_jpeg_of_every_filter(small_setup):
    explorer = small_setup.explorer()
    image = explorer.atlas()
    assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8"
    assert 20_000 < len(image.data) < 1_500_000
