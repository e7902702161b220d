"""lab_utils.images: odd image files, folders of them, URLs (a local HTTP
server), imagenet-mini through a mocked kagglehub, and the embedded probe set."""
from __future__ import annotations

import functools
import http.server
import io
import json
import os
import signal
import threading
import warnings
import zlib
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
    ps = lab_utils.load_imagenet_mini(split="val", size=S)
    assert asked == [images.IMAGENET_MINI]
    assert asked[0].startswith("ifigotin/imagenetmini-1000/versions/")
    assert isinstance(ps, images.ProbeSet)
    assert ps.labels == ["tench", "tench", "goldfish", "goldfish"]
    assert ps.wnids == ["n01440764"] * 2 + ["n01443537"] * 2
    assert ps.images.shape == (4, S, S, 3)
    assert lab_utils.load_imagenet_mini(split="val", size=S, per_class=1).labels == ["tench", "goldfish"]
    with pytest.raises(ResourceMissingError, match="no train/ folder"):
        lab_utils.load_imagenet_mini(size=S)  # the default uses train and val
    with pytest.raises(LabError, match="split must be 'train' or 'val'"):
        lab_utils.load_imagenet_mini(split="test")
    # train + val (the default): train first, per_class counted over both splits
    for wnid in ("n01440764", "n01443537"):
        for i in range(3):
            _write(root / "imagenet-mini" / "train" / wnid / f"{wnid}_{i}.JPEG", jpeg())
    both = lab_utils.load_imagenet_mini(size=S)
    assert both.labels == ["tench"] * 3 + ["goldfish"] * 3 + ["tench"] * 2 + ["goldfish"] * 2
    assert [s.split("/")[-3] for s in both.sources] == ["train"] * 6 + ["val"] * 4
    four = lab_utils.load_imagenet_mini(size=S, per_class=4)
    assert four.labels.count("tench") == 4 and four.labels.count("goldfish") == 4
    assert sum("/val/" in s for s in four.sources) == 2  # the fourth of each class comes from val
    assert len(lab_utils.load_imagenet_mini(size=S, per_class=4, limit=5)) == 5


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


# ------------------------------------------------------------------ hostile input (issue 9)
LATIN1_NAME = b"Jos\xe9.png"  # "José.png" in Latin-1: not UTF-8, Python gives it as "Jos\udce9.png"


def _bytes_path(folder: Path, *names: bytes) -> bytes:
    return os.path.join(os.fsencode(str(folder)), *names)


def _utf8_safe(text: str) -> str:
    """text, after checking it can go into a UTF-8 notebook / JSON file as it is."""
    json.dumps(text, ensure_ascii=False).encode("utf-8")  # raises on surrogates
    text.encode("utf-8")
    return text


def test_display_name_escapes_undecodable_bytes_and_controls():
    latin1 = os.fsdecode(LATIN1_NAME)
    with pytest.raises(UnicodeEncodeError):
        latin1.encode()  # the bug: such a name cannot be written as UTF-8 unescaped
    assert images.display_name(latin1) == "Jos\\xe9.png"
    assert images.display_name(LATIN1_NAME) == images.display_name(Path(latin1)) == "Jos\\xe9.png"
    # bidi override (shows "gnp.exe" as "exe.png"), zero-width space, newline, ESC, DEL, C1: escaped
    assert images.display_name("x\u202egnp.exe") == "x\\u202egnp.exe"
    assert images.display_name("a\u200bb\nc\x1b[31md\x7f\x85") == "a\\u200bb\\x0ac\\x1b[31md\\x7f\\x85"
    assert images.display_name("\ud800lone") == "\\ud800lone"  # a lone surrogate not from bytes
    # ordinary names, other scripts, emoji (with joiners) are unchanged
    for ok in ("José.png", "猫の写真.jpg", "Ünïcødé ñame.png", "👨\u200d👩\u200d👧.png", "a b.png"):
        assert images.display_name(ok) == ok
    for name in (latin1, "x\u202egnp.exe", "a\nb", "\ud800"):
        shown = _utf8_safe(images.display_name(name))
        assert shown.isprintable() and images.display_name(shown) == shown  # idempotent


