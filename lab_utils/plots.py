"""Every figure of the lab. Each function returns a matplotlib Figure.

Conventions: channel and filter numbers in titles are 0-based, like every
index of the kit; weights use a diverging colormap centred on 0 (red = positive
= excites the filter, blue = negative = inhibits it); L2 norms are labelled as
norms of weights, activations as activations.
"""
from __future__ import annotations

import numpy as np

WEIGHT_CMAP = "RdBu_r"  # red positive, blue negative
OVERLAY_CMAP = "magma"


def _plt():
    import matplotlib

    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"figure.dpi": 80, "savefig.dpi": 80, "axes.titlesize": 9})
    return plt


def _grid(n, ncols, cell=2.2, extra_h=0.4):
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + extra_h) * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _draw_weights(ax, w, vmax, annotate=True, fontsize=7):
    """A 3x3 (or any 2-D) weight slice as a heat map centred on 0, values written in.

    imshow + text rather than seaborn.heatmap: with annot=True seaborn draws the
    whole figure once per panel to choose text colours (3x slower for 10 panels).
    """
    import matplotlib

    w = np.asarray(w, dtype=float)
    cmap = matplotlib.colormaps[WEIGHT_CMAP]
    norm = matplotlib.colors.Normalize(-vmax, vmax)
    ax.imshow(w, cmap=cmap, norm=norm)
    if annotate:
        for (i, j), v in np.ndenumerate(w):
            r, g, b, _ = cmap(norm(v))
            luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b  # dark cell -> white text
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=fontsize,
                    color="black" if luminance > 0.408 else "white")
    # cell borders as two line collections and no axis at all: tick objects (even
    # empty ones) made every layout pass measure them, ~1 s per 10-panel figure
    rows, cols = w.shape
    ax.hlines(np.arange(0.5, rows - 1), -0.5, cols - 0.5, color="white", linewidth=0.5)
    ax.vlines(np.arange(0.5, cols - 1), -0.5, rows - 0.5, color="white", linewidth=0.5)
    ax.axis("off")


def kernel_heatmaps(table, ncols: int = 5, title: str | None = None):
    """One 3x3 heat map per row of a ``channel_table``, values annotated.

    All panels share one symmetric colour scale, so strengths compare across channels.
    """
    n = len(table)
    fig, axes = _grid(n, ncols, cell=2.0, extra_h=0.5)
    vmax = max(float(np.abs(np.asarray(w)).max()) for w in table["weights"]) or 1.0
    for ax, row in zip(axes, table.itertuples()):
        _draw_weights(ax, row.weights, vmax)
        ax.set_title(f"channel {row.channel}\nL2 norm {row.l2_norm:.3f}, {row.category}", fontsize=8)
    attrs = getattr(table, "attrs", {})
    fig.suptitle(title or f"{attrs.get('layer', '')} filter {attrs.get('filter_index', '')}: "
                          f"top {n} single-channel filters (3x3 weights; red excites, blue inhibits)", fontsize=10)
    fig.tight_layout()
    return fig


def image_grid(images, titles=None, ncols: int = 5, title: str | None = None, cell: float = 2.0):
    """A grid of uint8 RGB images with optional per-image titles."""
    images = np.asarray(images)
    fig, axes = _grid(len(images), ncols, cell=cell)
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def class_bar_chart(top_classes, layer_name: str, filter_index: int, title: str | None = None):
    """Horizontal bars: the top classes by mean activation of the filter's output map."""
    plt = _plt()
    import seaborn as sns

    df = top_classes.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(df) + 1.2))
    sns.barplot(x=df["mean_activation"], y=df["class"], ax=ax, color="#c0392b", orient="h")
    ax.invert_yaxis()
    ax.set_xlabel(f"mean activation of {layer_name} filter {filter_index} (output map, after ReLU)")
    ax.set_ylabel("")
    ax.set_title(title or f"Classes that excite {layer_name} filter {filter_index} most")
    fig.tight_layout()
    return fig


