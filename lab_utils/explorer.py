"""Step 2, exploring: what every filter of a layer responds to, answered from the cached
scan (``probe.Scan``) without a new pass over the probe images.

- ``LayerView``: one layer's scan, the correlation of its filters' mean activations over
  the probe images, and its kernel's single-channel L2 norms; built once per layer.
- ``filter_facts``: for one filter, its top images and classes, the filters most similar
  to it (``similar_filters``) and its weight-norm profile (``weight_mass``).
- ``atlas_figure``: the static layer atlas, one tile per filter (its top image cropped
  around the filter's peak, and its peak mean activation); what a reader of the rendered
  HTML sees where the widgets cannot run.
- ``FilterExplorer``: the ipywidgets front end (notebook 02): layer and filter selectors,
  the facts above as thumbnails and tables, the synthesized image on request, and a
  "use this filter" button that writes the lab choice (``choice.save_lab_choice``).

Index conventions: filters, input channels and probe images are 0-based; "mean
activation" is the filter's output after ReLU averaged over positions (as in ``probe``).
"""
from __future__ import annotations

import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Squared-L2 shares for the weight-norm profile: how many input channels carry them.
MASS_FRACTIONS = (0.5, 0.8, 0.9)
N_TOP_IMAGES = 6
N_TOP_CLASSES = 5
N_SIMILAR = 8
THUMB_PX = 96          # side of a thumbnail in the explorer, pixels
ATLAS_TILE_PX = 64     # side of a tile of the static atlas, pixels
ATLAS_COLUMNS = 16
CHOSEN_COLOUR, SIMILAR_COLOUR = "#d62728", "#ff7f0e"
WIDGET_TEXT = ("[filter explorer: interactive in Jupyter (./lab.sh); "
               "the layer atlas below shows the same information]")


# ------------------------------------------------------------------------- facts


@dataclass(frozen=True)
class WeightMass:
    """How the filter's weight is spread over its input channels.

    ``norms``: L2 norm of each single-channel filter, (c_in,), index = input channel;
    ``counts``: fraction -> the fewest input channels whose squared norms sum to at least
    that fraction of the filter's total (squared L2 mass)."""

    norms: np.ndarray
    counts: dict

    def text(self) -> str:
        n = len(self.norms)
        return "; ".join(f"{int(round(100 * q))}% of the L2 mass in {k} of {n} input channels"
                         for q, k in self.counts.items())


def weight_mass(norms, fractions=MASS_FRACTIONS) -> WeightMass:
    norms = np.asarray(norms, dtype=np.float64)
    mass = np.sort(norms ** 2)[::-1]
    total = mass.sum()
    cumulative = np.cumsum(mass) / total if total > 0 else np.ones_like(mass)
    counts = {q: int(np.searchsorted(cumulative, q - 1e-12) + 1) for q in fractions}
    return WeightMass(norms, counts)


@dataclass(frozen=True)
class SimilarFilter:
    """A filter of the same layer and the correlation (Pearson, over the probe images) of
    its mean activations with the explored filter's; ``top_image``: its top probe image."""

    filter_index: int
    correlation: float
    top_image: int


@dataclass
class LayerView:
    """One layer, ready for questions about any of its filters.

    ``correlations``: (n_filters, n_filters), Pearson correlation of the columns of
    ``scan.means``; 0 where a filter is silent on every probe image (no variance).
    ``kernel_norms``: (n_filters, c_in), L2 norm of each single-channel filter."""

    model_name: str
    layer_name: str
    scan: object
    correlations: np.ndarray
    kernel_norms: np.ndarray
    receptive_field: int | None = None

    @property
    def n_filters(self) -> int:
        return self.scan.means.shape[1]

    def top_image(self, filter_index: int) -> int:
        """The probe image with the filter's largest mean activation (ties: lower index)."""
        return int(np.argmax(self.scan.means[:, filter_index]))


