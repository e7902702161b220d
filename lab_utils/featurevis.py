"""Steps 2 and 4: feature visualization by gradient ascent.

Organized like Lucid, in four small pieces:
- **parameterization** (what is optimized): ``fourier_rgb`` maps a spectrum
  variable to an RGB image in [0, 1] through a 1/f-scaled Fourier basis and
  ImageNet colour decorrelation; natural-looking images, no saturation.
- **transforms** (how it is perturbed): ``jitter`` rolls the image by a few
  random pixels each step, so the result does not depend on pixel alignment.
- **objective** (what is maximized): a value, ``ChannelObjective`` (Lucid's
  ``objectives.channel``): ``channel(layer, c)`` is the mean over positions of
  the *pre-ReLU* output of channel c, ``negative_channel(layer, c)`` (or
  ``-channel(layer, c)``) its negative. Pre-ReLU, its gradient is non-zero even
  where the ReLU is off on the start image (no "dead start"). Being a mean of a
  convolution, it is computed from window sums of the layer's input
  (``channel_objective``, ``tap_window_sums``), without convolving; a negative
  channel is the same computation with negated kernel and bias. The experiments
  measure the same values on real images (``ChannelObjective.measure``).
- **loop** (render): ``render_objectives`` runs Adam on all requested objectives
  of one layer in **one batch** with one ``tf.function``-compiled step per
  (model, layer); ``render_channels`` is its form for positive channels.

Images are the model's native RGB 0..255 before its preprocessing, which is
applied inside the step (VGG: RGB->BGR, mean subtraction). Same seed, same
images: the start spectrum of channel c depends only on (seed, c) (its negative
starts from the same image), the jitter offsets only on the seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

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
def frequency_scale(size: int) -> np.ndarray:
    """The 1/f amplitude of each Fourier coefficient of a size x size image, float32
    (size, size//2+1) (rfft2 layout; frequencies in cycles per pixel, the DC term as 1/size)."""
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


# ------------------------------------------------------------ objectives as values
@dataclass(frozen=True)
class ChannelObjective:
    """What an ascent maximizes and an experiment measures, as a value (Lucid's
    ``objectives.channel``): ``sign`` x the mean over all positions of channel
    ``channel`` (0-based output channel = filter) of conv layer ``layer_name``, per image.

    ``after_activation=False`` (``channel``, ``negative_channel``): the output *before*
    the layer's activation (convolution plus bias; VGG's ReLU), the ascent's objective:
    its gradient is non-zero where the ReLU is off, and being linear in the kernel and
    bias, ``sign`` can go into them (``ascent_weights``: a negative channel is the
    positive computation with kernel and bias negated).
    ``after_activation=True`` (``channel_activation``): the mean *after* the activation,
    the kit's "mean activation" (what the next layer sees; ``probe.Scan.means``), which the
    tuning curves and the ablation report. It is not an ascent objective (a ReLU that is
    off on the start image gives no gradient), and its sign multiplies the mean:
    -mean(ReLU(x)) is not mean(ReLU(-x)).

    Objectives are hashable, compare by value, and ``-objective`` flips the sign.
    """

    layer_name: str
    channel: int
    sign: int = 1
    after_activation: bool = False

    def __post_init__(self):
        if self.sign not in (1, -1) or isinstance(self.sign, bool):
            raise LabError(f"sign of an objective must be +1 or -1, got {self.sign!r}")

    def __neg__(self) -> "ChannelObjective":
        return replace(self, sign=-self.sign)

    @property
    def label(self) -> str:
        """Readable name, e.g. ``block3_conv1 channel 31``, ``-block3_conv1 channel 31``,
        ``block3_conv1 channel 31 after activation``."""
        sign = "-" if self.sign < 0 else ""
        after = " after activation" if self.after_activation else ""
        return f"{sign}{self.layer_name} channel {self.channel}{after}"

    def __str__(self) -> str:
        return self.label

    def checked(self, model) -> "ChannelObjective":
        """This objective with ``channel`` checked against the layer (a plain int), or a
        LabError naming the valid layers or channels."""
        layer = get_conv_layer(model, self.layer_name)
        return replace(self, channel=check_index(self.channel, layer.filters, f"channel of {layer.name}"))

    def filter_weights(self, model) -> tuple[np.ndarray, float]:
        """The filter's own weights: kernel float32 (kh, kw, c_in) and bias (0.0 without one),
        unsigned (Keras' ``kernel[:, :, :, channel]``)."""
        layer = get_conv_layer(model, self.layer_name)
        kernels, biases = _stacked_weights(layer, [self.checked(model)], signed=False)
        return kernels[..., 0], float(biases[0])

    def ascent_weights(self, model) -> tuple[np.ndarray, np.float32]:
        """Kernel slice float32 (kh, kw, c_in) and bias, both times ``sign``: the mean
        pre-activation output is linear in them, so they are the whole objective for the ascent."""
        layer = get_conv_layer(model, self.layer_name)
        kernels, biases = _stacked_weights(layer, [self.checked(model)], signed=True)
        return kernels[..., 0], biases[0]

    def cache_parts(self) -> dict:
        """Its part of a render's cache key: ``layer`` and ``channel`` as before objectives
        existed (positive channels keep their stored entries), ``sign=-1`` only when negative."""
        parts = {"layer": self.layer_name, "channel": int(self.channel)}
        if self.sign < 0:
            parts["sign"] = -1
        return parts

    def measure(self, model, images, batch_size: int = 32) -> np.ndarray:
        """The objective on real images: float32 (n_images,). ``images``: RGB 0..255, (n, h, w, 3)
        (one image (h, w, 3) too), before the model's preprocessing. See ``measure_objectives``."""
        return measure_objectives(model, [self], images, batch_size)[:, 0]

    def from_scan(self, scan) -> np.ndarray:
        """The objective on a scan's images, read from ``probe.Scan``: ``means`` (after the
        activation) or ``pre_means`` (before it) of the channel, times ``sign``; the same values
        ``measure`` computes (a scan holds every channel of its layer, cached on disk)."""
        if scan.layer_name != self.layer_name:
            raise LabError(f"a scan of {scan.layer_name!r} holds no value of {self.label}")
        values = scan.means if self.after_activation else scan.pre_means
        return values[:, int(self.channel)] * values.dtype.type(self.sign)


def _check_ascent(objectives):
    for o in objectives:
        if o.after_activation:
            raise LabError(f"{o.label} is not an ascent objective: the ascent maximizes the mean before "
                           f"the activation (use channel() or negative_channel())")


def _stacked_weights(layer, objectives, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Kernel slices float32 (kh, kw, c_in, N) and biases (N,) of checked objectives on ``layer``,
    times each sign where ``signed`` (ascent objectives only). The kernel is read once."""
    if signed:
        _check_ascent(objectives)
    idx = [o.channel for o in objectives]
    kernels = layer.kernel.numpy()[:, :, :, idx]
    biases = layer.bias.numpy()[idx] if layer.use_bias else np.zeros(len(idx), np.float32)
    if signed:
        # negation is exact: positive channels keep exactly the numbers they had before objectives
        signs = np.array([o.sign for o in objectives], np.float32)
        kernels, biases = kernels * signs, biases * signs
    return kernels, biases


def channel(layer_name: str, c: int) -> ChannelObjective:
    """Mean pre-activation output of channel ``c`` of ``layer_name`` (the ascent's usual objective)."""
    return ChannelObjective(layer_name, c)


def negative_channel(layer_name: str, c: int) -> ChannelObjective:
    """Minus the mean pre-activation output of channel ``c``: its ascent finds what drives
    the filter most against its preference (``-channel(layer_name, c)``)."""
    return ChannelObjective(layer_name, c, sign=-1)


def channel_activation(layer_name: str, c: int) -> ChannelObjective:
    """Mean output of channel ``c`` after the layer's activation: the kit's "mean activation"
    (``probe.Scan.means``), what tuning curves and the ablation report; not for the ascent."""
    return ChannelObjective(layer_name, c, after_activation=True)


def _check_objectives(model, objectives) -> tuple[list, object]:
    """(objectives, each ``checked``; the one conv layer they are on)."""
    if isinstance(objectives, ChannelObjective):
        objectives = [objectives]
    objectives = list(objectives)
    if not objectives:
        raise LabError("objectives is empty: give at least one objective, e.g. featurevis.channel(layer_name, 0)")
    for o in objectives:
        if not isinstance(o, ChannelObjective):
            raise LabError(f"an objective must be a ChannelObjective (featurevis.channel(...)), got {o!r}")
    layers = sorted({o.layer_name for o in objectives})
    if len(layers) > 1:
        raise LabError(f"all objectives of one call must be on one layer, got {', '.join(layers)}")
    return [o.checked(model) for o in objectives], get_conv_layer(model, layers[0])


def _measure_pass(model, layer_name: str, after_activation: bool):
    """Compiled once per (model, layer, where): images (n, h, w, 3) float32 0..255, kernels
    (kh, kw, c_in, k), biases (k,) -> (n, k) mean over positions, before or after the activation."""
    import tensorflow as tf

    def build():
        layer = get_conv_layer(model, layer_name)
        feeder = input_submodel(model, layer_name)
        kh, kw, c_in, _ = layer.kernel.shape

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32),
                                      tf.TensorSpec([kh, kw, c_in, None], tf.float32),
                                      tf.TensorSpec([None], tf.float32)])
        def means(images, kernels, biases):
            x = preprocess(model, images)
            x = x if feeder is None else feeder(x, training=False)
            pre = layer.convolution_op(x, kernels) + biases
            return tf.reduce_mean(layer.activation(pre) if after_activation else pre, axis=[1, 2])

        return means

    return built_once(model, ("objective measure", layer_name, bool(after_activation)), build)


