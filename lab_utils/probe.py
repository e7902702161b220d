"""Step 2, dataset side: which classes and images excite a filter most.

``scan_images`` sends the whole probe set through the network once, in
batches, and keeps the mean activation of **every** channel of the layer for
every image: ranking another filter of the same layer is then a column lookup.
Scans are cached on disk, keyed by the model's weights, the layer and the
probe set's pixels; ``scan_folder`` keys a folder's scan by its files' bytes
instead, so a cached scan is served without decoding the folder.

Activation = the layer's output after its ReLU (what the next layer sees);
"mean activation" of a filter on an image = the mean of its output map over
all spatial positions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cache
from .config import LabError, progress
from .images import ProbeSet, folder_content_key, load_probe_set, local_folder, probe_set_name
from .models import (built_once, check_filter, get_conv_layer, model_fingerprint, multi_output_submodel, preprocess,
                     submodel, upstream_conv_layers)


# Part of every scan's cache key: a new version of what a scan holds is a new entry.
SCAN_KIND = "scan+peaks+pre+upstream"


@dataclass
class Scan:
    """Mean activation of every channel of one layer on every probe image.

    ``means``: float32 (n_images, n_channels); row i is image i of the probe set
    (``labels[i]``, ``sources[i]``), column f is filter f (0-based).
    ``peaks``: int32 (n_images, n_channels), where in the layer's output map filter f is
    strongest on image i, as a flat index ``row * map_shape[1] + col`` (``peak_position``);
    ``map_shape``: (rows, cols) of that map. A crop around a peak shows what excited it.
    ``pre_means``: float32 (n_images, n_channels), the mean of the filter's output *before*
    its ReLU: where it is most negative, the image drives the filter against its preference.
    ``upstream``: conv layer name -> float32 (n_images, its channels), the mean activation of
    every conv layer before this one, from the same pass (the feeding layer's channels need
    no second pass).
    """

    model_name: str
    layer_name: str
    means: np.ndarray
    labels: list
    wnids: list
    sources: list
    probe_name: str
    peaks: np.ndarray | None = None
    map_shape: tuple | None = None
    pre_means: np.ndarray | None = None
    upstream: dict = field(default_factory=dict)
    from_cache: bool = False

    @property
    def n_images(self) -> int:
        return self.means.shape[0]

    def peak_position(self, image: int, filter_index: int) -> tuple[float, float]:
        """Where filter *filter_index* peaks on probe image *image*, as fractions (y, x) of the
        image's height and width (the centre of the peak's cell of the output map)."""
        rows, cols = self.map_shape
        flat = int(self.peaks[image, filter_index])
        return (flat // cols + 0.5) / rows, (flat % cols + 0.5) / cols


def _fingerprint(model, layer_name):
    # Hashed on every call, never memoized per model object: weights changed in
    # place (set_weights, kernel.assign) must give a new cache key, not a stale hit.
    return model_fingerprint(model, upto=layer_name)


def scan_pass(model, layer_name):
    """The scan's compiled step (public: the benchmark times it on its own).

    Batch of uint8 RGB images -> (mean activation (batch, channels), peak position (batch, channels),
    map shape (2,), pre-ReLU mean (batch, channels), [mean activation of each conv layer
    before this one]), built once per (model, layer). The peak is the flat index of the
    largest value of each channel's map (``Scan.peaks``)."""
    import tensorflow as tf

    def build():
        layer = get_conv_layer(model, layer_name)
        before = upstream_conv_layers(model, layer_name)
        sub = multi_output_submodel(model, before, layer_name)

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def channel_means(batch):
            x = preprocess(model, tf.cast(batch, tf.float32))
            outs = sub(x, training=False)
            *ups, pre = outs if isinstance(outs, (list, tuple)) else [outs]
            maps = layer.activation(pre)
            shape = tf.shape(maps)
            flat = tf.reshape(maps, [shape[0], shape[1] * shape[2], shape[3]])
            peaks = tf.argmax(flat, axis=1, output_type=tf.int32)
            return (tf.reduce_mean(maps, axis=(1, 2)), peaks, shape[1:3], tf.reduce_mean(pre, axis=(1, 2)),
                    [tf.reduce_mean(u, axis=(1, 2)) for u in ups])

        return channel_means

    return built_once(model, ("scan pass", layer_name), build)


def _scan_arrays(hit: dict, upstream_names: list) -> dict:
    """Scan fields from a cache entry (``_cache_arrays``' inverse)."""
    return {"means": hit["means"], "peaks": hit["peaks"], "map_shape": tuple(int(v) for v in hit["map_shape"]),
            "pre_means": hit["pre_means"], "upstream": {n: hit[f"up:{n}"] for n in upstream_names}}


