"""Step 4, an experiment on the circuit: remove some of the filter's input channels and
measure what is left of its response.

Filter f of conv layer L reads the channels of L's input X (the feeding conv layer's
output after its ReLU, and after pooling where there is some). Zeroing channel c of X
removes that input from the circuit; the filter's response is then recomputed from X:

    response(mask) = mean over positions of ReLU(conv(X * mask, K[:, :, :, f]) + b[f])

for each image: with every channel kept, the objective value
``featurevis.channel_activation(L, f)`` (the kit's mean activation, after ReLU: what the
filter passes on; zeroing inputs can only move it down to 0, not below), and averaged over the images the experiment runs on (the filter's top
probe images: where it responds). ``ablate`` runs the four conditions of ``CONDITIONS``
in one batched convolution; ``response_with_masks`` is the arithmetic on given inputs.
Channel indices are 0-based input channels of L; "kept" channels are the rows of the
channel table (``circuits.channel_table``), categorized by its ``category`` column.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import LabError

ALL_INPUTS = "all inputs"
NO_EXCITATORY = "kept excitatory channels zeroed"
NO_INHIBITORY = "kept inhibitory channels zeroed"
ONLY_KEPT = "only the kept channels (all others zeroed)"
CONDITIONS = (ALL_INPUTS, NO_EXCITATORY, NO_INHIBITORY, ONLY_KEPT)


def condition_masks(table, n_channels: int) -> dict:
    """Condition -> (mask float32 (n_channels,), channels zeroed: list of 0-based input channels)."""
    kept = [int(c) for c in table["channel"]]
    excitatory = [int(c) for c, cat in zip(table["channel"], table["category"]) if cat == "excitatory"]
    inhibitory = [int(c) for c, cat in zip(table["channel"], table["category"]) if cat == "inhibitory"]
    others = [c for c in range(n_channels) if c not in set(kept)]
    masks = {}
    for name, zeroed in ((ALL_INPUTS, []), (NO_EXCITATORY, excitatory), (NO_INHIBITORY, inhibitory),
                         (ONLY_KEPT, others)):
        mask = np.ones(n_channels, np.float32)
        mask[zeroed] = 0.0
        masks[name] = (mask, zeroed)
    return masks


def response_with_masks(layer_inputs, kernel, bias: float, masks, strides=(1, 1), padding: str = "same",
                        dilation=(1, 1)) -> np.ndarray:
    """The filter's mean response per image under each mask: float64 (n_masks, n_images).

    ``layer_inputs``: (n_images, h, w, c_in), what the layer reads; ``kernel``: the
    filter's weights (kh, kw, c_in); ``bias``: its bias; ``masks``: (n_masks, c_in), 1 keeps
    a channel and 0 zeroes it. Padding, strides and dilation as the Keras layer's."""
    import tensorflow as tf

    x = tf.convert_to_tensor(np.asarray(layer_inputs, np.float32))
    k = tf.convert_to_tensor(np.asarray(kernel, np.float32)[:, :, :, None])
    m = np.asarray(masks, np.float32)
    n_masks, n_images = m.shape[0], int(x.shape[0])
    masked = tf.reshape(x[None] * m[:, None, None, None, :], (n_masks * n_images, *x.shape[1:]))
    out = tf.nn.conv2d(masked, k, strides=list(strides), padding=padding.upper(), dilations=list(dilation))
    out = tf.nn.relu(out + float(bias))
    means = tf.reduce_mean(out, axis=(1, 2, 3)).numpy().astype(np.float64)
    return means.reshape(n_masks, n_images)


