"""The ablation experiment (issue 11, point 5): exact numbers on hand-set kernels, the
masks built from the channel table, and agreement with the real layer's output."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lab_utils
from lab_utils import ablation as A


def test_masked_responses_are_the_hand_computed_sums():
    x = np.array([1.0, 2.0, 4.0], np.float32).reshape(1, 1, 1, 3)  # one image, one position, 3 channels
    kernel = np.array([3.0, -1.0, 0.5], np.float32).reshape(1, 1, 3)
    masks = np.array([[1, 1, 1], [0, 1, 1], [1, 0, 1], [0, 1, 0]], np.float32)
    out = A.response_with_masks(x, kernel, 0.5, masks, padding="valid")
    # 3*1 - 1*2 + 0.5*4 + 0.5 = 3.5; without ch 0: 0.5; without ch 1: 5.5; ch 1 alone: -1.5 -> ReLU 0
    assert out[:, 0] == pytest.approx([3.5, 0.5, 5.5, 0.0])


def test_condition_masks_follow_the_table_categories():
    table = pd.DataFrame({"channel": [4, 1, 2], "category": ["excitatory", "inhibitory", "balanced"]})
    masks = A.condition_masks(table, 6)
    assert list(masks) == list(A.CONDITIONS)
    assert masks[A.ALL_INPUTS][1] == [] and masks[A.ALL_INPUTS][0].tolist() == [1] * 6
    assert masks[A.NO_EXCITATORY][1] == [4] and masks[A.NO_EXCITATORY][0].tolist() == [1, 1, 1, 1, 0, 1]
    assert masks[A.NO_INHIBITORY][1] == [1]
    assert masks[A.ONLY_KEPT][1] == [0, 3, 5]  # everything but the kept 4, 1, 2 (balanced 2 stays)


def _hand_set_model():
    import keras

    inp = keras.Input((None, None, 3))
    c1 = keras.layers.Conv2D(3, 1, activation="relu", name="c1")(inp)
    c2 = keras.layers.Conv2D(2, 1, activation="relu", name="c2")(c1)
    model = keras.Model(inp, c2)
    model.get_layer("c1").set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3), np.zeros(3, np.float32)])
    k2 = np.zeros((1, 1, 3, 2), np.float32)
    k2[0, 0, :, 0] = [1.0, -1.0, 0.5]
    k2[0, 0, :, 1] = [0.1, 0.1, 0.1]
    model.get_layer("c2").set_weights([k2, np.zeros(2, np.float32)])
    model._lab_name = "hand-set"
    return model


def test_ablation_on_a_hand_set_model_gives_exact_numbers():
    from lab_utils.circuits import channel_table

    model = _hand_set_model()
    images = np.full((2, 4, 4, 3), 200, np.uint8)
    x = np.array([200 - 103.939, 200 - 116.779, 200 - 123.68])  # the kit's VGG preprocessing (BGR, mean)
    table = channel_table(model, "c2", 0, top_k=2)
    assert table["channel"].tolist() == [0, 1] and table["category"].tolist() == ["excitatory", "inhibitory"]
    result = A.ablate(model, "c2", 0, images, table)
    full = x[0] - x[1] + 0.5 * x[2]
    assert result.value(A.ALL_INPUTS) == pytest.approx(full, rel=1e-5)
    assert result.value(A.NO_EXCITATORY) == 0.0  # -x1 + 0.5 x2 < 0: ReLU
    assert result.value(A.NO_INHIBITORY) == pytest.approx(x[0] + 0.5 * x[2], rel=1e-5)
    assert result.value(A.ONLY_KEPT) == pytest.approx(x[0] - x[1], rel=1e-5)
    assert result.table["share_of_full"].iloc[3] == pytest.approx((x[0] - x[1]) / full, rel=1e-5)
    assert result.table["channels_zeroed"].tolist() == [0, 1, 1, 1]
    text = result.paragraph()
    assert f"responds {full:.1f}" in text and "(0) gives 0.0 (-100%)" in text and "(1) gives" in text
    lines = A.format_ablation(result).splitlines()
    assert lines[0].startswith("condition") and len(lines) == 5
    assert lines[1].startswith(A.ALL_INPUTS) and lines[1].endswith("100%") and lines[2].endswith("0%")


def test_all_inputs_is_the_layers_own_output_through_pooling(tiny_model, probe_images):
    from lab_utils.circuits import channel_table

    scan = lab_utils.scan_images(tiny_model, "c2", probe_images[:4], use_cache=False)
    for f in range(3):
        result = A.ablate(tiny_model, "c2", f, probe_images[:4], channel_table(tiny_model, "c2", f, 2))
        assert result.table["per_image"].iloc[0] == pytest.approx(scan.means[:, f].tolist(), rel=1e-4, abs=1e-5)
        # the experiment measures the objective value: the filter's mean after ReLU
        assert result.objective == lab_utils.featurevis.channel_activation("c2", f)
        measured = result.objective.measure(tiny_model, probe_images[:4])
        assert result.table["per_image"].iloc[0] == pytest.approx(measured.tolist(), rel=1e-4, abs=1e-5)
    with pytest.raises(lab_utils.LabError):
        A.ablate(tiny_model, "c2", 0, probe_images[:0], channel_table(tiny_model, "c2", 0, 2))
