"""lab_utils.featurevis on the tiny model: determinism, batching, dead starts,
the per-channel cache, and parameter checks."""
from __future__ import annotations

import numpy as np
import pytest

import lab_utils
from lab_utils import LabError, featurevis

SIZE, STEPS = 32, 12


def render(model, layer, channels, **kw):
    kw.setdefault("size", SIZE)
    kw.setdefault("steps", STEPS)
    kw.setdefault("use_cache", False)
    return lab_utils.render_channels(model, layer, channels, **kw)


def test_shape_dtype_and_order(tiny_model):
    imgs = lab_utils.visualize_channels(tiny_model, "c2", [3, 0, 5], size=SIZE, steps=STEPS, use_cache=False)
    assert imgs.shape == (3, SIZE, SIZE, 3) and imgs.dtype == np.uint8
    assert imgs.std() > 0
    # the i-th image belongs to the i-th requested channel
    alone = lab_utils.visualize_channels(tiny_model, "c2", [0], size=SIZE, steps=STEPS, use_cache=False)
    assert np.abs(imgs[1].astype(int) - alone[0]).mean() < 1.0
    assert np.abs(imgs[0].astype(int) - alone[0]).mean() > 2.0
    single = lab_utils.visualize_channels(tiny_model, "c2", 4, size=48, steps=2, use_cache=False)
    assert single.shape == (1, 48, 48, 3)