def measure_objectives(model, objectives, images, batch_size: int = 32) -> np.ndarray:
    """Every objective on every image: float32 (n_images, n_objectives), column j = objectives[j].

    ``images``: RGB 0..255 (uint8 or float), (n, h, w, 3) or one (h, w, 3), before the model's
    preprocessing. All objectives on one layer; one pass per batch of images computes only the
    objectives' channels (kernel slices), compiled once per (model, layer) and
    ``after_activation``. Value = ``sign`` x mean over positions (before or after the layer's
    activation) of the channel's output.
    """
    objectives, layer = _check_objectives(model, objectives)
    batch_size = _check_positive(batch_size, "batch_size", 1)
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise LabError(f"images must be a non-empty array (N, H, W, 3), got shape {np.shape(images)}")
    out = np.zeros((len(x), len(objectives)), np.float32)
    for after in sorted({o.after_activation for o in objectives}):
        cols = [j for j, o in enumerate(objectives) if o.after_activation == after]
        kernels, biases = _stacked_weights(layer, [objectives[j] for j in cols], signed=False)
        signs = np.array([objectives[j].sign for j in cols], np.float32)
        means = _measure_pass(model, layer.name, after)
        for s in range(0, len(x), batch_size):
            out[s:s + batch_size, cols] = means(x[s:s + batch_size], kernels, biases).numpy() * signs
    return out


