"""Every figure of the lab. Each function returns a matplotlib Figure.

Conventions: channel and filter numbers in titles are 0-based, like every
index of the kit; weights use a diverging colormap centred on 0 (red = positive
= excites the filter, blue = negative = inhibits it); L2 norms are labelled as
norms of weights, activations as activations.
"""
from __future__ import annotations

import numpy as np

WEIGHT_CMAP = "RdBu_r"  # red positive, blue negative
OVERLAY_CMAP = "inferno"
FIGURE_DPI = 100
WEIGHT_FONT_PT = 8  # weight values written in the 3x3 cells: the smallest text of the lab


def weight_text(v: float) -> str:
    """A weight with two decimals; a value that rounds to zero is "0.00", never "-0.00"."""
    text = f"{v:.2f}"
    return "0.00" if text == "-0.00" else text


def _plt():
    import matplotlib

    import matplotlib.pyplot as plt

    # 100 dpi: in the HTML pages an 8 pt label is ~11 px high, readable at the page's width
    matplotlib.rcParams.update({"figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI, "axes.titlesize": 9})
    return plt


def _grid(n, ncols, cell=2.2, extra_h=0.4):
    plt = _plt()
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + extra_h) * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat


def _draw_weights(ax, w, vmax, annotate=True, fontsize=WEIGHT_FONT_PT):
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
            ax.text(j, i, weight_text(v), ha="center", va="center", fontsize=fontsize,
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


def desaturated(image: np.ndarray, keep: float = 0.25, lighten: float = 0.35) -> np.ndarray:
    """*image* (uint8 RGB) mostly grey and lighter, so that a heat map over it reads as the
    only colour: ``keep`` of the colour stays, then it moves ``lighten`` of the way to white."""
    img = np.asarray(image, np.float32)
    grey = img @ np.array([0.299, 0.587, 0.114], np.float32)
    mixed = keep * img + (1 - keep) * grey[..., None]
    return (mixed + lighten * (255 - mixed)).clip(0, 255).astype(np.uint8)


def top_images_overlay(images, maps, titles=None, ncols: int = 4, title: str | None = None):
    """Each top image twice: the plain photo, and the filter's activation map (upsampled)
    over a desaturated copy; one colour bar for all (a shared scale: the strongest map of
    the set is its top)."""
    import matplotlib
    from PIL import Image

    plt = _plt()
    images = np.asarray(images)
    n = len(images)
    pairs = max(1, min(ncols, n))
    rows = int(np.ceil(n / pairs))
    fig = plt.figure(figsize=(2.0 * 2 * pairs + 0.9, 2.45 * rows + 0.5))
    grid = fig.add_gridspec(rows, 2 * pairs + 1, width_ratios=[1] * (2 * pairs) + [0.08], wspace=0.05)
    vmax = float(np.max(maps)) or 1.0
    norm = matplotlib.colors.Normalize(0, vmax)
    for i, (img, amap) in enumerate(zip(images, maps)):
        r, c = divmod(i, pairs)
        h, w = img.shape[:2]
        up = np.asarray(Image.fromarray(np.asarray(amap, np.float32)).resize((w, h), Image.BILINEAR))
        photo = fig.add_subplot(grid[r, 2 * c])
        photo.imshow(img)
        heat = fig.add_subplot(grid[r, 2 * c + 1])
        heat.imshow(desaturated(img))
        heat.imshow(up, cmap=OVERLAY_CMAP, alpha=0.6, norm=norm)
        for ax in (photo, heat):
            ax.set_xticks([])
            ax.set_yticks([])
        if titles is not None:
            photo.set_title(titles[i], fontsize=8, loc="left")
    bar = fig.add_subplot(grid[:, -1])
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=OVERLAY_CMAP), cax=bar,
                 label="activation (after ReLU)")
    fig.suptitle(title or "Top images: the photo, and where the filter responds", fontsize=10)
    # the colour bar's ticks and label need ~0.95 in at the right, whatever the figure's width
    fig.subplots_adjust(left=0.02, right=1 - 0.95 / fig.get_figwidth(), top=0.88 if rows == 1 else 0.92, bottom=0.03)
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
        _draw_weights(ax, row.weights, vmax)
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


