"""lab_utils.plots: the figures show the numbers they are given (weights, images,
activation maps), with the colour conventions of the kit, and render to PNG."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lab_utils import circuits, plots  # noqa: E402


@pytest.fixture
def table(tiny_model):
    return circuits.channel_table(tiny_model, "c2", 1, top_k=3)


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # what Jupyter's inline backend does
    plt.close(fig)
    return buf.getvalue()


def weight_panels(fig):
    return [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == plots.WEIGHT_CMAP]


def test_kernel_heatmaps_show_each_slice_on_one_symmetric_scale(table):
    fig = plots.kernel_heatmaps(table)
    panels = weight_panels(fig)
    assert len(panels) == len(table)
    vmax = max(np.abs(np.asarray(w)).max() for w in table["weights"])
    for ax, row in zip(panels, table.itertuples()):
        image = ax.images[0]
        np.testing.assert_allclose(image.get_array(), np.asarray(row.weights))
        assert image.norm.vmin == pytest.approx(-vmax) and image.norm.vmax == pytest.approx(vmax)  # 0 = white
        texts = [t.get_text() for t in ax.texts]
        assert texts == [plots.weight_text(v) for v in np.asarray(row.weights).ravel()]  # row-major, as the array
        assert all(t.get_fontsize() >= 8 for t in ax.texts)  # readable at the page's width
        assert f"channel {row.channel}" in ax.get_title()
        # text stays readable: white on the darkest cells, black on pale ones
        strongest = int(np.argmax(np.abs(np.asarray(row.weights)).ravel()))
        if abs(np.asarray(row.weights).ravel()[strongest]) > 0.9 * vmax:
            assert ax.texts[strongest].get_color() == "white"
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_circuit_figure_pairs_each_channel_image_with_its_weights(table):
    rng = np.random.default_rng(0)
    channel_images = rng.integers(0, 256, (len(table), 16, 16, 3), dtype=np.uint8)
    filter_image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    fig = plots.circuit_figure(channel_images, table, "c1", filter_image=filter_image)
    rgb_axes = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    np.testing.assert_array_equal(rgb_axes[0].images[0].get_array(), filter_image)
    for i, ax in enumerate(rgb_axes[1:]):
        np.testing.assert_array_equal(ax.images[0].get_array(), channel_images[i])
        assert ax.get_title() == f"c1 ch {table['channel'].iloc[i]}"
    panels = weight_panels(fig)
    assert len(rgb_axes) == len(table) + 1 and len(panels) == len(table)
    for ax, row in zip(panels, table.itertuples()):
        np.testing.assert_allclose(ax.images[0].get_array(), np.asarray(row.weights))
        assert row.category in ax.get_title()
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_top_images_overlay_shows_the_photo_beside_the_map_on_one_scale_with_a_colour_bar():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    maps = rng.random((3, 8, 8)).astype(np.float32)
    maps[2] *= 3  # the strongest image sets the shared maximum
    fig = plots.top_images_overlay(images, maps, ["a.jpg", "b.jpg", "c.jpg"])
    used = [ax for ax in fig.axes if ax.images]
    assert len(used) == 6  # per image: the plain photo, then the overlay
    for i, (img, amap) in enumerate(zip(images, maps)):
        photo, heat = used[2 * i], used[2 * i + 1]
        assert len(photo.images) == 1 and photo.get_title(loc="left") == "abc"[i] + ".jpg"
        np.testing.assert_array_equal(photo.images[0].get_array(), img)  # the photo as it is
        base, overlay = heat.images
        np.testing.assert_array_equal(base.get_array(), plots.desaturated(img))
        assert overlay.get_array().shape == (32, 32)
        assert overlay.norm.vmin == 0 and overlay.norm.vmax == pytest.approx(float(maps.max()))
        assert overlay.get_array().max() <= amap.max() + 1e-5  # bilinear: no overshoot
    bars = [ax for ax in fig.axes if not ax.images]
    assert len(bars) == 1 and "activation" in bars[0].get_ylabel()  # one colour bar, labelled
    assert png_bytes(fig).startswith(b"\x89PNG")


def test_desaturated_keeps_grey_grey_and_drains_colour():
    grey = np.full((2, 2, 3), 100, np.uint8)
    assert np.all(np.abs(plots.desaturated(grey).astype(int) - 100 - int(0.35 * 155)) <= 1)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    out = plots.desaturated(red)[0, 0].astype(int)
    assert out[0] - out[1] < 255 * 0.3  # most of the colour is gone


def test_weights_never_print_minus_zero():
    assert plots.weight_text(-0.001) == "0.00" and plots.weight_text(-0.005) == "-0.01"
    assert plots.weight_text(0.004) == "0.00" and plots.weight_text(1.234) == "1.23"