def _cache_arrays(scan: "Scan") -> dict:
    return {"means": scan.means, "peaks": scan.peaks, "map_shape": np.array(scan.map_shape),
            "pre_means": scan.pre_means, **{f"up:{n}": v for n, v in scan.upstream.items()}}


def _as_uint8_pixels(images: np.ndarray) -> np.ndarray:
    """RGB pixels 0..255 as uint8, the scan's input type; refuse arrays that are not pixels.

    Float arrays holding 0..255 values are rounded (a cast would truncate 254.9 to
    254); floats in 0..1 or already preprocessed (negative) values are refused,
    because scanning them as pixels would silently give wrong activations.
    """
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool or not np.issubdtype(images.dtype, np.number):
        raise LabError(f"images must be RGB pixels 0..255 (uint8), got dtype {images.dtype}")
    lo, hi = float(np.min(images)), float(np.max(images))
    if not np.isfinite([lo, hi]).all() or lo < 0 or hi > 255:
        raise LabError(f"images must be RGB pixels 0..255, got values from {lo:g} to {hi:g} "
                       "(already preprocessed? pass the raw pixels; the kit preprocesses them itself)")
    if np.issubdtype(images.dtype, np.floating) and hi <= 1.0 and hi > 0:
        raise LabError("images look scaled to 0..1; multiply by 255 (the kit expects pixels 0..255)")
    return np.rint(images).astype(np.uint8)


def as_probe_set(images) -> ProbeSet:
    """A ProbeSet from a ProbeSet, a folder/path/URL (or list of them), or an image array."""
    if isinstance(images, ProbeSet):
        return images
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3:
            raise LabError(f"images must be an array (N, H, W, 3), got shape {images.shape}")
        if len(images) == 0:
            raise LabError("the probe set is empty: give at least one image")
        n = len(images)
        return ProbeSet(_as_uint8_pixels(images), [f"image {i}" for i in range(n)], [None] * n,
                        [f"array[{i}]" for i in range(n)], "array")
    return load_probe_set(images)


def scan_images(model, layer_name: str, images, batch_size: int = 32, use_cache: bool = True) -> Scan:
    """Mean activation of every channel of ``layer_name`` for every probe image.

    One batched, compiled pass (``batch_size`` images at a time) with a progress
    bar; the result is cached on disk (see module doc) unless ``use_cache`` is False.
    """
    get_conv_layer(model, layer_name)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise LabError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    probe = as_probe_set(images)
    name = getattr(model, "_lab_name", model.name)
    before = upstream_conv_layers(model, layer_name)
    key = cache.cache_key(kind=SCAN_KIND, model=_fingerprint(model, layer_name), layer=layer_name,
                          probe=probe.fingerprint())
    if use_cache:
        hit = cache.load("scans", key)
        if hit is not None:
            return Scan(name, layer_name, labels=list(probe.labels), wnids=list(probe.wnids),
                        sources=list(probe.sources), probe_name=probe.name, from_cache=True,
                        **_scan_arrays(hit, before))
    fn = scan_pass(model, layer_name)
    n = len(probe)
    parts: dict = {"means": [], "peaks": [], "pre_means": [], **{f"up:{u}": [] for u in before}}
    map_shape = None
    bar = progress(total=n, desc=f"scan {layer_name}", unit="img")
    for start in range(0, n, batch_size):
        means, peaks, shape, pre, ups = fn(probe.images[start:start + batch_size])
        parts["means"].append(means.numpy())
        parts["peaks"].append(peaks.numpy())
        parts["pre_means"].append(pre.numpy())
        for u, values in zip(before, ups):
            parts[f"up:{u}"].append(values.numpy())
        map_shape = tuple(int(v) for v in shape.numpy())
        bar.update(min(batch_size, n - start))
    bar.close()
    joined = {k: np.concatenate(v).astype(np.int32 if k == "peaks" else np.float32) for k, v in parts.items()}
    scan = Scan(name, layer_name, joined["means"], list(probe.labels), list(probe.wnids), list(probe.sources),
                probe.name, joined["peaks"], map_shape, joined["pre_means"],
                {u: joined[f"up:{u}"] for u in before})
    if use_cache:
        cache.save("scans", key, **_cache_arrays(scan))
    return scan