def ablation_chart(ablation, title: str | None = None):
    """The ablation experiment: one bar per condition (mean activation over the images),
    each image's own value as a dot, the all-inputs level as a dashed line."""
    plt = _plt()
    t = ablation.table
    fig, ax = plt.subplots(figsize=(7.5, 0.65 * len(t) + 1.3))
    y = np.arange(len(t))[::-1]
    colours = ["#555555", "#c0392b", "#2874a6", "#7d3c98"][:len(t)]
    ax.barh(y, t["mean_activation"], color=colours, alpha=0.75, height=0.6)
    for yi, values in zip(y, t["per_image"]):
        ax.scatter(values, np.full(len(values), yi) + np.linspace(-0.18, 0.18, len(values)), s=10, color="k",
                   zorder=3, linewidths=0)
    full = float(t["mean_activation"].iloc[0])
    ax.axvline(full, color="k", linestyle="--", linewidth=0.8)
    labels = [f"{r.condition}\n({r.channels_zeroed} zeroed)" if r.channels_zeroed else r.condition
              for r in t.itertuples()]
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("mean activation of the filter (bars: mean over the images; dots: each image)")
    ax.set_xlim(left=0)
    ax.set_title(title or f"Ablation: {ablation.layer_name} filter {ablation.filter_index} on its "
                          f"{ablation.n_images} top images", fontsize=9)
    fig.tight_layout()
    return fig


def short_text(text, n: int) -> str:
    """*text* cut to n characters, with an ellipsis where it was longer (image titles)."""
    text = str(text)
    return text if len(text) <= n else text[:n - 1] + "…"


def image_titles(rows, value_column: str, value_label: str) -> list[str]:
    """Titles for ranked probe images: rank and file name, then class and the value."""
    from pathlib import Path

    return [f"#{r['rank']} {short_text(Path(str(r['source'])).name, 24)}\n{short_text(r['class'], 16)}, {value_label} "
            f"{r[value_column]:.1f}" for _, r in rows.iterrows()]


def channel_examples(examples: dict, pixels_of, feeder: str, channel_images=None, title: str | None = None):
    """One row per input channel: its synthesized image (if given, on the feeding layer),
    then the probe images that excite that channel most, titled by file name.

    ``examples``: channel -> ranking DataFrame (``probe.channel_top_images``);
    ``pixels_of``: ranking rows -> uint8 images; ``channel_images[i]`` belongs to the
    i-th channel of ``examples``."""
    plt = _plt()
    channels = list(examples)
    n_ex = max((len(df) for df in examples.values()), default=0)
    offset = 1 if channel_images is not None else 0
    cols = n_ex + offset
    fig, axes = plt.subplots(len(channels), cols, figsize=(2.0 * cols, 2.3 * len(channels)), squeeze=False)
    for i, c in enumerate(channels):
        row_axes = axes[i]
        if channel_images is not None:
            row_axes[0].imshow(channel_images[i])
            row_axes[0].set_title(f"{feeder} ch {c}\n(synthesized)", fontsize=8)
        df = examples[c]
        images = pixels_of(df) if len(df) else []
        for j, (img, text) in enumerate(zip(images, image_titles(df, "mean_activation", "act."))):
            row_axes[offset + j].imshow(img)
            row_axes[offset + j].set_title(text, fontsize=7.5)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    fig.suptitle(title or f"Input channels of the circuit: what excites each one in the probe set ({feeder})",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the suptitle
    return fig


def retrieval_figure(check, title: str | None = None):
    """Step 1's retrieval check (``retrieval.ModelCheck``): for each query image, two rows,
    its nearest shipped images with the trained weights and with random weights. Each title
    is the file's class and coarse group, green where the group is the query's."""
    plt = _plt()
    queries = check.queries()
    rows = [(q, r) for q in queries for r in (check.trained, check.random)]
    k = check.trained.neighbours.shape[1]
    shown = sorted({q for q, _ in rows} | {int(j) for q, r in rows for j in r.neighbours[q]})
    pixels = dict(zip(shown, check.images.pixels(shown)))
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(1.55 * (k + 1), 1.75 * len(rows)), squeeze=False)
    names, groups = check.images.labels, check.images.groups
    for (q, retrieval), row_axes in zip(rows, axes):
        row_axes[0].imshow(pixels[q])
        row_axes[0].set_title(f"query: {short_text(names[q].replace('_', ' '), 18)}\n({groups[q]})", fontsize=7.5,
                              fontweight="bold")
        row_axes[0].set_ylabel("trained" if retrieval is check.trained else "random\nweights", fontsize=8)
        for ax, j, sim in zip(row_axes[1:], retrieval.neighbours[q], retrieval.similarities[q]):
            j = int(j)
            ax.imshow(pixels[j])
            same = groups[j] == groups[q]
            ax.set_title(f"{short_text(names[j].replace('_', ' '), 18)}\n{short_text(groups[j], 18)} ({sim:.2f})",
                         fontsize=7.5, color="#1a7f37" if same else "#555555")
            if same:
                for spine in ax.spines.values():
                    spine.set_edgecolor("#1a7f37")
                    spine.set_linewidth(2.5)
        for ax in row_axes:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"{check.model_name}: the {k} nearest shipped images by pooled {check.layer_name} features "
                          f"(cosine similarity); green = same coarse group", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


