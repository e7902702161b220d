"""lab_utils: the analysis library of CNN Circuits Lab.

One module per stage of the lab:
- ``models``: load ImageNet models (offline weights first), conv layers,
  feeding layers, sub-models, ``classify`` (step 1);
- ``retrieval``: step 1's offline check (retrieval vs random weights) and top-5;
- ``images``: images, probe sets, imagenet-mini via kagglehub;
- ``imagenet``: the ImageNet class index and labels (no TensorFlow);
- ``probe``: one batched scan of a probe set, class/image rankings (step 2);
- ``featurevis``: batched gradient-ascent feature visualization (steps 2, 4);
- ``atlas``: every filter of a layer visualized, on one zoomable page (opt-in:
  ``render.sh --atlas LAYER``);
- ``circuits``: single-channel filters, norms, categories (step 3, 5);
- ``ablation``: the experiment on the circuit: input channels zeroed (step 4, 5);
- ``stimuli``: gratings and colour fields, the filter's tuning curves (step 4);
- ``choice``: the student's lab choice (``lab-choice.yaml``), used by every notebook;
- ``explorer``: notebook 02's filter explorer (ipywidgets) and its static layer atlas;
- ``plots``: every figure of the lab;
- ``architectures``: the VGG conv-layer tables (checks without TensorFlow);
- ``params``: the notebooks' parameters and their checks (no TensorFlow);
- ``session``: ``LabSetup``, the checked parameters plus the model, one method
  per stage;
- ``render``: ``render.sh``, the lab rendered to HTML; ``submissions`` (a package):
  ``render.sh --submissions``, grading a folder of hand-ins; ``sweep``:
  ``render.sh --sweep FILE``, one render per (layer, filter) pair, compared on one
  index (``cluster``: local jobs or a Dask cluster); ``pages``: the page writer they use.

Heavy modules (TensorFlow) load on first use, so ``import lab_utils`` is fast.
"""
from __future__ import annotations

import importlib
import os

# TensorFlow's C++ logging must never reach a notebook's stored outputs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# oneDNN convolutions (see config.import_tensorflow_quietly); must precede the TF import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from .config import LabError, ResourceMissingError  # noqa: E402

_EXPORTS = {
    "models": ["load_model", "conv_layers", "describe_layers", "feeding_layer", "mid_level_layers",
               "submodel", "classify", "load_full_model_or_none", "model_names", "preprocess"],
    "retrieval": ["model_check", "ModelCheck", "top5_classification"],
    "imagenet": ["class_index", "wnid_to_name"],
    "images": ["load_image", "load_probe_set", "load_imagenet_mini", "ProbeSet", "demo_images"],
    "probe": ["scan_images", "rank_classes", "format_class_table", "rank_groups", "format_groups", "rank_images", "activation_maps", "Scan"],
    "featurevis": ["visualize_channels", "render_channels", "render_objectives", "ChannelObjective", "Visualization"],
    "atlas": ["layer_atlas", "LayerAtlas", "write_atlas_page", "atlas_image"],
    "ablation": ["ablate", "Ablation", "format_ablation"],
    "stimuli": ["tuning", "Tuning", "grating"],
    "circuits": ["channel_table", "channel_norms", "filter_kernel", "CATEGORY_RULE", "circuit_paragraph"],
    "params": ["PARAMETERS"],
    "session": ["check_parameters", "check_parameters_from", "LabSetup"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["LabError", "ResourceMissingError"]


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lab_utils' has no attribute {name!r}")
