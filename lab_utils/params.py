"""The notebooks' parameters: one place that lists them, their defaults, limits and
meaning, and checks them without TensorFlow (``render.sh`` does so before anything
starts). ``session.LabSetup`` runs each stage of the lab with the checked values.

Every notebook has one cell tagged ``parameters`` (papermill) holding the
choices below; the next cell calls ``check_parameters(...)``, which stops with a
one-line ``LabError`` on a bad value.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .architectures import check_circuit, check_model_name, conv_specs, forward_flops_per_pixel, model_names
from .config import LabError, is_url

# name: (default, allowed python types, what it is). The notebooks' parameters cell is
# generated from this table (parameters_cell, scripts/make_notebooks.py).
PARAMETERS = {
    "model_name": ("vgg16", (str,), 'Keras ImageNet model: "vgg16" (offline weights) or "vgg19" (download)'),
    "layer_name": ("block3_conv1", (str,), "a mid-level conv layer (see notebook 02's table)"),
    "filter_index": (31, (int,), "the filter (output channel) of layer_name you study, 0-based"),
    "top_k": (10, (int,), "single-channel filters kept, by L2 norm (some course variants use 6)"),
    "top_n": (10, (int,), "how many top classes and top images to list"),
    "probe_set": (None, (str, type(None)),
                  "None: the 1000 ImageNet images shipped in data/, or a folder path, or imagenet-mini"),
    "probe_limit": (None, (int, type(None)), "use only the first N probe images (None: all)"),
    "per_class": (None, (int, type(None)),
                  "at most N probe images per class (imagenet-mini: from train and val; the seeds used 50)"),
    "image_size": (224, (int,), "side of the probe images fed to the network, pixels"),
    "vis_size": (128, (int,), "side of the synthesized images, pixels"),
    "steps": (64, (int,), "gradient-ascent steps per synthesized image"),
    "seed": (0, (int,), "same seed, same synthesized images"),
    "n_neighbours": (8, (int,), "neighbouring filters shown for context"),
    "test_image": (None, (str, type(None)),
                   "your own image (path or URL): the filter's activation map on it; None: a shipped photo"),
}
DEFAULTS = {name: spec[0] for name, spec in PARAMETERS.items()}

# name: (minimum, maximum or None, why the maximum). One render (five notebooks) has a budget of
# 10 minutes on the reference machine of bench/RESULTS.md (2-core AMD EPYC, 23.5 GiB): there the
# default render computes for ~130 s (scan of 1000 images at 224 px at block3_conv1: 83 s; the
# two batched ascents: 0.437 + 0.295 s per step at 128 px, 64 steps: 47 s). Costs scale with
# image_size^2 and the number of images (scan), and with steps x vis_size^2 x images (ascent).
# The maxima below stop typos and absurd values with a message about that one parameter; the
# ascent's joint cost, which is what fills the budget, is bounded by ``check_ascent_cost``.
# top_k's maximum is the layer's input channels (``check_circuit``); filter_index's, its filters.
LIMITS = {
    "top_k": (1, None, ""),
    "top_n": (1, 100, "rows of the tables and images of the grids; more are not readable"),
    "probe_limit": (1, 20000, ("the decoded images stay in memory: 20000 at 224 px are 2.8 GiB, and their "
                               "scan at block3_conv1 takes ~28 min on a 2-core CPU")),
    "per_class": (1, 1000, "imagenet-mini has at most ~40 images per class; a folder's classes are its sub-folders"),
    "image_size": (32, 512, ("the scan costs image_size^2: 1000 images at 512 px take ~7 min at "
                             "block3_conv1 on a 2-core CPU (83 s at 224 px, the size VGG was trained at)")),
    "vis_size": (32, 1024, "8x the default side; one 1024 px image needs ~1.5 GiB in the ascent"),
    "steps": (1, 2048, "32x the default 64"),
    "seed": (0, None, ""),
    "n_neighbours": (0, 32, "33 images in one ascent batch, 3.7x the default's 9"),
}
# The ascent's joint bound (``check_ascent_cost``), from bench/RESULTS.md and measurements:
# - time: a step costs 2x the forward FLOPs of the convolutions before the target layer per image
#   (``architectures.forward_flops_per_pixel``), and a batched step runs at ~127 GFLOP/s on the
#   reference CPU (126.8 measured at block3_conv1 and at block2_conv2). That gives 47 s for the
#   default's two ascents (9 images at block3_conv1, 10 at block2_conv2; measured: 47 s); at most
#   10 minutes, the whole render budget, is ~12.8x the default's ascent work at block3_conv1;
# - memory: the largest batch holds ~1.5 KB per image pixel (peak RSS measured at 512 px, 9
#   images: 1.48-1.49 KB at block2_conv2, block3_conv1 and block5_conv3; the early, full-size
#   layers dominate). At most 6 GiB (~2 GiB more for the rest of a render stays within a
#   laptop's 8-16 GiB); the default's batch is 0.23 GiB.
ASCENT_FLOP_RATE = 127e9
ASCENT_MAX_SECONDS = 600
ASCENT_BYTES_PER_PIXEL = 1500
ASCENT_MAX_BYTES = 6 * 2 ** 30


def ascent_cost(full: dict) -> dict:
    """Estimated seconds (reference CPU) and peak bytes of the render's two ascents: the filter
    with its neighbours at layer_name, and the top_k channels at the feeding layer. Needs the
    layer and top_k already checked (``check_circuit``)."""
    spec = next(s for s in conv_specs(full["model_name"]) if s.name == full["layer_name"])
    n_filter = 1 + min(full["n_neighbours"], spec.out_channels - 1)
    n_channels = full["top_k"]
    pixels = full["vis_size"] ** 2
    flops = 2 * full["steps"] * pixels * (
        n_filter * forward_flops_per_pixel(full["model_name"], spec.name)
        + n_channels * forward_flops_per_pixel(full["model_name"], spec.feeder))
    return {"seconds": flops / ASCENT_FLOP_RATE,
            "bytes": max(n_filter, n_channels) * pixels * ASCENT_BYTES_PER_PIXEL,
            "n_filter": n_filter, "n_channels": n_channels, "feeder": spec.feeder}


def check_ascent_cost(full: dict) -> None:
    """A LabError where the gradient ascents would not fit the render budget (time or memory)."""
    cost = ascent_cost(full)
    work = (f"{full['steps']} steps x {full['vis_size']}^2 px x ({cost['n_filter']} images at "
            f"{full['layer_name']} + {cost['n_channels']} at {cost['feeder']})")
    if cost["seconds"] > ASCENT_MAX_SECONDS:
        raise LabError(f"the gradient ascent would take about {cost['seconds'] / 60:.1f} min on a 2-core CPU "
                       f"({work}), more than the render's {ASCENT_MAX_SECONDS // 60}-minute budget; "
                       f"lower steps, vis_size, n_neighbours or top_k")
    if cost["bytes"] > ASCENT_MAX_BYTES:
        raise LabError(f"the gradient ascent would need about {cost['bytes'] / 2 ** 30:.1f} GiB of memory for its "
                       f"largest batch ({max(cost['n_filter'], cost['n_channels'])} images of "
                       f"{full['vis_size']}x{full['vis_size']} px), more than {ASCENT_MAX_BYTES // 2 ** 30} GiB; "
                       f"lower vis_size, n_neighbours or top_k")


# The probe_set value that means Kaggle's imagenet-mini (images.IMAGENET_MINI is its dataset id).
PROBE_SET_IMAGENET_MINI = "imagenet-mini"
PROBE_SET_VALUES = "None (the embedded set), a folder, or 'imagenet-mini'"


@dataclass(frozen=True)
class ProbeSource:
    """What a ``probe_set`` value means (``probe_source``).

    ``kind``: "embedded" (None: the 1000 images in data/probe-224), "imagenet-mini"
    (Kaggle, via kagglehub), "url" (one image), "folder", "file" (one image) or
    "missing" (a path that does not exist). ``path``: the expanded path for folder,
    file and missing (relative paths are relative to the current folder)."""

    kind: str
    value: str | None
    path: Path | None = None

    @property
    def is_local_folder(self) -> bool:
        """Decoded from a folder on this machine (its scan can be cached by file contents)."""
        return self.kind in ("embedded", "folder")

    def describe(self) -> str:
        return "embedded data/probe-224" if self.kind == "embedded" else str(self.value)


def probe_source(value) -> ProbeSource:
    """The one place that says what a ``probe_set`` value means (``ProbeSource``)."""
    if value is None:
        return ProbeSource("embedded", None)
    text = str(value)
    if text == PROBE_SET_IMAGENET_MINI:
        return ProbeSource("imagenet-mini", text)
    if is_url(text):
        return ProbeSource("url", text)
    path = Path(text).expanduser()
    kind = "folder" if path.is_dir() else "file" if path.exists() else "missing"
    return ProbeSource(kind, text, path)


def parameters_cell() -> str:
    """The source of every notebook's ``parameters`` cell (papermill's tag): each parameter
    read from the lab choice (``choice.load_lab_choice``), with what it is as a comment, and
    the cell's snapshot of its own values as the last line (``choice.resolve`` needs it to
    tell a value typed here from one papermill injects after the cell)."""
    lines = ["# Parameters: each value is your lab choice (lab-choice.yaml at the kit's root).",
             "# Notebook 02 is where you choose: type a value there (filter_index = 7) and run it,",
             "# or use its explorer's \"use this filter\" button; notebooks 03-05 then follow.",
             "# render.sh -p / papermill values replace these for one run and are never saved.",
             "from lab_utils.choice import load_lab_choice",
             "choice = load_lab_choice()"]
    for name, (default, _types, doc) in PARAMETERS.items():
        shown = f'"{default}"' if isinstance(default, str) else repr(default)
        lines.append(f"{name + ' = choice.' + name:<42} # {doc} [kit default: {shown}]")
    lines.append("parameters_cell_values = choice.values_in(globals())  # what this cell says (keep last)")
    return "\n".join(lines)


def _valid_strings(name: str, full: dict) -> str:
    if name == "model_name":
        return ", ".join(model_names())
    if name == "layer_name":
        return ", ".join(s.name for s in conv_specs(full["model_name"]) if s.feeder is not None)
    return PROBE_SET_VALUES


def check_values(params: dict) -> dict:
    """Every check that needs no TensorFlow: names, types, ranges, the layer, filter and
    ``top_k`` against the model's conv-layer table (``architectures``), the ascent's cost,
    and that a local probe folder holds images. Returns the full parameter dict.
    ``render.sh`` runs this before anything starts (well under a second)."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise LabError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(PARAMETERS)}")
    full = {**DEFAULTS, **params}
    for name, value in full.items():
        types = PARAMETERS[name][1]
        if isinstance(value, bool) or not isinstance(value, types):
            want = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise LabError(f"{name} must be {want}, got {value!r} ({PARAMETERS[name][2]})")
        if isinstance(value, str) and not value.strip():
            if name == "layer_name":
                check_model_name(full["model_name"])  # its layers are the valid values
            raise LabError(f"{name} must not be empty, got {value!r}; valid: {_valid_strings(name, full)}")
        if name in LIMITS and value is not None:
            low, high, why = LIMITS[name]
            if value < low:
                raise LabError(f"{name} must be >= {low}, got {value} ({PARAMETERS[name][2]})")
            if high is not None and value > high:
                raise LabError(f"{name} must be <= {high} ({why}), got {value}")
    source = probe_source(full["probe_set"])
    if source.kind == "imagenet-mini":
        check_imagenet_mini_size(full["per_class"], full["probe_limit"])
    check_test_image(full["test_image"])
    if source.kind == "missing":
        raise LabError(f"probe_set {source.value!r} does not exist; give {PROBE_SET_VALUES}")
    if source.kind == "folder":
        from .images import check_probe_folder  # numpy and PIL only: still no TensorFlow

        check_probe_folder(source.value)  # a folder without images fails here, not after the model load
    check_circuit(full["model_name"], full["layer_name"], full["filter_index"], full["top_k"])
    check_ascent_cost(full)
    return full


