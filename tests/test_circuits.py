"""lab_utils.circuits: single-channel filters, L2 ranking and the two
categorization rules, against kernels set by hand in a tiny model."""
from __future__ import annotations

import numpy as np
import pytest

import lab_utils
from lab_utils import LabError, circuits

F = 2  # hand-set filter of c2 (4 input channels: the outputs of c1)
G = 4  # second hand-set filter: the "balanced" cases

# filter F
DISAGREE = np.array([[0.1, -0.5, 0.1], [-0.5, 0.1, -0.5], [0.1, -0.5, 0.1]])  # 5 small +, 4 large -
TIE = np.array([[0.3, -0.2, 0.1], [0.0, 0.4, -0.1], [0.2, 0.2, -0.3]])  # channel 1 = TIE, channel 3 = -TIE
NEAR_ZERO = np.full((3, 3), 1e-7)
# filter G
EQUAL_COUNTS = np.array([[0.5, -0.1, 0.5], [-0.1, 0.0, -0.1], [0.5, -0.1, 0.5]])  # 4 +, 4 -, sum 1.6
ZERO_SUM = np.array([[0.4, -0.2, 0.0], [-0.2, 0.4, 0.0], [-0.2, -0.2, 0.0]])  # 2 +, 4 -, sum 0
BALANCED = np.array([[0.25, -0.25, 0.25], [-0.25, 0.0, -0.25], [0.25, -0.25, 0.25]])  # 4 +, 4 -, sum 0


@pytest.fixture
def model(tiny_model):
    layer = tiny_model.get_layer("c2")
    kernel, bias = layer.get_weights()
    kernel[:, :, :, F] = np.stack([DISAGREE, TIE, NEAR_ZERO, -TIE], axis=-1)
    kernel[:, :, :, G] = np.stack([EQUAL_COUNTS, ZERO_SUM, BALANCED, np.zeros((3, 3))], axis=-1)
    kernel[:, :, :, 5] = 0.0  # an all-zero filter
    layer.set_weights([kernel, bias])
    return tiny_model


def f32(a):
    """What the model stores: float32 values, read back as float64."""
    return np.asarray(a, np.float32).astype(np.float64)


def test_filter_kernel_is_kernel_slice(model):
    kernel = model.get_layer("c2").kernel.numpy()
    w = lab_utils.filter_kernel(model, "c2", F)
    assert w.shape == (3, 3, 4) and w.dtype == np.float64
    np.testing.assert_array_equal(w, kernel[:, :, :, F])


def test_channel_norms_indexed_by_input_channel(model):
    norms = lab_utils.channel_norms(model, "c2", F)
    expected = [np.sqrt((f32(s) ** 2).sum()) for s in (DISAGREE, TIE, NEAR_ZERO, -TIE)]
    np.testing.assert_allclose(norms, expected, rtol=1e-12)


def test_channel_table_values_order_tie_and_near_zero(model):
    t = lab_utils.channel_table(model, "c2", F)
    assert list(t.columns) == ["rank", "channel", "l2_norm", "n_positive", "n_negative", "weight_sum",
                               "weight_mean", "by_sign_count", "by_sum", "category", "rules_agree", "weights"]
    # DISAGREE has the largest norm; TIE (channel 1) and -TIE (channel 3) tie: lower channel first;
    # the near-zero channel 2 is dropped
    assert list(t.channel) == [0, 1, 3]
    assert list(t["rank"]) == [1, 2, 3]
    assert t.l2_norm[1] == t.l2_norm[2]
    np.testing.assert_allclose(t.l2_norm, [np.sqrt((f32(DISAGREE) ** 2).sum()), np.sqrt((f32(TIE) ** 2).sum()),
                                           np.sqrt((f32(TIE) ** 2).sum())], rtol=1e-12)
    assert t.l2_norm[0] == pytest.approx(np.sqrt(5 * 0.01 + 4 * 0.25), rel=1e-6)
    assert list(t.n_positive) == [5, 5, 3]
    assert list(t.n_negative) == [4, 3, 5]
    np.testing.assert_allclose(t.weight_sum, [f32(DISAGREE).sum(), f32(TIE).sum(), -f32(TIE).sum()], rtol=1e-12)
    assert t.weight_sum[0] == pytest.approx(-1.5, rel=1e-6)
    np.testing.assert_allclose(t.weight_mean, t.weight_sum / 9, rtol=1e-12)
    assert t.attrs["n_channels"] == 4 and t.attrs["n_near_zero"] == 1
    assert t.attrs["layer"] == "c2" and t.attrs["filter_index"] == F
    assert t.attrs["rule"] == circuits.CATEGORY_RULE


