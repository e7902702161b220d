"""An atlas of a whole conv layer: one synthesized image per filter, on one zoomable page.

What OpenAI Microscope shows online, here offline for any conv layer of the kit's
models (opt-in: it is not part of a lab render)::

    ./render.sh --atlas block3_conv1 [--out build/atlas] [--size 64] [--steps 64] [--seed 0]
    python -m lab_utils.atlas block3_conv1 --model vgg16 --out build/atlas

- ``layer_atlas`` renders every filter with ``featurevis.render_channels`` (the lab's
  recipe: Fourier parameterization, jitter, Adam on the mean pre-ReLU output), in
  batches of ``ATLAS_BATCH`` filters: one compiled step per batch shape, so an
  evenly split layer is traced once. Each batch lands in the per-channel cache as it
  finishes (an interrupted atlas resumes where it stopped), and the whole atlas is
  cached as one entry too, so a re-run is one file read.
- ``write_atlas_page`` writes ``OUT/atlas-<model>-<layer>.html`` through ``pages``:
  a grid of every filter with its 0-based index, three tile sizes and a click-to-zoom
  view with previous/next links, all in CSS (no script; the page's CSP allows images
  only as ``data:`` URIs, so the tiles are embedded PNGs).
- ``cached_atlas`` / ``atlas_image``: an atlas, or one filter's image, for other tools
  (an explorer) without recomputing what is cached.

Index conventions: channel (filter) indices are 0-based, as everywhere in the kit;
``LayerAtlas.images[i]`` is the image of filter ``LayerAtlas.channels[i]``.
Light at import: TensorFlow loads only when something is rendered.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cache
from .arguments import OneLineParser
from .config import LabError, display_name, progress

# Defaults, measured on the reference 2-core CPU (AMD EPYC). One ascent step at block3_conv1
# costs 1.54 GFLOP per 64 px image (2 x the forward FLOPs before the layer: bench/flops.py),
# so all 256 filters x 64 steps are 25.2 TFLOP: 130 s measured (194 GFLOP/s, 0.86 of a matmul
# bound of 226 GFLOP/s, tracing included), 193-212 s while the machine was slower (its matmul
# rate varies 2x over minutes). At 128 px (the notebooks' size) the same atlas would take 4x
# as long, 9-14 min: too long for an opt-in extra. 64 px still spans ~3 receptive fields of
# block3_conv1 (24 px): its textures and shapes read well, and the page can enlarge them.
ATLAS_SIZE = 64     # pixels, square
ATLAS_STEPS = 64    # Adam steps: the notebooks' default, whose images are converged to the eye
# Filters per ascent batch. At 64 px, block3_conv1, 64 steps, each call timed between two
# matmul-bound measurements (only such paired ratios are reliable here): 16 -> 0.84-0.86 of
# the bound, 32 -> 0.84-0.86, 64 -> 0.85-0.88 (190-198 GFLOP/s against ~225). Larger gains
# nothing; 32 divides every VGG width (64..512), so a layer is traced once; ~0.2 GiB a batch.
ATLAS_BATCH = 32
ATLAS_VERSION = "atlas-v1"  # part of the cache key (with featurevis.VIS_VERSION)
DEFAULT_OUT = "build/atlas"
PAGE_MARK = '<meta name="generator" content="lab_utils.atlas">'  # tells our pages from foreign files


@dataclass
class LayerAtlas:
    """Every requested filter of one conv layer, visualized.

    ``images``: uint8 (n, size, size, 3), RGB 0..255; ``images[i]`` is filter
    ``channels[i]`` (0-based). ``objective_start`` / ``objective_end``: float32 (n,),
    the mean pre-ReLU output of the filter (the maximized objective) on the random
    start image and on the result. ``size`` in pixels, ``steps`` Adam steps.
    """

    model_name: str
    layer_name: str
    channels: list
    images: np.ndarray
    objective_start: np.ndarray
    objective_end: np.ndarray
    size: int
    steps: int
    seed: int
    from_cache: bool = False

    def image(self, channel: int) -> np.ndarray:
        """The uint8 (size, size, 3) image of filter ``channel`` (0-based)."""
        try:
            return self.images[self.channels.index(int(channel))]
        except (ValueError, TypeError):
            raise LabError(f"filter {channel!r} is not in this atlas of {self.layer_name} "
                           f"({_ranges_text(self.channels)})") from None


def model_label(model) -> str:
    """The kit's name of ``model`` (``vgg16``), else its Keras name."""
    return getattr(model, "_lab_name", model.name)


