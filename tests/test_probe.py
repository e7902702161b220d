"""lab_utils.probe: the batched scan (checked against a plain numpy forward
pass), its on-disk cache, and the class/image rankings."""
from __future__ import annotations

import numpy as np
import pytest

import lab_utils
from lab_utils import LabError, probe
from lab_utils.images import ProbeSet

VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def _conv(x, kernel, bias, padding):
    """Plain numpy 3x3 conv (cross-correlation, like Keras), stride 1."""
    if padding == "same":
        x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    h, w = x.shape[1] - 2, x.shape[2] - 2
    out = sum(np.einsum("nhwc,co->nhwo", x[:, i:i + h, j:j + w], kernel[i, j])
              for i in range(3) for j in range(3))
    return out + bias


def numpy_forward(model, images, upto):
    """The tiny model (c1 same, relu -> 2x2 max pool -> c2 valid, relu -> c3 same, relu) in numpy."""
    x = images.astype(np.float64)[..., ::-1] - VGG_MEAN_BGR  # VGG preprocessing: RGB -> BGR, minus mean

    def conv(name, x, padding):
        k, b = (w.astype(np.float64) for w in model.get_layer(name).get_weights())
        return np.maximum(_conv(x, k, b, padding), 0)

    x = conv("c1", x, "same")
    if upto == "c1":
        return x
    n, h, w, c = x.shape
    x = x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    x = conv("c2", x, "valid")
    if upto == "c2":
        return x
    return conv("c3", x, "same")


def test_scan_equals_numpy_mean_post_relu_activation(tiny_model, probe_images):
    for layer in ("c1", "c2", "c3"):
        scan = lab_utils.scan_images(tiny_model, layer, probe_images, use_cache=False)
        expected = numpy_forward(tiny_model, probe_images, layer).mean(axis=(1, 2))
        assert scan.means.shape == expected.shape == (9, {"c1": 4, "c2": 6, "c3": 5}[layer])
        assert scan.means.dtype == np.float32
        np.testing.assert_allclose(scan.means, expected, rtol=1e-4, atol=1e-4)
        assert (scan.means >= 0).all()  # after the ReLU
    assert scan.means.std() > 0  # the test images do excite the tiny model


def test_scan_batch_size_does_not_change_the_result(tiny_model, probe_images):
    scans = [lab_utils.scan_images(tiny_model, "c3", probe_images, batch_size=b, use_cache=False)
             for b in (1, 7, 9, 64)]
    for s in scans[1:]:
        np.testing.assert_allclose(s.means, scans[0].means, rtol=1e-5, atol=1e-5)
        assert s.from_cache is False


def test_scan_float_pixels_are_rounded_not_truncated_and_bad_ranges_refused(tiny_model, probe_images):
    reference = lab_utils.scan_images(tiny_model, "c3", probe_images, use_cache=False).means
    # 0..255 floats a little below the integer (as after a resize): a plain cast would shift every pixel by 1
    as_float = probe_images.astype(np.float32) - 0.2
    as_float[as_float < 0] = 0
    np.testing.assert_allclose(lab_utils.scan_images(tiny_model, "c3", as_float, use_cache=False).means,
                               reference, rtol=1e-5, atol=1e-5)
    with pytest.raises(LabError, match="0..1"):
        lab_utils.scan_images(tiny_model, "c3", probe_images / 255.0, use_cache=False)
    with pytest.raises(LabError, match="preprocessed"):
        lab_utils.scan_images(tiny_model, "c3", probe_images.astype(np.float32) - 120.0, use_cache=False)


def test_scan_keeps_probe_set_labels(tiny_model, probe_images):
    ps = ProbeSet(probe_images[:3], ["cat", "dog", "cat"], ["n1", None, "n1"], ["a.jpg", "b.jpg", "c.jpg"], "mine")
    scan = lab_utils.scan_images(tiny_model, "c2", ps, use_cache=False)
    assert scan.labels == ["cat", "dog", "cat"] and scan.sources == ["a.jpg", "b.jpg", "c.jpg"]
    assert scan.wnids == ["n1", None, "n1"] and scan.probe_name == "mine"
    assert scan.layer_name == "c2" and scan.model_name == "vgg16" and scan.n_images == 3
    arr = lab_utils.scan_images(tiny_model, "c2", probe_images[:2], use_cache=False)
    assert arr.labels == ["image 0", "image 1"]