def top_images_overlay(images, maps, titles=None, ncols: int = 4, title: str | None = None):
    """Top images, each with the filter's activation map upsampled and overlaid (alpha 0.5)."""
    from PIL import Image

    images = np.asarray(images)
    fig, axes = _grid(len(images), ncols, cell=2.4, extra_h=0.6)
    vmax = float(np.max(maps)) or 1.0
    for i, (ax, img, amap) in enumerate(zip(axes, images, maps)):
        h, w = img.shape[:2]
        up = np.asarray(Image.fromarray(np.asarray(amap, np.float32)).resize((w, h), Image.BILINEAR))
        ax.imshow(img)
        ax.imshow(up, cmap=OVERLAY_CMAP, alpha=0.5, vmin=0, vmax=vmax)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def norm_distribution(norms, table, title: str | None = None):
    """All input channels' L2 norms, sorted, with the top-k cut and near-zero slices marked."""
    plt = _plt()
    norms = np.asarray(norms)
    order = np.argsort(-norms, kind="stable")
    kept = set(int(c) for c in table["channel"])
    colors = ["#c0392b" if int(c) in kept else "#95a5a6" for c in order]
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.bar(np.arange(len(norms)), norms[order], color=colors, width=1.0)
    cut = float(table["l2_norm"].min()) if len(table) else 0.0
    ax.axhline(cut, color="k", ls="--", lw=0.8, label=f"cut: top {len(table)} (L2 norm >= {cut:.3f})")
    ax.set_xlabel("input channels, sorted by L2 norm (rank, not channel number)")
    ax.set_ylabel("L2 norm of 3x3 weights")
    ax.set_xlim(-0.5, len(norms) - 0.5)
    ax.legend(loc="upper right", fontsize=8)
    attrs = getattr(table, "attrs", {})
    ax.set_title(title or f"{attrs.get('layer', '')} filter {attrs.get('filter_index', '')}: "
                          f"norms of all {len(norms)} single-channel filters")
    fig.tight_layout()
    return fig


def circuit_figure(channel_images, table, feeder: str, filter_image=None, ncols: int = 5, title: str | None = None):
    """The circuit, as in the Distill weight explorer: for each input channel its
    feature visualization (on the feeding layer) above its 3x3 weights into the filter.

    ``channel_images[i]`` belongs to ``table`` row i. ``filter_image`` (optional)
    is shown first as the circuit's output neuron.
    """
    plt = _plt()
    n = len(table)
    ncols = max(1, min(ncols, n))
    groups = int(np.ceil(n / ncols))
    offset = 1 if filter_image is not None else 0
    fig = plt.figure(figsize=(2.0 * (ncols + offset), 4.3 * groups))
    grid = fig.add_gridspec(2 * groups, ncols + offset, height_ratios=[1.2, 1.0] * groups)
    vmax = max(float(np.abs(np.asarray(w)).max()) for w in table["weights"]) or 1.0
    attrs = getattr(table, "attrs", {})
    if filter_image is not None:
        ax = fig.add_subplot(grid[0, 0])
        ax.imshow(filter_image)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{attrs.get('layer', '')}\nfilter {attrs.get('filter_index', '')} (output)", fontsize=8)
    for i, row in enumerate(table.itertuples()):
        g, col = divmod(i, ncols)
        ax = fig.add_subplot(grid[2 * g, col + offset])
        ax.imshow(channel_images[i])
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{feeder} ch {row.channel}", fontsize=8)
        ax = fig.add_subplot(grid[2 * g + 1, col + offset])
        _draw_weights(ax, row.weights, vmax, fontsize=6)
        ax.set_title(f"{row.category}, L2 {row.l2_norm:.3f}", fontsize=8,
                     color={"excitatory": "#c0392b", "inhibitory": "#2874a6"}.get(row.category, "k"))
    fig.suptitle(title or f"Circuit into {attrs.get('layer', '')} filter {attrs.get('filter_index', '')}: "
                          f"input channels (visualized on {feeder}) and their weights", fontsize=10)
    fig.tight_layout()
    return fig


def prediction_panel(images, predictions, ncols: int = 4):
    """Images with their top-k labels and probabilities (``classify`` output)."""
    titles = []
    for i in range(len(images)):
        rows = predictions[predictions["image"] == i]
        titles.append("\n".join(f"{r.label} {r.probability:.1%}" for r in rows.itertuples()))
    return image_grid(images, titles, ncols=ncols, cell=2.6)
