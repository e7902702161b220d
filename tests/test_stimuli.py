"""Synthetic stimuli (issue 11, point 6): gratings as specified, the stimulus set's order,
and a hand-set edge detector whose tuning is known."""
from __future__ import annotations

import numpy as np
import pytest

import lab_utils
from lab_utils import stimuli as S


def test_a_grating_is_a_sinusoid_with_the_asked_orientation_period_and_phase():
    g = S.grating(64, 0, 8, 0.0)[..., 0].astype(float)
    assert np.all(g == g[:1])  # orientation 0: vertical stripes, constant down each column
    assert abs(g.mean() - 127.5) < 2 and g.min() == 0 and g.max() == 255
    assert np.allclose(g[0, :56], g[0, 8:64], atol=1)  # period 8 px
    h = S.grating(64, 90, 16, 0.0)[..., 0]
    assert np.all(h == h[:, :1])  # 90 deg: horizontal stripes
    shifted = S.grating(64, 0, 8, np.pi)[..., 0].astype(float)
    assert np.allclose(shifted + g, 255, atol=1)  # half a cycle later: the negative


def test_the_stimulus_set_nests_orientation_period_phase_then_colours():
    images, described = S.stimulus_set(16)
    n_g = len(S.ORIENTATIONS_DEG) * len(S.PERIODS_PX) * S.N_PHASES
    assert images.shape == (n_g + len(S.COLOURS), 16, 16, 3) and images.dtype == np.uint8
    assert described[0] == ("grating", 0, S.PERIODS_PX[0], 0)
    assert described[S.N_PHASES] == ("grating", 0, S.PERIODS_PX[1], 0)
    assert described[n_g] == ("colour", "black", None, None) and np.all(images[n_g] == 0)


def _edge_detector():
    import keras

    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(2, 3, activation="relu", name="edges")(inp)
    model = keras.Model(inp, out)
    sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    kernel = np.zeros((3, 3, 3, 2), np.float32)
    for c in range(3):
        kernel[:, :, c, 0] = sobel_x  # filter 0: luminance rising along x (vertical edges)
        kernel[:, :, c, 1] = sobel_x.T  # filter 1: rising along y (horizontal edges)
    model.get_layer("edges").set_weights([kernel, np.zeros(2, np.float32)])
    model._lab_name = "edges"
    return model


def test_a_vertical_edge_detector_prefers_vertical_stripes_and_ignores_colour_fields():
    model = _edge_detector()
    vertical = S.tuning(model, "edges", 0, size=32)
    horizontal = S.tuning(model, "edges", 1, size=32)
    def off_axis(o, axis):  # circular distance in degrees, orientation being modulo 180
        d = abs(o - axis) % 180
        return min(d, 180 - d)

    # the preferred orientation is the detector's (within one 15-degree step: the 3x3 kernel
    # on pixels is not perfectly isotropic)
    assert off_axis(vertical.preferred[0], 0) <= 15 and off_axis(horizontal.preferred[0], 90) <= 15
    i90, i0 = S.ORIENTATIONS_DEG.index(90), S.ORIENTATIONS_DEG.index(0)
    top = vertical.gratings.max()
    # silent, up to float32 rounding of the preprocessing's per-channel offsets
    assert np.all(vertical.gratings[i90] < 1e-5 * top) and np.all(horizontal.gratings[i0] < 1e-5 * top)
    assert np.all(vertical.gratings[i0] > 0)
    assert vertical.orientation_selectivity() == pytest.approx(1.0, abs=1e-5)  # silent to horizontal stripes
    assert all(v == pytest.approx(0.0, abs=1e-3) for v in vertical.colours.values())  # no edge in a plain field
    assert vertical.gratings.shape == (len(S.ORIENTATIONS_DEG), len(S.PERIODS_PX))
    assert "orientation selectivity 1.00" in vertical.text()


def test_tuning_responses_are_the_objective_measured_on_the_stimuli(tiny_model):
    t = S.tuning(tiny_model, "c2", 3, size=32)
    assert t.objective == lab_utils.featurevis.channel_activation("c2", 3)
    images, described = S.stimulus_set(32)
    measured = t.objective.measure(tiny_model, images).astype(np.float64)
    n_g = len(S.ORIENTATIONS_DEG) * len(S.PERIODS_PX) * S.N_PHASES
    per_phase = measured[:n_g].reshape(len(S.ORIENTATIONS_DEG), len(S.PERIODS_PX), S.N_PHASES)
    np.testing.assert_allclose(t.gratings, per_phase.max(axis=2), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(list(t.colours.values()), measured[n_g:], rtol=1e-4, atol=1e-5)
    assert t.gratings.max() > 0  # not a silent filter: the comparison compares something
