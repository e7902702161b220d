"""The conv layers of the kit's models as data, and the checks that need only them.

VGG16 and VGG19 are fixed graphs: five blocks of 3x3 convolutions (64, 128,
256, 512, 512 filters) each followed by a 2x2 max pooling. Knowing that, a
layer name, a filter index and ``top_k`` can be checked without TensorFlow,
which is what ``render.sh`` does before it starts anything (importing
TensorFlow and building a model costs ~7 s on a laptop CPU).
``tests/test_architectures.py`` checks this table against the Keras graphs.

This module also holds the index and layer-name checks that ``models`` applies
to any Keras model, so that both paths give the same messages.
Index conventions as in ``models``: every index is 0-based.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .config import LabError

# name -> (keras.applications constructor, its preprocess module)
KERAS_APPLICATIONS = {
    "vgg16": ("VGG16", "vgg16"),
    "vgg19": ("VGG19", "vgg19"),
}
_VGG_WIDTHS = (64, 128, 256, 512, 512)       # filters of every conv layer of block 1..5
_VGG_CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_INPUT_LAYER = re.compile(r"input_layer(_\d+)?$")  # Keras numbers it per session


@dataclass(frozen=True)
class ConvSpec:
    """One conv layer: ``kernel`` (kh, kw), input and output channels, and the conv
    layer whose output channels are its input channels (None for the first)."""

    name: str
    kernel: tuple
    in_channels: int
    out_channels: int
    feeder: str | None


def model_names() -> list[str]:
    return sorted(KERAS_APPLICATIONS)


def check_model_name(name) -> str:
    """The model's key (lower case), or a LabError listing the valid names."""
    key = str(name).lower()
    if key not in KERAS_APPLICATIONS:
        raise LabError(f"unknown model {name!r}; valid: {', '.join(model_names())}")
    return key


def conv_specs(model_name: str) -> list[ConvSpec]:
    """The conv layers of ``model_name`` (without its classifier top), in order."""
    key = check_model_name(model_name)
    specs, c_in, previous = [], 3, None
    for block, (n_convs, width) in enumerate(zip(_VGG_CONVS_PER_BLOCK[key], _VGG_WIDTHS), 1):
        for i in range(1, n_convs + 1):
            name = f"block{block}_conv{i}"
            specs.append(ConvSpec(name, (3, 3), c_in, width, previous))
            c_in, previous = width, name
    return specs


# The rubric's "mid-level": "a few convolutional layers before and after" the layer
# (LAB.md, step 2), taken as at least this many conv layers on each side.
MID_LEVEL_MARGIN = 2


def is_mid_level(conv_index: int, n_convs: int) -> bool:
    """Whether the conv layer at ``conv_index`` (0-based, among ``n_convs`` conv layers)
    has at least MID_LEVEL_MARGIN conv layers before it and after it."""
    return conv_index >= MID_LEVEL_MARGIN and n_convs - 1 - conv_index >= MID_LEVEL_MARGIN


def mid_level_note(model_name: str, layer_name: str) -> str:
    """'' for a mid-level layer, else one line saying why it is not and which layers are
    (a warning for the notebooks: the choice is the student's, not refused)."""
    names = [s.name for s in conv_specs(model_name)]
    if layer_name not in names:
        return ""
    i, n = names.index(layer_name), len(names)
    if is_mid_level(i, n):
        return ""
    candidates = [name for k, name in enumerate(names) if is_mid_level(k, n)]
    return (f"note: {layer_name} has {i} conv layer(s) before it and {n - 1 - i} after it; the rubric's "
            f"mid-level means at least {MID_LEVEL_MARGIN} on each side ({candidates[0]} ... {candidates[-1]}); "
            f"say in step 2 why you chose it anyway")