# ------------------------------------------------------------ loop
@dataclass
class Visualization:
    """Result of a render: uint8 images (N, H, W, 3), row i for ``objectives[i]``, and each
    objective (``ChannelObjective``: sign x mean pre-ReLU output of the channel) on the start
    image and on the result. ``channels``: the objectives' channel indices (0-based), as
    ``render_channels`` was asked; ``labels``: the objectives' readable names."""

    layer_name: str
    channels: list
    images: np.ndarray
    start_images: np.ndarray
    objective_start: np.ndarray
    objective_end: np.ndarray
    objectives: list = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return [o.label for o in self.objectives]


def _compiled_step(model, layer_name: str):
    """One Adam step for a batch of objectives, compiled once per (model, layer)."""
    return built_once(model, ("ascent step", layer_name), lambda: build_ascent_step(model, layer_name))


def build_ascent_step(model, layer_name: str, jit_compile: bool = False):
    """The ascent's compiled pieces for ``layer_name`` (built anew on every call; renders use
    one per (model, layer) through ``models.built_once``): ``(step, objective)``.

    ``objective(spectrum, scale, kernels, biases, shift)`` -> (N,): for batch element i the mean
    pre-activation output of the kernel slice ``kernels[..., i]`` (kh, kw, c_in, N) plus
    ``biases[i]`` (``ChannelObjective.ascent_weights``: signs included) on the image
    ``fourier_rgb(spectrum)`` rolled by ``shift`` (dy, dx). ``step(spectrum, m, v, t, scale,
    kernels, biases, shift)`` -> (spectrum, m, v, objective): Adam step ``t`` (1-based, float32)
    on the sum of the N objectives (independent: one sum, N gradients), the objective before
    the step. ``jit_compile``: XLA for ``step`` (the benchmark's experiment; not faster on CPU).
    """
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

    @tf.function(jit_compile=jit_compile)
    def step(spectrum, m, v, t, scale, kernels, biases, shift):
        with tf.GradientTape() as tape:
            tape.watch(spectrum)
            obj = objective(spectrum, scale, kernels, biases, shift)
            loss = -tf.reduce_sum(obj)  # objectives are independent: one sum, N gradients
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


def _batch_order(o: ChannelObjective) -> tuple:
    # positive channels first, by channel: a render of positive channels is the batch it
    # always was (same rows, same order), so its numbers are bit-identical to before objectives
    return (o.sign < 0, o.channel)


