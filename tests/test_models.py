"""lab_utils.models on tiny hand-built models: conv layers, feeding layers,
index checks, load_model's weight search and errors, classify, preprocessing."""
from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest

import lab_utils
from lab_utils import LabError, ResourceMissingError, models


# ------------------------------------------------------------------ graph
def test_conv_layers_in_order(tiny_model):
    assert models.conv_layers(tiny_model) == ["c1", "c2", "c3"]


def test_feeding_layer_through_pooling_and_direct(tiny_model):
    # c2 reads p1 (max pooling keeps channels): its input channels are c1's outputs
    assert models.feeding_layer(tiny_model, "c2") == "c1"
    assert models.feeding_layer(tiny_model, "c3") == "c2"


def test_feeding_layer_sequential_model():
    import keras

    model = keras.Sequential([
        keras.Input((None, None, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", padding="same", name="a"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.ZeroPadding2D(name="pad"),
        keras.layers.Activation("relu", name="act"),
        keras.layers.Conv2D(3, 3, name="b"),
    ])
    assert models.feeding_layer(model, "b") == "a"
    with pytest.raises(LabError, match="no feeding conv layer"):
        models.feeding_layer(model, "a")


def test_first_conv_layer_has_no_feeding_layer(tiny_model):
    with pytest.raises(LabError) as info:
        models.feeding_layer(tiny_model, "c1")
    msg = str(info.value)
    assert "'c1'" in msg and "no feeding conv layer" in msg
    assert "c2" in msg  # suggests a valid choice
    assert isinstance(info.value, ValueError)


def _branchy_model():
    import keras

    inp = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    dense = keras.layers.Dense(5, name="dense")(a)
    b = keras.layers.Conv2D(3, 3, name="after_dense")(dense)
    a2 = keras.layers.Conv2D(2, 3, padding="same", name="a2")(inp)
    cat = keras.layers.Concatenate(name="cat")([a, a2])
    c = keras.layers.Conv2D(3, 3, name="after_cat")(cat)
    return keras.Model(inp, [b, c], name="branchy")


def test_feeding_layer_through_non_channel_preserving_layers_is_an_error():
    model = _branchy_model()
    with pytest.raises(LabError, match=r"'after_dense'.*'dense' \(Dense\).*does not keep channels"):
        models.feeding_layer(model, "after_dense")
    with pytest.raises(LabError) as info:
        models.feeding_layer(model, "after_cat")
    assert "cat" in str(info.value)
    assert "Concatenate" in str(info.value) or "2 inputs" in str(info.value)


def test_layers_into_is_the_chain_from_the_feeding_conv_or_the_input():
    import keras

    inp = keras.Input((None, None, 3), name="image")
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inp)
    x = keras.layers.MaxPooling2D(name="pool")(a)
    x = keras.layers.ZeroPadding2D(name="pad")(x)
    b = keras.layers.Conv2D(3, 3, name="b")(x)
    c = keras.layers.Conv2D(2, 3, name="c")(b)
    first = keras.layers.Conv2D(2, 3, name="first")(keras.layers.ZeroPadding2D(name="pad0")(inp))
    model = keras.Model(inp, [c, first])
    names = lambda name, **kw: [layer.name for layer in models.layers_into(model, name, **kw)]  # noqa: E731
    assert names("b") == ["a", "pool", "pad"]  # forward order, the feeding conv layer first
    assert names("c") == ["b"]                  # read directly
    assert names("a") == ["image"] and isinstance(models.layers_into(model, "a")[0], keras.layers.InputLayer)
    assert names("first") == ["image", "pad0"]
    assert models.feeding_layer(model, "b") == "a" and models.feeding_layer(model, "c") == "b"
    # what the layer reads: the input sub-model exists exactly where something lies between
    assert models.input_submodel(model, "a") is None
    assert models.input_submodel(model, "first") is not None and models.input_submodel(model, "b") is not None


def test_layers_into_stops_at_a_layer_that_does_not_keep_channels():
    model = _branchy_model()
    with pytest.raises(LabError, match=r"'after_dense'.*'dense' \(Dense\).*does not keep channels"):
        models.layers_into(model, "after_dense")
    # where only what the layer reads matters, that layer is the source
    assert [layer.name for layer in models.layers_into(model, "after_dense", keep_channels=False)] == ["dense"]
    assert [layer.name for layer in models.layers_into(model, "after_cat", keep_channels=False)] == ["cat"]
    sub = models.input_submodel(model, "after_dense")
    assert sub is not None and sub.output_shape[-1] == 5  # the Dense layer's 5 outputs, not the image


def test_unknown_and_non_conv_layers_list_the_conv_layers(tiny_model):
    with pytest.raises(LabError) as info:
        models.feeding_layer(tiny_model, "nope")
    assert "unknown layer 'nope'" in str(info.value)
    assert "c1, c2, c3" in str(info.value)
    with pytest.raises(LabError) as info:
        models.get_conv_layer(tiny_model, "p1")
    assert "not a conv layer" in str(info.value)
    assert "c1, c2, c3" in str(info.value)


def test_describe_layers_and_mid_level(tiny_model):
    df = models.describe_layers(tiny_model)
    assert list(df.layer) == ["c1", "c2", "c3"]
    assert list(df.mid_level) == [False, False, False]  # 3 convs: none has 2 on each side
    assert list(df.in_channels) == [3, 4, 6]
    assert list(df.out_channels) == [4, 6, 5]
    assert list(df.conv_index) == [0, 1, 2]
    assert list(df.feeding_layer[1:]) == ["c1", "c2"]
    assert df.feeding_layer[0] is None or df.feeding_layer.isna()[0]
    assert models.mid_level_layers(tiny_model) == []


def test_mid_level_is_the_rubrics_two_conv_layers_on_each_side():
    from lab_utils.architectures import is_mid_level, mid_level_note

    assert [is_mid_level(i, 5) for i in range(5)] == [False, False, True, False, False]
    assert [is_mid_level(i, 13) for i in range(13)] == [False, False] + [True] * 9 + [False, False]
    assert mid_level_note("vgg16", "block3_conv1") == ""
    note = mid_level_note("vgg16", "block1_conv2")
    assert "block1_conv2 has 1 conv layer(s) before it and 11 after it" in note
    assert "block2_conv1 ... block5_conv1" in note and "\n" not in note
    assert "15 conv layer(s) before it and 0 after it" in mid_level_note("vgg19", "block5_conv4")


@pytest.mark.parametrize("bad, pattern", [
    (6, r"out of range; valid: 0\.\.5"),
    (-1, r"out of range; valid: 0\.\.5"),
    (1.0, r"must be an integer in 0\.\.5"),
    ("1", r"must be an integer in 0\.\.5"),
    (True, r"must be an integer in 0\.\.5"),
    (None, r"must be an integer in 0\.\.5"),
])
def test_check_filter_rejects_bad_indices(tiny_model, bad, pattern):
    with pytest.raises(LabError, match=pattern):
        models.check_filter(tiny_model, "c2", bad)


def test_check_filter_accepts_numpy_ints(tiny_model):
    assert models.check_filter(tiny_model, "c2", np.int64(5)) == 5
    assert models.check_filter(tiny_model, "c2", 0) == 0


def test_submodel_pre_activation_is_the_pre_relu_output(tiny_model, probe_images):
    x = models.preprocess(tiny_model, probe_images.astype("float32"))
    post = models.submodel(tiny_model, "c2").predict(x, verbose=0)
    pre = models.submodel(tiny_model, "c2", pre_activation=True).predict(x, verbose=0)
    assert (pre < 0).any()  # the tiny model's biases make some outputs negative
    np.testing.assert_allclose(np.maximum(pre, 0), post, rtol=1e-5, atol=1e-4)
    # built once per model
    assert models.submodel(tiny_model, "c2") is models.submodel(tiny_model, "c2")


def test_preprocess_is_vgg_bgr_mean_subtraction(tiny_model):
    px = np.array([[[[255.0, 0.0, 10.0]]]], dtype="float32")
    out = np.asarray(models.preprocess(tiny_model, px.copy()))
    np.testing.assert_allclose(out[0, 0, 0], [10 - 103.939, 0 - 116.779, 255 - 123.68], atol=1e-3)


@pytest.mark.parametrize("name", ["vgg16", "vgg19"])
def test_preprocess_gives_exactly_keras_numbers(tiny_model, name):
    # the kit writes it as reverse + add (cheap gradient); the numbers must be Keras' to the bit
    import keras

    px = np.random.default_rng(0).uniform(0, 255, (2, 5, 7, 3)).astype("float32")
    tiny_model._lab_name = name
    ours = np.asarray(models.preprocess(tiny_model, px.copy()))
    theirs = np.asarray(getattr(keras.applications, name).preprocess_input(px.copy()))
    np.testing.assert_array_equal(ours, theirs)
    as_tensor = np.asarray(getattr(keras.applications, name).preprocess_input(keras.ops.convert_to_tensor(px)))
    np.testing.assert_array_equal(ours, as_tensor)


def test_model_fingerprint_tracks_weights(tiny_model, make_tiny):
    fp_all = models.model_fingerprint(tiny_model)
    fp_c2 = models.model_fingerprint(tiny_model, upto="c2")
    assert fp_all == models.model_fingerprint(tiny_model)  # stable
    assert models.model_fingerprint(make_tiny()) == fp_all  # same weights, other object
    k3 = tiny_model.get_layer("c3").kernel
    k3.assign(k3.numpy() + 1.0)
    assert models.model_fingerprint(tiny_model, upto="c2") == fp_c2  # c3 is after c2
    assert models.model_fingerprint(tiny_model) != fp_all
    k1 = tiny_model.get_layer("c1").kernel
    k1.assign(k1.numpy() * 0.5)
    assert models.model_fingerprint(tiny_model, upto="c2") != fp_c2


# ------------------------------------------------------------------ load_model
def test_load_model_unknown_name_lists_valid_names():
    with pytest.raises(LabError) as info:
        lab_utils.load_model("resnet9000")
    assert "resnet9000" in str(info.value)
    assert "vgg16" in str(info.value) and "vgg19" in str(info.value)


def test_load_model_missing_explicit_weights_file(tmp_path, clear_model_cache):
    missing = tmp_path / "nothing_here.h5"
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16", weights=missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, LabError)


@pytest.fixture
def record_loads(monkeypatch, clear_model_cache):
    """Replace the (cached) builder by a recorder: which weights does load_model ask for?"""
    calls = []

    def fake(key, include_top, weights):
        calls.append((key, include_top, weights))
        return ("model", key, include_top, weights)

    monkeypatch.setattr(models, "_load_cached", fake)
    return calls


def test_load_model_prefers_explicit_path_then_weights_dir_then_keras(tmp_path, monkeypatch, record_loads):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(wdir))
    # nothing in the folder: Keras' own "imagenet" weights
    models.load_model("vgg16")
    assert record_loads[-1] == ("vgg16", False, "imagenet")
    # a file in LAB_WEIGHTS_DIR is used, by its resolved path
    (wdir / "vgg16_imagenet_notop.h5").write_bytes(b"fake")
    models.load_model("VGG16")
    assert record_loads[-1] == ("vgg16", False, str((wdir / "vgg16_imagenet_notop.h5").resolve()))
    # with the top it looks for <name>_imagenet.h5, not the notop file
    models.load_model("vgg16", include_top=True)
    assert record_loads[-1] == ("vgg16", True, "imagenet")
    (wdir / "vgg16_imagenet.h5").write_bytes(b"fake")
    models.load_model("vgg16", include_top=True)
    assert record_loads[-1] == ("vgg16", True, str((wdir / "vgg16_imagenet.h5").resolve()))
    # an explicit path wins over the folder
    explicit = tmp_path / "mine.h5"
    explicit.write_bytes(b"fake")
    models.load_model("vgg16", weights=str(explicit))
    assert record_loads[-1] == ("vgg16", False, str(explicit.resolve()))
    # "random": no weights at all
    models.load_model("vgg19", weights="random")
    assert record_loads[-1] == ("vgg19", False, None)
    # vgg19 does not pick up the vgg16 file
    models.load_model("vgg19")
    assert record_loads[-1] == ("vgg19", False, "imagenet")


