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
        assert texts == [f"{v:.2f}" for v in np.asarray(row.weights).ravel()]  # row-major, as the array
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


def test_top_images_overlay_upsamples_maps_to_the_image_on_one_scale():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    maps = rng.random((3, 8, 8)).astype(np.float32)
    maps[2] *= 3  # the strongest image sets the shared maximum
    fig = plots.top_images_overlay(images, maps, ["a", "b", "c"])
    used = [ax for ax in fig.axes if ax.images]
    assert len(used) == 3
    for ax, img, amap in zip(used, images, maps):
        base, overlay = ax.images
        np.testing.assert_array_equal(base.get_array(), img)
        assert overlay.get_array().shape == (32, 32)
        assert overlay.norm.vmin == 0 and overlay.norm.vmax == pytest.approx(float(maps.max()))
        # upsampling keeps the map's range (bilinear: no overshoot)
        assert overlay.get_array().max() <= amap.max() + 1e-5
    assert png_bytes(fig).startswith(b"\x89PNG")