def forward_flops_per_pixel(model_name: str, layer_name: str) -> int:
    """Forward FLOPs per pixel of the input image of the conv layers *before* ``layer_name``
    (a multiply-add is 2 FLOPs; each block's 2x2 pooling quarters the pixels of the next).

    Times 2, it is the cost of one gradient-ascent step on one image per input pixel: the
    backward pass to the input costs as much as the forward, and the target layer itself is
    not convolved (``featurevis``). The same count as ``bench/flops.py``'s from the Keras graph:
    6.2 GFLOP per 128 px image for block3_conv1 (bench/RESULTS.md)."""
    total = 0
    for spec in conv_specs(model_name):
        if spec.name == layer_name:
            return total
        block = int(spec.name[len("block"):spec.name.index("_")])
        total += 2 * spec.kernel[0] * spec.kernel[1] * spec.in_channels * spec.out_channels // 4 ** (block - 1)
    raise LabError(f"unknown layer {layer_name!r}; conv layers of {model_name}: "
                   f"{', '.join(s.name for s in conv_specs(model_name))}")


def other_layer_names(model_name: str) -> list[str]:
    """The layers that are not convolutions (the pooling layers; the input layer aside)."""
    return [f"block{b}_pool" for b in range(1, len(_VGG_CONVS_PER_BLOCK[check_model_name(model_name)]) + 1)]


# ------------------------------------------------------------ checks shared with models
def check_index(value, size: int, what: str) -> int:
    """A 0-based index in range(size), or a LabError saying the valid range."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise LabError(f"{what} must be an integer in 0..{size - 1} (0-based), got {value!r}")
    if not 0 <= int(value) < size:
        raise LabError(f"{what} {value} is out of range; valid: 0..{size - 1} (0-based)")
    return int(value)


def layer_error(layer_name, model_label: str, convs: list[str], is_layer: bool) -> LabError:
    """The error for a layer name that is not a conv layer of the model."""
    if not is_layer:
        return LabError(f"unknown layer {layer_name!r}; conv layers of {model_label}: {', '.join(convs)}")
    return LabError(f"layer {layer_name!r} is not a conv layer; conv layers of {model_label}: {', '.join(convs)}")


def no_feeder_error(layer_name, convs: list[str]) -> LabError:
    has_feeder = [n for n in convs if n != convs[0]]
    return LabError(f"layer {layer_name!r} reads the model input directly: it has no feeding conv layer. "
                    f"Choose a later conv layer, e.g. {', '.join(has_feeder[:4])}")


def check_circuit(model_name: str, layer_name, filter_index, top_k) -> ConvSpec:
    """Check the layer, filter and ``top_k`` of a lab run against the table:
    the conv layer's spec, or the LabError the model graph would give."""
    key = check_model_name(model_name)
    specs = {s.name: s for s in conv_specs(key)}
    if layer_name not in specs:
        is_layer = layer_name in other_layer_names(key) or bool(_INPUT_LAYER.match(str(layer_name)))
        raise layer_error(layer_name, key, list(specs), is_layer)
    spec = specs[layer_name]
    check_index(filter_index, spec.out_channels, f"filter_index of {layer_name}")
    if spec.feeder is None:
        raise no_feeder_error(layer_name, list(specs))
    if top_k > spec.in_channels:
        raise LabError(f"top_k must be at most {spec.in_channels} (the input channels of {layer_name}), got {top_k}")
    return spec


def receptive_field(model_name: str, layer_name: str) -> int:
    """Side, in input pixels, of the square of the input that one position of
    ``layer_name``'s output sees (VGG: 3x3 stride-1 convolutions, 2x2 stride-2 pooling
    after each block). block1_conv1: 3; block3_conv1: 24; block5_conv3: 196 (the published values)."""
    size, jump = 1, 1
    for spec in conv_specs(model_name):
        if spec.feeder is not None and spec.name.split("_")[0] != spec.feeder.split("_")[0]:
            size, jump = size + jump, jump * 2  # the block's 2x2 pooling before this conv
        size += (spec.kernel[0] - 1) * jump
        if spec.name == layer_name:
            return size
    raise LabError(f"unknown layer {layer_name!r} of {model_name}")