def _small_h5(path: Path, layers=("block1_conv1",)) -> Path:
    """A valid HDF5 file in Keras' legacy weights layout (wrong shapes for VGG16), ~400 KB."""
    import h5py

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        for name in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = [f"{name}/kernel".encode()]
            group[f"{name}/kernel"] = np.random.default_rng(0).normal(size=(100, 500)).astype("float32")
    return path


def _corrupt(kind: str, folder: Path) -> Path:
    """A weights file that exists but is not a loadable Keras HDF5 file."""
    path = folder / "vgg16_imagenet_notop.h5"
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "zero-byte":
        path.write_bytes(b"")
    elif kind == "random-bytes":
        path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "truncated-h5":
        whole = _small_h5(folder / "whole.h5").read_bytes()
        path.write_bytes(whole[:len(whole) // 2])
    elif kind == "truncated-real":
        from conftest import find_weights

        real = find_weights("vgg16")
        if real is None:
            pytest.skip("no real VGG16 weights to truncate (LAB_WEIGHTS_DIR)")
        with open(real, "rb") as f:
            path.write_bytes(f.read(1_000_000))
    return path


CORRUPT = ["zero-byte", "random-bytes", "truncated-h5", "truncated-real"]


def _assert_bad_weights_message(info, path: Path):
    msg = str(info.value)
    assert str(path) in msg  # names the file ...
    assert "cannot be read as Keras HDF5 weights" in msg  # ... what is wrong ...
    assert f"({path.stat().st_size:,} bytes)" in msg  # ... its size ...
    # ... and the fix: Keras' file, its size, where it goes
    assert "download it again" in msg and "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5" in msg
    assert "58,889,256 bytes" in msg and "$LAB_WEIGHTS_DIR" in msg and "README 'Weights'" in msg
    assert "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no h5py traceback under it
    assert isinstance(info.value, LabError)


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_weights_in_lab_weights_dir_is_one_clear_error(tmp_path, monkeypatch, clear_model_cache, kind):
    path = _corrupt(kind, tmp_path / "weights")
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(path.parent))
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16")
    _assert_bad_weights_message(info, path)
    assert f"as vgg16_imagenet_notop.h5 (here: {path})" in str(info.value)


@pytest.mark.parametrize("kind", CORRUPT)
def test_corrupt_explicit_weights_file_is_one_clear_error(tmp_path, clear_model_cache, kind):
    path = _corrupt(kind, tmp_path)
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16", weights=str(path))
    _assert_bad_weights_message(info, path)
    assert "pass its path as weights=" in str(info.value)


def test_weights_of_other_layers_say_they_do_not_match(tmp_path, clear_model_cache):
    path = _small_h5(tmp_path / "other.h5")  # readable HDF5, but one layer of the wrong shape
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16", weights=path)
    msg = str(info.value)
    assert str(path) in msg and "does not match the layers of vgg16" in msg and "13 layers" in msg
    assert "cannot be read" not in msg and "58,889,256 bytes" in msg and "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_weight_candidates_follow_lab_weights_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path))
    assert models.weight_candidates("vgg19") == [tmp_path / "vgg19_imagenet_notop.h5"]
    assert models.weight_candidates("vgg16", include_top=True) == [tmp_path / "vgg16_imagenet.h5"]


def test_load_model_download_failure_is_one_clear_error(tmp_path, monkeypatch, clear_model_cache):
    import keras

    empty = tmp_path / "empty_weights"
    empty.mkdir()
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(empty))
    asked = []

    def offline(*args, **kwargs):
        asked.append(kwargs.get("weights"))
        raise urllib.error.URLError(OSError(101, "Network is unreachable (socket)"))

    monkeypatch.setattr(keras.applications, "VGG16", offline)
    monkeypatch.setattr(models, "_download_reachable", lambda timeout=3.0: True)  # Keras tries, then fails
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16")
    assert asked == ["imagenet"]
    msg = str(info.value)
    assert str(empty / "vgg16_imagenet_notop.h5") in msg  # names the file it tried
    assert "LAB_WEIGHTS_DIR" in msg  # and the fix
    assert "URLError" in msg
    # no chained socket traceback under the message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "Traceback" not in msg


