"""Steps 2 and 4: feature visualization by gradient ascent.

Organized like Lucid, in four small pieces:
- **parameterization** (what is optimized): ``fourier_rgb`` maps a spectrum
  variable to an RGB image in [0, 1] through a 1/f-scaled Fourier basis and
  ImageNet colour decorrelation; natural-looking images, no saturation.
- **transforms** (how it is perturbed): ``jitter`` rolls the image by a few
  random pixels each step, so the result does not depend on pixel alignment.
- **objective** (what is maximized): ``channel_objective`` is the mean over
  positions of the *pre-ReLU* output of channel c: its gradient is non-zero
  even where the ReLU is off on the start image (no "dead start"). Being a
  mean of a convolution, it is computed from window sums of the layer's input
  (``tap_window_sums``), without convolving.
- **loop** (render): ``render_channels`` runs Adam on all requested channels
  in **one batch** with one ``tf.function``-compiled step.

Images are the model's native RGB 0..255 before its preprocessing, which is
applied inside the step (VGG: RGB->BGR, mean subtraction). Same seed, same
images: the start spectrum of channel c depends only on (seed, c), the jitter
offsets only on the seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import cache
from .config import LabError, progress
from .models import built_once, check_index, get_conv_layer, input_submodel, model_fingerprint, preprocess

# Lucid's ImageNet colour correlation (square root of the RGB covariance, SVD).
COLOR_CORRELATION_SVD_SQRT = np.array(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32)
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))

DEFAULT_SIZE = 128      # pixels, square
DEFAULT_STEPS = 64      # Adam steps
LEARNING_RATE = 0.05    # Adam on the Fourier coefficients (Lucid's default)
JITTER = 8              # maximum roll, pixels
SPECTRUM_SD = 0.01      # std of the random start spectrum
VIS_VERSION = "fourier-v3"  # part of the cache key: bump when the recipe or its numerics change


# ------------------------------------------------------------ parameterization
def _frequency_scale(size: int) -> np.ndarray:
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    freqs = np.sqrt(fx ** 2 + fy ** 2)
    scale = 1.0 / np.maximum(freqs, 1.0 / size)
    return (scale * size).astype(np.float32)  # (size, size//2+1)


def start_spectrum(channels, size: int, seed: int) -> np.ndarray:
    """Random start, float32 (N, 2, 3, size, size//2+1); row i depends only on (seed, channels[i])."""
    rows = [np.random.default_rng([int(seed), int(c)]).normal(0, SPECTRUM_SD, (2, 3, size, size // 2 + 1))
            for c in channels]
    return np.stack(rows).astype(np.float32)


def fourier_rgb(spectrum, scale):
    """Spectrum variable (N, 2, 3, H, W//2+1) -> RGB image (N, H, W, 3) in [0, 1]."""
    import tensorflow as tf

    size = scale.shape[0]
    real, imag = tf.unstack(spectrum, axis=1)  # unstack, not slicing: its gradient is one cheap stack
    coeffs = tf.complex(real, imag) * scale  # scale: complex64 (H, W//2+1)
    img = tf.signal.irfft2d(coeffs, fft_length=[size, size])  # (N, 3, H, W)
    img = tf.transpose(img, [0, 2, 3, 1]) / 4.0
    img = tf.tensordot(img, tf.constant(COLOR_CORRELATION.T), axes=1)
    return tf.sigmoid(img)


# ------------------------------------------------------------ transforms
def jitter(images, shift):
    """Roll the batch by ``shift`` = (dy, dx) pixels (int32 tensor)."""
    import tensorflow as tf

    return tf.roll(images, shift=shift, axis=[1, 2])


def jitter_offsets(steps: int, seed: int) -> np.ndarray:
    """(steps, 2) int32 rolls (dy, dx); the first is (0, 0), so the first step's
    objective is the objective of the start image (no extra forward pass for it)."""
    offsets = np.random.default_rng([int(seed), 7919]).integers(-JITTER, JITTER + 1, size=(steps, 2))
    offsets[0] = 0
    return offsets.astype(np.int32)


# ------------------------------------------------------------ objective
def channel_objective(features, layer, kernels, biases):
    """Mean pre-ReLU output of channel c_i for batch element i: (N,).

    ``features`` is the layer's input (N, h, w, c_in); ``kernels`` is
    ``kernel[:, :, :, channels]`` (kh, kw, c_in, N): only output channel c_i is
    computed for image i. The mean over positions of a convolution is linear, so
    for stride 1 it is the kernel applied to ``tap_window_sums`` (no convolution:
    ~13% of an ascent step at block2_conv2); other layers run the convolution.
    """
    import tensorflow as tf

    if _window_sums_apply(layer, features):
        sums, n_positions = tap_window_sums(features, kernels.shape[0], kernels.shape[1], layer.padding)
        return tf.einsum("nyxc,yxcn->n", sums, kernels) / n_positions + biases
    pre = layer.convolution_op(features, kernels) + biases  # (N, h, w, N)
    per = tf.reduce_mean(pre, axis=[1, 2])  # (N images, N channels)
    return tf.linalg.diag_part(per)


def _window_sums_apply(layer, features) -> bool:
    return (features.shape[1] is not None and features.shape[2] is not None
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.padding in ("same", "valid") and layer.data_format == "channels_last"
            and getattr(layer, "groups", 1) == 1)


def _tap_rows(size: int, k: int, padding: str) -> np.ndarray:
    """(k, size) 0/1 matrix: row t marks the input rows that tap t reads over all
    output positions (stride 1; TF 'same' pads (k-1)//2 before, the rest after)."""
    rows = np.zeros((k, size), np.float32)
    before = (k - 1) // 2 if padding == "same" else 0
    n_out = size if padding == "same" else size - k + 1
    for t in range(k):
        lo = t - before
        rows[t, max(0, lo):min(size, lo + n_out)] = 1.0
    return rows


def tap_window_sums(features, kh: int, kw: int, padding: str):
    """For each tap (dy, dx) of a kh x kw stride-1 convolution, the sum over all
    output positions of the input value it reads: ((N, kh, kw, c_in), number of
    output positions). Zero padding reads nothing, so it adds nothing.

    Every tap reads all columns but a few at the left and right edges, so the
    sums are row sums minus those edge columns, and the gradient is one row
    gradient broadcast over the inner columns (a custom gradient: TensorFlow's
    own would write several full-size tensors).
    """
    import tensorflow as tf

    h, w = int(features.shape[1]), int(features.shape[2])
    row_taps = _tap_rows(h, kh, padding)  # (kh, h)
    col_taps = _tap_rows(w, kw, padding)  # (kw, w)
    read_by_all = col_taps.all(axis=0)
    inner = np.flatnonzero(read_by_all)
    left, right = (int(inner[0]), w - 1 - int(inner[-1])) if len(inner) else (w, 0)
    edge_cols = np.r_[0:left, w - right:w].astype(int)
    skipped = tf.constant(1.0 - col_taps[:, edge_cols])  # (kw, n_edge): 1 where tap dx skips the column
    edge_taps = tf.constant(col_taps[:, edge_cols].T)    # (n_edge, kw)
    rows = tf.constant(row_taps)
    rows_t = tf.constant(row_taps.T)

    def edges(x):
        return tf.concat([x[:, :, :left], x[:, :, w - right:]], axis=2)  # (n, h, n_edge, c)

    @tf.custom_gradient
    def sums_of(x):
        n, c = tf.shape(x)[0], tf.shape(x)[3]
        per_row = tf.reduce_sum(x, axis=2)[:, :, None, :] - tf.linalg.matmul(skipped, edges(x))  # (n, h, kw, c)
        sums = tf.reshape(tf.linalg.matmul(rows, tf.reshape(per_row, [n, h, kw * c])), [n, kh, kw, c])

        def grad(g):  # d sums[n, y, x, c] / d features[n, h, w, c] = rows[y, h] * col_taps[x, w]
            per_row_grad = tf.reshape(tf.linalg.matmul(rows_t, tf.reshape(g, [n, kh, kw * c])), [n, h, kw, c])
            inner_grad = tf.reduce_sum(per_row_grad, axis=2, keepdims=True)  # columns every tap reads
            edge_grad = tf.linalg.matmul(edge_taps, per_row_grad)            # (n, h, n_edge, c)
            return tf.concat([edge_grad[:, :, :left], tf.broadcast_to(inner_grad, [n, h, w - left - right, c]),
                              edge_grad[:, :, left:]], axis=2)

        return sums, grad

    n_out = (h * w) if padding == "same" else (h - kh + 1) * (w - kw + 1)
    return sums_of(features), float(n_out)


# ------------------------------------------------------------ loop
@dataclass
class Visualization:
    """Result of a render: uint8 images (N, H, W, 3) and the objective (mean
    pre-ReLU activation of each channel) on the start image and on the result."""

    layer_name: str
    channels: list
    images: np.ndarray
    start_images: np.ndarray
    objective_start: np.ndarray
    objective_end: np.ndarray


def _compiled_step(model, layer_name: str):
    """One Adam step for a batch of channels, compiled once per (model, layer)."""
    return built_once(model, ("ascent step", layer_name), lambda: _build_step(model, layer_name))


def _build_step(model, layer_name: str):
    import tensorflow as tf

    layer = get_conv_layer(model, layer_name)
    feeder = input_submodel(model, layer_name)

    def features(images_0_255):
        x = preprocess(model, images_0_255)
        return x if feeder is None else feeder(x, training=False)

    @tf.function
    def objective(spectrum, scale, kernels, biases, shift):
        rgb = fourier_rgb(spectrum, scale)
        return channel_objective(features(jitter(rgb, shift) * 255.0), layer, kernels, biases)

    @tf.function
    def step(spectrum, m, v, t, scale, kernels, biases, shift):
        with tf.GradientTape() as tape:
            tape.watch(spectrum)
            obj = objective(spectrum, scale, kernels, biases, shift)
            loss = -tf.reduce_sum(obj)  # channels are independent: one sum, N gradients
        g = tape.gradient(loss, spectrum)
        b1, b2, eps = 0.9, 0.999, 1e-8
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        return spectrum - LEARNING_RATE * mhat / (tf.sqrt(vhat) + eps), m, v, obj

    return step, objective


def _check_channels(layer, channels) -> list[int]:
    if isinstance(channels, (str, bytes)) or not hasattr(channels, "__iter__"):
        channels = [channels]  # one index (a bad one is reported by check_index)
    channels = list(channels)
    if not channels:
        raise LabError("channels is empty: give at least one channel index")
    return [check_index(c, layer.filters, f"channel of {layer.name}") for c in channels]


def _check_positive(value, what, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise LabError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def render_channels(model, layer_name: str, channels, size: int = DEFAULT_SIZE, steps: int = DEFAULT_STEPS,
                    seed: int = 0, use_cache: bool = True, desc: str | None = None,
                    show_progress: bool = True) -> Visualization:
    """Gradient ascent of one image per channel of ``layer_name``, all in one batch.

    ``channels``: output channels (filters) of ``layer_name``, 0-based; they may
    repeat. ``size``: image side in pixels; ``steps``: Adam steps. Results are
    cached per channel on disk; only missing channels are optimized (together).
    ``desc``: the label of the progress bar over steps; ``show_progress=False`` hides
    it (it is also hidden when ``LAB_PROGRESS=0``).
    """
    import tensorflow as tf

    layer = get_conv_layer(model, layer_name)
    channels = _check_channels(layer, channels)
    size = _check_positive(size, "size", 32)
    steps = _check_positive(steps, "steps", 1)
    seed = int(seed)
    fp = model_fingerprint(model, upto=layer_name) if use_cache else ""
    keys = {c: cache.cache_key(kind="vis", version=VIS_VERSION, model=fp, layer=layer_name, channel=c,
                               size=size, steps=steps, seed=seed) for c in set(channels)}
    found = {}
    if use_cache:
        for c, k in keys.items():
            hit = cache.load("vis", k)
            if hit is not None:
                found[c] = hit
    todo = sorted(set(channels) - set(found))
    if todo:
        step, objective = _compiled_step(model, layer_name)
        scale = tf.constant(_frequency_scale(size).astype(np.complex64))
        kernel = layer.kernel.numpy()
        kernels = tf.constant(kernel[:, :, :, todo])
        biases = tf.constant(layer.bias.numpy()[todo] if layer.use_bias else np.zeros(len(todo), np.float32))
        spectrum = tf.constant(start_spectrum(todo, size, seed))
        start_rgb = fourier_rgb(spectrum, scale).numpy()
        m = tf.zeros_like(spectrum)
        v = tf.zeros_like(spectrum)
        shifts = jitter_offsets(steps, seed)
        label = desc or f"ascent {layer_name} x{len(todo)}"
        bar_off = {} if show_progress else {"disable": True}
        for i in progress(range(steps), desc=label, unit="step", **bar_off):
            spectrum, m, v, obj = step(spectrum, m, v, tf.constant(i + 1, tf.float32), scale, kernels, biases,
                                       tf.constant(shifts[i]))
            if i == 0:  # evaluated on the start spectrum, unshifted
                obj_start = obj.numpy()
        rgb = fourier_rgb(spectrum, scale).numpy()
        obj_end = objective(spectrum, scale, kernels, biases, tf.zeros(2, tf.int32)).numpy()
        for j, c in enumerate(todo):
            entry = {"image": to_uint8(rgb[j]), "start": to_uint8(start_rgb[j]),
                     "objective_start": np.float32(obj_start[j]), "objective_end": np.float32(obj_end[j])}
            found[c] = entry
            if use_cache:
                cache.save("vis", keys[c], **entry)
    return Visualization(
        layer_name, channels,
        np.stack([found[c]["image"] for c in channels]),
        np.stack([found[c]["start"] for c in channels]),
        np.array([float(found[c]["objective_start"]) for c in channels], np.float32),
        np.array([float(found[c]["objective_end"]) for c in channels], np.float32),
    )


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb01 * 255.0), 0, 255).astype(np.uint8)


def visualize_channels(model, layer_name: str, channels, size: int = DEFAULT_SIZE, steps: int = DEFAULT_STEPS,
                       seed: int = 0, use_cache: bool = True) -> np.ndarray:
    """Synthesize one image per channel that maximally excites it: uint8 (N, size, size, 3).

    All channels of the call are optimized in one batched, compiled ascent.
    See ``render_channels`` for the details and the objective values.
    """
    return render_channels(model, layer_name, channels, size, steps, seed, use_cache).images
