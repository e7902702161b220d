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


def test_crops_hold_the_peak_at_their_centre_unless_clipped_by_the_border(tiny_model):
    images = np.random.default_rng(5).integers(0, 256, (6, 64, 64, 3), dtype=np.uint8)
    scan = lab_utils.scan_images(tiny_model, "c2", images, use_cache=False)
    pixels = E.ProbePixels(scan, 64, images)
    side = 16
    for image in range(len(images)):
        for f in range(scan.means.shape[1]):
            crop = pixels.crop(image, f, side)
            assert crop.shape == (side, side, 3)
            y, x = scan.peak_position(image, f)
            py, px = y * 64, x * 64  # the peak's centre in image pixels
            # find where the crop sits in the image (random pixels: a unique match)
            hits = [(t, l) for t in range(64 - side + 1) for l in range(64 - side + 1)
                    if np.array_equal(images[image][t:t + side, l:l + side], crop)]
            assert len(hits) == 1
            top, left = hits[0]
            assert top <= py <= top + side and left <= px <= left + side  # the peak is in the crop
            if side / 2 <= py <= 64 - side / 2:
                assert abs(top + side / 2 - py) <= 0.5  # centred, to the pixel
            if side / 2 <= px <= 64 - side / 2:
                assert abs(left + side / 2 - px) <= 0.5
    assert pixels.crop(0, 0, None).shape == (64, 64, 3)  # unknown receptive field: the whole image
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
    view.receptive_field = 5  # the peak-crop path: 2 x 5 < 32 px crops of the 24 px images -> whole images
    assert E.crop_side(view) == 32
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
    assert max(times) < 2.0, times


@pytest.mark.weights
def test_atlas_image_is_a_jpeg_of_every_filter(small_setup):
    explorer = small_setup.explorer()
    image = explorer.atlas()
    assert image.format == "jpeg" and image.data[:2] == b"\xff\xd8"
    assert 20_000 < len(image.data) < 1_500_000


@pytest.mark.weights
def test_use_refuses_a_choice_that_fails_the_checks_and_says_why(vgg16, tmp_path, monkeypatch):
    from lab_utils.choice import load_lab_choice

    monkeypatch.setenv("LAB_CHOICE_FILE", str(tmp_path / "lab-choice.yaml"))
    setup = lab_utils.check_parameters(probe_limit=12, steps=2, vis_size=32, top_k=100)  # fine at block3_conv1
    explorer = setup.explorer()
    explorer.layer.value = "block2_conv1"  # 64 input channels: top_k 100 cannot be
    explorer.use_button.click()
    assert "top_k" in explorer.status.value and "LabError" in explorer.status.value
    assert load_lab_choice().chosen == {}  # nothing saved


@pytest.mark.weights
def test_a_layer_that_cannot_be_scanned_is_said_and_the_explorer_goes_back(small_setup, monkeypatch):
    explorer = small_setup.explorer()
    real = small_setup.scan_layer

    def broken(layer_name):
        if layer_name == "block4_conv1":
            raise lab_utils.LabError("the probe folder went away")
        return real(layer_name)

    monkeypatch.setattr(small_setup, "scan_layer", broken)
    explorer.layer.value = "block4_conv1"
    assert explorer.layer.value == "block3_conv1" and explorer.filter.max == 255
    assert "block4_conv1 could not be scanned: the probe folder went away" in explorer.status.value
    explorer.filter.value = 9  # still answers
    assert explorer.facts.filter_index == 9 and explorer.facts.layer_name == "block3_conv1"