def test_scan_cache_hit_and_misses(tiny_model, probe_images, cache_tmp):
    first = lab_utils.scan_images(tiny_model, "c2", probe_images)
    assert first.from_cache is False
    assert len(list((cache_tmp / "scans").glob("*.npz"))) == 1
    second = lab_utils.scan_images(tiny_model, "c2", probe_images)
    assert second.from_cache is True
    np.testing.assert_array_equal(second.means, first.means)
    assert second.labels == first.labels
    # another layer: another entry
    assert lab_utils.scan_images(tiny_model, "c3", probe_images).from_cache is False
    # one changed pixel: a miss
    changed = probe_images.copy()
    changed[4, 3, 3, 0] ^= 0xFF
    third = lab_utils.scan_images(tiny_model, "c2", changed)
    assert third.from_cache is False
    # changed weights (same model object): a miss, and the new numbers are right
    k = tiny_model.get_layer("c1").kernel
    k.assign(k.numpy() * 1.5)
    fourth = lab_utils.scan_images(tiny_model, "c2", probe_images)
    assert fourth.from_cache is False
    np.testing.assert_allclose(fourth.means, numpy_forward(tiny_model, probe_images, "c2").mean(axis=(1, 2)),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(fourth.means, first.means)


def test_scan_without_cache_writes_nothing(tiny_model, probe_images, cache_tmp):
    lab_utils.scan_images(tiny_model, "c2", probe_images, use_cache=False)
    assert not list(cache_tmp.rglob("*.npz"))


def test_corrupt_cache_entry_is_recomputed(tiny_model, probe_images, cache_tmp):
    first = lab_utils.scan_images(tiny_model, "c2", probe_images)
    (entry,) = (cache_tmp / "scans").glob("*.npz")
    entry.write_bytes(b"not an npz file")
    again = lab_utils.scan_images(tiny_model, "c2", probe_images)
    assert again.from_cache is False
    np.testing.assert_array_equal(again.means, first.means)


def test_activation_maps_are_the_post_relu_output_map(tiny_model, probe_images):
    maps = lab_utils.activation_maps(tiny_model, "c2", 3, probe_images[:2])
    expected = numpy_forward(tiny_model, probe_images[:2], "c2")[..., 3]
    assert maps.shape == (2, 10, 10)
    np.testing.assert_allclose(maps, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8", None])
def test_bad_batch_size(tiny_model, probe_images, batch_size):
    with pytest.raises(LabError, match="batch_size must be an integer >= 1"):
        lab_utils.scan_images(tiny_model, "c2", probe_images, batch_size=batch_size)


def test_scan_bad_layer_and_images(tiny_model, probe_images):
    with pytest.raises(LabError, match="unknown layer 'x'.*c1, c2, c3"):
        lab_utils.scan_images(tiny_model, "x", probe_images)
    with pytest.raises(LabError, match="not a conv layer.*c1, c2, c3"):
        lab_utils.scan_images(tiny_model, "p1", probe_images)
    with pytest.raises(LabError, match=r"\(N, H, W, 3\)"):
        lab_utils.scan_images(tiny_model, "c2", probe_images[0])
    with pytest.raises(LabError, match="empty"):
        lab_utils.scan_images(tiny_model, "c2", probe_images[:0])


# ------------------------------------------------------------------ rankings
def _scan(values, labels, wnids=None):
    values = np.asarray(values, np.float32)
    means = np.stack([values, -values], axis=1)  # filter 0 and filter 1
    n = len(values)
    return probe.Scan("tiny", "c2", means, list(labels), list(wnids or [None] * n),
                      [f"img{i}.jpg" for i in range(n)], "test")


def test_rank_classes_order_means_and_ties():
    scan = _scan([1.0, 3.0, 5.0, 2.0, 2.0, 4.0, 0.0],
                 ["cat", "dog", "cat", "bee", "ant", "dog", "eel"],
                 ["n2", "n3", "n2", None, None, "n3", None])
    df = lab_utils.rank_classes(scan, 0)
    assert list(df.columns) == ["rank", "class", "wnid", "mean_activation", "n_images", "ci_low", "ci_high"]
    # cat (1+5)/2 = 3, dog (3+4)/2 = 3.5, bee 2, ant 2 (tie: by name), eel 0
    assert list(df["class"]) == ["dog", "cat", "ant", "bee", "eel"]
    assert list(df["rank"]) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose(df.mean_activation, [3.5, 3.0, 2.0, 2.0, 0.0])
    assert list(df.n_images) == [2, 2, 1, 1, 1]
    assert list(df.wnid) == ["n3", "n2", "", "", ""]
    top2 = lab_utils.rank_classes(scan, 0, top_n=2)
    assert list(top2["class"]) == ["dog", "cat"]
    # filter 1 (the negatives): order reversed, ties still by name
    assert list(lab_utils.rank_classes(scan, 1)["class"]) == ["eel", "ant", "bee", "cat", "dog"]


def test_rank_images_order_and_ties():
    scan = _scan([1.0, 3.0, 5.0, 3.0, 2.0], ["a", "b", "c", "d", "e"])
    df = lab_utils.rank_images(scan, 0, top_n=4)
    assert list(df.columns) == ["rank", "image", "class", "wnid", "mean_activation", "source"]
    assert list(df.image) == [2, 1, 3, 4]  # tie 3.0: lower image index first
    assert list(df["rank"]) == [1, 2, 3, 4]
    assert list(df["class"]) == ["c", "b", "d", "e"]
    assert list(df.source) == ["img2.jpg", "img1.jpg", "img3.jpg", "img4.jpg"]
    np.testing.assert_allclose(df.mean_activation, [5, 3, 3, 2])
    assert len(lab_utils.rank_images(scan, 0, top_n=50)) == 5


@pytest.mark.parametrize("fn", ["rank_classes", "rank_images"])
def test_ranking_bad_inputs(fn):
    scan = _scan([1.0, 2.0], ["a", "b"])
    rank = getattr(lab_utils, fn)
    with pytest.raises(LabError, match=r"0\.\.1"):
        rank(scan, 2)
    with pytest.raises(LabError, match=r"0\.\.1"):
        rank(scan, -1)
    with pytest.raises(LabError, match=r"0\.\.1"):
        rank(scan, 0.0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(LabError, match="top_n must be an integer >= 1"):
            rank(scan, 0, top_n=bad)


def test_rankings_from_a_real_scan(tiny_model, probe_images):
    labels = ["x", "y", "z"] * 3
    ps = ProbeSet(probe_images, labels, [None] * 9, [str(i) for i in range(9)])
    scan = lab_utils.scan_images(tiny_model, "c3", ps, use_cache=False)
    for f in range(5):
        col = scan.means[:, f].astype(np.float64)
        imgs = lab_utils.rank_images(scan, f, top_n=9)
        assert list(imgs.image) == sorted(range(9), key=lambda i: (-col[i], i))
        classes = lab_utils.rank_classes(scan, f)
        expected = {c: col[[i for i in range(9) if labels[i] == c]].mean() for c in "xyz"}
        assert list(classes["class"]) == sorted(expected, key=lambda c: (-expected[c], c))
        np.testing.assert_allclose(classes.mean_activation, [expected[c] for c in classes["class"]], rtol=1e-6)


# ------------------------------------------------------------------ scan_folder: cached by the files
def _write_folder(folder, images):
    from PIL import Image

    folder.mkdir()
    names = ["n01440764_tench", "n02123045_tabby", "plain_photo"]
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{names[i % 3]}_{i}.png")
    (folder / "README.txt").write_text("not an image")  # skipped by the decoder, hashed by the key
    return folder


def test_scan_folder_hit_needs_no_decoding_and_keeps_the_rows(tiny_model, probe_images, cache_tmp, tmp_path,
                                                              monkeypatch):
    folder = _write_folder(tmp_path / "probe", probe_images)
    with pytest.warns(UserWarning, match="skipped 1"):
        decoded = lab_utils.load_probe_set(folder, size=32)
    reference = lab_utils.scan_images(tiny_model, "c2", decoded, use_cache=False)
    with pytest.warns(UserWarning, match="skipped 1"):
        first = probe.scan_folder(tiny_model, "c2", folder, size=32)
    assert first.from_cache is False
    np.testing.assert_array_equal(first.means, reference.means)

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached folder scan decoded images")

    monkeypatch.setattr(probe, "load_probe_set", no_decoding)
    monkeypatch.setattr(lab_utils.images, "load_image", no_decoding)
    second = probe.scan_folder(tiny_model, "c2", folder, size=32)
    assert second.from_cache is True
    np.testing.assert_array_equal(second.means, reference.means)
    assert (second.labels, second.wnids, second.sources) == (reference.labels, reference.wnids, reference.sources)
    assert second.wnids[0] == "n01440764" and second.wnids[-1] is None  # plain_photo_*: no wnid
    assert second.probe_name == reference.probe_name == str(folder)
    # another layer, size or limit is another entry (and would need decoding)
    for kwargs in ({"layer_name": "c3"}, {"size": 40}, {"limit": 4}):
        args = {"layer_name": "c2", "size": 32, **kwargs}
        with pytest.raises(AssertionError, match="decoded images"):
            probe.scan_folder(tiny_model, args.pop("layer_name"), folder, **args)


def test_scan_folder_changed_file_is_a_miss_with_new_numbers(tiny_model, probe_images, cache_tmp, tmp_path):
    from PIL import Image

    folder = _write_folder(tmp_path / "probe", probe_images)
    with pytest.warns(UserWarning):
        first = probe.scan_folder(tiny_model, "c2", folder, size=32)
    target = sorted(p for p in folder.glob("*.png"))[3]
    changed = np.asarray(Image.open(target)).copy()
    changed[:12] = 255 - changed[:12]
    Image.fromarray(changed).save(target)  # same name, other bytes
    with pytest.warns(UserWarning):
        second = probe.scan_folder(tiny_model, "c2", folder, size=32)
    assert second.from_cache is False
    row = second.sources.index(str(target))
    assert not np.allclose(second.means[row], first.means[row])
    with pytest.warns(UserWarning):
        expected = lab_utils.scan_images(tiny_model, "c2", lab_utils.load_probe_set(folder, size=32),
                                         use_cache=False)
    np.testing.assert_array_equal(second.means, expected.means)


def test_scan_folder_without_cache_writes_nothing(tiny_model, probe_images, cache_tmp, tmp_path):
    folder = _write_folder(tmp_path / "probe", probe_images)
    with pytest.warns(UserWarning):
        scan = probe.scan_folder(tiny_model, "c2", folder, size=32, use_cache=False)
    assert scan.n_images == len(probe_images)
    assert not list(cache_tmp.rglob("*.npz"))


def test_lab_setup_top_image_maps_after_a_cached_scan(tiny_model, probe_images, cache_tmp, tmp_path):
    # a later notebook gets the scan from the cache and decodes only the top images: same pixels
    from lab_utils.params import DEFAULTS
    from lab_utils.session import LabSetup

    folder = _write_folder(tmp_path / "probe", probe_images)
    params = {**DEFAULTS, "layer_name": "c2", "filter_index": 1, "probe_set": str(folder), "image_size": 32,
              "top_n": 4}
    with pytest.warns(UserWarning):
        LabSetup(params=params, model=tiny_model, feeder="c1").scan()  # fills the cache
    later = LabSetup(params=params, model=tiny_model, feeder="c1")
    images, maps, titles = later.top_image_maps(3)
    assert later.scan().from_cache is True and "probe" not in later._memo
    with pytest.warns(UserWarning):
        decoded = lab_utils.load_probe_set(folder, size=32)
    top = later.top_images().head(3)["image"].to_numpy()
    np.testing.assert_array_equal(images, decoded.images[top])
    np.testing.assert_allclose(maps, lab_utils.activation_maps(tiny_model, "c2", 1, decoded.images[top]))
    assert len(titles) == 3


def _bomb_png(side: int = 20000) -> bytes:
    """A ~50 KB PNG whose header says side x side pixels (1-bit grey, zero rows): over Pillow's
    decompression-bomb limit (tests/test_images.py has the commented twin)."""
    import zlib

    def chunk(tag, data):
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    row, z = bytes(1 + (side + 7) // 8), zlib.compressobj(9)
    idat = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_scan_folder_non_utf8_names_and_a_bomb_cached_hit_sources_open(tiny_model, probe_images, cache_tmp,
                                                                       tmp_path):
    # names in Latin-1 bytes (str with surrogate escapes in Python) and a decompression bomb:
    # the scan goes on, the cache stores the names and a hit gives back paths that open the files
    import json
    import os

    from PIL import Image

    folder = tmp_path / "probe"
    folder.mkdir()
    raw = os.fsencode(str(folder))
    names = [b"Jos\xe9_%d.png" % i for i in range(4)] + [b"n01440764_caf\xe9.png"]
    for name, img in zip(names, probe_images):
        Image.fromarray(img).save(os.path.join(raw, name), "PNG")
    with open(os.path.join(raw, b"\xff_huge.png"), "wb") as f:
        f.write(_bomb_png())
    with pytest.warns(UserWarning, match=r"skipped 1 entry.*pixel limit, e.g. \\xff_huge.png"):
        first = probe.scan_folder(tiny_model, "c2", folder, size=32)
    assert first.from_cache is False and first.n_images == 5
    second = probe.scan_folder(tiny_model, "c2", folder, size=32)
    assert second.from_cache is True
    np.testing.assert_array_equal(second.means, first.means)
    assert (second.labels, second.wnids, second.sources) == (first.labels, first.wnids, first.sources)
    assert sorted(os.fsencode(s) for s in second.sources) == sorted(os.path.join(raw, n) for n in names)
    assert second.labels == ["Jos\\xe9_0", "Jos\\xe9_1", "Jos\\xe9_2", "Jos\\xe9_3", "tench"]
    json.dumps(second.labels, ensure_ascii=False).encode("utf-8")
    reopened = np.stack([lab_utils.load_image(s, 32) for s in second.sources])
    with pytest.warns(UserWarning):
        decoded = lab_utils.load_probe_set(folder, size=32)
    np.testing.assert_array_equal(reopened, decoded.images)
    np.testing.assert_array_equal(second.means, lab_utils.scan_images(tiny_model, "c2", reopened,
                                                                      use_cache=False).means)


def test_scan_keeps_each_filters_peak_position_from_the_same_pass(tiny_model, probe_images):
    scan = lab_utils.scan_images(tiny_model, "c2", probe_images, batch_size=3, use_cache=False)
    maps = probe.activation_maps(tiny_model, "c2", 1, probe_images)  # (n, rows, cols), filter 1
    n, rows, cols = maps.shape
    assert scan.map_shape == (rows, cols) and scan.peaks.shape == scan.means.shape
    for i in range(n):
        assert maps[i].ravel()[scan.peaks[i, 1]] == pytest.approx(maps[i].max(), rel=1e-5)
        assert scan.means[i, 1] == pytest.approx(maps[i].mean(), rel=1e-4, abs=1e-6)
        y, x = scan.peak_position(i, 1)
        assert 0 < y < 1 and 0 < x < 1
        assert int(y * rows) * cols + int(x * cols) == scan.peaks[i, 1]
    again = lab_utils.scan_images(tiny_model, "c2", probe_images, batch_size=5)  # cached: same peaks
    cached = lab_utils.scan_images(tiny_model, "c2", probe_images, batch_size=5)
    assert cached.from_cache and np.array_equal(cached.peaks, again.peaks) and cached.map_shape == again.map_shape


def test_the_same_pass_keeps_pre_relu_means_and_every_upstream_layer(tiny_model, probe_images):
    from lab_utils.models import submodel

    scan = lab_utils.scan_images(tiny_model, "c3", probe_images, batch_size=4, use_cache=False)
    assert list(scan.upstream) == ["c1", "c2"]  # the conv layers the pass went through, in order
    for name in ("c1", "c2"):
        alone = lab_utils.scan_images(tiny_model, name, probe_images, use_cache=False)
        np.testing.assert_allclose(scan.upstream[name], alone.means, rtol=1e-5, atol=1e-6)
    pre = submodel(tiny_model, "c3", pre_activation=True).predict(
        lab_utils.preprocess(tiny_model, probe_images.astype("float32")), verbose=0)
    np.testing.assert_allclose(scan.pre_means, pre.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scan.means, np.maximum(pre, 0).mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    cached = lab_utils.scan_images(tiny_model, "c3", probe_images)
    again = lab_utils.scan_images(tiny_model, "c3", probe_images)
    assert again.from_cache and np.array_equal(again.pre_means, cached.pre_means)
    assert np.array_equal(again.upstream["c2"], cached.upstream["c2"]) and list(again.upstream) == ["c1", "c2"]


def test_lowest_pre_relu_images_rank_from_the_bottom_with_ties_by_index():
    scan = _scan([1.0, 3.0, 5.0, 2.0], ["a", "b", "c", "d"])
    scan.pre_means = np.array([[0.5, 0], [-2.0, 0], [-2.0, 0], [1.0, 0]], np.float32)
    low = probe.rank_images_lowest(scan, 0, 3)
    assert low["image"].tolist() == [1, 2, 0] and low["mean_pre_activation"].tolist() == [-2.0, -2.0, 0.5]
    assert low["rank"].tolist() == [1, 2, 3] and low["class"].tolist() == ["b", "c", "a"]
    scan.pre_means = None
    with pytest.raises(LabError, match="no pre-ReLU means"):
        probe.rank_images_lowest(scan, 0, 3)


def test_channel_top_images_come_from_the_upstream_means(tiny_model, probe_images):
    scan = lab_utils.scan_images(tiny_model, "c3", probe_images, use_cache=False)
    examples = probe.channel_top_images(scan, "c2", [4, 0], top_n=3)
    assert list(examples) == [4, 0]
    for c, df in examples.items():
        column = scan.upstream["c2"][:, c].astype(np.float64)
        expected = np.lexsort((np.arange(len(column)), -column))[:3]
        assert df["image"].tolist() == expected.tolist()
        assert df["mean_activation"].tolist() == pytest.approx(column[expected].tolist())
    with pytest.raises(LabError, match="kept no means of c3"):
        probe.channel_top_images(scan, "c3", [0])


def test_class_rows_carry_a_bootstrap_interval_of_their_mean():
    scan = _scan([1.0, 3.0, 5.0, 2.0, 2.0, 4.0, 0.0, 9.0, 9.0, 9.0],
                 ["cat", "dog", "cat", "bee", "ant", "dog", "eel", "fox", "fox", "fox"])
    ranked = probe.rank_classes(scan, 0, 10).set_index("class")
    assert ranked.loc["fox", "ci_low"] == ranked.loc["fox", "ci_high"] == 9.0  # no spread, no width
    assert ranked.loc["cat", "ci_low"] >= 1.0 and ranked.loc["cat", "ci_high"] <= 5.0
    assert ranked.loc["cat", "ci_low"] < 3.0 < ranked.loc["cat", "ci_high"]
    assert np.isnan(ranked.loc["eel", "ci_low"]) and ranked.loc["eel", "n_images"] == 1  # one image: no interval
    again = probe.rank_classes(scan, 0, 10).set_index("class")
    assert again.loc["cat", "ci_low"] == ranked.loc["cat", "ci_low"]  # deterministic
    lo, hi = probe.bootstrap_interval(np.random.default_rng(3).normal(10.0, 1.0, 400))
    assert 9.7 < lo < 10.0 < hi < 10.3  # about mean +- 1.96 / sqrt(400)