def render_objectives(model, objectives, size: int = DEFAULT_SIZE, steps: int = DEFAULT_STEPS, seed: int = 0,
                      use_cache: bool = True, desc: str | None = None, show_progress: bool = True
                      ) -> Visualization:
    """Gradient ascent of one image per objective (``channel``, ``negative_channel``, ...), all
    on one layer, in **one batch** with one compiled step per (model, layer).

    ``objectives``: ``ChannelObjective`` values (one, or a list; they may repeat); the result's
    row i is objectives[i]. ``size``: image side in pixels; ``steps``: Adam steps. A negative
    channel starts from its positive's start image (the start depends on (seed, channel)).
    Results are cached per objective on disk (a positive channel under the key it always
    had); only missing objectives are optimized (together). ``desc``: the label of the
    progress bar over steps; ``show_progress=False`` hides it (also hidden when ``LAB_PROGRESS=0``).
    """
    import tensorflow as tf

    objectives, layer = _check_objectives(model, objectives)
    _check_ascent(objectives)
    layer_name = layer.name
    size = _check_positive(size, "size", 32)
    steps = _check_positive(steps, "steps", 1)
    seed = int(seed)
    fp = model_fingerprint(model, upto=layer_name) if use_cache else ""
    keys = {o: cache.cache_key(kind="vis", version=VIS_VERSION, model=fp, size=size, steps=steps, seed=seed,
                               **o.cache_parts()) for o in set(objectives)}
    found = {}
    if use_cache:
        for o, k in keys.items():
            hit = cache.load("vis", k)
            if hit is not None:
                found[o] = hit
    todo = sorted(set(objectives) - set(found), key=_batch_order)
    if todo:
        step, objective = _compiled_step(model, layer_name)
        scale = tf.constant(frequency_scale(size).astype(np.complex64))
        kernels, biases = (tf.constant(a) for a in _stacked_weights(layer, todo, signed=True))
        spectrum = tf.constant(start_spectrum([o.channel for o in todo], size, seed))
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
        for j, o in enumerate(todo):
            entry = {"image": to_uint8(rgb[j]), "start": to_uint8(start_rgb[j]),
                     "objective_start": np.float32(obj_start[j]), "objective_end": np.float32(obj_end[j])}
            found[o] = entry
            if use_cache:
                cache.save("vis", keys[o], **entry)
    return Visualization(
        layer_name, [o.channel for o in objectives],
        np.stack([found[o]["image"] for o in objectives]),
        np.stack([found[o]["start"] for o in objectives]),
        np.array([float(found[o]["objective_start"]) for o in objectives], np.float32),
        np.array([float(found[o]["objective_end"]) for o in objectives], np.float32),
        objectives,
    )


def render_channels(model, layer_name: str, channels, size: int = DEFAULT_SIZE, steps: int = DEFAULT_STEPS,
                    seed: int = 0, use_cache: bool = True, desc: str | None = None,
                    show_progress: bool = True) -> Visualization:
    """Gradient ascent of one image per channel of ``layer_name``, all in one batch:
    ``render_objectives`` of ``channel(layer_name, c)`` for each c.

    ``channels``: output channels (filters) of ``layer_name``, 0-based; they may
    repeat. ``size``: image side in pixels; ``steps``: Adam steps. Results are
    cached per channel on disk; only missing channels are optimized (together).
    ``desc``: the label of the progress bar over steps; ``show_progress=False`` hides
    it (it is also hidden when ``LAB_PROGRESS=0``).
    """
    layer = get_conv_layer(model, layer_name)
    channels = _check_channels(layer, channels)
    size = _check_positive(size, "size", 32)
    steps = _check_positive(steps, "steps", 1)
    return render_objectives(model, [channel(layer_name, c) for c in channels], size, steps, seed, use_cache,
                             desc, show_progress)


def to_uint8(rgb01: np.ndarray) -> np.ndarray:
    return np.clip(np.round(rgb01 * 255.0), 0, 255).astype(np.uint8)


def visualize_channels(model, layer_name: str, channels, size: int = DEFAULT_SIZE, steps: int = DEFAULT_STEPS,
                       seed: int = 0, use_cache: bool = True) -> np.ndarray:
    """Synthesize one image per channel that maximally excites it: uint8 (N, size, size, 3).

    All channels of the call are optimized in one batched, compiled ascent.
    See ``render_channels`` for the details and the objective values.
    """
    return render_channels(model, layer_name, channels, size, steps, seed, use_cache).images