def tuning_figure(tuning, title: str | None = None):
    """Left: the grating tuning curve, polar (orientation doubled round the circle's half:
    0 and 180 deg are the same grating), one line per period, the preferred period bold.
    Right: the responses to plain colour fields, each bar in its colour."""
    plt = _plt()
    fig = plt.figure(figsize=(10, 4.4))
    polar = fig.add_subplot(1, 2, 1, projection="polar")
    angles = np.deg2rad(np.array(list(tuning.orientations) + [o + 180 for o in tuning.orientations]
                                 + [tuning.orientations[0]]))
    best_o, best_p = tuning.preferred
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    for j, period in enumerate(tuning.periods):
        r = np.concatenate([tuning.gratings[:, j], tuning.gratings[:, j], tuning.gratings[:1, j]])
        polar.plot(angles, r, color=cmap(j / max(1, len(tuning.periods) - 1)),
                   linewidth=2.6 if period == best_p else 1.0, label=f"{period} px")
    polar.set_title(f"gratings: preferred {best_o} deg, {best_p} px/cycle", fontsize=9)
    polar.legend(title="period", fontsize=7, title_fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    polar.tick_params(labelsize=7)
    bars = fig.add_subplot(1, 2, 2)
    from .stimuli import COLOURS

    names = list(tuning.colours)
    bars.barh(names[::-1], [tuning.colours[n] for n in names[::-1]],
              color=[np.array(COLOURS[n]) / 255 for n in names[::-1]], edgecolor="#444")
    bars.set_xlabel("mean activation (after ReLU)")
    bars.set_title("plain colour fields", fontsize=9)
    bars.tick_params(labelsize=8)
    fig.suptitle(title or f"Synthetic stimuli: {tuning.layer_name} filter {tuning.filter_index}", fontsize=10)
    fig.tight_layout()
    return fig


def as_jpeg(fig, dpi: int = FIGURE_DPI, quality: int = 85):
    """A figure of photographs as a JPEG to display (an ``IPython.display.Image``); the figure
    is closed. A PNG of a grid of photos is several times larger, in the notebook and in
    every page rendered from it; titles stay readable at this quality."""
    import io

    from IPython.display import Image as DisplayImage

    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", dpi=dpi, pil_kwargs={"quality": quality})
    _plt().close(fig)
    return DisplayImage(data=buf.getvalue(), format="jpeg")