def test_same_seed_same_images_other_seed_other_images(tiny_model):
    a = lab_utils.visualize_channels(tiny_model, "c3", [0, 1], size=SIZE, steps=STEPS, seed=0, use_cache=False)
    b = lab_utils.visualize_channels(tiny_model, "c3", [0, 1], size=SIZE, steps=STEPS, seed=0, use_cache=False)
    c = lab_utils.visualize_channels(tiny_model, "c3", [0, 1], size=SIZE, steps=STEPS, seed=1, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 2.0


def test_batched_equals_rendered_alone(tiny_model):
    batch = render(tiny_model, "c2", [0, 1, 2, 3, 4, 5])
    for i, c in enumerate([1, 4]):
        alone = render(tiny_model, "c2", [c])
        diff = np.abs(batch.images[c].astype(int) - alone.images[0])
        assert diff.mean() < 0.5 and diff.max() <= 3, (c, diff.mean(), diff.max())
        np.testing.assert_allclose(batch.objective_end[c], alone.objective_end[0], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(batch.start_images[c], alone.start_images[0])


def test_ascent_raises_every_objective(tiny_model):
    v = render(tiny_model, "c2", [0, 1, 2, 3, 4, 5])
    assert v.channels == [0, 1, 2, 3, 4, 5] and v.layer_name == "c2"
    assert v.objective_start.shape == v.objective_end.shape == (6,)
    assert (v.objective_end > v.objective_start).all()
    assert np.abs(v.images.astype(int) - v.start_images).mean() > 1.0  # it did move the images


def test_objective_is_the_mean_pre_relu_output(tiny_model):
    v = render(tiny_model, "c3", [0, 2], steps=4)
    # evaluate the result images directly: mean of the pre-ReLU output of the channel
    sub = lab_utils.models.submodel(tiny_model, "c3", pre_activation=True)
    x = lab_utils.preprocess(tiny_model, v.images.astype("float32"))
    pre = sub.predict(x, verbose=0).mean(axis=(1, 2))
    # uint8 rounding of the image changes the value a little
    np.testing.assert_allclose([pre[0, 0], pre[1, 2]], v.objective_end, rtol=0.05, atol=0.05)
    # the start value (taken from the first, unshifted step) is the start image's
    x0 = lab_utils.preprocess(tiny_model, v.start_images.astype("float32"))
    pre0 = sub.predict(x0, verbose=0).mean(axis=(1, 2))
    np.testing.assert_allclose([pre0[0, 0], pre0[1, 2]], v.objective_start, rtol=0.05, atol=0.05)
    assert (featurevis.jitter_offsets(5, seed=3)[0] == 0).all() and featurevis.jitter_offsets(5, 3)[1:].any()


def test_dead_start_filter_still_rises(tiny_model):
    layer = tiny_model.get_layer("c2")
    k, b = layer.get_weights()
    b[2] = -50.0  # channel 2 is off (ReLU = 0) on every reasonable image
    layer.set_weights([k, b])
    scan = lab_utils.scan_images(tiny_model, "c2", np.full((1, SIZE, SIZE, 3), 128, np.uint8), use_cache=False)
    assert scan.means[0, 2] == 0.0  # dead on a grey start image
    v = render(tiny_model, "c2", [2, 0], steps=16)
    assert v.objective_start[0] < 0
    assert v.objective_end[0] > v.objective_start[0] + 0.1
    assert np.abs(v.images[0].astype(int) - v.start_images[0]).mean() > 1.0


def test_first_layer_reading_the_image_works(tiny_model):
    v = render(tiny_model, "c1", [0, 3])
    assert v.images.shape == (2, SIZE, SIZE, 3)
    assert (v.objective_end > v.objective_start).all()


def test_repeated_channels(tiny_model):
    v = render(tiny_model, "c2", [1, 1, 0])
    np.testing.assert_array_equal(v.images[0], v.images[1])
    assert v.channels == [1, 1, 0]


def test_cache_hit_per_channel_and_miss_on_new_weights(tiny_model, cache_tmp, monkeypatch):
    first = render(tiny_model, "c2", [0, 1], use_cache=True)
    assert len(list((cache_tmp / "vis").glob("*.npz"))) == 2
    real_step = featurevis._compiled_step
    calls = []

    def counting(model, layer_name):
        calls.append(layer_name)
        return real_step(model, layer_name)

    monkeypatch.setattr(featurevis, "_compiled_step", counting)
    again = render(tiny_model, "c2", [1, 0], use_cache=True)
    assert calls == []  # everything came from the cache
    np.testing.assert_array_equal(again.images, first.images[::-1])
    np.testing.assert_array_equal(again.objective_end, first.objective_end[::-1])
    # one new channel: only that one is optimized
    render(tiny_model, "c2", [0, 3], use_cache=True)
    assert calls == ["c2"]
    assert len(list((cache_tmp / "vis").glob("*.npz"))) == 3
    # other weights (same object): recomputed
    k = tiny_model.get_layer("c2").kernel
    k.assign(k.numpy() * -1.0)
    changed = render(tiny_model, "c2", [0, 1], use_cache=True)
    assert calls == ["c2", "c2"]
    assert np.abs(changed.images.astype(int) - first.images).mean() > 1.0
    # other size / steps / seed: other keys
    render(tiny_model, "c2", [0], use_cache=True, seed=5)
    render(tiny_model, "c2", [0], use_cache=True, steps=STEPS + 1)
    assert len(calls) == 4


def test_no_cache_writes_nothing(tiny_model, cache_tmp):
    render(tiny_model, "c2", [0], use_cache=False)
    assert not list(cache_tmp.rglob("*.npz"))


@pytest.mark.parametrize("channels, pattern", [
    ([], "channels is empty"),
    ([6], r"out of range; valid: 0\.\.5"),
    ([0, -1], r"out of range; valid: 0\.\.5"),
    ([1.0], r"integer in 0\.\.5"),
    (1.0, r"integer in 0\.\.5"),
    (["2"], r"integer in 0\.\.5"),
    ([True], r"integer in 0\.\.5"),
])
def test_bad_channels(tiny_model, channels, pattern):
    with pytest.raises(LabError, match=pattern):
        lab_utils.visualize_channels(tiny_model, "c2", channels, size=SIZE, steps=1, use_cache=False)


@pytest.mark.parametrize("layer, kw, pattern", [
    ("nope", {}, "unknown layer 'nope'.*c1, c2, c3"),
    ("p1", {}, "not a conv layer.*c1, c2, c3"),
    ("c2", {"size": 16}, "size must be an integer >= 32"),
    ("c2", {"size": 40.0}, "size must be an integer >= 32"),
    ("c2", {"steps": 0}, "steps must be an integer >= 1"),
])
def test_bad_layer_size_steps(tiny_model, layer, kw, pattern):
    kw = {"size": SIZE, "steps": 1, **kw}
    with pytest.raises(LabError, match=pattern):
        lab_utils.visualize_channels(tiny_model, layer, [0], use_cache=False, **kw)


def test_start_spectrum_depends_only_on_seed_and_channel():
    a = featurevis.start_spectrum([3, 5], 32, seed=0)
    b = featurevis.start_spectrum([5], 32, seed=0)
    assert a.shape == (2, 2, 3, 32, 17) and a.dtype == np.float32
    np.testing.assert_array_equal(a[1], b[0])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(featurevis.start_spectrum([5], 32, seed=1)[0], b[0])


# ------------------------------------------------------------------ objective without the convolution
@pytest.mark.parametrize("kernel_size,padding,size", [
    (3, "same", 9), (3, "valid", 9), (2, "same", 8), (4, "same", 7), (5, "valid", 6), (1, "same", 5),
    (3, "same", 2),   # smaller than the kernel: no column is read by every tap
    ((3, 5), "same", 6), ((2, 3), "valid", 5),
])
def test_window_sum_objective_equals_the_convolution_and_its_gradient(kernel_size, padding, size):
    # the mean pre-ReLU output of channel c_i for image i, and its gradient with respect to the
    # layer's input: tap_window_sums must give the convolution's numbers, edges and padding included
    import keras
    import tensorflow as tf

    layer = keras.layers.Conv2D(6, kernel_size, padding=padding)
    layer.build((None, size, size + 1, 4))
    rng = np.random.default_rng(3)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape).astype("float32"))
    channels = [5, 0, 2]
    kernels = tf.constant(layer.kernel.numpy()[:, :, :, channels])
    biases = tf.constant(rng.normal(size=3).astype("float32"))
    x = tf.constant(rng.normal(size=(3, size, size + 1, 4)).astype("float32"))

    def by_convolution(features):
        pre = layer.convolution_op(features, kernels) + biases
        return tf.linalg.diag_part(tf.reduce_mean(pre, axis=[1, 2]))

    weights = tf.constant([1.0, -2.0, 0.5])  # a different weight per image checks the gradient's rows
    grads = []
    for fn in (by_convolution, lambda f: featurevis.channel_objective(f, layer, kernels, biases)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            loss = tf.reduce_sum(value * weights)
        grads.append((value.numpy(), tape.gradient(loss, x).numpy()))
    (v_conv, g_conv), (v_sums, g_sums) = grads
    assert featurevis._window_sums_apply(layer, x)
    np.testing.assert_allclose(v_sums, v_conv, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g_sums, g_conv, rtol=1e-5, atol=1e-6)


def test_strided_layers_keep_the_convolution():
    import keras
    import tensorflow as tf

    layer = keras.layers.Conv2D(2, 3, strides=2, padding="same")
    layer.build((None, 8, 8, 3))
    assert not featurevis._window_sums_apply(layer, tf.zeros((1, 8, 8, 3)))
    kernels = tf.constant(layer.kernel.numpy())
    out = featurevis.channel_objective(tf.ones((2, 8, 8, 3)), layer, kernels, tf.zeros(2))
    expected = tf.linalg.diag_part(tf.reduce_mean(layer.convolution_op(tf.ones((2, 8, 8, 3)), kernels), axis=[1, 2]))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)


