"""lab_utils.images: odd image files, folders of them, URLs (a local HTTP
server), imagenet-mini through a mocked kagglehub, and the embedded probe set."""
from __future__ import annotations

import functools
import http.server
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lab_utils
from lab_utils import LabError, ResourceMissingError, images
from lab_utils.config import DATA_DIR, EMBEDDED_PROBE_DIR

S = 32  # output size of most tests

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def near(pixel, colour, tol=12):
    return np.abs(np.asarray(pixel, int) - np.asarray(colour, int)).max() <= tol


def jpeg(colour=RED, size=(40, 30)) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG", quality=95)


def check(arr, size=S):
    assert arr.shape == (size, size, 3) and arr.dtype == np.uint8
    return arr


# ------------------------------------------------------------------ one image, every odd kind
def test_rgb_jpeg_from_path_bytes_and_pil(tmp_path):
    path = tmp_path / "red.jpg"
    path.write_bytes(jpeg())
    for source in (path, str(path), path.read_bytes(), Image.open(path)):
        arr = check(lab_utils.load_image(source, size=S))
        assert near(arr[S // 2, S // 2], RED)
    assert check(lab_utils.load_image(path), 224).shape == (224, 224, 3)  # default size


def test_grayscale_L():
    img = Image.new("L", (40, 40), 200)
    arr = check(images.load_image(encode(img, "PNG"), S))
    assert (arr == 200).all()


def test_rgba_transparent_pixels_on_white():
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))  # transparent black
    img.paste((255, 0, 0, 255), (0, 0, 40, 20))  # opaque red top half
    arr = check(images.load_image(encode(img, "PNG"), 40), 40)
    assert near(arr[5, 5], RED, 0)
    assert near(arr[35, 35], WHITE, 0)  # not black
    half = Image.new("RGBA", (40, 40), (0, 0, 0, 128))
    assert near(images.load_image(encode(half, "PNG"), 40)[20, 20], (127, 127, 127), 2)


def test_la_transparent_on_white():
    img = Image.new("LA", (40, 40), (0, 0))
    assert near(images.load_image(encode(img, "PNG"), S)[3, 3], WHITE, 0)


def _palette_image():
    img = Image.new("P", (40, 40), 0)
    img.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0 = red, 1 = blue
    img.paste(1, (0, 0, 40, 20))  # top half blue
    return img


def test_palette_without_transparency():
    arr = check(images.load_image(encode(_palette_image(), "PNG"), 40), 40)
    assert near(arr[5, 5], BLUE, 0) and near(arr[35, 35], RED, 0)


def test_palette_with_transparency():
    arr = check(images.load_image(encode(_palette_image(), "PNG", transparency=0), 40), 40)
    assert near(arr[5, 5], BLUE, 0)
    assert near(arr[35, 35], WHITE, 0)  # index 0 (red) is transparent


def test_palette_gif_with_transparency():
    arr = check(images.load_image(encode(_palette_image(), "GIF", transparency=0), 40), 40)
    assert near(arr[5, 5], BLUE, 0) and near(arr[35, 35], WHITE, 0)


@pytest.mark.parametrize("mode, colour, keep", [("RGB", BLUE, RED), ("L", 0, 200)])
def test_transparent_colour_key_on_white(mode, colour, keep):
    img = Image.new(mode, (40, 40), colour)
    img.paste(keep, (0, 0, 40, 20))
    arr = check(images.load_image(encode(img, "PNG", transparency=colour), 40), 40)
    assert near(arr[5, 5], keep if mode == "RGB" else (keep,) * 3, 0)
    assert near(arr[35, 35], WHITE, 0)  # the transparent colour


