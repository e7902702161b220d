"""Step 1 and the model graph: loading ImageNet models, listing conv layers,
finding the layer that feeds a filter, building (once) truncated sub-models,
and classifying images with the full network.

Index conventions: kernels are Keras' ``(kh, kw, c_in, c_out)``; a *filter*
``f`` of a layer is ``kernel[:, :, :, f]``; a *single-channel filter* is
``kernel[:, :, c, f]``. Every index is 0-based.
"""
from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .architectures import (  # noqa: F401  (check_index, model_names: part of this module's API)
    KERAS_APPLICATIONS, check_index, check_model_name, is_mid_level, layer_error, model_names, no_feeder_error)
from .config import LabError, ResourceMissingError, import_tensorflow_quietly, weights_dirs
from .imagenet import class_index, wnid_to_name  # noqa: F401  (part of this module's API)

import_tensorflow_quietly()

# Layers that pass channel c through as channel c (so the feeding conv layer
# of a filter can be found across them).
_CHANNEL_PRESERVING = (
    "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Activation", "ReLU",
    "BatchNormalization", "Dropout", "SpatialDropout2D", "Cropping2D", "LeakyReLU",
)


# Where Keras' own download of ImageNet weights comes from and where it caches them.
_KERAS_WEIGHTS_HOST = ("storage.googleapis.com", 443)


def keras_cached_weights(key: str, include_top: bool) -> Path:
    """The file Keras' ``weights="imagenet"`` caches: ``$KERAS_HOME/models`` (default ~/.keras;
    Keras falls back to /tmp/.keras where that is not writable). The first existing one, else the first."""
    import os

    suffix = "" if include_top else "_notop"
    name = f"{key}_weights_tf_dim_ordering_tf_kernels{suffix}.h5"
    homes = [Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser(), Path("/tmp/.keras")]
    candidates = [home / "models" / name for home in homes]
    return next((p for p in candidates if p.is_file()), candidates[0])


