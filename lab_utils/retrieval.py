"""Step 1: does the network work? A check that needs only the convolutional weights.

**Retrieval.** Each shipped image is described by the network's *pooled deep features*:
the mean over positions of the last conv layer's output after ReLU (512 numbers for VGG).
For every image, its nearest images by cosine similarity of those features are its
neighbours. The shipped set holds one image per class, so no neighbour can share its
class; a neighbour counts as *right* when it belongs to the same coarse ImageNet group
(``imagenet.class_groups``: WordNet 3.0 hypernyms, e.g. "bird", "wheeled vehicle").

**Baseline.** The same architecture with random weights (Glorot-uniform kernels from a
seeded generator, zero biases: Keras' own initialization, reproducible) goes through the
same retrieval. Random features still carry colour and texture, so the baseline is above
chance; trained weights should be far ahead of it. Both scores and the chance level are
printed: the check verifies that the weights are ImageNet-trained, not just loaded.

On the shipped set the trained VGG16 finds a same-group nearest neighbour for 24.8% of the
images, random weights for 4.0% (chance: 2.0%). ../LAB.md quotes "about 69% vs 29%" for a
check of this kind on the 1000 images with groups it does not state; its chance level near
30% implies a few large groups (e.g. animal / artefact), so the numbers are not comparable:
the kit's 40 groups of 5-60 classes are a harder task, and the ratio (6x) is the evidence.

**Classification** (online only): where the classifier top is available,
``top5_classification`` runs the real top-5 prediction on the demo images.

Cost: the retrieval set is ``PER_GROUP`` images of each group at ``RETRIEVAL_PX`` px
(200 images; a full-depth pass at a quarter of the 224 px pixels), once per model, cached
on disk by the weights, the images' bytes and the seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache
from .config import EMBEDDED_PROBE_DIR, LabError
from .images import DEMO_IMAGES

RETRIEVAL_PX = 112   # side of the images of the retrieval check, pixels
PER_GROUP = 5        # images per coarse group (the first classes of the group, by wnid)
NEIGHBOURS = 5       # neighbours per image in the score and the figure
CHECK_VERSION = "retrieval-v1"  # part of the cache key: bump when the features or the set change


@dataclass(frozen=True)
class RetrievalSet:
    """The images of the check. ``sources``: file paths; ``labels``: class names;
    ``wnids``; ``groups``: coarse group names (every image has one)."""

    sources: tuple
    labels: tuple
    wnids: tuple
    groups: tuple
    size: int

    def __len__(self) -> int:
        return len(self.sources)

    def content_key(self) -> str:
        """sha256 over the files' names and bytes and the size (what the features depend on)."""
        import hashlib

        h = hashlib.sha256(repr((self.size, CHECK_VERSION)).encode())
        for src in self.sources:
            data = Path(src).read_bytes()
            h.update(Path(src).name.encode() + len(data).to_bytes(8, "little") + data)
        return h.hexdigest()[:24]

    def pixels(self, indices=None) -> np.ndarray:
        """uint8 (n, size, size, 3) of the images at *indices* (default all), decoded now."""
        from .images import load_image

        chosen = range(len(self)) if indices is None else indices
        return np.stack([load_image(self.sources[i], self.size) for i in chosen])