def filter_correlations(means: np.ndarray) -> np.ndarray:
    """Pearson correlation between the columns of *means* (images x filters); a column
    without variance correlates 0 with every other (and 1 with itself)."""
    x = np.asarray(means, dtype=np.float64)
    x = x - x.mean(axis=0)
    norm = np.sqrt((x ** 2).sum(axis=0))
    live = norm > 1e-12 * max(1.0, float(norm.max(initial=0.0)))
    x[:, live] /= norm[live]
    x[:, ~live] = 0.0
    corr = x.T @ x
    np.fill_diagonal(corr, 1.0)
    return corr.astype(np.float32)


def layer_view(model, layer_name: str, scan) -> LayerView:
    from .models import get_conv_layer

    kernel = get_conv_layer(model, layer_name).kernel.numpy().astype(np.float64)  # (kh, kw, c_in, c_out)
    norms = np.sqrt((kernel ** 2).sum(axis=(0, 1))).T  # same sum as circuits.channel_norms, every filter
    name = getattr(model, "_lab_name", model.name)
    try:
        from .architectures import receptive_field

        rf = receptive_field(name, layer_name)
    except Exception:  # noqa: BLE001 - a model outside the kit's table: crops show whole images
        rf = None
    return LayerView(name, layer_name, scan, filter_correlations(scan.means), norms, rf)


def similar_filters(view: LayerView, filter_index: int, n: int = N_SIMILAR) -> list[SimilarFilter]:
    """The n filters whose mean activations correlate most with *filter_index*'s
    (highest first; ties: lower index); none for a filter whose mean activation is the
    same on every probe image (silent, say)."""
    from .models import check_index

    f = check_index(filter_index, view.n_filters, f"filter_index of {view.layer_name}")
    if np.ptp(view.scan.means[:, f]) <= 0:
        return []  # the same response to every probe image: it correlates with nothing
    corr = view.correlations[f].astype(np.float64)
    others = np.array([c for c in range(view.n_filters) if c != f], dtype=int)
    order = others[np.lexsort((others, -corr[others]))][:n]
    return [SimilarFilter(int(c), float(corr[c]), view.top_image(int(c))) for c in order]


@dataclass(frozen=True)
class FilterFacts:
    """Everything the explorer shows for one filter (see the module doc)."""

    layer_name: str
    filter_index: int
    top_images: object   # DataFrame of probe.rank_images
    top_classes: object  # DataFrame of probe.rank_classes (n_images: images behind each class)
    similar: list
    mass: WeightMass
    peak_mean_activation: float


def filter_facts(view: LayerView, filter_index: int, n_images: int = N_TOP_IMAGES,
                 n_classes: int = N_TOP_CLASSES, n_similar: int = N_SIMILAR) -> FilterFacts:
    from .probe import rank_classes, rank_images

    images = rank_images(view.scan, filter_index, n_images)
    return FilterFacts(view.layer_name, int(filter_index), images, rank_classes(view.scan, filter_index, n_classes),
                       similar_filters(view, filter_index, n_similar), weight_mass(view.kernel_norms[filter_index]),
                       float(view.scan.means[:, filter_index].max()))


# ------------------------------------------------------------------------- pixels


class ProbePixels:
    """The probe images' pixels by index, decoded once each: from the probe set in memory
    where the session has it, else from the scan's source files (a cached scan decodes
    nothing until an image is shown)."""

    def __init__(self, scan, image_size: int, images: np.ndarray | None = None):
        self.scan, self.image_size, self.images = scan, image_size, images
        self._decoded: dict[int, np.ndarray] = {}
        self._thumbs: dict[tuple, bytes] = {}

    def __call__(self, index: int) -> np.ndarray:
        if self.images is not None:
            return self.images[index]
        if index not in self._decoded:
            from .images import load_image

            self._decoded[index] = load_image(self.scan.sources[index], self.image_size)
        return self._decoded[index]

    def crop(self, index: int, filter_index: int, side: int | None) -> np.ndarray:
        """Image *index* cropped to a square of *side* pixels centred on *filter_index*'s
        peak (kept inside the image); the whole image where side is None or too large."""
        image = self(index)
        h, w = image.shape[:2]
        if side is None or side >= min(h, w) or self.scan.peaks is None:
            return image
        y, x = self.scan.peak_position(index, filter_index)
        top = int(np.clip(round(y * h - side / 2), 0, h - side))
        left = int(np.clip(round(x * w - side / 2), 0, w - side))
        return image[top:top + side, left:left + side]

    def png(self, index: int, filter_index: int | None = None, side: int | None = None,
            px: int = THUMB_PX) -> bytes:
        """A PNG thumbnail (px x px) of image *index*, or of its crop around a filter's peak."""
        key = (index, filter_index, side, px)
        if key not in self._thumbs:
            from PIL import Image

            pixels = self(index) if filter_index is None else self.crop(index, filter_index, side)
            buf = io.BytesIO()
            Image.fromarray(pixels).resize((px, px), Image.BILINEAR).save(buf, format="PNG")
            self._thumbs[key] = buf.getvalue()
        return self._thumbs[key]