def scan_folder(model, layer_name: str, folder=None, size: int = 224, limit: int | None = None,
                batch_size: int = 32, use_cache: bool = True, per_class: int | None = None) -> Scan:
    """``scan_images`` of ``load_probe_set(folder, size, limit, per_class)`` (``folder=None``: the
    embedded set), cached under the folder's files rather than its pixels.

    The key is ``images.folder_content_key`` (every file's bytes and the decode
    settings) plus the model's weights and the layer; the entry holds the rows
    (labels, wnids, paths relative to the folder) with the means, so a hit returns
    the Scan without decoding anything. A miss decodes the folder and scans it.
    """
    get_conv_layer(model, layer_name)
    root = local_folder(folder)
    content = folder_content_key(folder, size, limit, per_class) if use_cache and root is not None else None
    name = getattr(model, "_lab_name", model.name)
    if content is not None:
        key = cache.cache_key(kind=f"{SCAN_KIND}-files", model=_fingerprint(model, layer_name), layer=layer_name,
                              files=content)
        hit = cache.load("scans", key)
        if hit is not None:
            return Scan(name, layer_name, labels=[str(v) for v in hit["labels"]],
                        wnids=[str(v) or None for v in hit["wnids"]],
                        sources=[str(root / str(v)) for v in hit["sources"]], probe_name=probe_set_name(folder),
                        from_cache=True, **_scan_arrays(hit, upstream_conv_layers(model, layer_name)))
    scan = scan_images(model, layer_name, load_probe_set(folder, size=size, limit=limit, per_class=per_class),
                       batch_size, use_cache)
    if content is not None:
        cache.save("scans", key, **_cache_arrays(scan),
                   labels=np.array(scan.labels, dtype=str),
                   wnids=np.array([w or "" for w in scan.wnids], dtype=str),
                   sources=np.array([Path(s).relative_to(root).as_posix() for s in scan.sources], dtype=str))
    return scan


def rank_images_lowest(scan: Scan, filter_index: int, top_n: int = 10):
    """The other end: images ordered by the filter's mean output *before* ReLU, lowest
    first (what the filter is tuned against; after ReLU they are all 0 alike).

    DataFrame columns: rank, image, class, wnid, mean_pre_activation, source. Ties: lower
    image index first."""
    f, top_n = _check_scan_filter(scan, filter_index, top_n)
    if scan.pre_means is None:
        raise LabError("this scan has no pre-ReLU means (made by an older version of the kit): scan again")
    return _ranked_images(scan, scan.pre_means[:, f], "mean_pre_activation", top_n, highest=False)


def _ranked_images(scan: Scan, values, column: str, top_n: int, highest: bool = True):
    """The top_n probe images by *values* (one per image), highest or lowest first, ties:
    lower image index first. DataFrame: rank, image, class, wnid, *column*, source."""
    import pandas as pd

    values = np.asarray(values, np.float64)
    order = np.lexsort((np.arange(len(values)), -values if highest else values))[:top_n]
    return pd.DataFrame({
        "rank": np.arange(1, len(order) + 1),
        "image": order,
        "class": [scan.labels[i] for i in order],
        "wnid": [scan.wnids[i] or "" for i in order],
        column: values[order],
        "source": [scan.sources[i] for i in order],
    })


def channel_top_images(scan: Scan, layer_name: str, channels, top_n: int = 3) -> dict:
    """Channel -> the probe images that excite channel c of *layer_name* (a conv layer the
    scan passed through, e.g. the feeding layer) most: DataFrame rank, image, class, wnid,
    mean_activation, source (ties: lower image index first). From the same pass."""
    if layer_name not in scan.upstream:
        raise LabError(f"the scan of {scan.layer_name} kept no means of {layer_name}; it keeps those of "
                       f"{', '.join(scan.upstream) or 'no layer'}")
    means = scan.upstream[layer_name]
    return {int(c): _ranked_images(scan, means[:, int(c)], "mean_activation", top_n) for c in channels}


def _check_scan_filter(scan: Scan, filter_index, top_n) -> tuple[int, int]:
    from .models import check_index

    f = check_index(filter_index, scan.means.shape[1], f"filter_index of {scan.layer_name}")
    if isinstance(top_n, bool) or not isinstance(top_n, (int, np.integer)) or top_n < 1:
        raise LabError(f"top_n must be an integer >= 1, got {top_n!r}")
    return f, int(top_n)


def rank_classes(scan: Scan, filter_index: int, top_n: int = 10):
    """Classes ordered by the filter's mean activation (averaged over the class's images).

    DataFrame columns: rank (1 = most excited), class, wnid, mean_activation,
    n_images, ci_low and ci_high (95% percentile bootstrap interval of the class mean;
    NaN for a class with one image). Ties are broken by class name, so the order is
    deterministic.
    """
    import pandas as pd

    f, top_n = _check_scan_filter(scan, filter_index, top_n)
    df = pd.DataFrame({"class": scan.labels, "wnid": [w or "" for w in scan.wnids],
                       "activation": scan.means[:, f].astype(np.float64)})
    grouped = df.groupby(["class", "wnid"], sort=True)["activation"].agg(["mean", "size"]).reset_index()
    grouped = grouped.rename(columns={"mean": "mean_activation", "size": "n_images"})
    grouped = grouped.sort_values(["mean_activation", "class"], ascending=[False, True], kind="stable").head(top_n)
    grouped.insert(0, "rank", np.arange(1, len(grouped) + 1))
    grouped = grouped.reset_index(drop=True)
    by_class = df.groupby(["class", "wnid"], sort=False)["activation"]
    intervals = [bootstrap_interval(by_class.get_group((r["class"], r["wnid"])).to_numpy())
                 for _, r in grouped.iterrows()]
    grouped["ci_low"] = [lo for lo, _ in intervals]
    grouped["ci_high"] = [hi for _, hi in intervals]
    return grouped


