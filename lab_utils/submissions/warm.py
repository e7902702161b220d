"""``render.sh --submissions DIR --execute --warm``: fill the instructor's cache with what the
class's executed hand-ins will ask for, before any of them runs, so that the shared cache
layer (``shared_cache``) serves it to all of them.

What each hand-in will use is *read*, never run: the kit's defaults, overridden by the
``lab-choice.yaml`` handed in beside the notebook, overridden by literal values typed into
the notebook's parameters cell (``name = 7``; ``name = choice.name`` keeps the choice).
For every distinct (model, layer, probe images) among them, the warm worker (a process of
the kit's code, with the instructor's cache) scans the kit's probe set at the layer
(``LabSetup.scan``: the feeding layer's activations come with it), and runs step 1's model
check once per (model, seed). A hand-in's own probe folder is not on this machine and is
not warmed; nor are values the kit refuses (that hand-in's run says why).

    python -m lab_utils.submissions.warm < requests.json    (the grader starts it)
"""
from __future__ import annotations

import ast
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# The parameters that decide a probe scan's cache entry (the rest: per filter, not warmed).
SCAN_PARAMETERS = ("model_name", "layer_name", "probe_limit", "per_class", "image_size")
CHOICE_FILE = "lab-choice.yaml"
MAX_CHOICE_BYTES = 64_000


@dataclass(frozen=True)
class WarmRequest:
    """One scan to warm: the scan parameters (``SCAN_PARAMETERS``) and the seed of step 1's
    check; ``users`` = how many hand-in notebooks asked for it."""

    model_name: str
    layer_name: str
    probe_limit: int | None
    per_class: int | None
    image_size: int
    seed: int

    def label(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)}" for k in ("probe_limit", "per_class")
                        if getattr(self, k) is not None)
        return f"{self.model_name} {self.layer_name} at {self.image_size} px{extra}"


def cell_values(nb: dict) -> dict:
    """Literal values assigned in the notebook's parameters cell (tag ``parameters``), by
    name; ``name = choice.name`` and anything not a literal are left out."""
    from ..params import PARAMETERS

    values = {}
    for cell in nb.get("cells", []) if isinstance(nb, dict) else []:
        tags = (cell.get("metadata") or {}).get("tags") or []
        if cell.get("cell_type") != "code" or "parameters" not in tags:
            continue
        src = cell.get("source", "")
        src = "".join(src) if isinstance(src, list) else str(src)
        try:
            tree = ast.parse(src)
        except Exception:  # noqa: BLE001 - SyntaxError, and a hostile cell's RecursionError/MemoryError
            continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id in PARAMETERS):
                try:
                    values[node.targets[0].id] = ast.literal_eval(node.value)
                except (ValueError, SyntaxError, TypeError, RecursionError, MemoryError):
                    pass
    return values


def choice_values(folder: Path) -> dict:
    """The known parameters of the ``lab-choice.yaml`` in *folder* (a hand-in's), or {}."""
    import yaml

    from ..params import PARAMETERS
    from .student_kernel import read_nofollow

    try:
        loaded = yaml.safe_load(read_nofollow(folder / CHOICE_FILE, MAX_CHOICE_BYTES).decode("utf-8"))
    except Exception:  # noqa: BLE001 - missing, unreadable, not YAML: the defaults
        return {}
    return {k: v for k, v in loaded.items() if k in PARAMETERS} if isinstance(loaded, dict) else {}


def request_for(nb: dict, folder: Path | None) -> WarmRequest | None:
    """What a hand-in notebook will scan (None: nothing the warm step can do for it: another
    probe set, or a value of the wrong type)."""
    from ..params import DEFAULTS, PARAMETERS, probe_source

    values = dict(DEFAULTS)
    if folder is not None:
        values.update(choice_values(folder))
    values.update(cell_values(nb))
    if any(not isinstance(values[k], PARAMETERS[k][1]) or isinstance(values[k], bool)
           for k in SCAN_PARAMETERS + ("seed", "probe_set")):
        return None
    try:
        if probe_source(values["probe_set"]).kind != "embedded":
            return None
    except Exception:  # noqa: BLE001 - a value the kit refuses
        return None
    return WarmRequest(**{k: values[k] for k in SCAN_PARAMETERS}, seed=values["seed"])


