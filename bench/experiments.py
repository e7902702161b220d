"""Experiments behind the benchmark's suggestions (not part of ``python -m bench``).

    python -m bench.experiments matmul        # bound vs matrix size and threads
    python -m bench.experiments scan-batch    # scan throughput vs batch size
    python -m bench.experiments ascent-xla    # render_channels' step vs the same step with XLA
    python -m bench.experiments overhead      # what a notebook kernel pays before any compute
    python -m bench.experiments render-variants [fresh,prestart,shared]
                                              # render.sh's loop with other kernel strategies
    python -m bench.experiments all           # all but render-variants

Each prints a few lines of numbers; none of them is a test.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("LAB_PROGRESS", "0")


from .__main__ import best_time as _best  # noqa: E402  (after the environment defaults above)


def matmul():
    import tensorflow as tf

    for n in (1024, 2048, 4096, 6144):
        a, b = tf.random.normal((n, n)), tf.random.normal((n, n))
        f = lambda: tf.linalg.matmul(a, b)[0, 0].numpy()  # noqa: E731
        f()
        print(f"matmul {n}: {2 * n ** 3 / _best(f, 4) / 1e9:.1f} GFLOP/s")


def scan_batch():
    import numpy as np

    import lab_utils as lab
    from lab_utils.probe import scan_pass

    from .flops import scan_flops_per_image

    model = lab.load_model("vgg16")
    images = lab.load_probe_set(None, limit=256).images
    for layer in ("block3_conv1", "block4_conv1"):
        fn = scan_pass(model, layer)
        gf = scan_flops_per_image(model, layer, 224) / 1e9
        for bs in (8, 16, 32, 64):
            fn(images[:bs])[0].numpy()

            def run():
                for s in range(0, len(images), bs):
                    fn(images[s:s + bs])[0].numpy()

            t = _best(run, 2)
            print(f"scan {layer} batch {bs:3d}: {len(images) / t:6.1f} img/s, {gf * len(images) / t:6.1f} GFLOP/s")
        del fn
    np.zeros(1)


def ascent_xla():
    import numpy as np
    import tensorflow as tf

    import lab_utils as lab
    from lab_utils.featurevis import build_ascent_step, channel, frequency_scale, start_spectrum

    from .flops import ascent_flops_per_step

    model = lab.load_model("vgg16")
    size = 128
    for layer_name, chans in (("block3_conv1", list(range(27, 36))), ("block2_conv2", list(range(10)))):
        weights = [channel(layer_name, c).ascent_weights(model) for c in chans]
        kernels = tf.constant(np.stack([k for k, _ in weights], axis=-1))
        biases = tf.constant(np.array([b for _, b in weights], np.float32))
        scale = tf.constant(frequency_scale(size).astype(np.complex64))
        spec = tf.constant(start_spectrum(chans, size, 0))
        flop = ascent_flops_per_step(model, layer_name, len(chans), size)
        for jit in (False, True):
            try:
                # render_channels' own step (built anew: the render's copy is never XLA-compiled)
                step, _ = build_ascent_step(model, layer_name, jit_compile=jit)
                m = v = tf.zeros_like(spec)
                shift = tf.constant([3, -2], tf.int32)
                t0 = time.perf_counter()
                step(spec, m, v, tf.constant(1.0), scale, kernels, biases, shift)[0].numpy()
                trace = time.perf_counter() - t0
                n = 8
                t0 = time.perf_counter()
                s = spec
                for i in range(n):
                    s, m, v, _ = step(s, m, v, tf.constant(i + 1.0), scale, kernels, biases, shift)
                s.numpy()
                per = (time.perf_counter() - t0) / n
                print(f"ascent {layer_name} x{len(chans)} jit_compile={jit}: {per:.3f} s/step, "
                      f"{flop / per / 1e9:.1f} GFLOP/s (first call {trace:.1f} s)")
            except Exception as exc:  # XLA may not support an op on this backend
                print(f"ascent {layer_name} jit_compile={jit}: failed: {type(exc).__name__}: {str(exc)[:200]}")


def overhead():
    """Fresh-process costs that every notebook kernel pays (median of 3 runs)."""
    snippets = {
        "python + import tensorflow": "import tensorflow",
        "import lab_utils + load vgg16 (weights)": "import lab_utils as lab; lab.load_model('vgg16')",
        "check_parameters() (what each notebook's check cell runs)":
            "import lab_utils as lab; lab.check_parameters()",
        "+ embedded probe set decode + fingerprint":
            "import lab_utils as lab; s = lab.check_parameters(); s.probe().fingerprint()",
        "+ activation_maps of 8 images (Keras predict)":
            "import lab_utils as lab; s = lab.check_parameters(); "
            "from lab_utils.probe import activation_maps; import numpy as np; "
            "activation_maps(s.model, 'block3_conv1', 31, np.zeros((8, 224, 224, 3), np.uint8))",
    }
    for label, code in snippets.items():
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        print(f"{label}: {sorted(times)[1]:.2f} s")
    import numpy as np

    import lab_utils as lab
    from lab_utils.probe import activation_maps, submodel
    from lab_utils.models import preprocess

    model = lab.load_model("vgg16")
    x = np.zeros((8, 224, 224, 3), np.uint8)
    t0 = time.perf_counter()
    activation_maps(model, "block3_conv1", 31, x)
    t1 = time.perf_counter()
    activation_maps(model, "block3_conv1", 31, x)
    t2 = time.perf_counter()
    sub = submodel(model, "block3_conv1")
    sub(preprocess(model, x.astype("float32")), training=False).numpy()
    t3 = time.perf_counter()
    print(f"activation_maps 8 images: first {t1 - t0:.2f} s, second {t2 - t1:.2f} s; "
          f"direct call of the sub-model (no predict): {t3 - t2:.2f} s")


# ------------------------------------------------------------------ render strategies
# The loop of lab_utils.render.main (parameter check, papermill per notebook,
# HTML export, index) with three ways of getting a kernel for each notebook:
#   fresh     a new kernel per notebook, started by papermill (what render.sh does);
#   prestart  a new kernel per notebook too, but notebook k+1's kernel is started,
#             and imports lab_utils.models (TensorFlow) silently, while notebook k
#             runs; the first one starts while the parent checks the parameters;
#   shared    one kernel for the whole render; between notebooks its namespace is
#             reset (IPython reset(new_session=True): variables gone, execution
#             count back to 1), imported modules and in-memory caches are kept.
#   lean      shared, plus HTML export of notebook k in a thread while notebook
#             k+1 runs, and no wait for the kernel's graceful shutdown at the end.
#             (It once also patched lab_utils in the kernel: weight heat maps drawn
#             with imshow + text, the decoded probe set memoized in the process; both
#             are lab_utils' own behaviour now, plots.kernel_heatmaps and
#             images.load_probe_set, so nothing private is patched any more.)
PRELOAD = "import lab_utils.models"
def _start_kernel(cwd, preload=PRELOAD):
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    if preload:
        kc.execute(preload, silent=True, store_history=False)
    return km, kc


RESET = "get_ipython().reset(new_session=True)\nimport gc\ngc.collect()"


def _run_in_kernel(km, code):
    """Run code in a kernel through a fresh nbclient client (like papermill does)."""
    import nbformat
    from nbclient import NotebookClient

    NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), km=km, timeout=120).execute()


def _stop_kernel(km, kc, now=False):
    import threading

    def stop():
        try:
            kc.stop_channels()
            km.shutdown_kernel(now=now)
        except Exception:
            pass

    t = threading.Thread(target=stop, daemon=False)
    t.start()
    return t


def _render(argv):
    """One render with a given kernel strategy: _render STRATEGY ARGS (render.sh's ARGS)."""
    import datetime as _dt
    from concurrent.futures import ThreadPoolExecutor

    import papermill as pm

    from lab_utils import render as R

    strategy, argv = argv[0], argv[1:]
    args = R.build_parser().parse_args(argv)
    params = R.collect_parameters(args)
    books = R.select_notebooks(args.only)
    pool = ThreadPoolExecutor(2)
    pending = pool.submit(_start_kernel, books[0].parent) if strategy == "prestart" else None
    # the shared kernel's client is used from this thread only (clients are not thread-safe)
    lean = strategy == "lean"
    shared = _start_kernel(books[0].parent, PRELOAD) if strategy in ("shared", "lean") else None
    from lab_utils.params import check_values

    t_check = time.perf_counter()
    check_values(params)  # as render.sh: no TensorFlow in the parent
    print(f"parent: parameter check ok ({time.perf_counter() - t_check:.1f} s)", file=sys.stderr, flush=True)
    out = Path(args.out).resolve()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    rows, stops = [], []
    for i, book in enumerate(books):
        t0 = time.perf_counter()
        out_nb = out / "notebooks" / book.name
        kw = {}
        if strategy == "prestart":
            km, kc = pending.result()
            pending = pool.submit(_start_kernel, book.parent) if i + 1 < len(books) else None
            kw["km"] = km
        elif shared:
            km, kc = shared
            if i:
                _run_in_kernel(km, RESET)
            kw["km"] = km
        try:
            pm.execute_notebook(str(book), str(out_nb), parameters=params, cwd=str(book.parent),
                                kernel_name="python3", progress_bar=False, log_output=False,
                                execution_timeout=args.cell_timeout, **kw)
            status, message = "ok", ""
        except pm.PapermillExecutionError as exc:
            status, message = "failed", f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"[:300]
        if strategy == "prestart":
            stops.append(_stop_kernel(km, kc))
        seconds = time.perf_counter() - t0
        row = {"name": book.stem, "html": f"{book.stem}.html", "status": status, "message": message,
               "seconds": seconds, "figures": 0}
        rows.append(row)
        if lean:
            row["figures"] = pool.submit(R.to_html, out_nb, out / f"{book.stem}.html")
        else:
            t1 = time.perf_counter()
            row["figures"] = R.to_html(out_nb, out / f"{book.stem}.html")
            row["message"] += f" [html export {time.perf_counter() - t1:.1f} s]"
        print(f"{book.stem}: {status} ({seconds:.1f} s) {row['message']}", file=sys.stderr, flush=True)
    if shared:
        stops.append(_stop_kernel(*shared, now=lean))
    for row in rows:
        if not isinstance(row["figures"], int):
            row["figures"] = row["figures"].result()
    from lab_utils.choice import INJECTED, resolve_arguments

    R.write_index(out, rows, resolve_arguments(params, source=INJECTED), started)
    for t in stops:
        if not lean:
            t.join()
    return 1 if any(r["status"] != "ok" for r in rows) else 0


def render_variants(strategies=("fresh", "prestart", "shared")):
    """Cold, warm and other-filter renders (default parameters) per strategy; same measure as python -m bench."""
    import shutil
    import tempfile

    from .__main__ import GIB, KIT_ROOT, run_render

    work = Path(tempfile.mkdtemp(prefix="lab-bench-variants-"))
    env = dict(os.environ, LAB_PROGRESS="0")
    weights = KIT_ROOT.parent / "shared" / "weights"
    if not env.get("LAB_WEIGHTS_DIR") and weights.is_dir():
        env["LAB_WEIGHTS_DIR"] = str(weights)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    for strategy in strategies:
        env["LAB_CACHE_DIR"] = str(work / f"cache-{strategy}")
        walls = {}
        for key, extra in (("cold", []), ("warm", []), ("other", ["-p", "filter_index", "7"])):
            argv = ["--out", str(work / f"{strategy}-{key}"), *extra]
            r = run_render(argv, env, work / f"{strategy}-{key}.log",
                           cmd=[sys.executable, "-m", "bench.experiments", "_render", strategy])
            walls[key] = r["wall"]
            if os.environ.get("BENCH_VERBOSE"):
                print("".join(ln for ln in open(r["log"]) if " ok (" in ln or ": failed" in ln), end="")
            print(f"{strategy:9s} {key:5s}: {r['wall']:6.1f} s, rc {r['rc']}, peak RSS tree {r['peak_sum'] / GIB:.2f} GiB"
                  f" (largest process {r['peak_one'] / GIB:.2f})", flush=True)
        print(f"{strategy:9s} cold/other = {walls['cold'] / walls['other']:.2f}x", flush=True)
    if not os.environ.get("BENCH_VERBOSE"):
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"outputs kept in {work}")


EXPERIMENTS = {"matmul": matmul, "scan-batch": scan_batch, "ascent-xla": ascent_xla, "overhead": overhead}

if __name__ == "__main__":
    names = sys.argv[1:] or ["all"]
    if names[0] == "_render":
        sys.exit(_render(names[1:]))
    if names[0] == "render-variants":
        render_variants(tuple(names[1].split(",")) if len(names) > 1 else ("fresh", "prestart", "shared"))
        sys.exit(0)
    for name in (list(EXPERIMENTS) if names == ["all"] else names):
        if name not in EXPERIMENTS:
            sys.exit(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}, render-variants, all")
        print(f"== {name}")
        EXPERIMENTS[name]()