def retrieval_set(per_group: int = PER_GROUP, size: int = RETRIEVAL_PX, folder=None) -> RetrievalSet:
    """The first *per_group* classes (by wnid) of every coarse group that has images in
    *folder* (default: the shipped ``data/probe-224``), plus the demo images of step 1 (the
    figure's queries), in wnid order. Raises ``LabError`` when fewer than two groups have
    images (no retrieval score is possible then)."""
    from .images import label_from_name, list_image_files
    from .imagenet import class_groups

    if isinstance(per_group, bool) or not isinstance(per_group, int) or per_group < 2:
        raise LabError(f"per_group must be an integer >= 2 (an image needs a same-group neighbour), got {per_group!r}")
    folder = Path(folder) if folder is not None else EMBEDDED_PROBE_DIR
    groups = class_groups()
    by_group: dict[str, list] = {}
    for path in list_image_files(folder).files:
        label, wnid = label_from_name(path, False)
        if wnid and groups.get(wnid):
            by_group.setdefault(groups[wnid], []).append((wnid, str(path), label))
    demo = {stem.split("_", 1)[0] for stem in DEMO_IMAGES}
    chosen = []
    for group, members in by_group.items():
        members.sort()
        chosen += [(w, s, lab, group) for i, (w, s, lab) in enumerate(members) if i < per_group or w in demo]
    if len({c[3] for c in chosen}) < 2:
        raise LabError(f"the retrieval check needs images of at least two coarse ImageNet groups in {folder} "
                       f"(files named <wnid>_<name>.jpg); found {len(chosen)} image(s) in groups")
    chosen.sort()
    wnids, sources, labels, group_names = zip(*chosen)
    return RetrievalSet(tuple(sources), tuple(labels), tuple(wnids), tuple(group_names), size)


def pooled_features(model, images, batch_size: int = 32) -> np.ndarray:
    """float32 (N, C): the mean over positions of the last conv layer's output (after its
    ReLU) for uint8 RGB images (N, H, W, 3) in 0..255; one compiled pass per model."""
    import tensorflow as tf

    from .models import built_once, conv_layers, preprocess, submodel

    last = conv_layers(model)[-1]
    deep = submodel(model, last)

    def build():
        return tf.function(lambda x: tf.reduce_mean(deep(preprocess(model, x), training=False), axis=[1, 2]))

    pooled = built_once(model, ("pooled features", last), build)
    out = [pooled(tf.constant(images[i:i + batch_size], tf.float32)).numpy()
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32)


def random_weights_model(model, seed: int = 0):
    """The same architecture as *model* with random weights: every kernel Glorot-uniform
    (Keras' default for conv layers: limit sqrt(6 / (fan_in + fan_out))) from
    ``numpy.random.default_rng(seed)``, every bias zero; built once per (model, seed).
    The generator is the function's own: the notebook's random state is untouched."""
    import keras

    from .models import built_once

    def build():
        copy = keras.models.clone_model(model)
        rng = np.random.default_rng(seed)
        for layer in copy.layers:
            weights = layer.get_weights()
            if not weights:
                continue
            kernel = weights[0]
            receptive = int(np.prod(kernel.shape[:-2])) if kernel.ndim > 2 else 1
            fan_in, fan_out = receptive * kernel.shape[-2], receptive * kernel.shape[-1]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            layer.set_weights([rng.uniform(-limit, limit, kernel.shape).astype(kernel.dtype)]
                              + [np.zeros_like(w) for w in weights[1:]])
        copy._lab_name = f"{getattr(model, '_lab_name', model.name)}-random-{seed}"
        return copy

    return built_once(model, ("random weights copy", seed), build)


@dataclass(frozen=True)
class RetrievalScore:
    """How often an image's neighbours share its coarse group, over all images of the set.
    ``nearest``: fraction of images whose nearest neighbour is in their group (0..1);
    ``precision``: mean fraction of the k nearest in the group; ``chance``: the expected
    fraction for neighbours drawn at random."""

    nearest: float
    precision: float
    k: int
    chance: float


def nearest_neighbours(features: np.ndarray, k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """(indices (N, k), cosine similarities (N, k)) of each row's k most similar other rows,
    most similar first; ties go to the lower index (stable). The features are centred over
    the set first: a random network's pooled features share one dominant direction (their
    raw cosine similarities are all ~1.00), and centring removes what every image shares."""
    centred = features - features.mean(axis=0, keepdims=True)
    z = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sim, order, axis=1)


def retrieval_score(neighbours: np.ndarray, groups) -> RetrievalScore:
    """The group agreement of *neighbours* (``nearest_neighbours`` indices) for *groups*
    (one name per image)."""
    groups = np.asarray(groups)
    same = groups[neighbours] == groups[:, None]
    n = len(groups)
    others = np.array([(groups == g).sum() - 1 for g in groups])
    return RetrievalScore(float(same[:, 0].mean()), float(same.mean()), int(neighbours.shape[1]),
                          float(others.mean() / (n - 1)))


