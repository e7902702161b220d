"""``render.sh --submissions DIR --verify``: recompute the tables a hand-in printed, for the
parameters that hand-in shows, and say whether they match (a stale output, from an earlier
run with other values, or an edited one does not).

The grader's own process does this, with the kit's code and the shared cache; no student
code runs. The tables (``evidence.PRINTED_TABLES``): the channel table of notebook 03
(``circuits.format_channel_table``; weights only, well under a second) and the top classes
of notebook 02 (``probe.format_class_table``; needs the probe scan: ~85 s for a layer not
in the cache, then shared by every hand-in with that layer).

    python -m lab_utils.verify < requests.json > results.json
    requests: [{"parameters": {name: repr as printed}}, ...] -> [{table: text} or {"error": why}, ...]
"""
from __future__ import annotations

import ast
import json
import sys

# table -> the lab step whose notebook prints it
VERIFIED_TABLES = {"top_classes": 2, "channel_table": 3}
MATCHES = "matches a recomputation"


def parse_shown(shown: dict) -> dict:
    """The parameter values a notebook printed (reprs, ``evidence.parameters_shown``) as Python
    values; ``test_image`` is left out (a file on the student's machine, no table uses it)."""
    from .params import PARAMETERS

    values = {}
    for name, text in shown.items():
        if name not in PARAMETERS or name == "test_image":
            continue
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"{name} = {text[:60]} is not a value the kit prints") from None
    return values


def expected_tables(shown: dict) -> dict:
    """{table name: its text} recomputed for the printed parameters *shown*, or {"error": why}."""
    from .config import LabError
    from .params import probe_source

    try:
        params = parse_shown(shown)
        if not params:
            return {"error": "the notebook printed no parameters (its check cell did not run)"}
        source = probe_source(params.get("probe_set"))
        # The printed values come from the student: a probe_set naming a folder on the grader's
        # machine ("/") must not make the grader scan it. Only the kit's own set is rescanned.
        if source.kind != "embedded":
            params["probe_set"] = None
        import lab_utils as lab
        from .circuits import format_channel_table

        setup = lab.check_parameters(**params)
        out = {"channel_table": format_channel_table(setup.channel_table())}
        if source.kind == "embedded":
            out["top_classes"] = lab.format_class_table(setup.top_classes())
        else:
            out["top_classes_error"] = (f"probe set {source.describe()[:80]}: only the kit's embedded set is "
                                        f"recomputed")
        return out
    except (LabError, ValueError) as exc:
        return {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - one request's failure (memory, a file) is that request's answer
        return {"error": f"the recomputation failed: {type(exc).__name__}: {str(exc)[:200]}"}


def compare(printed: dict, expected: dict) -> dict[str, str]:
    """table name -> what the grader reads: ``MATCHES``, "differs from a recomputation ...",
    "not printed" or "not verified: why"."""
    result = {}
    for name in VERIFIED_TABLES:
        if "error" in expected:
            result[name] = f"not verified: {expected['error']}"
        elif name not in expected:
            result[name] = f"not verified: {expected.get(name + '_error', 'not recomputed')}"
        elif name not in printed:
            result[name] = "not printed (the cell did not run, or its output was removed)"
        elif _rows(printed[name]) == _rows(expected[name]):
            result[name] = MATCHES
        else:
            got, want = _rows(printed[name]), _rows(expected[name])
            row = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            result[name] = (f"differs from a recomputation for its own parameters, first at row {row} "
                            f"(a stale or edited output)")
    return result


def _rows(text: str) -> list[str]:
    return [" ".join(line.split()) for line in text.strip().split("\n")]


def main() -> int:
    requests = json.loads(sys.stdin.read())
    from .config import import_tensorflow_quietly

    import_tensorflow_quietly()
    results = [expected_tables(r.get("parameters", {})) for r in requests]
    sys.stdout.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