def rank_groups(scan: Scan, filter_index: int, top_n: int = 10, groups: dict | None = None):
    """Coarse ImageNet groups (``imagenet.class_groups``: WordNet 3.0, groups of at least 5
    classes) ordered by the filter's mean activation over their images. With one image per
    class this is what a class ranking cannot be: a mean over several images.

    DataFrame columns: rank, group, mean_activation, n_images, n_classes, ci_low, ci_high
    (95% bootstrap interval of the group mean). Images whose wnid has no group are left out;
    no rows where no image has one. Ties: by group name."""
    import pandas as pd

    from .imagenet import class_groups

    f, top_n = _check_scan_filter(scan, filter_index, top_n)
    groups = class_groups() if groups is None else groups
    df = pd.DataFrame({"group": [groups.get(w) if w else None for w in scan.wnids],
                       "wnid": list(scan.wnids), "activation": scan.means[:, f].astype(np.float64)})
    df = df[df["group"].notna()]
    columns = ["rank", "group", "mean_activation", "n_images", "n_classes", "ci_low", "ci_high"]
    if df.empty:  # e.g. a folder whose names carry no wnid: no groups, said by format_groups
        return pd.DataFrame(columns=columns)
    stats = df.groupby("group", sort=True).agg(mean_activation=("activation", "mean"),
                                               n_images=("activation", "size"), n_classes=("wnid", "nunique"))
    stats = stats.reset_index().sort_values(["mean_activation", "group"], ascending=[False, True],
                                            kind="stable").head(top_n).reset_index(drop=True)
    stats.insert(0, "rank", np.arange(1, len(stats) + 1))
    intervals = [bootstrap_interval(df.loc[df["group"] == g, "activation"].to_numpy()) for g in stats["group"]]
    stats["ci_low"] = [lo for lo, _ in intervals]
    stats["ci_high"] = [hi for _, hi in intervals]
    return stats


CLASS_TABLE_COLUMNS = ["rank", "class", "mean_activation", "n_images", "ci_low", "ci_high"]


def format_class_table(top_classes) -> str:
    """``rank_classes``' table as text, as notebook 02 prints it (and ``verify`` recomputes it)."""
    return top_classes[CLASS_TABLE_COLUMNS].to_string(index=False, float_format="{:.2f}".format)


def format_groups(groups) -> str:
    """``rank_groups``' table as text, or why there is none."""
    if groups.empty:
        return ("no ImageNet groups: no probe image has a grouped ImageNet wnid in its name "
                "(<wnid>_<name>.jpg or a <wnid> folder)")
    cols = ["rank", "group", "mean_activation", "n_images", "n_classes", "ci_low", "ci_high"]
    return groups[cols].to_string(index=False, float_format="{:.2f}".format)


BOOTSTRAP_RESAMPLES = 2000


def bootstrap_interval(values, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of *values* (deterministic for a seed);
    (nan, nan) for fewer than 2 values: one image gives a value, not a spread."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (resamples, len(v)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def rank_images(scan: Scan, filter_index: int, top_n: int = 10):
    """Images ordered by the filter's mean activation.

    DataFrame columns: rank, image (0-based index into the probe set), class,
    wnid, mean_activation, source. Ties: lower image index first.
    """
    f, top_n = _check_scan_filter(scan, filter_index, top_n)
    return _ranked_images(scan, scan.means[:, f], "mean_activation", top_n)


def activation_maps(model, layer_name: str, filter_index: int, images) -> np.ndarray:
    """The filter's output maps (after ReLU) for a few images: float32 (N, h, w)."""
    f = check_filter(model, layer_name, filter_index)
    pixels = np.asarray(images)
    if pixels.ndim != 4 or pixels.shape[-1] != 3:
        raise LabError(f"images must be an array (N, H, W, 3), got shape {pixels.shape}")
    x = preprocess(model, _as_uint8_pixels(pixels).astype("float32"))
    out = submodel(model, layer_name).predict(x, verbose=0, batch_size=16)
    return out[..., f]


def format_ranking(df, columns=None) -> str:
    cols = columns or [c for c in df.columns if c not in ("source", "wnid")]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")