# ------------------------------------------------------------------ objectives as values
def test_objective_values_labels_and_negation():
    from lab_utils.featurevis import ChannelObjective, channel, channel_activation, negative_channel

    pos, neg = channel("c2", 3), negative_channel("c2", 3)
    assert -pos == neg and -neg == pos and pos != neg and neg.sign == -1
    assert {pos, channel("c2", 3)} == {pos}  # values: equal and hashable by their fields
    assert pos.label == "c2 channel 3" and neg.label == "-c2 channel 3" and str(neg) == neg.label
    assert channel_activation("c2", 3).label == "c2 channel 3 after activation"
    assert pos.cache_parts() == {"layer": "c2", "channel": 3}  # a positive channel's key as before objectives
    assert neg.cache_parts() == {"layer": "c2", "channel": 3, "sign": -1}
    with pytest.raises(LabError, match=r"sign .* \+1 or -1"):
        ChannelObjective("c2", 3, sign=2)


def test_negative_channel_lowers_the_pre_relu_mean_and_positive_raises_it(tiny_model):
    from lab_utils.featurevis import channel, negative_channel

    v = featurevis.render_objectives(tiny_model, [channel("c2", 1), negative_channel("c2", 1)], size=SIZE,
                                     steps=STEPS, use_cache=False)
    assert v.channels == [1, 1] and v.labels == ["c2 channel 1", "-c2 channel 1"]
    assert (v.objective_end > v.objective_start).all()  # each objective rose ...
    # ... so the channel's own pre-ReLU mean (measured on the uint8 images) went up for the
    # positive and down for the negative, from the same start image
    np.testing.assert_array_equal(v.start_images[0], v.start_images[1])
    sub = lab_utils.models.submodel(tiny_model, "c2", pre_activation=True)
    pre = lambda imgs: sub.predict(lab_utils.preprocess(tiny_model, imgs.astype("float32")), verbose=0)[..., 1].mean(axis=(1, 2))  # noqa: E731
    start, end = pre(v.start_images), pre(v.images)
    assert end[0] > start[0] + 0.1 and end[1] < start[1] - 0.1, (start, end)
    np.testing.assert_allclose(v.objective_start, [start[0], -start[1]], rtol=0.05, atol=0.05)
    np.testing.assert_allclose(v.objective_end, [end[0], -end[1]], rtol=0.05, atol=0.05)