@dataclass(frozen=True)
class Ablation:
    """The experiment's result. ``table``: one row per condition (``CONDITIONS`` order):
    ``condition``, ``channels_zeroed`` (how many), ``zeroed`` (which, 0-based),
    ``mean_activation`` (over the images), ``share_of_full`` (that over the all-inputs
    mean; NaN where the filter is silent on them), ``per_image`` (each image's mean)."""

    layer_name: str
    filter_index: int
    n_images: int
    table: object

    @property
    def objective(self):
        """What ``mean_activation`` measures: ``featurevis.channel_activation(layer_name, filter_index)``
        (with the condition's input channels zeroed)."""
        from .featurevis import channel_activation

        return channel_activation(self.layer_name, self.filter_index)

    def value(self, condition: str) -> float:
        return float(self.table.loc[self.table["condition"] == condition, "mean_activation"].iloc[0])

    def paragraph(self) -> str:
        """What the experiment measured, in numbers (the student interprets)."""
        full = self.value(ALL_INPUTS)
        rows = {r.condition: r for r in self.table.itertuples()}

        def change(name):
            r = rows[name]
            pct = "" if not np.isfinite(r.share_of_full) else f" ({100 * (r.share_of_full - 1):+.0f}%)"
            return f"{r.mean_activation:.1f}{pct}"

        def listed(name):
            zeroed = rows[name].zeroed
            return ", ".join(map(str, zeroed)) if zeroed else "none"

        only = rows[ONLY_KEPT]
        share = "" if not np.isfinite(only.share_of_full) else f", {100 * only.share_of_full:.0f}% of the full response"
        return (f"Ablation on the filter's {self.n_images} top probe images: {self.layer_name} filter "
                f"{self.filter_index} responds {full:.1f} on average (mean activation). Zeroing its kept excitatory "
                f"input channels ({listed(NO_EXCITATORY)}) gives {change(NO_EXCITATORY)}; zeroing its kept "
                f"inhibitory ones ({listed(NO_INHIBITORY)}) gives {change(NO_INHIBITORY)}. The kept channels alone "
                f"(the other {only.channels_zeroed} zeroed) give {only.mean_activation:.1f}{share}.")


def ablate(model, layer_name: str, filter_index: int, images, table) -> Ablation:
    """Run ``CONDITIONS`` on *images* (uint8 RGB, (n, h, w, 3): the filter's top images)
    with the kept channels of *table* (``circuits.channel_table`` of this filter)."""
    import pandas as pd

    from .featurevis import channel_activation
    from .models import check_filter, get_conv_layer, input_submodel, preprocess

    f = check_filter(model, layer_name, filter_index)
    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.shape[-1] != 3 or len(pixels) == 0:
        raise LabError(f"images must be a non-empty array (N, H, W, 3), got shape {pixels.shape}")
    layer = get_conv_layer(model, layer_name)
    x = preprocess(model, pixels.astype(np.float32))
    feeder = input_submodel(model, layer_name)
    inputs = x if feeder is None else feeder(x, training=False)
    # the objective's own weights; its mean after ReLU is recomputed from masked inputs below
    kernel, bias = channel_activation(layer_name, f).filter_weights(model)
    masks = condition_masks(table, kernel.shape[2])
    responses = response_with_masks(inputs, kernel, bias, np.stack([m for m, _ in masks.values()]),
                                    layer.strides, layer.padding, layer.dilation_rate)
    means = responses.mean(axis=1)
    full = means[0]
    df = pd.DataFrame({
        "condition": list(masks),
        "channels_zeroed": [len(z) for _, z in masks.values()],
        "zeroed": [z for _, z in masks.values()],
        "mean_activation": means,
        "share_of_full": means / full if full > 0 else np.full(len(means), np.nan),
        "per_image": [row.tolist() for row in responses],
    })
    return Ablation(layer_name, f, len(pixels), df)


def format_ablation(ablation: Ablation) -> str:
    """The table as text (conditions, channels zeroed, mean activation, % of full)."""
    t = ablation.table
    lines = [f"{'condition':<44} {'zeroed':>6} {'mean act.':>10} {'% of all inputs':>16}"]
    for r in t.itertuples():
        pct = "-" if not np.isfinite(r.share_of_full) else f"{100 * r.share_of_full:.0f}%"
        lines.append(f"{r.condition:<44} {r.channels_zeroed:>6} {r.mean_activation:>10.2f} {pct:>16}")
    return "\n".join(lines)
