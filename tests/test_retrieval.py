"""Step 1's offline model check (issue 11, point 1): retrieval by pooled deep features
against random weights of the same architecture, and the top-5 classification with a
classifier top built here."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lab_utils import LabError
from lab_utils import retrieval as MC
from lab_utils.images import DEMO_IMAGES


def test_neighbours_are_the_most_similar_other_rows_after_centring():
    # rows 0 and 1 point the same way, 2 and 3 the other; a common offset (what every row
    # shares) would make every raw cosine ~1 and must not decide the order
    features = np.array([[101.0, 100.0], [101.1, 100.0], [100.0, 101.0], [100.0, 101.2]])
    order, sims = MC.nearest_neighbours(features, k=2)
    assert order[:, 0].tolist() == [1, 0, 3, 2]
    assert np.all(np.diff(sims, axis=1) <= 0)  # most similar first
    assert sims[0, 0] > 0.9 and sims[0, 1] < 0  # centred: the other cluster points away


def test_retrieval_score_counts_same_group_neighbours_and_chance():
    groups = ["a", "a", "b", "b", "b"]
    neighbours = np.array([[1, 2], [2, 0], [3, 4], [4, 0], [2, 1]])
    score = MC.retrieval_score(neighbours, groups)
    assert score.nearest == pytest.approx(4 / 5)      # image 1's nearest (2) is in b
    assert score.precision == pytest.approx(6 / 10)   # hits per row: 1, 1, 2, 1, 1 of 2
    # chance: same-group others over all others, averaged: (1+1+2+2+2)/5/4
    assert score.chance == pytest.approx(8 / 20)


def test_random_weights_are_seeded_glorot_with_zero_biases_and_leave_the_model_alone():
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c2")(x)
    model = keras.Model(inp, x)
    for layer in model.layers[1:]:
        k, b = layer.get_weights()
        layer.set_weights([np.full_like(k, 0.5), np.full_like(b, 0.25)])
    a, again, other = (MC.random_weights_model(model, 0), MC.random_weights_model(model, 0),
                       MC.random_weights_model(model, 1))
    assert a is again  # built once per (model, seed)
    k_a, b_a = a.get_layer("c2").get_weights()
    limit = np.sqrt(6 / (9 * 8 + 9 * 16))
    assert np.all(np.abs(k_a) <= limit) and k_a.std() > limit / 3 and np.all(b_a == 0)
    assert not np.array_equal(k_a, other.get_layer("c2").get_weights()[0])
    assert np.all(model.get_layer("c2").get_weights()[0] == 0.5)  # the trained model is untouched
    state = np.random.get_state()[1].copy()
    MC.random_weights_model(model, 7)
    assert np.array_equal(state, np.random.get_state()[1])  # the notebook's random state too


def test_the_shipped_retrieval_set_has_every_group_and_the_demo_queries():
    images = MC.retrieval_set()
    per_group = {g: images.groups.count(g) for g in set(images.groups)}
    assert len(per_group) == 40 and min(per_group.values()) == MC.PER_GROUP
    assert max(per_group.values()) <= MC.PER_GROUP + 1  # + a demo image outside the first five
    stems = [s.rsplit("/", 1)[-1].rsplit(".", 1)[0] for s in images.sources]
    assert all(d in stems for d in DEMO_IMAGES)
    assert list(images.wnids) == sorted(images.wnids)


def _folder(tmp_path, wnids_by_colour):
    """Images named <wnid>_<name>.jpg, each a flat colour with a little noise."""
    rng = np.random.default_rng(0)
    for wnid, colour in wnids_by_colour.items():
        pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 6, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{wnid}_x.jpg", quality=95)
    return tmp_path


def test_a_folder_with_one_group_cannot_score(tmp_path):
    groups = json.loads((MC.EMBEDDED_PROBE_DIR.parent / "imagenet_groups.json").read_text())["classes"]
    birds = [w for w, e in groups.items() if e["group"] == "bird"][:3]
    with pytest.raises(LabError, match="at least two coarse ImageNet groups"):
        MC.retrieval_set(folder=_folder(tmp_path, {w: (200, 30, 30) for w in birds}))
    with pytest.raises(LabError, match="per_group"):
        MC.retrieval_set(per_group=1)


def test_model_check_on_a_tiny_model_scores_colour_groups_and_caches(tmp_path, monkeypatch):
    """Two groups of flat colours: a network whose pooled features are the colour finds
    same-group neighbours every time; the second call is served from the cache."""
    import keras

    groups = json.loads((MC.EMBEDDED_PROBE_DIR.parent / "imagenet_groups.json").read_text())["classes"]
    birds = [w for w, e in groups.items() if e["group"] == "bird"][:4]
    fish = [w for w, e in groups.items() if e["group"] == "aquatic vertebrate"][:4]
    folder = _folder(tmp_path, {**{w: (220, 40, 40) for w in birds}, **{w: (40, 60, 220) for w in fish}})
    images = MC.retrieval_set(per_group=4, size=40, folder=folder)
    assert len(images) == 8
    inp = keras.Input((None, None, 3))
    out = keras.layers.Conv2D(3, 1, activation="relu", name="colour")(inp)
    model = keras.Model(inp, out)
    model.get_layer("colour").set_weights([np.eye(3, dtype=np.float32)[None, None] * 0.01,
                                           np.full(3, 2.0, np.float32)])  # + bias: ReLU stays on
    check = MC.model_check(model, seed=0, images=images, k=3)
    assert check.trained.score.nearest == 1.0 and check.trained.score.precision == 1.0
    assert check.layer_name == "colour" and check.random.neighbours.shape == (8, 3)
    assert "nearest in group" in check.text() and "random (seed 0)" in check.text()

    def fail(*a, **k):
        raise AssertionError("recomputed instead of read from the cache")

    monkeypatch.setattr(MC, "pooled_features", fail)
    again = MC.model_check(model, seed=0, images=images, k=3)
    assert np.array_equal(again.trained.neighbours, check.trained.neighbours)
    with pytest.raises(AssertionError):
        MC.model_check(model, seed=1, images=images, k=3)  # another seed is another baseline
    with pytest.raises(LabError, match="k must be"):
        MC.model_check(model, images=images, k=8)


def test_top5_classification_with_a_classifier_top_built_here():
    """A 'classifier' that reads the preprocessed mean colour: class 7 follows red, class 3
    green, class 900 blue; the rest order by a small falling bias (0, 1, 2, 4, ...)."""
    import keras

    from lab_utils.imagenet import class_index

    inp = keras.Input((224, 224, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(1000, activation="softmax", name="predictions")(pooled)
    model = keras.Model(inp, out)
    w = np.zeros((3, 1000), np.float32)
    # preprocessed channels are B, G, R; small weights: softmax must not underflow to ties at 0
    w[2, 7], w[1, 3], w[0, 900] = 0.05, 0.05, 0.05
    model.get_layer("predictions").set_weights([w, -np.arange(1000, dtype=np.float32) * 1e-3])
    red = np.zeros((2, 224, 224, 3), np.uint8)
    red[..., 0] = 255
    index = class_index()
    predictions = MC.top5_classification(model, red, true_wnids=[index[7][0], index[3][0]])
    first = predictions[predictions["image"] == 0]
    assert first["class_id"].tolist() == [7, 0, 1, 2, 4]
    assert first["rank"].tolist() == [1, 2, 3, 4, 5] and first["probability"].is_monotonic_decreasing
    assert first["probability"].iloc[0] > 100 * first["probability"].iloc[1]
    assert first["true_in_top"].all() and not predictions[predictions["image"] == 1]["true_in_top"].any()


@pytest.mark.weights
@pytest.mark.slow
def test_trained_vgg16_retrieves_far_better_than_random_weights(vgg16):
    check = MC.model_check(vgg16, seed=0)
    trained, random = check.trained.score, check.random.score
    assert trained.nearest > 0.18 and trained.precision > 0.12
    assert trained.nearest > 3 * random.nearest and trained.precision > 2.5 * random.precision
    assert random.nearest < 0.1 and trained.chance == pytest.approx(0.02, abs=0.005)
    q = check.queries()[DEMO_IMAGES.index("n02123045_tabby")]
    assert check.images.groups[int(check.trained.neighbours[q, 0])] == "feline"
