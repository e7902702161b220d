"""FLOP counts of the work the kit does, counted from the Keras model graph.

Conventions (printed with the benchmark table):

- A FLOP is one float multiply or one float add: a multiply-accumulate is 2.
- ``Conv2D``: ``2 * kh * kw * c_in * c_out * H_out * W_out`` per image.
  ``Dense``: ``2 * n_in * n_out``. Bias adds, ReLUs, pooling, preprocessing
  and the final mean are not counted (each is under 1% of the convolutions).
- **Scan**: the forward FLOPs of the truncated model, input to the layer's
  output, at the probe image size.
- **Ascent step**: forward FLOPs of the layers that feed the target layer at
  the visualization size, times 2: the backward pass is taken with respect to
  the *input* only (no weight gradients), and the input-gradient of a
  convolution costs as much as its forward pass. The target layer itself is
  not counted: ``render_channels`` gets the mean of a channel's output from
  window sums of the layer's input (``featurevis.tap_window_sums``: one pass
  over the input, no convolution). The Fourier parameterization, jitter and
  Adam update are not counted either.
"""
from __future__ import annotations


def layer_chain(model, upto: str) -> list:
    """The layers from the model input to ``upto`` (inclusive), in order.

    Only plain chains are supported (every layer has one input), which is the
    kind of model the kit works with (VGG).
    """
    import keras

    names = [layer.name for layer in model.layers]
    if upto not in names:
        raise ValueError(f"unknown layer {upto!r}")
    chain = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        chain.append(layer)
        if layer.name == upto:
            break
    return chain


def chain_flops(model, upto: str, size: int, last_channels: int | None = None) -> float:
    """Forward FLOPs per image of ``model`` from its input to layer ``upto``.

    ``size``: square input side in pixels. ``last_channels``: count only that
    many output channels of the last layer (the ascent computes only the
    requested channels of its target layer).
    """
    import keras

    shape = (1, size, size, int(model.inputs[0].shape[-1]))
    total = 0.0
    chain = layer_chain(model, upto)
    for i, layer in enumerate(chain):
        last = i == len(chain) - 1
        out = tuple(layer.compute_output_shape(shape))
        if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)):
            raise ValueError(f"{type(layer).__name__} is not counted")
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, c_in, c_out = (int(d) for d in layer.kernel.shape)
            if last and last_channels is not None:
                c_out = int(last_channels)
            total += 2.0 * kh * kw * c_in * c_out * out[1] * out[2]
        elif isinstance(layer, keras.layers.Dense):
            total += 2.0 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        shape = out
    return total


def scan_flops_per_image(model, layer_name: str, image_size: int) -> float:
    """Forward FLOPs per probe image of the scan at ``layer_name``."""
    return chain_flops(model, layer_name, image_size)


def ascent_flops_per_step(model, layer_name: str, n_channels: int, vis_size: int) -> float:
    """FLOPs of one ascent step for a batch of ``n_channels`` images (one per channel).

    Each image goes forward through the layers feeding ``layer_name`` (the
    target layer's own mean output comes from window sums, not counted), then
    backward with respect to its input: 2x the forward count.
    """
    per_image = chain_flops(model, layer_name, vis_size, last_channels=0)
    return 2.0 * n_channels * per_image