def test_offline_without_keras_cache_fails_before_building_the_model(tmp_path, monkeypatch, clear_model_cache):
    import keras

    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(models, "_download_reachable", lambda timeout=3.0: False)
    built = []
    def fake_vgg16(**kwargs):
        built.append(kwargs)
        return type("FakeModel", (), {})()

    monkeypatch.setattr(keras.applications, "VGG16", fake_vgg16)
    with pytest.raises(ResourceMissingError, match="ConnectionError") as info:
        lab_utils.load_model("vgg16", include_top=True)
    assert built == []  # 138M parameters never allocated just to fail
    assert "vgg16_imagenet.h5" in str(info.value)
    # with Keras' cached copy present, Keras is asked even offline
    cached = models.keras_cached_weights("vgg16", include_top=True)
    assert cached == tmp_path / "keras_home" / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    lab_utils.load_model("vgg16", include_top=True)
    assert built == [{"include_top": True, "weights": "imagenet", "input_shape": (224, 224, 3)}]


def test_load_model_returns_the_same_cached_object(monkeypatch, clear_model_cache, make_tiny):
    built = []

    def fake_build(key, include_top, weights):
        built.append((key, include_top, weights))
        return make_tiny()

    monkeypatch.setattr(models, "_build", fake_build)
    a = lab_utils.load_model("vgg16", weights="random")
    b = lab_utils.load_model("vgg16", weights="random")
    assert a is b and len(built) == 1
    assert a._lab_name == "vgg16" and a._lab_weights == "random"