def crop_side(view: LayerView) -> int | None:
    """Side of the atlas's crops in probe-image pixels: twice the receptive field (the
    peak's context), at least 32 px; None (whole image) where the field is unknown."""
    return None if view.receptive_field is None else max(32, 2 * view.receptive_field)


# ------------------------------------------------------------------------- static atlas


def atlas_mosaic(view: LayerView, pixels: ProbePixels, tile: int = ATLAS_TILE_PX,
                 columns: int = ATLAS_COLUMNS) -> np.ndarray:
    """uint8 (rows*tile, columns*tile, 3): filter f's tile at row f // columns, column
    f % columns: its top image cropped around its peak; a silent filter's tile is grey."""
    from PIL import Image

    n = view.n_filters
    rows = -(-n // columns)
    mosaic = np.full((rows * tile, columns * tile, 3), 235, np.uint8)
    side = crop_side(view)
    for f in range(n):
        r, c = divmod(f, columns)
        if view.scan.means[:, f].max() <= 0:
            mosaic[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = 200
            continue
        crop = pixels.crop(view.top_image(f), f, side)
        mosaic[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] = np.asarray(
            Image.fromarray(crop).resize((tile, tile), Image.BILINEAR))
    return mosaic


def atlas_figure(view: LayerView, pixels: ProbePixels, chosen: int, similar: list | None = None,
                 columns: int = ATLAS_COLUMNS, tile: int = ATLAS_TILE_PX):
    """The static layer atlas (matplotlib figure): every filter's tile with its index and
    peak mean activation; the chosen filter framed red, its similar filters orange."""
    from matplotlib.patches import Rectangle

    from .plots import _plt

    plt = _plt()
    similar = similar if similar is not None else similar_filters(view, chosen)
    n = view.n_filters
    rows = -(-n // columns)
    mosaic = atlas_mosaic(view, pixels, tile, columns)
    cell_in = 0.78
    fig, ax = plt.subplots(figsize=(columns * cell_in, rows * cell_in * 1.22 + 0.7))
    gap = 0.22 * tile  # room for the caption under each tile
    canvas = np.full((rows * (tile + int(gap)), columns * tile, 3), 255, np.uint8)
    for r in range(rows):
        canvas[r * (tile + int(gap)):r * (tile + int(gap)) + tile] = mosaic[r * tile:(r + 1) * tile]
    ax.imshow(canvas, interpolation="nearest")
    peaks = view.scan.means.max(axis=0)
    marked = {s.filter_index: SIMILAR_COLOUR for s in similar}
    marked[chosen] = CHOSEN_COLOUR
    for f in range(n):
        r, c = divmod(f, columns)
        y0, x0 = r * (tile + int(gap)), c * tile
        colour = marked.get(f)
        ax.text(x0 + tile / 2, y0 + tile + 1, f"{f}: {peaks[f]:.1f}", ha="center", va="top", fontsize=6.5,
                color=colour or "#222", fontweight="bold" if colour else "normal")
        if colour:
            ax.add_patch(Rectangle((x0 + 1, y0 + 1), tile - 3, tile - 3, fill=False, edgecolor=colour, linewidth=2.2))
    ax.set_axis_off()
    side = crop_side(view)
    crop = "whole top image" if side is None else f"{side}x{side} px crop of the top image around the peak"
    ax.set_title(f"{view.layer_name}: every filter's {crop} ({view.scan.n_images} probe images); "
                 f"caption: filter: peak mean activation\nfilter {chosen} in red, its {len(similar)} most "
                 f"similar filters (correlation of mean activations) in orange", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------- widgets


def _thumb(png: bytes, lines: list[str], px: int = THUMB_PX):
    """A thumbnail with caption lines (already escaped), each cut to the thumbnail's width."""
    import ipywidgets as w

    caption = "".join(f"<div style='overflow:hidden;white-space:nowrap;text-overflow:ellipsis' title='{line}'>"
                      f"{line}</div>" for line in lines)
    return w.VBox([w.Image(value=png, format="png", width=px, height=px),
                   w.HTML(f"<div style='width:{px}px;font-size:11px;line-height:1.3'>{caption}</div>",
                          layout=w.Layout(width=f"{px + 4}px", overflow="hidden"))],
                  layout=w.Layout(margin="0 8px 8px 0", overflow="hidden"))


def _classes_html(classes) -> str:
    def interval(r):
        return "-" if not np.isfinite(r.ci_low) else f"{r.ci_low:.1f} to {r.ci_high:.1f}"

    rows = "".join(f"<tr><td>{r.rank}</td><td>{html.escape(str(r._2))}</td><td>{r.mean_activation:.2f}</td>"
                   f"<td>{r.n_images}</td><td>{interval(r)}</td></tr>" for r in classes.itertuples())
    return ("<b>Top classes</b><table style='font-size:12px'><tr><th>#</th><th>class</th>"
            f"<th>mean act.</th><th>images</th><th>95% interval</th></tr>{rows}</table>")


def _mass_html(mass: WeightMass, bars: int = 12) -> str:
    norms = mass.norms
    order = np.lexsort((np.arange(len(norms)), -norms))[:bars]
    top = float(norms[order[0]]) or 1.0
    share = norms ** 2 / max(float((norms ** 2).sum()), 1e-30)
    rows = "".join(
        f"<div style='display:flex;align-items:center;font-size:11px'><span style='width:34px'>{c}</span>"
        f"<span style='background:#4c78a8;height:9px;width:{int(150 * norms[c] / top)}px'></span>"
        f"<span style='margin-left:4px'>{norms[c]:.3f} ({100 * share[c]:.1f}%)</span></div>" for c in order)
    return (f"<b>Weight-norm profile</b><div style='font-size:12px'>{html.escape(mass.text())}</div>"
            f"<div style='font-size:11px;color:#555'>strongest input channels (L2 norm, share of the mass):</div>{rows}")


class _WithText:
    """Displays a widget with *text* as its plain-text form: a page without a widget
    frontend (nbconvert, papermill) shows the text, never a bare widget repr."""

    def __init__(self, widget, text: str):
        self.widget, self.text = widget, text

    def _repr_mimebundle_(self, **kwargs):
        bundle = self.widget._repr_mimebundle_(**kwargs)
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data or {})
        data["text/plain"] = self.text
        return data


@dataclass
class FilterExplorer:
    """The filter explorer of notebook 02 (ipywidgets). Build it with ``explore(setup)``.

    ``layer`` (Dropdown of the mid-level layers) and ``filter`` (IntSlider) choose;
    ``visualize_button`` synthesizes the filter's image (cached: the recipe of notebook 02);
    ``use_button`` writes the layer and filter to the lab choice. ``facts`` is what is
    shown now (``FilterFacts``); every answer comes from the cached scan of the layer."""

    setup: object
    views: dict = field(default_factory=dict)
    pixels: dict = field(default_factory=dict)
    facts: FilterFacts | None = None
    message: str = ""

    def __post_init__(self):
        import ipywidgets as w

        from .architectures import conv_specs, is_mid_level

        names = [s.name for s in conv_specs(self.setup.model_name)]
        candidates = [name for i, name in enumerate(names) if is_mid_level(i, len(names))]
        if self.setup.layer_name not in candidates:
            candidates.insert(0, self.setup.layer_name)
        self.layer = w.Dropdown(options=candidates, value=self.setup.layer_name, description="layer")
        self.filter = w.IntSlider(value=self.setup.filter_index, min=0, max=self._n_filters(self.setup.layer_name) - 1,
                                  description="filter", continuous_update=False,
                                  layout=w.Layout(width="420px"))
        self.visualize_button = w.Button(description="show synthesized image", icon="image",
                                         layout=w.Layout(width="220px"))
        self.use_button = w.Button(description="use this filter", button_style="success", icon="check",
                                   layout=w.Layout(width="180px"))
        self.status = w.HTML()
        self.top_box, self.similar_box = w.HBox(layout=w.Layout(flex_flow="row wrap")), w.HBox(
            layout=w.Layout(flex_flow="row wrap"))
        self.classes_html, self.mass_html = w.HTML(), w.HTML()
        self.synthesized = w.VBox()  # the synthesized image, once asked for
        self._switching_layer = False
        self.layer.observe(self._on_layer, names="value")
        self.filter.observe(lambda change: None if self._switching_layer else self._guarded(self.show),
                            names="value")
        self.visualize_button.on_click(lambda _b: self._guarded(self.visualize))
        self.use_button.on_click(lambda _b: self._guarded(self.use))
        self.widget = w.VBox([
            w.HBox([self.layer, self.filter]), w.HBox([self.visualize_button, self.use_button]), self.status,
            w.HTML("<b>Top images</b> (file, class, mean activation)"), self.top_box,
            w.HBox([self.classes_html, self.mass_html], layout=w.Layout(gap="28px")),
            w.HTML("<b>Most similar filters</b> (correlation of mean activations over the probe images; "
                   "their top image, cropped around the peak)"), self.similar_box, self.synthesized])
        self.show()

    def _n_filters(self, layer_name: str) -> int:
        return int(self.setup.model.get_layer(layer_name).filters)

    def view(self, layer_name: str | None = None) -> LayerView:
        """The LayerView of *layer_name* (default: the selected layer); a layer not scanned
        yet is scanned once (cached on disk), every later question is a lookup."""
        name = layer_name or self.layer.value
        if name not in self.views:
            scan = self.setup.scan_layer(name)
            self.views[name] = layer_view(self.setup.model, name, scan)
            images = self.setup.probe().images if self.setup.has_decoded_probe() else None
            self.pixels[name] = ProbePixels(scan, self.setup.image_size, images)
        return self.views[name]

    def _guarded(self, action):
        """Run a widget callback; an error shows in the status line instead of only in the
        log console, and the explorer stays usable."""
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - any failure must reach the student's eyes
            self.status.value = (f"<span style='color:#b00'><b>{html.escape(type(exc).__name__)}</b>: "
                                 f"{html.escape(str(exc))}</span>")
            return None

    def _on_layer(self, change):
        if self._switching_layer:
            return
        new, old = change["new"], change["old"]
        if new not in self.views:
            self.status.value = f"scanning {html.escape(new)} (once; cached afterwards) ..."
        self._switching_layer = True
        try:
            with self.filter.hold_trait_notifications():
                self.filter.max = self._n_filters(new) - 1
                self.filter.value = min(self.filter.value, self.filter.max)
            self.view(new)
        except Exception as exc:  # noqa: BLE001 - back to the layer that works, and say why
            self.layer.value = old
            self.filter.max = self._n_filters(old) - 1
            self._switching_layer = False
            self._guarded(self.show)
            self.status.value += (f"<br><span style='color:#b00'>{html.escape(new)} could not be scanned: "
                                  f"{html.escape(str(exc))}</span>")
            return
        finally:
            self._switching_layer = False
        self._guarded(self.show)

    def show(self) -> FilterFacts:
        """Answer for the selected layer and filter (from the cached scan)."""
        import ipywidgets as w

        view = self.view()
        pixels = self.pixels[view.layer_name]
        f = int(self.filter.value)
        self.facts = facts = filter_facts(view, f)
        self.top_box.children = [
            _thumb(pixels.png(int(r.image)),
                   [f"#{r.rank} {html.escape(Path(str(r.source)).name, quote=True)}",
                    html.escape(str(r._3), quote=True), f"{r.mean_activation:.2f}"])
            for r in facts.top_images.itertuples()]
        self.classes_html.value = _classes_html(facts.top_classes)
        self.mass_html.value = _mass_html(facts.mass)
        self.similar_box.children = ([self._similar_tile(view, pixels, s) for s in facts.similar] or [
            w.HTML("<i>none: this filter's mean activation is the same on every probe image</i>")])
        self.synthesized.children = []
        self.status.value = (f"<b>{html.escape(view.layer_name)} filter {f}</b> (0-based): peak mean activation "
                             f"{facts.peak_mean_activation:.2f} over {view.scan.n_images} probe images"
                             + (f"<br>{html.escape(self.message)}" if self.message else ""))
        self.message = ""
        return facts

    def _similar_tile(self, view, pixels, s: SimilarFilter):
        import ipywidgets as w

        go = w.Button(description=f"open {s.filter_index}", layout=w.Layout(width=f"{THUMB_PX + 8}px"))
        go.on_click(lambda _b, c=s.filter_index: setattr(self.filter, "value", c))
        tile = _thumb(pixels.png(s.top_image, s.filter_index, crop_side(view)),
                      [f"filter {s.filter_index}", f"r = {s.correlation:.2f}"])
        return w.VBox([tile, go])

    def visualize(self):
        """The selected filter's synthesized image (notebook 02's recipe; cached)."""
        import ipywidgets as w
        from PIL import Image

        from .featurevis import render_channels

        s, f = self.setup, int(self.filter.value)
        vis = render_channels(s.model, self.layer.value, [f], size=s.vis_size, steps=s.steps, seed=s.seed)
        buf = io.BytesIO()
        Image.fromarray(vis.images[0]).save(buf, format="PNG")
        self.synthesized.children = [
            w.HTML(f"<b>Synthesized image</b>, {html.escape(self.layer.value)} filter {f} "
                   f"({s.steps} steps at {s.vis_size} px, seed {s.seed})"),
            w.Image(value=buf.getvalue(), format="png", width=2 * THUMB_PX)]
        return vis

    def use(self):
        """Write the selected layer and filter to the lab choice; returns the new choice."""
        from .choice import CHOICE_FILE_NAME, TYPED_IN_CELL, save_lab_choice

        from .params import check_values

        layer, f = self.layer.value, int(self.filter.value)
        # the same checks as a notebook's check cell: top_k, the ascent's cost... at this layer
        check_values({**self.setup.params, "layer_name": layer, "filter_index": f})
        saved = save_lab_choice({"layer_name": layer, "filter_index": f})
        typed = [k for k in ("layer_name", "filter_index") if self.setup.sources.get(k) == TYPED_IN_CELL]
        self.message = (f"Saved: {layer} filter {f} is your lab choice ({CHOICE_FILE_NAME}); notebooks 03-05 "
                        f"use it. Run this notebook again from the top to see its step-2 results for it.")
        if typed:
            self.message += (f" Your parameters cell above types {', '.join(typed)}: set it back to "
                             f"choice.{typed[0]}, or running that cell saves the typed value again.")
        self.status.value = self.status.value.split("<br>")[0] + f"<br>{html.escape(self.message)}"
        return saved

    def _repr_mimebundle_(self, **kwargs):
        return _WithText(self.widget, WIDGET_TEXT)._repr_mimebundle_(**kwargs)

    def atlas_figure(self):
        """The static atlas of the selected layer, the selected filter and its similar ones marked."""
        view = self.view()
        return atlas_figure(view, self.pixels[view.layer_name], int(self.filter.value),
                            similar_filters(view, int(self.filter.value)))

    def atlas(self):
        """``atlas_figure`` as a JPEG to display (the tiles are photographs: a PNG of a
        256-tile layer is ~2 MB in the notebook and its page, the JPEG ~0.3 MB)."""
        from .plots import as_jpeg

        return as_jpeg(self.atlas_figure(), quality=80)


def explore(setup) -> FilterExplorer:
    """The filter explorer for a ``LabSetup`` (starts on its layer and filter)."""
    return FilterExplorer(setup)