def test_non_utf8_file_and_folder_names_load_key_and_label(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("RGB", (40, 40), RED).save(_bytes_path(flat, LATIN1_NAME), "PNG")
    _write(flat / "n01440764_tench.png", encode(Image.new("RGB", (40, 40), GREEN), "PNG"))
    _write(flat / "evil\u202egnp.png", encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    with open(_bytes_path(flat, b"notes-\xff.txt"), "wb") as f:  # unreadable, with a non-UTF-8 name
        f.write(b"not an image")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ps = lab_utils.load_probe_set(flat, size=S)
    msgs = [_utf8_safe(str(w.message)) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "notes-\\xff.txt" in msgs[0]
    assert ps.labels == ["Jos\\xe9", "evil\\u202egnp", "tench"]
    for label in ps.labels:
        assert _utf8_safe(label).isprintable()
    assert _utf8_safe(json.dumps({"labels": ps.labels}, ensure_ascii=False))
    # the sources are the real names: they open the files
    assert os.fsencode(ps.sources[0]) == _bytes_path(flat, LATIN1_NAME)
    assert near(lab_utils.load_image(ps.sources[0], S)[S // 2, S // 2], RED, 0)
    assert near(ps.images[0, S // 2, S // 2], RED, 0)

    key = images.folder_content_key(flat, size=S)
    assert key is not None and key == images.folder_content_key(flat, size=S)
    Image.new("RGB", (40, 40), WHITE).save(_bytes_path(flat, LATIN1_NAME), "PNG")  # same name, other bytes
    assert images.folder_content_key(flat, size=S) not in (None, key)

    # class sub-folder named in Latin-1, holding a file named in Latin-1
    classes = tmp_path / "classes"
    (classes / "n01440764").mkdir(parents=True)
    os.mkdir(_bytes_path(classes, b"Caf\xe9"))
    Image.new("RGB", (40, 40), BLUE).save(_bytes_path(classes, b"Caf\xe9", LATIN1_NAME), "PNG")
    _write(classes / "n01440764" / "a.jpg", jpeg(RED))
    ps = lab_utils.load_probe_set(classes, size=S)
    assert ps.labels == ["Caf\\xe9", "tench"] and ps.skipped == []
    assert near(ps.images[0, S // 2, S // 2], BLUE, 0)
    assert images.folder_content_key(classes, size=S) is not None


# A PNG whose header says 20000x20000 (1-bit grey): 400 million pixels, over Pillow's
# decompression-bomb limit (2 x MAX_IMAGE_PIXELS, ~179 million). Its rows are zeros, so the
# zlib stream is ~50 KB; Pillow refuses it from the header, before decoding a pixel.
def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")


@functools.lru_cache(maxsize=1)
def _bomb_png(side: int = 20000) -> bytes:
    row = bytes(1 + (side + 7) // 8)  # filter byte 0, then side bits of 0
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 500) for _ in range(side // 500)) + z.flush()
    ihdr = side.to_bytes(4, "big") * 2 + bytes([1, 0, 0, 0, 0])  # bit depth 1, grey, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


def test_decompression_bomb_is_a_one_line_lab_error(tmp_path):
    data = _bomb_png()
    assert len(data) < 100_000  # tens of KB on disk
    with pytest.raises(Image.DecompressionBombError):  # what Pillow does: not an OSError
        Image.open(io.BytesIO(data))
    bomb = _write(tmp_path / "huge.png", data)
    with pytest.raises(LabError) as info:
        lab_utils.load_image(bomb)
    msg = str(info.value)
    assert "\n" not in msg and str(bomb) in msg
    assert "20000x20000" in msg and f"{2 * Image.MAX_IMAGE_PIXELS:,}" in msg and "resize" in msg
    assert isinstance(info.value, images.ImageTooLargeError)
    with pytest.raises(LabError, match=r"<bytes> is 20000x20000"):
        lab_utils.load_image(data)


def test_decompression_bomb_in_a_folder_is_skipped_and_named(tmp_path):
    _write(tmp_path / "a_good.jpg", jpeg(RED))
    _write(tmp_path / "b_huge.png", _bomb_png())
    _write(tmp_path / "c_good.png", encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ps = lab_utils.load_probe_set(tmp_path, size=S)
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "skipped 1 " in msgs[0] and "b_huge.png" in msgs[0] and "pixel limit" in msgs[0]
    assert [Path(s).name for s in ps.sources] == ["a_good.jpg", "c_good.png"]
    assert [Path(s).name for s in ps.skipped] == ["b_huge.png"] and ps.skip_reasons == [images.TOO_LARGE]
    # limit counts readable images: the bomb does not take a slot
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert len(lab_utils.load_probe_set(tmp_path, size=S, limit=2)) == 2


def _symlink(target, link: Path, target_is_directory=False):
    try:
        os.symlink(target, link, target_is_directory=target_is_directory)
    except (OSError, NotImplementedError) as exc:  # Windows without the privilege
        pytest.skip(f"cannot make symlinks here: {exc}")


@pytest.fixture
def outside(tmp_path):
    """A folder beside the probe folder holding a blue image (content that must never be read)."""
    out = tmp_path / "outside"
    _write(out / "secret.png", encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    _write(out / "n01443537_fish.png", encode(Image.new("RGB", (40, 40), BLUE), "PNG"))
    return out


def _no_blue(ps):
    return not any(near(img[S // 2, S // 2], BLUE, 30) for img in ps.images)


def test_symlinks_out_of_the_folder_loops_and_broken_are_not_followed(tmp_path, outside):
    probe = tmp_path / "probe"
    _write(probe / "a_good.jpg", jpeg(RED))
    _write(probe / "b_good.png", encode(Image.new("RGB", (40, 40), GREEN), "PNG"))
    _symlink(outside / "secret.png", probe / "c_outside.png")
    _symlink(outside, probe / "d_outside_dir", target_is_directory=True)
    _symlink(probe / "e_loop_b.png", probe / "e_loop_a.png")
    _symlink(probe / "e_loop_a.png", probe / "e_loop_b.png")
    _symlink(probe / "missing.png", probe / "f_broken.png")
    _symlink("../outside/../probe/../outside/secret.png", probe / "g_relative_out.png")  # resolves outside
    _symlink("a_good.jpg", probe / "h_inside.jpg")  # stays inside: followed
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        ps = lab_utils.load_probe_set(probe, size=S)
    assert [Path(s).name for s in ps.sources] == ["a_good.jpg", "b_good.png", "h_inside.jpg"]
    assert ps.labels[2] == "h_inside" and near(ps.images[2, S // 2, S // 2], RED)
    assert _no_blue(ps)
    reasons = dict(zip((Path(s).name for s in ps.skipped), ps.skip_reasons))
    assert reasons == {"c_outside.png": images.LINK_OUTSIDE, "d_outside_dir": images.LINK_OUTSIDE,
                       "e_loop_a.png": images.LINK_LOOP, "e_loop_b.png": images.LINK_LOOP,
                       "f_broken.png": images.LINK_BROKEN, "g_relative_out.png": images.LINK_OUTSIDE}
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "skipped 6 " in msgs[0]
    for part in ("3 links to outside the folder, e.g. c_outside.png", "2 symlink loops", "1 broken link"):
        assert part in msgs[0], msgs[0]
    # the key never reads the outside file: changing it changes nothing
    key = images.folder_content_key(probe, size=S)
    _write(outside / "secret.png", encode(Image.new("RGB", (40, 40), WHITE), "PNG"))
    assert images.folder_content_key(probe, size=S) == key
    images.check_probe_folder(probe)  # has images of its own


def _listed_within(folder: Path, seconds: float = 10.0):
    """list_image_files(folder), failing (not hanging) where a link loop makes it walk forever."""
    if not hasattr(signal, "setitimer"):  # Windows: no alarm; a loop would hang the run instead
        return images.list_image_files(folder)

    def too_slow(signum, frame):
        raise AssertionError(f"list_image_files({folder}) still walking after {seconds} s: a link loop followed")

    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return images.list_image_files(folder)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_class_folder_symlinks_out_and_loops_are_not_followed(tmp_path, outside):
    root = tmp_path / "train"
    _write(root / "n01440764" / "a.jpg", jpeg(RED))
    _symlink(outside, root / "n01443537", target_is_directory=True)  # a whole class from outside
    _symlink(outside / "secret.png", root / "n01440764" / "b_out.png")
    _symlink("..", root / "n01440764" / "up", target_is_directory=True)  # back to the root: a loop
    _symlink(".", root / "n01440764" / "here", target_is_directory=True)  # itself: a loop
    _symlink("n01440764", root / "n02123045", target_is_directory=True)  # another class, inside: followed
    listing = _listed_within(root)
    assert listing.class_folder and [f.name for f in listing.files] == ["a.jpg", "a.jpg"]
    with pytest.warns(UserWarning, match="links to outside the folder, e.g. n01440764/b_out.png; .*symlink loops"):
        ps = lab_utils.load_probe_set(root, size=S)
    assert ps.labels == ["tench", "tabby"] and _no_blue(ps)
    assert [os.path.relpath(s, root) for s in ps.sources] == [os.path.join("n01440764", "a.jpg"),
                                                              os.path.join("n02123045", "a.jpg")]
    reasons = sorted((os.path.relpath(s, root), r) for s, r in zip(ps.skipped, ps.skip_reasons))
    assert (os.path.join("n01440764", "b_out.png"), images.LINK_OUTSIDE) in reasons
    assert ("n01443537", images.LINK_OUTSIDE) in reasons
    assert (os.path.join("n01440764", "up"), images.LINK_LOOP) in reasons
    assert (os.path.join("n01440764", "here"), images.LINK_LOOP) in reasons


def test_folder_of_only_bad_links_says_why_it_is_empty(tmp_path, outside):
    probe = tmp_path / "probe"
    probe.mkdir()
    _symlink(outside / "secret.png", probe / "a.png")
    _symlink(probe / "nothing.png", probe / "b.png")
    with pytest.raises(LabError, match="holds no image file") as info:
        images.check_probe_folder(probe)
    assert "1 link to outside the folder, 1 broken link skipped" in str(info.value)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with pytest.raises(LabError, match=r"holds no readable image \(skipped 2: 1 link to outside the folder, "
                                           r"1 broken link\)"):
            lab_utils.load_probe_set(probe, size=S)


def test_check_probe_folder_fails_fast_on_folders_without_images(tmp_path, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("check_probe_folder decoded or opened an image")

    monkeypatch.setattr(images, "load_image", no_decoding)
    monkeypatch.setattr(Image, "open", no_decoding)
    empty = tmp_path / "empty"
    empty.mkdir()
    readme = tmp_path / "readme_only"
    _write(readme / "README.txt", b"put images here")
    _write(readme / ".hidden.png", b"hidden files do not count")
    _write(readme / "sub" / "notes.txt", b"a class folder without images")
    for folder in (empty, readme):
        with pytest.raises(LabError) as info:
            images.check_probe_folder(folder)
        msg = str(info.value)
        assert "\n" not in msg and str(folder) in msg and "holds no image file" in msg and ".jpg" in msg
        with pytest.raises(LabError):
            images.check_probe_folder(str(folder))
    good = tmp_path / "good"
    _write(good / "photo.JPEG", b"not even decoded here")
    images.check_probe_folder(good)
    _write(tmp_path / "classes" / "n01440764" / "x.png", b"")
    images.check_probe_folder(tmp_path / "classes")
    for other in (None, "https://example.org/x.jpg", [str(good / "photo.JPEG")], str(good / "photo.JPEG"),
                  str(tmp_path / "does_not_exist")):
        images.check_probe_folder(other)  # not a local folder: left to the other checks


def test_labelling_and_listing_a_folder_imports_no_tensorflow(tmp_path):
    """Class names come from lab_utils.imagenet (no TensorFlow): labelling a folder, its
    content key and the probe-folder check stay cheap in render.sh's parameter check."""
    import subprocess
    import sys

    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(tmp_path / "n01440764_tench.png")
    code = ("import sys; from pathlib import Path; from lab_utils import images; "
            f"folder = Path({str(tmp_path)!r}); "
            "print(images.label_from_name(folder / 'n01440764_tench.png', False)); "
            "images.check_probe_folder(str(folder)); assert images.folder_content_key(str(folder)); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["('tench', 'n01440764')", "False False"]