def _ranges_text(channels) -> str:
    """0..255 for a contiguous run, else the count."""
    c = list(channels)
    if c and c == list(range(c[0], c[0] + len(c))):
        return f"filters {c[0]}..{c[-1]}"
    return f"{len(c)} filters"


def _atlas_key(model, layer_name: str, channels: list, size: int, steps: int, seed: int) -> str:
    from .featurevis import VIS_VERSION
    from .models import model_fingerprint

    return cache.cache_key(kind="atlas", version=f"{ATLAS_VERSION}/{VIS_VERSION}",
                           model=model_fingerprint(model, upto=layer_name), layer=layer_name,
                           channels=channels, size=size, steps=steps, seed=seed)


def _layer_channels(model, layer_name: str, channels) -> list[int]:
    from .featurevis import _check_channels
    from .models import get_conv_layer

    layer = get_conv_layer(model, layer_name)
    if channels is None:
        return list(range(layer.filters))
    return list(dict.fromkeys(_check_channels(layer, channels)))  # each filter once, in the given order


def _check_settings(size, steps, seed, batch) -> tuple[int, int, int, int]:
    from .featurevis import _check_positive

    return (_check_positive(size, "size", 32), _check_positive(steps, "steps", 1),
            _check_positive(seed, "seed", 0), _check_positive(batch, "batch", 1))


