"""--verify (issue 12, point 3): the tables a notebook printed against a recomputation for the
parameters it printed; stale and edited outputs are told apart from matching ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab_utils import evidence as E
from lab_utils import verify as V

ROOT = Path(__file__).resolve().parent.parent


def _stored(step: int) -> dict:
    return json.loads(next((ROOT / "notebooks").glob(f"0{step}_*.ipynb")).read_text())


def test_the_stored_notebooks_print_the_tables_verify_reads():
    tables = {**E.printed_tables(_stored(2)), **E.printed_tables(_stored(3))}
    assert tables["top_classes"].split()[:6] == ["rank", "class", "mean_activation", "n_images", "ci_low", "ci_high"]
    assert len(tables["top_classes"].split("\n")) == 11  # header + top_n rows
    assert tables["channel_table"].split()[:2] == ["rank", "channel"]
    assert len(tables["channel_table"].split("\n")) == 11  # header + top_k rows


def test_parse_shown_reads_the_printed_reprs():
    assert V.parse_shown({"model_name": "'vgg16'", "filter_index": "31", "probe_set": "None",
                          "test_image": "'/home/me/cat.jpg'", "unknown": "1"}) == \
        {"model_name": "vgg16", "filter_index": 31, "probe_set": None}
    with pytest.raises(ValueError, match="not a value the kit prints"):
        V.parse_shown({"filter_index": "__import__('os')"})


def test_compare_tells_matching_edited_and_missing_tables_apart():
    table = "rank channel l2_norm\n   1      7 0.5\n   2      3 0.4"
    expected = {"channel_table": table, "top_classes": "rank class\n 1 cat"}
    assert V.compare({"channel_table": table.replace("   1", " 1"), "top_classes": "rank class\n 1 cat"},
                     expected) == {"channel_table": V.MATCHES, "top_classes": V.MATCHES}  # spacing aside
    edited = V.compare({"channel_table": table.replace("0.4", "0.9")}, expected)
    assert edited["channel_table"].startswith("differs from a recomputation") and "row 2" in edited["channel_table"]
    assert edited["top_classes"].startswith("not printed")
    assert V.compare({}, {"error": "no parameters"})["channel_table"] == "not verified: no parameters"


@pytest.mark.weights
def test_a_recomputation_matches_the_kits_own_channel_table_and_catches_a_stale_one(vgg16):
    shown = E.parameters_shown(_stored(3))
    printed = E.printed_tables(_stored(3))
    elsewhere = V.expected_tables({**shown, "probe_set": "'/'", "probe_limit": "12"})  # printed by the student
    assert "top_classes" not in elsewhere and "only the kit's embedded set" in elsewhere["top_classes_error"]
    assert V.compare(printed, elsewhere)["top_classes"].startswith("not verified")  # and "/" was never scanned
    expected = V.expected_tables({k: v for k, v in shown.items() if k != "probe_set"} | {"probe_limit": "12"})
    assert V.compare(printed, expected)["channel_table"] == V.MATCHES
    stale = V.expected_tables({**shown, "filter_index": "7", "probe_limit": "12"})  # printed for filter 31
    assert V.compare(printed, stale)["channel_table"].startswith("differs from a recomputation")