# ------------------------------------------------------------------ classify
def test_class_index_is_the_keras_one():
    index = models.class_index()
    assert len(index) == 1000 and sorted(index) == list(range(1000))
    assert index[0] == ("n01440764", "tench")
    assert index[1] == ("n01443537", "goldfish")
    assert index[999] == ("n15075141", "toilet_tissue")
    assert models.wnid_to_name()["n01440764"] == "tench"


@pytest.fixture
def softmax_model():
    """GAP -> Dense(1000, softmax): fixed logits 5, 4, 3 for classes 0, 2, 7 (rest 0);
    the blue channel of the (preprocessed, BGR) image adds to class 1's logit."""
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(1000, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, out)
    kernel = np.zeros((3, 1000), "float32")
    kernel[0, 1] = 0.1  # BGR channel 0 = blue, after mean subtraction (103.939)
    bias = np.zeros(1000, "float32")
    bias[[0, 2, 7]] = [5.0, 4.0, 3.0]
    model.get_layer("predictions").set_weights([kernel, bias])
    return model


def _softmax(logits):
    e = np.exp(logits - logits.max())
    return e / e.sum()


def test_classify_top_k_sorted_with_probabilities_and_labels(softmax_model):
    blue = np.zeros((2, 8, 8, 3), np.uint8)
    blue[0, ..., 2] = 255  # image 0: fully blue -> class 1 logit 0.1 * (255 - 103.939) = 15.1
    df = lab_utils.classify(softmax_model, blue, top=3)
    assert list(df.columns) == ["image", "rank", "class_id", "wnid", "label", "probability"]
    assert len(df) == 6
    img0, img1 = df[df.image == 0], df[df.image == 1]
    assert list(img0["rank"]) == [1, 2, 3]
    assert list(img0.class_id) == [1, 0, 2]
    assert list(img0.label) == ["goldfish", "tench", "great_white_shark"]
    assert list(img0.wnid) == ["n01443537", "n01440764", "n01484850"]
    # image 1 is black: class 1 logit 0.1 * (0 - 103.939) < 0
    assert list(img1.class_id) == [0, 2, 7]
    assert list(img1.label) == ["tench", "great_white_shark", "cock"]
    logits = np.zeros(1000)
    logits[[0, 2, 7]] = [5.0, 4.0, 3.0]
    logits[1] = 0.1 * (0 - 103.939)
    np.testing.assert_allclose(img1.probability, _softmax(logits)[[0, 2, 7]], rtol=1e-4)
    assert (np.diff(img0.probability) <= 0).all() and (np.diff(img1.probability) <= 0).all()
    assert ((df.probability > 0) & (df.probability <= 1)).all()