def batches_of(channels: list, batch: int) -> list[list]:
    """``channels`` in ceil(n / batch) consecutive batches whose sizes differ by at most
    one (at most two batch shapes, so at most two traces of the compiled step)."""
    n_batches = -(-len(channels) // batch)
    return [list(map(int, part)) for part in np.array_split(np.asarray(channels, dtype=np.int64), n_batches)]


def cached_atlas(model, layer_name: str, size: int = ATLAS_SIZE, steps: int = ATLAS_STEPS, seed: int = 0,
                 channels=None) -> LayerAtlas | None:
    """The atlas ``layer_atlas`` would return, if it is cached; None otherwise (nothing is computed)."""
    channels = _layer_channels(model, layer_name, channels)
    size, steps, seed, _ = _check_settings(size, steps, seed, 1)
    hit = cache.load("atlas", _atlas_key(model, layer_name, channels, size, steps, seed))
    return None if hit is None else _from_entry(hit, model, layer_name, channels, size, steps, seed)


def _from_entry(hit: dict, model, layer_name, channels, size, steps, seed) -> LayerAtlas:
    return LayerAtlas(model_label(model), layer_name, channels, hit["images"], hit["objective_start"],
                      hit["objective_end"], size, steps, seed, from_cache=True)


def layer_atlas(model, layer_name: str, size: int = ATLAS_SIZE, steps: int = ATLAS_STEPS, seed: int = 0,
                batch: int = ATLAS_BATCH, channels=None, use_cache: bool = True,
                progress_bar: bool = True) -> LayerAtlas:
    """Synthesize one image per filter of conv layer ``layer_name`` (all of them by default).

    ``channels``: a subset of filters (0-based), or None for every filter of the layer.
    ``size``: image side in pixels; ``steps``: Adam steps; ``seed``: the start images
    and jitter (same seed, same atlas). The filters are optimized ``batch`` at a time
    (``batches_of``), with a progress bar over the filters (hidden with
    ``progress_bar=False`` or ``LAB_PROGRESS=0``). Each filter's image depends only on
    (seed, filter) and on which filters share its batch, through float rounding only
    (well under one grey level on average).

    Cached twice: each batch per channel by ``render_channels`` as soon as it is done
    (an interrupted atlas resumes, and the notebooks' renders at the same size reuse
    it), and the whole atlas as one entry, so a second call is a single file read.
    """
    from .featurevis import render_channels

    channels = _layer_channels(model, layer_name, channels)
    size, steps, seed, batch = _check_settings(size, steps, seed, batch)
    key = _atlas_key(model, layer_name, channels, size, steps, seed) if use_cache else None
    if use_cache:
        hit = cache.load("atlas", key)
        if hit is not None:
            return _from_entry(hit, model, layer_name, channels, size, steps, seed)
    parts = batches_of(channels, batch)
    images, obj_start, obj_end = [], [], []
    bar_off = {} if progress_bar else {"disable": True}
    with progress(total=len(channels), desc=f"atlas {layer_name}", unit="filter", **bar_off) as bar:
        for i, part in enumerate(parts, 1):
            vis = render_channels(model, layer_name, part, size=size, steps=steps, seed=seed, use_cache=use_cache,
                                  desc=f"batch {i}/{len(parts)}, filters {part[0]}..{part[-1]}",
                                  show_progress=progress_bar)
            images.append(vis.images)
            obj_start.append(vis.objective_start)
            obj_end.append(vis.objective_end)
            bar.update(len(part))
    atlas = LayerAtlas(model_label(model), layer_name, channels, np.concatenate(images),
                       np.concatenate(obj_start), np.concatenate(obj_end), size, steps, seed)
    if use_cache:
        cache.save("atlas", key, images=atlas.images, objective_start=atlas.objective_start,
                   objective_end=atlas.objective_end)
    return atlas


def atlas_image(model, layer_name: str, channel: int, size: int = ATLAS_SIZE, steps: int = ATLAS_STEPS,
                seed: int = 0) -> np.ndarray:
    """The uint8 (size, size, 3) atlas image of one filter (0-based ``channel``).

    From the cached whole-layer atlas when there is one (one file read); else from the
    per-channel cache that an atlas (or an earlier call) filled; else rendered alone,
    a few seconds at the default size (alone, it may differ from its atlas tile by a
    grey level here and there: float rounding in a batch of another size).
    """
    from .featurevis import render_channels
    from .models import check_index, get_conv_layer

    channel = check_index(channel, get_conv_layer(model, layer_name).filters, f"filter of {layer_name}")
    whole = cached_atlas(model, layer_name, size, steps, seed)
    if whole is not None:
        return whole.image(channel)
    return render_channels(model, layer_name, [channel], size=size, steps=steps, seed=seed,
                           show_progress=False).images[0]


# ------------------------------------------------------------------ the page
PAGE_CSS = """
:root{color-scheme:light dark}
body{margin:0;font:14px/1.45 system-ui,sans-serif;background:#f6f6f4;color:#222}
header{padding:12px 16px 4px}
h1{font-size:20px;margin:0 0 4px}
.meta{color:#555;max-width:70em}
.sizes{position:absolute;opacity:0;pointer-events:none}
.toolbar{padding:6px 16px 10px;display:flex;gap:6px;align-items:center;color:#555}
.toolbar label{border:1px solid #bbb;border-radius:4px;padding:1px 9px;cursor:pointer;background:#fff}
#size-s:checked~.toolbar label[for=size-s],#size-m:checked~.toolbar label[for=size-m],
#size-l:checked~.toolbar label[for=size-l]{background:#333;color:#fff;border-color:#333}
.sizes:focus-visible~.toolbar{outline:2px solid #4a7bd0;outline-offset:-2px}
.grid{--tile:96px;display:grid;grid-template-columns:repeat(auto-fill,minmax(var(--tile),1fr));
  gap:8px;padding:0 16px 24px}
#size-s:checked~.grid{--tile:56px;gap:4px}
#size-l:checked~.grid{--tile:168px}
.cell{min-height:calc(var(--tile) + 1.5em)}
.tile{margin:0}
.tile>a{display:block;line-height:0;border-radius:3px;outline-offset:1px}
.tile img{width:100%;height:auto;aspect-ratio:1;border-radius:3px;background:#ddd}
.tile>a:hover img,.tile>a:focus img{box-shadow:0 0 0 2px #4a7bd0}
.tile figcaption{font:12px/1.4 ui-monospace,monospace;text-align:center;color:#444}
#size-s:checked~.grid figcaption{font-size:10px}
.zoom{display:none}
.tile:target{position:fixed;inset:0;z-index:10;background:rgba(20,20,20,.94);display:flex;
  flex-direction:column;align-items:center;justify-content:center;gap:10px;margin:0}
.tile:target>a{pointer-events:none}
.tile:target img{width:min(82vh,92vw);border-radius:2px;box-shadow:none}
.tile:target figcaption{display:none}
.tile:target .zoom{display:flex;gap:18px;align-items:center;color:#eee;font-size:15px}
.zoom a{color:#cfe0ff;text-decoration:none;border:1px solid #667;border-radius:4px;padding:2px 10px}
.zoom a:hover,.zoom a:focus{background:#334}
.zoom .what{min-width:18em;text-align:center}
@media (prefers-color-scheme:dark){body{background:#1c1c1c;color:#ddd}.meta,.toolbar{color:#aaa}
  .tile figcaption{color:#bbb}.toolbar label{background:#2a2a2a;border-color:#555}}
"""


def png_data_uri(image: np.ndarray) -> str:
    """A uint8 (H, W, 3) image as a ``data:image/png;base64,...`` URI (the pages' CSP
    allows images only as data: URIs)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def atlas_page_name(model_name: str, layer_name: str) -> str:
    """``atlas-<model>-<layer>.html``, with any character unsafe in a file name as ``_``."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"atlas-{model_name}-{layer_name}") + ".html"


def _number(v: float) -> str:
    """1,234 / 37.6 / -0.626: a value readable at a glance."""
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def _tile(atlas: LayerAtlas, i: int) -> str:
    c = atlas.channels[i]
    start, end = float(atlas.objective_start[i]), float(atlas.objective_end[i])
    what = f"filter {c} of {atlas.layer_name}: mean pre-ReLU output {_number(start)} \u2192 {_number(end)}"
    prev_link = f'<a href="#f{atlas.channels[i - 1]}">&larr; {atlas.channels[i - 1]}</a>' if i > 0 else "<span></span>"
    next_link = (f'<a href="#f{atlas.channels[i + 1]}">{atlas.channels[i + 1]} &rarr;</a>'
                 if i + 1 < len(atlas.channels) else "<span></span>")
    e = html.escape
    return (f'<div class="cell" id="c{c}"><figure class="tile" id="f{c}">'
            f'<a href="#f{c}" title="{e(what)}"><img src="{png_data_uri(atlas.images[i])}" '
            f'alt="filter {c}" width="{atlas.size}" height="{atlas.size}"></a>'
            f"<figcaption>{c}</figcaption>"
            f'<div class="zoom">{prev_link}<span class="what">{e(what)}</span>'
            f'<a href="#c{c}">close &times;</a>{next_link}</div></figure></div>')


def is_atlas_page(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (its head holds ``PAGE_MARK``)."""
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as fh:
            return PAGE_MARK in fh.read(4096)
    except OSError:
        return False


def check_page_target(path: Path) -> None:
    """A LabError where ``path`` exists and is not an atlas page: never overwrite a foreign file."""
    if (path.exists() or path.is_symlink()) and not (path.is_file() and not path.is_symlink()
                                                     and is_atlas_page(path)):
        raise LabError(f"{display_name(str(path))} exists and was not written by the atlas; "
                       "choose another --out (nothing there is overwritten)")


def write_atlas_page(atlas: LayerAtlas, out_dir) -> Path:
    """Write ``out_dir/atlas-<model>-<layer>.html`` (created folder if missing) and return
    its path. Only that file is written, and an existing file of that name is replaced
    only when this module wrote it (``check_page_target``)."""
    from .pages import document, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / atlas_page_name(atlas.model_name, atlas.layer_name)
    check_page_target(path)
    e = html.escape
    n = len(atlas.channels)
    title = f"Atlas: {atlas.model_name} {atlas.layer_name}"
    body = f"""<input type="radio" name="size" id="size-s" class="sizes">
<input type="radio" name="size" id="size-m" class="sizes" checked>
<input type="radio" name="size" id="size-l" class="sizes">
<header id="top"><h1>{e(atlas.model_name)} &middot; {e(atlas.layer_name)}: {n} filters</h1>
<div class="meta">Each image was synthesized to maximize one filter: the mean over positions of its
pre-ReLU output, by gradient ascent from random noise ({atlas.size}&times;{atlas.size} px,
{atlas.steps} Adam steps, seed {atlas.seed}; the lab's recipe, <code>lab_utils.featurevis</code>).
Numbers are 0-based filter indices. Click an image to enlarge it; in the enlarged view,
&larr; / &rarr; step through the filters.</div></header>
<div class="toolbar">Tiles: <label for="size-s">small</label><label for="size-m">medium</label>
<label for="size-l">large</label></div>
<main class="grid">
{chr(10).join(_tile(atlas, i) for i in range(n))}
</main>"""
    write_text_atomic(path, document(title, body, head=f"{PAGE_MARK}<style>{PAGE_CSS}</style>"))
    return path


# ------------------------------------------------------------------ command line
def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="atlas",
        usage="render.sh --atlas LAYER [--model M] [--out DIR] [--size N] [--steps N] [--seed N] [--batch N]\n"
              "       python -m lab_utils.atlas LAYER [options]",
        description="Synthesize one image per filter of a conv layer and write a zoomable page of them "
                    "(OUT/atlas-<model>-<layer>.html; nothing else in OUT is written). Results are cached: "
                    "a second run, or one after Ctrl-C, reuses every filter already done.",
        epilog=f"Defaults: {ATLAS_SIZE} px, {ATLAS_STEPS} steps, {ATLAS_BATCH} filters per batch: "
               "all 256 filters of vgg16 block3_conv1 in 2-3.5 minutes on 2 CPU cores.")
    ap.add_argument("layer", nargs="?", metavar="LAYER", help="conv layer, e.g. block3_conv1")
    ap.add_argument("--atlas", metavar="LAYER", help="the same as LAYER (how render.sh passes it)")
    ap.add_argument("--model", default="vgg16", help="vgg16 (default) or vgg19")
    ap.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--size", type=int, default=ATLAS_SIZE, help=f"image side in pixels (default {ATLAS_SIZE})")
    ap.add_argument("--steps", type=int, default=ATLAS_STEPS, help=f"Adam steps (default {ATLAS_STEPS})")
    ap.add_argument("--seed", type=int, default=0, help="random seed of the start images (default 0)")
    ap.add_argument("--batch", type=int, default=ATLAS_BATCH,
                    help=f"filters optimized together (default {ATLAS_BATCH})")
    return ap


def check_arguments(args) -> dict:
    """Everything checkable without TensorFlow: the model, layer, numbers and --out.
    Returns the layer's spec and the estimated seconds; raises LabError."""
    from .architectures import (check_model_name, conv_specs, forward_flops_per_pixel, layer_error,
                                other_layer_names)
    from .params import ASCENT_BYTES_PER_PIXEL, ASCENT_FLOP_RATE, ASCENT_MAX_BYTES, LIMITS
    from .render import check_out_folder

    if args.layer and args.atlas and args.layer != args.atlas:
        raise LabError(f"two layers given ({args.atlas!r} and {args.layer!r}); give one")
    layer = args.layer or args.atlas
    if not layer:
        raise LabError("give the conv layer, e.g. block3_conv1")
    model = check_model_name(args.model)
    specs = {s.name: s for s in conv_specs(model)}
    if layer not in specs:
        raise layer_error(layer, model, list(specs), is_layer=layer in other_layer_names(model))
    # the notebooks' limits (params.LIMITS): the atlas renders the same images, only more of them
    for name, value, limit in (("size", args.size, "vis_size"), ("steps", args.steps, "steps")):
        low, high, _ = LIMITS[limit]
        if not low <= value <= high:
            raise LabError(f"--{name} must be in {low}..{high}, got {value}")
    if args.seed < 0:
        raise LabError(f"--seed must be >= 0, got {args.seed}")
    if args.batch < 1:
        raise LabError(f"--batch must be >= 1, got {args.batch}")
    spec = specs[layer]
    batch_bytes = min(args.batch, spec.out_channels) * args.size ** 2 * ASCENT_BYTES_PER_PIXEL
    if batch_bytes > ASCENT_MAX_BYTES:
        raise LabError(f"a batch of {args.batch} images of {args.size} px would need about "
                       f"{batch_bytes / 2 ** 30:.1f} GiB, more than {ASCENT_MAX_BYTES // 2 ** 30} GiB; lower --batch")
    out = Path(args.out).expanduser()
    check_out_folder(out)
    check_page_target(out / atlas_page_name(model, layer))
    flops = 2 * args.steps * args.size ** 2 * spec.out_channels * forward_flops_per_pixel(model, layer)
    return {"model": model, "layer": layer, "filters": spec.out_channels, "out": out,
            "seconds": flops / ASCENT_FLOP_RATE}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = check_arguments(args)
        print(f"atlas: {plan['model']} {plan['layer']}: {plan['filters']} filters, {args.size} px, {args.steps} steps "
              f"(about {plan['seconds'] / 60:.1f} min on 2 CPU cores; less for filters already cached)",
              file=sys.stderr, flush=True)
        from .models import load_model

        model = load_model(plan["model"])
        t0 = time.perf_counter()
        atlas = layer_atlas(model, plan["layer"], size=args.size, steps=args.steps, seed=args.seed,
                            batch=args.batch)
        page = write_atlas_page(atlas, plan["out"])
    except LabError as exc:
        print(f"atlas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atlas: interrupted; the batches already done are cached: run the same command to resume",
              file=sys.stderr)
        return 130
    how = "from the cache" if atlas.from_cache else f"in {time.perf_counter() - t0:.0f} s"
    print(f"atlas: {len(atlas.channels)} filters {how}: {display_name(str(page))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