def test_cmyk_jpeg():
    data = encode(Image.new("RGB", (40, 40), RED).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    arr = check(images.load_image(data, S))
    assert near(arr[S // 2, S // 2], RED)


def test_16_bit_png():
    arr16 = np.zeros((40, 40), np.uint16)
    arr16[:, 20:] = 65535
    arr16[:10, :] = 32768
    data = encode(Image.fromarray(arr16), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I;16")
    arr = check(images.load_image(data, 40), 40)
    assert (arr[20, 5] == 0).all()
    assert (arr[20, 35] == 255).all()  # 65535 -> 255, not clipped from the low byte
    assert np.abs(arr[5, 5].astype(int) - 128).max() <= 1


def test_float_tiff_in_0_1():
    img = Image.fromarray(np.full((40, 40), 0.5, np.float32), mode="F")
    arr = check(images.load_image(encode(img, "TIFF"), S))
    assert np.abs(arr.astype(int) - 128).max() <= 1


def test_one_bit_image():
    img = Image.new("1", (40, 40), 0)
    img.paste(1, (0, 0, 40, 20))
    arr = check(images.load_image(encode(img, "PNG"), 40), 40)
    assert (arr[5, 5] == 255).all() and (arr[35, 35] == 0).all()


def test_tiny_image_is_upscaled():
    arr = check(images.load_image(encode(Image.new("RGB", (5, 7), GREEN), "PNG"), S))
    assert (arr == np.array(GREEN, np.uint8)).all()


@pytest.mark.parametrize("landscape", [True, False])
def test_non_square_is_center_cropped(landscape):
    # three bands: the centre one (green) is what a centre crop keeps
    w, h = (300, 100) if landscape else (100, 300)
    img = Image.new("RGB", (w, h), RED)
    box = (100, 0, 200, 100) if landscape else (0, 100, 100, 200)
    img.paste(GREEN, box)
    img.paste(BLUE, (200, 0, 300, 100) if landscape else (0, 200, 100, 300))
    arr = check(images.load_image(encode(img, "PNG"), 64), 64)
    inner = arr[6:-6, 6:-6].reshape(-1, 3)
    assert all(near(p, GREEN, 20) for p in inner)


def test_exif_rotated_jpeg():
    img = Image.new("RGB", (60, 40), BLUE)
    img.paste(RED, (0, 0, 30, 40))  # left half red as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored left side becomes the top
    data = encode(img, "JPEG", quality=95, exif=exif)
    arr = check(images.load_image(data, 40), 40)
    assert near(arr[3, 20], RED, 20) and near(arr[36, 20], BLUE, 20)


def test_unreadable_image_and_missing_file(tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_text("this is not a JPEG")
    with pytest.raises(LabError, match="not a readable image.*x.jpg"):
        lab_utils.load_image(bad)
    with pytest.raises(ResourceMissingError, match="nothing.png"):
        lab_utils.load_image(tmp_path / "nothing.png")


# ------------------------------------------------------------------ folders
def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_flat_folder_labels_from_wnid_names(tmp_path):
    _write(tmp_path / "n01440764_tench.jpg", jpeg(RED))
    _write(tmp_path / "n01443537_not_the_real_name.png", encode(Image.new("RGB", (50, 50), GREEN), "PNG"))
    _write(tmp_path / "holiday.jpg", jpeg(BLUE))
    _write(tmp_path / ".hidden.jpg", b"ignored")
    ps = lab_utils.load_probe_set(tmp_path, size=S)
    assert len(ps) == 3 and ps.images.shape == (3, S, S, 3) and ps.images.dtype == np.uint8
    # sorted by file name; labels from the class index
    assert ps.labels == ["holiday", "tench", "goldfish"]
    assert ps.wnids == [None, "n01440764", "n01443537"]
    assert [Path(s).name for s in ps.sources] == ["holiday.jpg", "n01440764_tench.jpg",
                                                  "n01443537_not_the_real_name.png"]
    assert near(ps.images[1, S // 2, S // 2], RED) and near(ps.images[0, S // 2, S // 2], BLUE)
    assert ps.skipped == []


def _class_folders(root: Path):
    for wnid, n in (("n01440764", 3), ("n01443537", 2)):
        for i in range(n):
            _write(root / "train" / wnid / f"{wnid}_{i}.JPEG", jpeg((i * 50, 100, 0)))
    _write(root / "train" / "README.txt", b"class folders below")


@pytest.mark.parametrize("level", ["train", "root"])
def test_class_subfolders(tmp_path, level):
    _class_folders(tmp_path)
    folder = tmp_path / "train" if level == "train" else tmp_path

    def load(**kw):
        # given train/, the README beside the class folders is not an image of any class;
        # given the folder above, it sits inside the tree and is skipped with a warning
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            ps = lab_utils.load_probe_set(folder, size=S, **kw)
        skipped = [str(w.message) for w in rec if "skipped" in str(w.message)]
        if level == "train":
            assert skipped == []
        else:
            assert len(skipped) == 1 and "README.txt" in skipped[0]
        return ps

    ps = load()
    assert ps.labels == ["tench"] * 3 + ["goldfish"] * 2
    assert ps.wnids == ["n01440764"] * 3 + ["n01443537"] * 2
    one_each = load(per_class=1)
    assert one_each.labels == ["tench", "goldfish"]
    assert Path(one_each.sources[1]).name == "n01443537_0.JPEG"
    two_each = load(per_class=2)
    assert two_each.labels == ["tench", "tench", "goldfish", "goldfish"]
    assert load(limit=4).labels == ["tench"] * 3 + ["goldfish"]
    assert load(per_class=1, limit=1).labels == ["tench"]


def test_bad_files_are_skipped_with_one_counting_warning(tmp_path):
    _write(tmp_path / "a_good.jpg", jpeg(RED))
    _write(tmp_path / "b_notes.txt", b"hello")
    _write(tmp_path / "c_truncated.jpg", encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")[:300])
    _write(tmp_path / "d_x.jpg", b"plain text in a .jpg")
    _write(tmp_path / "e_good.png", encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ps = lab_utils.load_probe_set(tmp_path, size=S)
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert "skipped 3 " in msgs[0]
    assert [Path(s).name for s in ps.sources] == ["a_good.jpg", "e_good.png"]
    assert sorted(Path(s).name for s in ps.skipped) == ["b_notes.txt", "c_truncated.jpg", "d_x.jpg"]


def test_limit_and_per_class_count_readable_images(tmp_path):
    # bad files sort first: they must not take the slots of the good ones
    _write(tmp_path / "n01440764_0_bad.jpg", b"text")
    _write(tmp_path / "n01440764_1.jpg", jpeg(RED))
    _write(tmp_path / "n01440764_2.jpg", jpeg(RED))
    _write(tmp_path / "n01443537_0.jpg", jpeg(GREEN))
    _write(tmp_path / "n01443537_1_bad.jpg", b"text")
    _write(tmp_path / "n01443537_2.jpg", jpeg(GREEN))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        two = lab_utils.load_probe_set(tmp_path, size=S, limit=2)
        one_each = lab_utils.load_probe_set(tmp_path, size=S, per_class=1)
        two_each = lab_utils.load_probe_set(tmp_path, size=S, per_class=2)
        three = lab_utils.load_probe_set(tmp_path, size=S, per_class=2, limit=3)
    assert [Path(s).name for s in two.sources] == ["n01440764_1.jpg", "n01440764_2.jpg"]
    assert [Path(s).name for s in one_each.sources] == ["n01440764_1.jpg", "n01443537_0.jpg"]
    assert two_each.labels == ["tench", "tench", "goldfish", "goldfish"]
    assert [Path(s).name for s in three.sources] == ["n01440764_1.jpg", "n01440764_2.jpg", "n01443537_0.jpg"]


def test_empty_or_only_bad_folder_is_an_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LabError, match="holds no readable image"):
        lab_utils.load_probe_set(empty)
    bad = tmp_path / "bad"
    _write(bad / "x.jpg", b"text")
    _write(bad / "y.txt", b"text")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with pytest.raises(LabError, match="holds no readable image"):
            lab_utils.load_probe_set(bad)
    assert sum("skipped 2 " in str(w.message) for w in rec) == 1
    with pytest.raises(ResourceMissingError, match="probe set not found"):
        lab_utils.load_probe_set(tmp_path / "does_not_exist")


@pytest.mark.parametrize("kw, pattern", [
    ({"limit": 0}, "limit must be >= 1"),
    ({"per_class": 0}, "per_class must be >= 1"),
    ({"size": 8}, "at least 32"),
])
def test_probe_set_bad_parameters(tmp_path, kw, pattern):
    _write(tmp_path / "a.jpg", jpeg())
    with pytest.raises(LabError, match=pattern):
        lab_utils.load_probe_set(tmp_path, **kw)


def test_list_of_paths_and_single_file(tmp_path):
    a = _write(tmp_path / "n01440764_x.jpg", jpeg(RED))
    b = _write(tmp_path / "other.jpg", jpeg(GREEN))
    ps = lab_utils.load_probe_set([b, a], size=S)
    assert ps.labels == ["other", "tench"]  # list order kept
    assert lab_utils.load_probe_set(a, size=S).labels == ["tench"]


def test_probe_set_fingerprint_and_subset(tmp_path):
    _class_folders(tmp_path)
    ps = lab_utils.load_probe_set(tmp_path / "train", size=S)
    fp = ps.fingerprint()
    assert fp == lab_utils.load_probe_set(tmp_path / "train", size=S).fingerprint()
    sub = ps.subset([4, 0])
    assert sub.labels == ["goldfish", "tench"] and np.array_equal(sub.images[1], ps.images[0])
    relabelled = images.ProbeSet(ps.images, ["x"] * 5, ps.wnids, ps.sources)
    assert relabelled.fingerprint() != fp
    changed = ps.images.copy()
    changed[0, 0, 0, 0] ^= 1
    assert images.ProbeSet(changed, ps.labels, ps.wnids, ps.sources).fingerprint() != fp


# ------------------------------------------------------------------ URLs (127.0.0.1 only)
@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """A small HTTP server on 127.0.0.1 serving tmp_path/www; yields (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_load_image_from_url(http_root):
    www, base = http_root
    (www / "green.png").write_bytes(encode(Image.new("RGB", (48, 40), GREEN), "PNG"))
    arr = check(lab_utils.load_image(f"{base}/green.png", size=S))
    assert (arr == np.array(GREEN, np.uint8)).all()
    ps = lab_utils.load_probe_set(f"{base}/green.png", size=S)
    assert len(ps) == 1 and ps.labels == ["green.png"] and ps.sources == [f"{base}/green.png"]


def test_url_404_is_resource_missing(http_root):
    www, base = http_root
    (www / "green.png").write_bytes(encode(Image.new("RGB", (48, 40), GREEN), "PNG"))
    url = f"{base}/missing.png"
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_image(url)
    assert url in str(info.value)
    assert isinstance(info.value, LabError)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ps = lab_utils.load_probe_set([f"{base}/green.png", url], size=S)
    assert len(ps) == 1 and ps.skipped == [url]
    assert sum("skipped 1 " in str(w.message) for w in rec) == 1


# ------------------------------------------------------------------ imagenet-mini via kagglehub
def test_imagenet_mini_offline_points_to_embedded_set(monkeypatch):
    import kagglehub

    asked = []

    def offline(handle, *args, **kwargs):
        asked.append(handle)
        raise ConnectionError("no network")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(ResourceMissingError) as info:
        lab_utils.load_imagenet_mini()
    msg = str(info.value)
    assert "embedded probe set" in msg and "ConnectionError" in msg
    assert images.IMAGENET_MINI in msg
    assert len(asked) == 1
    assert __import__("re").fullmatch(r"ifigotin/imagenetmini-1000/versions/\d+", asked[0])


def test_imagenet_mini_layout(tmp_path, monkeypatch):
    import kagglehub

    root = tmp_path / "kaggle"
    for wnid in ("n01440764", "n01443537"):
        for i in range(2):
            _write(root / "imagenet-mini" / "val" / wnid / f"ILSVRC2012_val_{wnid}_{i}.JPEG", jpeg())
    asked = []
    monkeypatch.setattr(kagglehub, "dataset_download", lambda handle, *a, **k: asked.append(handle) or str(root))
    ps = lab_utils.load_imagenet_mini(size=S)
    assert asked == [images.IMAGENET_MINI]
    assert asked[0].startswith("ifigotin/imagenetmini-1000/versions/")
    assert isinstance(ps, images.ProbeSet)
    assert ps.labels == ["tench", "tench", "goldfish", "goldfish"]
    assert ps.wnids == ["n01440764"] * 2 + ["n01443537"] * 2
    assert ps.images.shape == (4, S, S, 3)
    assert lab_utils.load_imagenet_mini(size=S, per_class=1).labels == ["tench", "goldfish"]
    with pytest.raises(ResourceMissingError, match="no train/ folder"):
        lab_utils.load_imagenet_mini(split="train", size=S)
    with pytest.raises(LabError, match="split must be 'train' or 'val'"):
        lab_utils.load_imagenet_mini(split="test")


# ------------------------------------------------------------------ the embedded probe set
def test_embedded_probe_set_one_image_per_class():
    index = lab_utils.class_index()
    files = sorted(EMBEDDED_PROBE_DIR.iterdir())
    assert len(files) == 1000
    by_wnid = {}
    for f in files:
        wnid, _, name = f.stem.partition("_")
        by_wnid[wnid] = name
        with Image.open(f) as img:  # header only: fast
            assert img.size == (224, 224) and img.mode == "RGB", f.name
    assert set(by_wnid) == {w for w, _ in index.values()}
    assert all(by_wnid[w] == label for w, label in index.values())


def test_embedded_probe_set_loads():
    ps = lab_utils.load_probe_set(limit=12)
    index = lab_utils.class_index()
    assert ps.images.shape == (12, 224, 224, 3) and ps.images.dtype == np.uint8
    assert ps.labels == [index[i][1] for i in range(12)]  # sorted by wnid = class id order
    assert ps.wnids == [index[i][0] for i in range(12)]
    assert "embedded" in ps.name
    assert ps.images.std() > 10


def test_demo_images():
    demo = lab_utils.demo_images(size=64)
    assert demo.labels == ["tench", "tabby", "grand_piano", "orange"]
    assert demo.images.shape == (4, 64, 64, 3)


def test_class_index_labels_are_keras_names():
    index = lab_utils.class_index()
    labels = [label for _, label in index.values()]
    assert all(label.isascii() and " " not in label for label in labels)
    assert index[619] == ("n03637318", "lampshade") and index[765] == ("n04099969", "rocking_chair")
    assert index[831] == ("n04344873", "studio_couch") and index[846] == ("n04380533", "table_lamp")


def test_data_folder_under_25_mb():
    total = sum(p.stat().st_size for p in DATA_DIR.rglob("*") if p.is_file())
    assert total < 25 * 1024 * 1024, total


def test_probe_set_folder_is_decoded_once_until_a_file_changes(tmp_path, monkeypatch):
    from lab_utils import images

    for name, colour in (("n01440764_tench.png", (200, 30, 30)), ("n02123045_tabby.png", (30, 200, 30))):
        Image.new("RGB", (40, 50), colour).save(tmp_path / name)
    decoded = []
    real = images._decode_many
    monkeypatch.setattr(images, "_decode_many", lambda srcs, size: decoded.append(len(srcs)) or real(srcs, size))
    first = lab_utils.load_probe_set(tmp_path, size=S)
    again = lab_utils.load_probe_set(tmp_path, size=S)
    assert decoded == [2] and np.shares_memory(again.images, first.images)  # decoded once
    with pytest.raises(ValueError):  # shared between callers, so read-only
        first.images[0, 0, 0, 0] = 1
    again.labels[0] = "changed by one caller"
    assert lab_utils.load_probe_set(tmp_path, size=S).labels[0] == "tench"  # not seen by the next one
    assert lab_utils.load_probe_set(tmp_path, size=S + 8).images.shape[1] == S + 8  # other arguments, other entry
    assert decoded == [2, 2]
    Image.new("RGB", (40, 50), (0, 0, 255)).save(tmp_path / "n02123045_tabby.png")
    os.utime(tmp_path / "n02123045_tabby.png", ns=(1, 1))  # a rewrite the mtime resolution could hide
    changed = lab_utils.load_probe_set(tmp_path, size=S)
    assert decoded == [2, 2, 2]
    assert changed.images[1].mean(axis=(0, 1))[2] > 200  # the new blue pixels, not the memoized green