def test_classify_single_image_and_top_one(softmax_model):
    df = lab_utils.classify(softmax_model, np.zeros((8, 8, 3), np.uint8), top=1)
    assert len(df) == 1 and df.label[0] == "tench" and df.image[0] == 0


@pytest.mark.parametrize("top", [0, -2, 1.5, "3"])
def test_classify_rejects_top_below_one(softmax_model, top):
    with pytest.raises(LabError, match="top must be an integer >= 1"):
        lab_utils.classify(softmax_model, np.zeros((1, 8, 8, 3), np.uint8), top=top)


def test_load_full_model_or_none_offline(tmp_path, monkeypatch, clear_model_cache, capsys):
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path))

    def offline(key, include_top, weights):
        assert (key, include_top, weights) == ("vgg16", True, "imagenet")
        raise OSError("network is unreachable")

    monkeypatch.setattr(models, "_load_cached", offline)
    assert lab_utils.load_full_model_or_none("vgg16") is None
    out = capsys.readouterr().out
    assert "skipped" in out and "LAB_WEIGHTS_DIR" in out


def test_exports_resolve():
    for name in lab_utils.__all__:  # every export of every module resolves
        assert getattr(lab_utils, name) is not None, name
    assert issubclass(LabError, ValueError)
    assert issubclass(ResourceMissingError, LabError)
    assert Path(lab_utils.config.CLASS_INDEX_PATH).is_file()
    assert models.class_index is lab_utils.class_index  # one class index, re-exported


def test_a_folder_where_the_weights_file_should_be_is_named_so(tmp_path, monkeypatch, clear_model_cache):
    (tmp_path / "vgg16_imagenet_notop.h5").mkdir()
    monkeypatch.setenv("LAB_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_model("vgg16")
    assert f"{tmp_path / 'vgg16_imagenet_notop.h5'} (a folder, not a weights file)" in str(info.value)


def test_built_once_is_one_memo_per_model_and_key(make_tiny):
    from lab_utils.models import built_once, submodel

    a, b = make_tiny(), make_tiny()
    calls = []
    first = built_once(a, ("thing", "c2"), lambda: calls.append(1) or object())
    assert built_once(a, ("thing", "c2"), lambda: calls.append(1) or object()) is first and calls == [1]
    assert built_once(b, ("thing", "c2"), lambda: calls.append(1) or object()) is not first  # another model
    assert submodel(a, "c2") is submodel(a, "c2") and submodel(a, "c2") is not submodel(a, "c2", pre_activation=True)
