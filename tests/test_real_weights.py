"""The real VGG16 ImageNet weights: LAB.md's reference numbers, the feeding
layer, a visualization that works, and a deterministic, batch-independent scan.

Skipped without the weights file, except under LAB_REQUIRE_WEIGHTS=1 (CI),
where a missing file fails (see conftest.py). The VGG19 test runs only where
VGG19 weights exist (never required)."""
from __future__ import annotations

import numpy as np
import pytest

import lab_utils

pytestmark = pytest.mark.weights

LAYER, FILTER = "block3_conv1", 31
VGG16_TOP5 = [(63, 0.27531), (23, 0.20403), (13, 0.19700), (48, 0.12400), (20, 0.11228)]
VGG19_TOP5 = [(18, 0.12326), (51, 0.12145), (25, 0.11282), (66, 0.10684), (103, 0.09413)]
N_PROBE = 64  # first images of the embedded probe set (keeps the scans fast)


def _top5(table):
    return [(int(r.channel), round(float(r.l2_norm), 5)) for r in table.head(5).itertuples()]


def test_channel_table_reproduces_lab_reference(vgg16):
    table = lab_utils.channel_table(vgg16, LAYER, FILTER)
    assert _top5(table) == VGG16_TOP5
    assert len(table) == 10 and list(table["rank"]) == list(range(1, 11))
    assert table.attrs["n_channels"] == 128
    kernel = vgg16.get_layer(LAYER).kernel.numpy()
    for row in table.itertuples():
        np.testing.assert_array_equal(np.array(row.weights), kernel[:, :, row.channel, FILTER])
    assert len(lab_utils.channel_table(vgg16, LAYER, FILTER, top_k=6)) == 6


def test_vgg16_graph(vgg16):
    assert vgg16._lab_name == "vgg16"
    assert lab_utils.feeding_layer(vgg16, LAYER) == "block2_conv2"
    assert lab_utils.feeding_layer(vgg16, "block4_conv1") == "block3_conv3"
    assert lab_utils.feeding_layer(vgg16, "block3_conv2") == "block3_conv1"
    with pytest.raises(lab_utils.LabError, match="no feeding conv layer"):
        lab_utils.feeding_layer(vgg16, "block1_conv1")
    df = lab_utils.describe_layers(vgg16).set_index("layer")
    assert len(df) == 13
    # the rubric's mid-level: at least two conv layers before and two after
    assert not df.loc[["block1_conv1", "block1_conv2", "block5_conv2", "block5_conv3"], "mid_level"].any()
    assert df.loc[["block2_conv1", LAYER, "block5_conv1"], "mid_level"].all()
    assert lab_utils.mid_level_layers(vgg16) == list(df.index[2:-2])
    assert (df.loc[LAYER, "in_channels"], df.loc[LAYER, "out_channels"]) == (128, 256)
    with pytest.raises(lab_utils.LabError, match=r"0\.\.255"):
        lab_utils.channel_table(vgg16, LAYER, 256)


def test_visualization_of_filter_31_excites_it(vgg16):
    v = lab_utils.render_channels(vgg16, LAYER, [FILTER], size=64, steps=24, use_cache=False)
    assert v.images.shape == (1, 64, 64, 3) and v.images.dtype == np.uint8
    assert v.objective_end[0] > v.objective_start[0] + 100
    # a separate forward pass on the returned uint8 images: mean post-ReLU activation
    scan = lab_utils.scan_images(vgg16, LAYER, np.concatenate([v.start_images, v.images]), use_cache=False)
    start, end = scan.means[:, FILTER]
    assert end > 5 * start and end > start + 100, (start, end)
    # not a saturated (all-grey or clipped) image
    assert 10 < v.images.std() and (v.images == 0).mean() < 0.5 and (v.images == 255).mean() < 0.5


def test_probe_scan_is_deterministic_and_batch_independent(vgg16):
    probe = lab_utils.load_probe_set(limit=N_PROBE)
    assert len(probe) == N_PROBE
    a = lab_utils.scan_images(vgg16, LAYER, probe, batch_size=50, use_cache=False)
    b = lab_utils.scan_images(vgg16, LAYER, probe, batch_size=50, use_cache=False)
    c = lab_utils.scan_images(vgg16, LAYER, probe, batch_size=16, use_cache=False)
    assert a.means.shape == (N_PROBE, 256)
    np.testing.assert_array_equal(a.means, b.means)
    np.testing.assert_allclose(c.means, a.means, rtol=1e-4, atol=1e-3)
    ranks = [lab_utils.rank_classes(s, FILTER, top_n=N_PROBE) for s in (a, b, c)]
    assert list(ranks[0]["class"]) == list(ranks[1]["class"])
    assert list(ranks[0]["class"][:5]) == list(ranks[2]["class"][:5])
    images = lab_utils.rank_images(a, FILTER, top_n=5)
    assert list(images["class"]) == list(ranks[0]["class"][:5])  # one image per class
    assert (np.diff(ranks[0].mean_activation) <= 0).all() and ranks[0].mean_activation[0] > 0


def test_vgg19_reference_where_its_weights_exist():
    # Never required (not on these machines): skip even under LAB_REQUIRE_WEIGHTS=1.
    from lab_utils.models import weight_candidates

    found = [p for p in weight_candidates("vgg19") if p.is_file()]
    if not found:
        pytest.skip(f"no VGG19 weights ({', '.join(map(str, weight_candidates('vgg19')))}); "
                    f"LAB.md's VGG19 numbers are checked only where they exist")
    vgg19 = lab_utils.load_model("vgg19")
    assert lab_utils.feeding_layer(vgg19, LAYER) == "block2_conv2"
    assert _top5(lab_utils.channel_table(vgg19, LAYER, FILTER)) == VGG19_TOP5



def test_the_good_weights_file_loads_by_path_and_from_the_weights_dir(vgg16):
    # the corrupt-file errors (test_models.py) must not catch a good file: it loads both ways
    import h5py

    from lab_utils.models import weight_candidates

    path = next(p for p in weight_candidates("vgg16") if p.is_file())
    explicit = lab_utils.load_model("vgg16", weights=str(path))
    assert explicit._lab_weights == str(path.resolve())
    with h5py.File(path, "r") as f:
        group = f["block5_conv3"]
        kernel = group[group.attrs["weight_names"][0]][()]  # legacy layout: weight_names lists kernel, bias
    np.testing.assert_array_equal(explicit.get_layer("block5_conv3").kernel.numpy(), kernel)
    assert vgg16._lab_weights == str(path.resolve())  # the fixture loaded it from LAB_WEIGHTS_DIR