# imagenet-mini (Kaggle ifigotin/imagenetmini-1000): 34,745 train + 3,923 val images of the 1000
# classes, 32-40 per class. All of them decoded at 224 px are 5.8 GB: more than probe_limit allows.
IMAGENET_MINI_IMAGES = 34_745 + 3_923


def check_imagenet_mini_size(per_class, probe_limit) -> None:
    """A LabError where imagenet-mini (train + val) would decode more than ``LIMITS``' probe_limit
    maximum (set per_class or probe_limit)."""
    most = LIMITS["probe_limit"][1]
    n = min(IMAGENET_MINI_IMAGES, 1000 * per_class if per_class is not None else IMAGENET_MINI_IMAGES)
    if probe_limit is not None:
        n = min(n, probe_limit)
    if n > most:
        raise LabError(f"probe_set 'imagenet-mini' would decode about {n:,} images (train and val, "
                       f"{'per_class=' + str(per_class) if per_class else 'all of each class'}), more than {most:,} "
                       f"({LIMITS['probe_limit'][2]}); set per_class (e.g. 10: 10,000 images) or probe_limit")


def check_test_image(value) -> None:
    """A LabError where ``test_image`` names no file (a URL is fetched, and checked, when used)."""
    if value is None or is_url(value):
        return
    path = Path(value).expanduser()
    if path.is_dir():
        raise LabError(f"test_image must be one image file (or a URL), got the folder {value!r}")
    if not path.is_file():
        raise LabError(f"test_image {value!r} does not exist (give a path to an image file or a URL, "
                       f"relative paths from the notebook's folder)")