@dataclass(frozen=True)
class Retrieval:
    """One model's retrieval on the set: neighbours (N, k) indices, their similarities, score."""

    weights: str
    neighbours: np.ndarray
    similarities: np.ndarray
    score: RetrievalScore


@dataclass(frozen=True)
class ModelCheck:
    """Step 1's offline check: the trained model's retrieval and the random-weights baseline's."""

    model_name: str
    layer_name: str
    images: RetrievalSet
    trained: Retrieval
    random: Retrieval
    seed: int

    def text(self) -> str:
        t, r = self.trained.score, self.random.score
        k = t.k
        return "\n".join([
            f"Retrieval check: {len(self.images)} shipped images of {len(set(self.images.groups))} coarse ImageNet "
            f"groups at {self.images.size} px; features: mean of {self.layer_name} over positions; neighbours by "
            f"cosine similarity (centred features); right = same coarse group.",
            f"  {'weights':<34} {'nearest in group':>16} {'top-' + str(k) + ' in group':>13}",
            f"  {self.model_name + ' ImageNet (trained)':<34} {t.nearest:>16.1%} {t.precision:>13.1%}",
            f"  {'same architecture, random (seed ' + str(self.seed) + ')':<34} {r.nearest:>16.1%} {r.precision:>13.1%}",
            f"  {'chance (a random image)':<34} {t.chance:>16.1%} {t.chance:>13.1%}",
            f"Trained weights find a same-group neighbour {t.nearest / max(r.nearest, 1e-9):.1f}x as often as random "
            f"weights." if r.nearest > 0 else "Random weights find no same-group nearest neighbour.",
        ])

    def queries(self) -> list[int]:
        """Indices of the demo images in the set (the figure's queries), in ``DEMO_IMAGES`` order."""
        stems = [Path(s).stem for s in self.images.sources]
        return [stems.index(d) for d in DEMO_IMAGES if d in stems]


def _retrieval(name: str, features: np.ndarray, groups, k: int) -> Retrieval:
    neighbours, sims = nearest_neighbours(features, k)
    return Retrieval(name, neighbours, sims, retrieval_score(neighbours, groups))


def model_check(model, seed: int = 0, images: RetrievalSet | None = None, k: int = NEIGHBOURS,
                use_cache: bool = True) -> ModelCheck:
    """Run the retrieval check with *model*'s weights and with random weights (*seed*).
    The features of both are cached on disk (key: the weights, the images' bytes, the seed)."""
    from .config import progress
    from .models import conv_layers, model_fingerprint

    images = retrieval_set() if images is None else images
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < len(images):
        raise LabError(f"k must be an integer from 1 to {len(images) - 1}, got {k!r}")
    key = cache.cache_key(kind="model-check", version=CHECK_VERSION, model=model_fingerprint(model),
                          images=images.content_key(), seed=int(seed)) if use_cache else None
    hit = cache.load("model-check", key) if use_cache else None
    if hit is None:
        pixels = images.pixels()
        feats = {}
        for name, net in progress([("trained", model), ("random", None)], desc="step 1 retrieval check",
                                  unit="model"):
            feats[name] = pooled_features(net if net is not None else random_weights_model(model, seed), pixels)
        hit = {"trained": feats["trained"], "random": feats["random"]}
        if use_cache:
            cache.save("model-check", key, **hit)
    name = getattr(model, "_lab_name", model.name)
    return ModelCheck(name, conv_layers(model)[-1], images, _retrieval("trained", hit["trained"], images.groups, k),
                      _retrieval("random", hit["random"], images.groups, k), int(seed))


def top5_classification(full_model, images, true_wnids=None, top: int = 5):
    """The classifier's top-*top* labels for uint8 images (``models.classify``), and, where
    the true wnids are known, a column ``true_in_top`` (the image's true class is among them)."""
    from .models import classify

    predictions = classify(full_model, images, top=top)
    if true_wnids is not None:
        hits = {i: w in set(predictions.loc[predictions["image"] == i, "wnid"]) for i, w in enumerate(true_wnids)}
        predictions["true_in_top"] = predictions["image"].map(hits)
    return predictions
