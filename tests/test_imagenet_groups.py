"""Coarse ImageNet groups from WordNet 3.0 (issue 11, point 2 in part): the script's rule
on a hand-made hierarchy, the shipped file, and the group ranking with n and intervals."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from lab_utils import imagenet, probe

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("make_imagenet_groups", ROOT / "scripts" / "make_imagenet_groups.py")
G = importlib.util.module_from_spec(spec)
spec.loader.exec_module(G)


def noun_line(offset: str, lemma: str, hypernyms: list[str]) -> str:
    ptrs = " ".join(f"@ {h} n 0000" for h in hypernyms)
    return f"{offset} 05 n 01 {lemma} 0 {len(hypernyms):03d} {ptrs} | a gloss\n"


def test_groups_are_the_highest_ancestors_within_the_size_bound(tmp_path):
    # entity(0) > animal(1) > dog(2) > {d1..d6}; animal > bird(3) > {b1..b3}; entity > thing(4) > t1
    lines = ["  1 This software and database is being provided ...\n",
             noun_line("00000000", "entity", []), noun_line("00000001", "animal", ["00000000"]),
             noun_line("00000002", "dog", ["00000001"]), noun_line("00000003", "bird", ["00000001"]),
             noun_line("00000004", "thing", ["00000000"])]
    lines += [noun_line(f"000001{i:02d}", f"dog_{i}", ["00000002"]) for i in range(6)]
    lines += [noun_line(f"000002{i:02d}", f"bird_{i}", ["00000003"]) for i in range(3)]
    lines += [noun_line("00000300", "rock", ["00000004"])]
    data = tmp_path / "data.noun"
    data.write_text("".join(lines), encoding="latin-1")
    nouns = G.read_nouns(data)
    assert nouns["00000101"] == ("dog_1", ["00000002"])
    wnids = [f"n000001{i:02d}" for i in range(6)] + [f"n000002{i:02d}" for i in range(3)] + ["n00000300"]
    groups = G.build_groups(wnids, nouns, max_group=6, min_group=2)
    assert {groups[w]["group"] for w in wnids[:6]} == {"dog"}  # animal holds 9 > 6: dog is the highest fit
    assert {groups[w]["group"] for w in wnids[6:9]} == {"bird"}
    assert groups["n00000300"] == {"group": None, "group_wnid": None}  # a group of one: dropped
    assert G.build_groups(wnids, nouns, max_group=10, min_group=2)["n00000100"]["group"] == "entity"


def test_the_shipped_groups_cover_the_class_index_with_groups_of_at_least_five():
    doc = json.loads(imagenet.GROUPS_PATH.read_text())
    assert "WordNet 3.0" in doc["source"] and doc["rule"]
    groups = imagenet.class_groups()
    assert set(groups) == {w for w, _ in imagenet.class_index().values()}
    sizes: dict = {}
    for g in groups.values():
        if g is not None:
            sizes[g] = sizes.get(g, 0) + 1
    assert len(sizes) == doc["n_groups"] and min(sizes.values()) >= G.MIN_GROUP and max(sizes.values()) <= G.MAX_GROUP
    assert groups["n01530575"] == "bird"  # brambling
    assert groups["n02085620"] != groups["n01530575"]  # a Chihuahua is not a bird


def test_groups_rank_with_images_classes_and_intervals():
    means = np.array([[1.0], [3.0], [5.0], [9.0], [8.0], [0.5]], np.float32)
    wnids = ["n1", "n1", "n2", "n3", "n3", "n9"]
    scan = probe.Scan("tiny", "c2", means, ["a", "a", "b", "c", "c", "z"], wnids,
                      [f"img{i}.jpg" for i in range(6)], "test")
    ranked = probe.rank_groups(scan, 0, groups={"n1": "birds", "n2": "birds", "n3": "dogs", "n9": None})
    assert ranked["group"].tolist() == ["dogs", "birds"]  # n9 has no group: left out
    birds = ranked.set_index("group").loc["birds"]
    assert birds["mean_activation"] == pytest.approx(3.0) and birds["n_images"] == 3 and birds["n_classes"] == 2
    assert 1.0 <= birds["ci_low"] < 3.0 < birds["ci_high"] <= 5.0
    assert probe.format_groups(ranked).splitlines()[0].split()[:3] == ["rank", "group", "mean_activation"]
    none = probe.rank_groups(scan, 0, groups={})  # e.g. a student's folder without wnids
    assert none.empty and probe.format_groups(none).startswith("no ImageNet groups")