def _download_reachable(timeout: float = 3.0) -> bool:
    """Whether Keras' download host answers; True behind a proxy (we cannot tell, so let Keras try)."""
    import os
    import socket

    if any(os.environ.get(v) for v in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")):
        return True
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)  # bounds the DNS lookup too
    try:
        socket.create_connection(_KERAS_WEIGHTS_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False
    finally:
        socket.setdefaulttimeout(previous)


def _build(key: str, include_top: bool, weights):
    import keras

    if weights == "imagenet" and not keras_cached_weights(key, include_top).is_file() and not _download_reachable():
        # Fail before building: VGG16 with its top is 138M parameters (2 GB, 1 s) to throw away.
        raise ConnectionError(f"{_KERAS_WEIGHTS_HOST[0]} is not reachable and Keras has no cached copy")
    ctor = getattr(keras.applications, KERAS_APPLICATIONS[key][0])
    # Without the top any input size works (visualizations use smaller images).
    shape = (224, 224, 3) if include_top else (None, None, 3)
    return ctor(include_top=include_top, weights=weights, input_shape=shape)


# Keras' own weight files (the layout the kit loads), their sizes in bytes, where Keras downloads them.
KERAS_WEIGHT_SIZES = {("vgg16", False): 58_889_256, ("vgg16", True): 553_467_096,
                      ("vgg19", False): 80_134_624, ("vgg19", True): 574_710_816}
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/{key}/{name}"


def _h5_problem(path: Path) -> str | None:
    """Why h5py cannot open ``path`` (its reason, one line), or None where it can."""
    import h5py

    try:
        with h5py.File(path, "r"):
            return None
    except Exception as exc:  # OSError mostly; h5py raises others for odd files
        text = " ".join(str(exc).split())
        inner = text[text.find("(") + 1:text.rfind(")")] if "(" in text and text.endswith(")") else text
        return inner or type(exc).__name__


def bad_weights_error(key: str, include_top: bool, path: Path, exc: BaseException, explicit: bool
                      ) -> ResourceMissingError:
    """The one-line error for a weights file that exists but does not load: the file, what is
    wrong with it, its size, and the fix (Keras' file, its size, where to put it)."""
    try:
        size = f"{path.stat().st_size:,} bytes"
    except OSError:
        size = "size unknown"
    problem = _h5_problem(path)
    what = "with its classifier top" if include_top else "convolutional base"
    if problem is not None:
        wrong = f"cannot be read as Keras HDF5 weights ({problem})"
    else:
        first = " ".join(str(exc).split())[:200].rstrip(".") or type(exc).__name__
        wrong = f"does not match the layers of {key} ({what}): {type(exc).__name__}: {first}"
    keras_name = keras_cached_weights(key, include_top).name
    expected = KERAS_WEIGHT_SIZES.get((key, include_top))
    source = f"Keras' {keras_name}" + (f", {expected:,} bytes" if expected else "")
    url = KERAS_WEIGHTS_URL.format(key=key, name=keras_name)
    ours = weight_candidates(key, include_top)[0].name
    where = (f"pass its path as weights=, or put it into $LAB_WEIGHTS_DIR as {ours}" if explicit
             else f"put it into $LAB_WEIGHTS_DIR as {ours} (here: {path})")
    return ResourceMissingError(f"weights file {path} ({size}) {wrong}. "
                                f"Fix: download it again ({source}: {url}) and {where}; see README 'Weights'.")


def weight_candidates(name: str, include_top: bool = False) -> list[Path]:
    """Offline weight files that ``load_model`` tries, in order."""
    suffix = "imagenet" if include_top else "imagenet_notop"
    return [d / f"{name}_{suffix}.h5" for d in weights_dirs()]


@lru_cache(maxsize=8)
def _load_cached(key: str, include_top: bool, weights: str | None):
    model = _build(key, include_top, weights)
    model._lab_name = key  # used in cache keys and messages
    model._lab_weights = weights or "random"
    return model


def load_model(name: str = "vgg16", include_top: bool = False, weights=None):
    """Load a Keras ImageNet model with pretrained weights, offline first.

    Weights are found in this order:
      1. ``weights``: an explicit path to a Keras HDF5 weights file
         (or ``"random"`` for an untrained model, useful in tests);
      2. ``$LAB_WEIGHTS_DIR/<name>_imagenet_notop.h5`` (``<name>_imagenet.h5``
         with the classifier top), loaded by layer name;
      3. Keras' own ``weights="imagenet"`` (its cache in ~/.keras/models, else
         its download).
    Raises ``ResourceMissingError`` naming every place tried when none works.
    The same arguments return the same (cached) model object.
    """
    key = check_model_name(name)
    if weights is not None:
        if str(weights) == "random":
            return _load_cached(key, include_top, None)
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ResourceMissingError(f"weights file not found: {path}")
        return _load_weights_file(key, include_top, path, explicit=True)
    tried = []
    for path in weight_candidates(key, include_top):
        if path.is_file():
            return _load_weights_file(key, include_top, path, explicit=False)
        tried.append(f"{path} (a folder, not a weights file)" if path.is_dir() else str(path))
    try:
        return _load_cached(key, include_top, "imagenet")
    except Exception as exc:  # network errors come in many types
        what = "with its classifier top" if include_top else "convolutional base"
        fname = f"{key}_imagenet{'' if include_top else '_notop'}.h5"
        raise ResourceMissingError(
            f"no ImageNet weights for {key} ({what}). Tried: {', '.join(tried) or 'no LAB_WEIGHTS_DIR'}; "
            f"then Keras' download, which failed ({type(exc).__name__}). Fix: put {fname} in a folder and "
            f"set LAB_WEIGHTS_DIR to it, or go online once so Keras caches its weights in ~/.keras/models."
        ) from None


def _load_weights_file(key: str, include_top: bool, path: Path, explicit: bool):
    """The model with the weights of ``path``; a file that exists but does not load (zero bytes,
    truncated, not HDF5, another model's layers) raises ``bad_weights_error``, not h5py's traceback."""
    try:
        return _load_cached(key, include_top, str(path.resolve()))
    except Exception as exc:
        raise bad_weights_error(key, include_top, path, exc, explicit) from None


def model_fingerprint(model, upto: str | None = None) -> str:
    """sha256 over the architecture and weights of ``model`` (up to layer ``upto``).

    Used as a cache key: the same weights give the same key on every machine.
    """
    h = hashlib.sha256(getattr(model, "_lab_name", model.name).encode())
    for layer in model.layers:
        h.update(layer.name.encode())
        for w in layer.get_weights():
            h.update(str(w.shape).encode())
            h.update(np.ascontiguousarray(w).tobytes())
        if layer.name == upto:
            break
    return h.hexdigest()[:20]


# ---------------------------------------------------------------- layers
def _is_conv(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.Conv2D) and not isinstance(
        layer, (keras.layers.DepthwiseConv2D, keras.layers.Conv2DTranspose)
    )


def conv_layers(model) -> list[str]:
    """Names of the Conv2D layers of ``model``, in order."""
    return [layer.name for layer in model.layers if _is_conv(layer)]


def get_conv_layer(model, layer_name: str):
    """The Conv2D layer named ``layer_name``, or a LabError listing valid names."""
    convs = conv_layers(model)
    names = [layer.name for layer in model.layers]
    if layer_name not in convs:
        raise layer_error(layer_name, model.name, convs, is_layer=layer_name in names)
    return model.get_layer(layer_name)


def check_filter(model, layer_name: str, filter_index) -> int:
    layer = get_conv_layer(model, layer_name)
    return check_index(filter_index, layer.filters, f"filter_index of {layer_name}")


def _inbound_layer(layer):
    """The layer whose output ``layer`` reads (its first call's), None where it reads nothing."""
    nodes = getattr(layer, "_inbound_nodes", [])
    if not nodes:
        return None
    parents = [t._keras_history.operation for t in nodes[0].input_tensors]
    if len(parents) != 1:
        raise LabError(
            f"layer {layer.name!r} has {len(parents)} inputs; the kit follows plain conv chains only"
        )
    return parents[0]


def layers_into(model, layer_name: str, keep_channels: bool = True) -> list:
    """The layers between the conv layer ``layer_name`` and what feeds its input channels,
    in forward order: ``[source, *passed]``. The one walk of the model graph (feeding
    layer, input sub-model): backwards from ``layer_name`` through channel-preserving
    layers (``_CHANNEL_PRESERVING``: pooling, activation, padding, ...), which pass
    channel c through as channel c, to the first layer that is not one.

    ``source`` is the conv layer whose output channel c is input channel c of
    ``layer_name``, or the model's ``InputLayer`` (the layer reads the image); ``passed``
    are the channel-preserving layers in between (Keras layer objects, empty where the
    layer reads ``source`` directly). ``layers_into(vgg16, "block3_conv1")`` is
    ``[block2_conv2, block2_pool]``.

    Another kind of layer on the way (Dense, Concatenate, ...) is a LabError, as is a
    layer with several inputs; with ``keep_channels=False`` it is the ``source`` instead
    (for callers that only need what the layer reads, not whose channels those are).
    A layer with no inbound call at all ends the walk with ``source`` None.
    """
    import keras

    layer = get_conv_layer(model, layer_name)
    passed = []
    parent = _inbound_layer(layer)
    while parent is not None and not _is_conv(parent) and not isinstance(parent, keras.layers.InputLayer):
        if type(parent).__name__ not in _CHANNEL_PRESERVING:
            if not keep_channels:
                break
            raise LabError(
                f"cannot trace the input channels of {layer_name!r} through {parent.name!r} "
                f"({type(parent).__name__}), which does not keep channels"
            )
        passed.append(parent)
        parent = _inbound_layer(parent)
    return [parent, *reversed(passed)]


def feeding_layer(model, layer_name: str) -> str:
    """The conv layer whose output channels are the input channels of ``layer_name``.

    Walks the model graph backwards through channel-preserving layers (pooling,
    activation, padding, ...; ``layers_into``): channel c of ``block2_pool`` is channel
    c of ``block2_conv2``, so ``feeding_layer(vgg16, "block3_conv1") == "block2_conv2"``.
    """
    source = layers_into(model, layer_name)[0]
    if source is not None and _is_conv(source):
        return source.name
    raise no_feeder_error(layer_name, conv_layers(model))


def describe_layers(model):
    """DataFrame of the conv layers: kernel shape, channels, feeding layer, mid-level flag.

    ``mid_level`` is the rubric's: at least ``architectures.MID_LEVEL_MARGIN`` (2) conv
    layers before and after the layer (``architectures.is_mid_level``).
    """
    import pandas as pd

    convs = conv_layers(model)
    rows = []
    for i, name in enumerate(convs):
        layer = model.get_layer(name)
        kh, kw, c_in, c_out = layer.kernel.shape
        try:
            feeder = feeding_layer(model, name)
        except LabError:
            feeder = None
        rows.append({
            "conv_index": i,
            "layer": name,
            "kernel": f"{kh}x{kw}",
            "in_channels": int(c_in),
            "out_channels": int(c_out),
            "conv_before": i,
            "conv_after": len(convs) - 1 - i,
            "mid_level": is_mid_level(i, len(convs)),
            "feeding_layer": feeder,
        })
    return pd.DataFrame(rows)


def mid_level_layers(model) -> list[str]:
    df = describe_layers(model)
    return list(df.loc[df.mid_level, "layer"])


# ---------------------------------------------------------------- sub-models
# Everything built once per model (sub-models, compiled scan passes and ascent steps): the
# one memo, keyed by the model object (weakly: a model that is gone takes its entries along).
_BUILT: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def built_once(model, key: tuple, build):
    """``build()`` the first time (*model*, *key*) is asked for, the same object after.
    *key* names what is built, e.g. ``("submodel", layer_name, pre_activation)``."""
    per_model = _BUILT.setdefault(model, {})
    if key not in per_model:
        per_model[key] = build()
    return per_model[key]


def submodel(model, layer_name: str, pre_activation: bool = False):
    """Model from the input to the output of ``layer_name``, built once per model.

    With ``pre_activation=True`` the output is the conv layer's value *before*
    its built-in activation (ReLU in VGG): gradient ascent needs it because a
    ReLU that is off on the start image gives zero gradient.
    """
    import keras

    layer = get_conv_layer(model, layer_name)

    def build():
        out = pre_activation_output(layer) if pre_activation else layer.output
        return keras.Model(model.inputs, out, name=f"{model.name}_to_{layer_name}{'_pre' if pre_activation else ''}")

    return built_once(model, ("submodel", layer_name, pre_activation), build)


def pre_activation_output(layer):
    """The conv layer's symbolic output before its activation: convolution plus bias."""
    out = layer.convolution_op(layer.input, layer.kernel)
    return out + layer.bias if layer.use_bias else out


def upstream_conv_layers(model, layer_name: str) -> list[str]:
    """The conv layers before ``layer_name`` in the model, in order (the ones a pass to
    ``layer_name`` goes through, in the kit's chain models)."""
    convs = conv_layers(model)
    get_conv_layer(model, layer_name)
    return convs[:convs.index(layer_name)]


def multi_output_submodel(model, upstream: list, layer_name: str):
    """Model from the input to [the output of each layer of *upstream*..., ``layer_name``'s
    output before its activation], built once per model: one pass gives them all."""
    import keras

    layer = get_conv_layer(model, layer_name)
    return built_once(model, ("multi-output submodel", tuple(upstream), layer_name), lambda: keras.Model(
        model.inputs, [model.get_layer(n).output for n in upstream] + [pre_activation_output(layer)],
        name=f"{model.name}_scan_{layer_name}"))


# ImageNet mean pixel, BGR order (Keras' "caffe" preprocessing of VGG16 and VGG19)
VGG_MEAN_BGR = (103.939, 116.779, 123.68)


def input_submodel(model, layer_name: str):
    """Model from the input to the *input* of ``layer_name`` (what the layer reads: the
    feeding layer's output, after pooling where there is some), built once per model;
    None where the layer reads the preprocessed image itself."""
    import keras

    layer = get_conv_layer(model, layer_name)
    chain = layers_into(model, layer_name, keep_channels=False)
    if len(chain) == 1 and isinstance(chain[0], keras.layers.InputLayer):
        return None  # nothing between the input and the layer: the caller's preprocessed image is its input
    return built_once(model, ("input submodel", layer_name),
                      lambda: keras.Model(model.inputs, layer.input, name=f"{model.name}_into_{layer_name}"))


def preprocess(model, images):
    """Model-specific preprocessing of RGB images in 0..255 (float tensor or array).

    VGG (both kit models): RGB -> BGR and ImageNet mean subtraction, the same
    float32 numbers as Keras' ``preprocess_input``. Written as one reverse and one
    add: Keras slices each channel and stacks them again, and in a gradient
    ascent the gradients of those slices cost ~15 ms per step at 128 px.
    """
    import tensorflow as tf

    x = tf.convert_to_tensor(images)
    if not x.dtype.is_floating:
        x = tf.cast(x, tf.float32)
    return tf.reverse(x, axis=[-1]) + tf.constant(-np.array(VGG_MEAN_BGR), x.dtype)


# ---------------------------------------------------------------- classify
@dataclass
class Prediction:
    rank: int
    class_id: int
    wnid: str
    label: str
    probability: float


def classify(model_with_top, images, top: int = 3, batch_size: int = 16):
    """Top-``top`` ImageNet labels and probabilities for each image.

    ``images``: uint8/float RGB array (N, 224, 224, 3) in 0..255. Returns a
    DataFrame with columns image (0-based), rank (1 = best), class_id, wnid,
    label, probability (0..1). Decoded with the class index in data/.
    """
    import pandas as pd

    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise LabError(f"top must be an integer >= 1, got {top!r}")
    x = np.asarray(images, dtype="float32")
    if x.ndim == 3:
        x = x[None]
    probs = model_with_top.predict(preprocess(model_with_top, x), batch_size=batch_size, verbose=0)
    index = class_index()
    rows = []
    for i, p in enumerate(probs):
        for r, cid in enumerate(np.argsort(-p, kind="stable")[:top]):
            wnid, label = index[int(cid)]
            rows.append({"image": i, "rank": r + 1, "class_id": int(cid), "wnid": wnid,
                         "label": label, "probability": float(p[cid])})
    return pd.DataFrame(rows)


def load_full_model_or_none(name: str = "vgg16"):
    """The model with its classifier top, or None with a one-line reason printed.

    The classifier-top weights (over 500 MB) are only reachable through Keras'
    download; offline, the lab goes on without step 1's classification demo.
    """
    try:
        return load_model(name, include_top=True)
    except ResourceMissingError as exc:
        print(f"Classifier-top weights for {name} are not available here, so the top-5 classification is skipped "
              f"(the lab needs only the convolutional weights, which the retrieval check verifies). "
              f"{str(exc).split('. Fix: ')[-1]}")
        return None