def requests_for(notebooks: list[tuple[dict, Path | None]]) -> list[tuple[WarmRequest, int]]:
    """Distinct requests of (notebook, its hand-in folder or None) pairs, with how many asked."""
    counts: dict[WarmRequest, int] = {}
    for nb, folder in notebooks:
        try:
            req = request_for(nb, folder)
        except Exception:  # noqa: BLE001 - one hand-in's odd notebook never stops the class
            req = None
        if req is not None:
            counts[req] = counts.get(req, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].label()))


WARM_TIMEOUT = 6 * 3600.0  # seconds for the whole warm step (a scan is ~85 s per layer on 2 cores)


def warm_class(subs, root: Path, env: dict) -> None:
    """The grader's warm step: read what the hand-ins (``handins.Submission``) of *root* will
    scan and run this module as a process of the kit's code with *env* (its ``LAB_CACHE_DIR``:
    the instructor's cache); its progress lines go to the terminal."""
    import subprocess

    from ..config import KIT_ROOT
    from .notebooks import MAX_FILE_BYTES, load_notebook
    from .reports import group_of
    from .student_kernel import read_nofollow

    notebooks = []
    for sub in subs:
        if sub.problem is not None or sub.link is not None:
            continue
        where = root if sub.base is None else sub.base
        try:
            loaded = load_notebook(read_nofollow(where / sub.rel, MAX_FILE_BYTES))
        except OSError:
            continue
        if loaded.nb is not None:
            folder = (where / sub.rel).parent if group_of(sub.rel) is not None else None
            notebooks.append((loaded.nb, folder))
    wanted = requests_for(notebooks)
    if not wanted:
        print("[submissions] warm: no hand-in uses the kit's probe set; nothing to warm", file=sys.stderr)
        return
    print(f"[submissions] warm: {len(wanted)} scan(s) for {sum(n for _, n in wanted)} notebook(s): "
          + "; ".join(f"{r.label()} ({n})" for r, n in wanted), file=sys.stderr)
    try:
        rc = subprocess.run([sys.executable, "-m", "lab_utils.submissions.warm"],
                            input=json.dumps([asdict(r) for r, _ in wanted]).encode(), env=env, cwd=KIT_ROOT,
                            stdout=subprocess.DEVNULL, timeout=WARM_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        rc = None
    if rc != 0:
        print(f"[submissions] warm: {'stopped after ' + str(int(WARM_TIMEOUT)) + ' s' if rc is None else 'some scans failed'}"
              "; the hand-ins compute what is missing themselves", file=sys.stderr)


def warm(requests: list[WarmRequest], log=sys.stderr) -> list[dict]:
    """Scan (and check the model) for each request, in the cache of this process; one result
    per request: {"label", "seconds"} or {"label", "error"}."""
    import lab_utils as lab
    from ..config import LabError
    from ..params import DEFAULTS

    results = []
    checked: set = set()
    for i, req in enumerate(requests, 1):
        t0 = time.monotonic()
        # Every value given: the instructor's own lab choice (filter, ascent size) plays no part.
        params = {**DEFAULTS, **asdict(req), "filter_index": 0, "top_k": 1}
        try:
            setup = lab.check_parameters(**params)
            setup.scan()
            if (req.model_name, req.seed) not in checked:
                setup.model_check()
                checked.add((req.model_name, req.seed))
            results.append({"label": req.label(), "seconds": round(time.monotonic() - t0, 1)})
            print(f"[warm {i}/{len(requests)}] {req.label()}: {time.monotonic() - t0:.1f} s", file=log)
        except (LabError, ValueError, OSError) as e:
            results.append({"label": req.label(), "error": str(e)[:300]})
            print(f"[warm {i}/{len(requests)}] {req.label()}: not warmed ({str(e)[:200]})", file=log)
    return results


def main() -> int:
    reqs = [WarmRequest(**r) for r in json.loads(sys.stdin.read())]
    from ..config import import_tensorflow_quietly

    import_tensorflow_quietly()
    results = warm(reqs)
    print(json.dumps(results))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