def test_the_two_rules_disagree_where_they_should(model):
    t = lab_utils.channel_table(model, "c2", F).set_index("channel")
    # 5 small positive vs 4 large negative: majority of signs says excitatory, the sum inhibitory
    assert t.loc[0, "by_sign_count"] == "excitatory"
    assert t.loc[0, "by_sum"] == "inhibitory"
    assert not t.loc[0, "rules_agree"]
    # TIE: 5 +, 3 -, sum 0.6 > 0; -TIE: the opposite
    assert (t.loc[1, "by_sign_count"], t.loc[1, "by_sum"]) == ("excitatory", "excitatory")
    assert (t.loc[3, "by_sign_count"], t.loc[3, "by_sum"]) == ("inhibitory", "inhibitory")
    assert t.loc[1, "rules_agree"] and t.loc[3, "rules_agree"]
    assert (t["category"] == t[circuits.CATEGORY_RULE]).all()


def test_balanced_cases(model):
    t = lab_utils.channel_table(model, "c2", G).set_index("channel")
    assert list(t.index) == [0, 2, 1]  # norms: 1.0198, 0.7071, 0.6928; channel 3 (all zero) dropped
    # equal counts, positive sum
    assert (t.loc[0, "n_positive"], t.loc[0, "n_negative"]) == (4, 4)
    assert (t.loc[0, "by_sign_count"], t.loc[0, "by_sum"]) == ("balanced", "excitatory")
    # more negatives, zero sum
    assert t.loc[1, "weight_sum"] == pytest.approx(0.0, abs=1e-12)
    assert (t.loc[1, "by_sign_count"], t.loc[1, "by_sum"]) == ("inhibitory", "balanced")
    # both balanced
    assert (t.loc[2, "by_sign_count"], t.loc[2, "by_sum"]) == ("balanced", "balanced")
    assert t.loc[2, "rules_agree"]
    assert t.attrs["n_near_zero"] == 1


def test_weights_column_is_each_channels_own_slice(model):
    kernel = model.get_layer("c2").kernel.numpy()
    for f in (F, G, 0, 1):
        t = lab_utils.channel_table(model, "c2", f)
        seen = []
        for row in t.itertuples():
            w = np.array(row.weights)
            assert w.shape == (3, 3)
            np.testing.assert_array_equal(w, kernel[:, :, row.channel, f])
            assert not any(np.array_equal(w, s) for s in seen), "two channels show the same 3x3 matrix"
            seen.append(w)
            assert row.n_positive == int((w > 0).sum()) and row.n_negative == int((w < 0).sum())
            assert row.l2_norm == pytest.approx(np.sqrt((w ** 2).sum()), rel=1e-12)
            assert row.weight_sum == pytest.approx(w.sum(), rel=1e-9, abs=1e-12)


def test_random_filter_ranked_by_norm_and_zero_based(model):
    # filter 0 of c3 (6 input channels, random weights): the table is the argsort of the norms
    norms = lab_utils.channel_norms(model, "c3", 0)
    t = lab_utils.channel_table(model, "c3", 0)
    assert list(t.channel) == list(np.argsort(-norms, kind="stable"))
    assert (np.diff(t.l2_norm) <= 0).all()
    assert t.channel.min() >= 0 and t.channel.max() <= 5  # 0-based input channels of c3
    assert set(t.channel) == set(range(6))


def test_top_k_keeps_the_strongest(model):
    t = lab_utils.channel_table(model, "c3", 0, top_k=2)
    full = lab_utils.channel_table(model, "c3", 0)
    assert len(t) == 2 and list(t.channel) == list(full.channel[:2])
    assert len(lab_utils.channel_table(model, "c3", 0, top_k=100)) == 6
    assert t.attrs["cut_norm"] == pytest.approx(full.l2_norm[1])


def test_all_zero_filter_gives_an_empty_table(model):
    t = lab_utils.channel_table(model, "c2", 5)
    assert len(t) == 0 and t.attrs["n_near_zero"] == 4


@pytest.mark.parametrize("top_k", [0, -3, 1.5, True, "10"])
def test_bad_top_k(model, top_k):
    with pytest.raises(LabError, match="top_k must be an integer >= 1"):
        lab_utils.channel_table(model, "c2", F, top_k=top_k)


@pytest.mark.parametrize("layer, index, pattern", [
    ("c2", 6, r"0\.\.5"), ("c2", -1, r"0\.\.5"), ("c3", 5, r"0\.\.4"), ("c2", 2.0, "integer"),
    ("nope", 0, "unknown layer.*c1, c2, c3"), ("p1", 0, "not a conv layer.*c1, c2, c3"),
])
def test_bad_layer_or_filter(model, layer, index, pattern):
    with pytest.raises(LabError, match=pattern):
        lab_utils.channel_table(model, layer, index)
    with pytest.raises(ValueError, match=pattern):
        lab_utils.filter_kernel(model, layer, index)


def test_circuit_paragraph_counts_and_numbers(model):
    t = lab_utils.channel_table(model, "c2", F)
    text = lab_utils.circuit_paragraph("vgg16", "c2", F, "c1", t)
    assert "filter 2 (0-based)" in text and "from c1" in text
    assert "0 (inhibitory, L2 1.025)" in text  # category = by_sum rule
    assert "1 are excitatory, 2 inhibitory and 0 balanced" in text
    assert "disagree on 1 of them" in text
    assert circuits.category_counts(t) == {"excitatory": 1, "inhibitory": 2, "balanced": 0}