def test_a_batch_of_objectives_gives_the_images_rendered_alone(tiny_model):
    from lab_utils.featurevis import channel, negative_channel

    both = featurevis.render_objectives(tiny_model, [negative_channel("c3", 2), channel("c3", 2)], size=SIZE,
                                        steps=STEPS, use_cache=False)
    for i, objective in enumerate(both.objectives):
        alone = featurevis.render_objectives(tiny_model, objective, size=SIZE, steps=STEPS, use_cache=False)
        diff = np.abs(both.images[i].astype(int) - alone.images[0])
        assert diff.mean() < 0.5 and diff.max() <= 3, (objective, diff.mean(), diff.max())
        np.testing.assert_allclose(both.objective_end[i], alone.objective_end[0], rtol=1e-3, atol=1e-3)
    # the two directions do go to different images
    assert np.abs(both.images[0].astype(int) - both.images[1]).mean() > 2.0


def test_render_channels_is_render_objectives_of_positive_channels_with_the_same_keys(tiny_model, cache_tmp):
    from lab_utils import cache
    from lab_utils.featurevis import VIS_VERSION, channel, negative_channel

    assert VIS_VERSION == "fourier-v3"  # stored notebook outputs and caches are keyed by it
    a = render(tiny_model, "c2", [4, 0, 4], use_cache=True)
    b = featurevis.render_objectives(tiny_model, [channel("c2", c) for c in (4, 0, 4)], size=SIZE, steps=STEPS,
                                     use_cache=False)
    for f in ("images", "start_images", "objective_start", "objective_end"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    assert a.objectives == b.objectives == [channel("c2", 4), channel("c2", 0), channel("c2", 4)]
    fp = lab_utils.models.model_fingerprint(tiny_model, upto="c2")

    def key(c, **extra):
        return cache.cache_key(kind="vis", version=VIS_VERSION, model=fp, layer="c2", channel=c, size=SIZE,
                               steps=STEPS, seed=0, **extra)

    assert {p.stem for p in (cache_tmp / "vis").glob("*.npz")} == {key(4), key(0)}
    featurevis.render_objectives(tiny_model, [negative_channel("c2", 0)], size=SIZE, steps=STEPS)
    assert {p.stem for p in (cache_tmp / "vis").glob("*.npz")} == {key(4), key(0), key(0, sign=-1)}
    # served from the cache: the negative's own entry, not the positive's
    again = featurevis.render_objectives(tiny_model, [channel("c2", 0), negative_channel("c2", 0)], size=SIZE,
                                         steps=STEPS)
    np.testing.assert_array_equal(again.images[0], a.images[1])
    assert np.abs(again.images[1].astype(int) - again.images[0]).mean() > 2.0


def test_measure_is_the_mean_pre_relu_output_times_the_sign(tiny_model, probe_images):
    from lab_utils.featurevis import channel, channel_activation, measure_objectives, negative_channel

    sub = lab_utils.models.submodel(tiny_model, "c2", pre_activation=True)
    pre = sub.predict(lab_utils.preprocess(tiny_model, probe_images.astype("float32")), verbose=0)
    expected = pre.mean(axis=(1, 2))  # (n images, 6 channels)
    np.testing.assert_allclose(channel("c2", 4).measure(tiny_model, probe_images), expected[:, 4], rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(negative_channel("c2", 1).measure(tiny_model, probe_images), -expected[:, 1],
                               rtol=1e-5, atol=1e-5)
    after = np.maximum(pre, 0).mean(axis=(1, 2))
    np.testing.assert_allclose(channel_activation("c2", 1).measure(tiny_model, probe_images, batch_size=4),
                               after[:, 1], rtol=1e-5, atol=1e-5)
    # one call, several objectives and batches: the columns in the objectives' order
    both = measure_objectives(tiny_model, [negative_channel("c2", 1), channel_activation("c2", 5), channel("c2", 0)],
                              probe_images, batch_size=4)
    np.testing.assert_allclose(both, np.stack([-expected[:, 1], after[:, 5], expected[:, 0]], axis=1),
                               rtol=1e-5, atol=1e-5)
    # a scan holds the same values for every channel
    scan = lab_utils.scan_images(tiny_model, "c2", probe_images, use_cache=False)
    for o in (channel("c2", 3), negative_channel("c2", 3), channel_activation("c2", 3)):
        np.testing.assert_allclose(o.from_scan(scan), o.measure(tiny_model, probe_images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("objectives, pattern", [
    ([], "objectives is empty"),
    ([("c2", 0)], "must be a ChannelObjective"),
    ([featurevis.channel("c2", 0), featurevis.channel("c3", 0)], "one layer, got c2, c3"),
    ([featurevis.channel("c2", 6)], r"channel of c2 .*out of range; valid: 0\.\.5"),
    ([featurevis.channel("p1", 0)], "not a conv layer"),
    ([featurevis.channel_activation("c2", 0)], "not an ascent objective"),
])
def test_bad_objectives(tiny_model, objectives, pattern):
    with pytest.raises(LabError, match=pattern):
        featurevis.render_objectives(tiny_model, objectives, size=SIZE, steps=1, use_cache=False)
