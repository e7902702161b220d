"""The lab session: the checked parameters plus the model, and one method per stage
of the lab, so that all five notebooks agree and share the on-disk cache.

    setup = lab_utils.check_parameters_from(globals())   # a notebook's check cell
    setup.top_images(); setup.channel_table(); setup.channel_visualizations()

What a parameter may be is decided in ``params`` (``check_values``); this module
loads the model (TensorFlow) and runs the stages.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .choice import (CHOICE_FILE_NAME, LAB_CHOICE, ResolvedParameters, changes_to, resolve, resolve_arguments,
                     save_lab_choice)
from .config import LabError
from .params import check_values, probe_source


def check_parameters(load_weights: bool = True, **params) -> "LabSetup":
    """Check every parameter and return the ``LabSetup`` that runs the lab with them.
    Parameters not given come from the lab choice (``choice``), then the kit's defaults.

    ``load_weights=False`` builds the model with random weights (offline; tests).
    """
    return _setup(resolve_arguments(params), load_weights)


def check_parameters_from(namespace: dict, load_weights: bool = True, record_choice: bool = False) -> "LabSetup":
    """``check_parameters`` with the parameters a notebook defined (its ``globals()``),
    resolved against the lab choice (``choice.resolve``). ``record_choice`` (notebook 02):
    values typed by hand into the parameters cell become the lab choice once they pass the
    checks; injected values (papermill, render.sh -p) never do. Elsewhere a typed value
    overrides the choice for this notebook only, and ``describe()`` says so first."""
    resolved = resolve(namespace)
    setup = _setup(resolved, load_weights)
    changed = changes_to(resolved.choice, resolved.typed)
    if changed and record_choice:
        listed = ", ".join(f"{k} = {v!r}" for k, v in changed.items())
        try:
            save_lab_choice(changed, resolved.choice.path)
            setup.choice_note = (f"Saved to your lab choice ({CHOICE_FILE_NAME}): {listed}. "
                                 f"Notebooks 03-05 use it from now on.")
        except LabError as exc:  # a read-only kit: this notebook still runs with what was typed
            setup.choice_note = f"NOTE: {listed} could not be saved as your lab choice: {exc}"
    elif changed:
        setup.choice_note = (f"NOTE: this notebook's parameters cell overrides your lab choice: "
                             f"{resolved.overrides_text()}. To change the choice for every notebook, "
                             f"make it in notebook 02.")
    return setup


def _setup(resolved: ResolvedParameters, load_weights: bool) -> "LabSetup":
    from .models import feeding_layer, load_model

    try:
        full = check_values(resolved.values)
    except LabError as exc:
        from_file = [k for k, src in resolved.sources.items() if src == LAB_CHOICE and str(exc).startswith(k + " ")]
        if from_file:
            raise LabError(f"{exc} [{from_file[0]} comes from your lab choice, "
                           f"{resolved.choice.path.name}: change it there or in notebook 02]") from None
        raise
    model = load_model(full["model_name"], weights=None if load_weights else "random")
    return LabSetup(params=full, model=model, feeder=feeding_layer(model, full["layer_name"]),
                    sources=dict(resolved.sources))


@dataclass
class LabSetup:
    """The checked parameters plus the model; each method runs one stage of the lab.

    ``sources``: parameter name -> where its value came from (``choice.SOURCES``).
    Results are cached on disk, so a later notebook reuses an earlier one's work.
    """

    params: dict
    model: object
    feeder: str
    sources: dict = field(default_factory=dict)
    choice_note: str = ""
    _memo: dict = field(default_factory=dict, repr=False)

    def __getattr__(self, name):
        params = self.__dict__.get("params", {})
        if name in params:
            return params[name]
        raise AttributeError(name)

    def describe(self) -> str:
        """The lab choice note (if any), one line of what runs, then each parameter with
        where its value came from."""
        p = self.params
        probe = probe_source(p["probe_set"]).describe()
        limit = "" if p["probe_limit"] is None else f" (first {p['probe_limit']})"
        from .architectures import mid_level_note

        note = mid_level_note(p["model_name"], p["layer_name"])
        lines = [self.choice_note] if self.choice_note else []
        lines.append(f"{p['model_name']} | {p['layer_name']} filter {p['filter_index']} (0-based) | "
                     f"fed by {self.feeder} | top_k={p['top_k']} | probe set: {probe}{limit} | "
                     f"ascent {p['steps']} steps at {p['vis_size']}px, seed {p['seed']}")
        if note:
            lines.append(note)
        if self.sources:
            width = max(len(k) for k in p)
            lines.append("where each value comes from:")
            lines += [f"  {k:<{width}} = {p[k]!r:<16} {self.sources.get(k, '')}" for k in p]
        return "\n".join(lines)

    # ---------------------------------------------------------- step 1
    def model_check(self):
        """Step 1's offline check (``retrieval.model_check``): retrieval with the loaded
        weights and with random weights of the same architecture (seed: the lab's seed)."""
        from .retrieval import model_check

        return model_check(self.model, seed=self.seed)

    # ---------------------------------------------------------- step 2
    def probe(self):
        if "probe" not in self._memo:
            from .images import load_imagenet_mini, load_probe_set

            p = self.params
            if probe_source(p["probe_set"]).kind == "imagenet-mini":
                self._memo["probe"] = load_imagenet_mini(size=p["image_size"], limit=p["probe_limit"],
                                                         per_class=p["per_class"])
            else:
                self._memo["probe"] = load_probe_set(p["probe_set"], size=p["image_size"], limit=p["probe_limit"],
                                                     per_class=p["per_class"])
        return self._memo["probe"]

    def _probe_folder(self):
        """The local folder the probe set is decoded from (None: embedded), or False for
        imagenet-mini, a URL or a single file."""
        source = probe_source(self.params["probe_set"])
        return source.value if source.is_local_folder else False

    def scan(self):
        """The scan of the probe set at layer_name; a local folder's cached scan is served
        from its files' hash without decoding the images (``probe.scan_folder``)."""
        return self.scan_layer(self.layer_name)

    def scan_layer(self, layer_name: str):
        """The scan of the probe set at any conv layer (the explorer's other layers), once."""
        key = ("scan", layer_name)
        if key not in self._memo:
            from .probe import scan_folder, scan_images

            folder = self._probe_folder()
            if folder is False:
                self._memo[key] = scan_images(self.model, layer_name, self.probe())
            else:
                self._memo[key] = scan_folder(self.model, layer_name, folder, size=self.image_size,
                                              limit=self.probe_limit, per_class=self.per_class)
        return self._memo[key]

    def use_scan(self, scan, probe=None) -> None:
        """Answer for ``scan.layer_name`` from *scan* (a ``probe.Scan`` made elsewhere, e.g.
        of another probe set) instead of scanning; *probe*: its decoded ``ProbeSet``, if at
        hand (thumbnails then need no decoding)."""
        self._memo[("scan", scan.layer_name)] = scan
        if probe is not None:
            self._memo["probe"] = probe

    def has_decoded_probe(self) -> bool:
        """Whether the probe images are in memory (else a cached scan decoded none of them)."""
        return "probe" in self._memo

    def explorer(self):
        """The filter explorer (``explorer.FilterExplorer``) on this layer and filter."""
        from .explorer import FilterExplorer

        return FilterExplorer(self)

    def top_classes(self):
        from .probe import rank_classes

        return rank_classes(self.scan(), self.filter_index, self.top_n)

    def top_groups(self):
        """Coarse ImageNet groups by the filter's mean activation (``probe.rank_groups``)."""
        from .probe import rank_groups

        return rank_groups(self.scan(), self.filter_index, self.top_n)

    def top_images(self):
        from .probe import rank_images

        return rank_images(self.scan(), self.filter_index, self.top_n)

    def top_image_maps(self, n: int = 8):
        """(images uint8, activation maps, titles) of the n top images."""
        from .probe import activation_maps

        top = self.top_images().head(n)
        images = self.top_image_pixels(n)
        maps = activation_maps(self.model, self.layer_name, self.filter_index, images)
        from pathlib import Path

        from .plots import short_text

        titles = [f"#{r.rank} {short_text(Path(str(r.source)).name, 24)}\n{short_text(r._3, 18)}, mean act. "
                  f"{r.mean_activation:.1f}" for r in top.itertuples()]
        return images, maps, titles

    def top_image_pixels(self, n: int | None = None) -> np.ndarray:
        """uint8 (n, image_size, image_size, 3): the filter's n top probe images (default top_n)."""
        return self.pixels_of(self.top_images().head(n or self.top_n))

    def pixels_of(self, rows) -> np.ndarray:
        """uint8 (len(rows), image_size, image_size, 3): the probe images of a ranking's rows
        (its ``image`` and ``source`` columns)."""
        if self.has_decoded_probe():  # decoded already (always so where the scan was not a folder's)
            return self.probe().images[rows["image"].to_numpy()]
        from .images import load_image  # the scan may have come from the cache: decode just these files

        return np.stack([load_image(src, self.image_size) for src in rows["source"]])

    def bottom_images(self):
        """The other end (``probe.rank_images_lowest``): the top_n probe images that drive the
        filter's pre-ReLU output lowest."""
        from .probe import rank_images_lowest

        return rank_images_lowest(self.scan(), self.filter_index, self.top_n)

    def channel_examples(self, table=None, n: int = 3) -> dict:
        """Channel -> its n top probe images on the feeding layer (``probe.channel_top_images``),
        for the kept channels of *table*; from the same scan, no second pass."""
        from .probe import channel_top_images

        table = self.channel_table() if table is None else table
        return channel_top_images(self.scan(), self.feeder, table["channel"], n)

    def neighbours(self) -> list[int]:
        """Up to n_neighbours filters around filter_index in the same layer."""
        n_out = self.model.get_layer(self.layer_name).filters
        f, k = self.filter_index, self.n_neighbours
        lo = max(0, min(f - k // 2, n_out - 1 - k))
        return [c for c in range(lo, min(n_out, lo + k + 1)) if c != f][:k]

    def filter_visualizations(self):
        """Ascent for the filter, its neighbours and the filter's negative (the image that
        lowers its pre-ReLU output most), one batch: Visualization, rows in that order."""
        from .featurevis import channel, negative_channel, render_objectives

        layer, f = self.layer_name, self.filter_index
        objectives = [channel(layer, c) for c in [f] + self.neighbours()] + [negative_channel(layer, f)]
        return render_objectives(self.model, objectives, size=self.vis_size, steps=self.steps, seed=self.seed,
                                 desc=f"ascent {layer} filter + neighbours + negative")

    def filter_visualization(self):
        from .featurevis import render_channels

        return render_channels(self.model, self.layer_name, [self.filter_index], size=self.vis_size,
                               steps=self.steps, seed=self.seed)

    # ---------------------------------------------------------- step 3
    def channel_table(self):
        """``circuits.channel_table``; under a render (``$LAB_RECORD_DIR`` set) also left as
        ``channel-table.json`` next to the executed notebooks (``circuits.write_record``)."""
        from .circuits import channel_table, channel_table_record, write_record

        table = channel_table(self.model, self.layer_name, self.filter_index, self.top_k)
        write_record(channel_table_record(table, self.model_name, self.top_k))
        return table

    def channel_norms(self):
        from .circuits import channel_norms

        return channel_norms(self.model, self.layer_name, self.filter_index)

    # ---------------------------------------------------------- step 4
    def channel_visualizations(self, table=None):
        """Ascent for each kept input channel on the feeding layer, one batch (table order)."""
        from .featurevis import render_channels

        table = self.channel_table() if table is None else table
        return render_channels(self.model, self.feeder, [int(c) for c in table["channel"]], size=self.vis_size,
                               steps=self.steps, seed=self.seed, desc=f"ascent {self.feeder} channels")

    def tuning(self):
        """The filter's responses to gratings and colour fields (``stimuli.tuning``)."""
        from .stimuli import tuning

        return tuning(self.model, self.layer_name, self.filter_index)

    def test_image_response(self) -> "ImageResponse":
        """The filter on ``test_image`` (None: the shipped tabby photo): its activation map and
        where its mean activation falls among the probe images' (``ImageResponse``)."""
        from pathlib import Path

        from .config import EMBEDDED_PROBE_DIR, display_name, is_url
        from .images import load_image
        from .probe import activation_maps

        source = self.test_image or str(EMBEDDED_PROBE_DIR / "n02123045_tabby.jpg")
        image = load_image(source, self.image_size)[None]
        act = activation_maps(self.model, self.layer_name, self.filter_index, image)
        name = display_name(source) if is_url(source) else Path(source).name
        return ImageResponse(name, self.test_image is not None, image, act,
                             np.asarray(self.scan().means[:, self.filter_index], np.float64))

    def ablation(self, table=None):
        """The ablation experiment (``ablation.ablate``) on the filter's top_n top images."""
        from .ablation import ablate

        table = self.channel_table() if table is None else table
        return ablate(self.model, self.layer_name, self.filter_index, self.top_image_pixels(), table)

    # ---------------------------------------------------------- step 5
    def summary_paragraph(self) -> str:
        from .circuits import circuit_paragraph

        return (circuit_paragraph(self.model_name, self.layer_name, self.filter_index, self.feeder,
                                  self.channel_table(), self.top_classes(), self.scan().n_images)
                + " " + self.ablation().paragraph())


@dataclass(frozen=True)
class ImageResponse:
    """The filter's response to one image (notebook 04's ``test_image``).

    ``image``: uint8 (1, image_size, image_size, 3); ``activation_map``: float32 (1, h, w),
    after ReLU; ``probe_means``: the probe images' mean activations, for comparison."""

    name: str
    own: bool
    image: np.ndarray
    activation_map: np.ndarray
    probe_means: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.activation_map.mean())

    def text(self) -> str:
        whose = "your image" if self.own else "a shipped photo (set test_image in the parameters cell to use yours)"
        above = float((self.probe_means < self.mean).mean())
        return (f"{whose}: {self.name}; mean activation {self.mean:.1f} (peak {float(self.activation_map.max()):.1f}), "
                f"higher than {above:.0%} of the {len(self.probe_means)} probe images (their median: "
                f"{float(np.median(self.probe_means)):.1f}, their highest: {float(self.probe_means.max()):.1f})")

    def titles(self) -> list[str]:
        from .plots import short_text

        return [f"{short_text(self.name, 28)}\nmean act. {self.mean:.1f}"]
