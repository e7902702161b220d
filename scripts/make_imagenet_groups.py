"""Build data/imagenet_groups.json: a coarse group for each of the 1000 ImageNet classes,
from the WordNet 3.0 noun hierarchy (the version ImageNet's wnids come from).

    apt-get install wordnet-base                      # Debian: /usr/share/wordnet/data.noun
    python scripts/make_imagenet_groups.py [--wordnet /usr/share/wordnet/data.noun]

A wnid ``n02084071`` is the noun synset at byte offset 02084071 of ``data.noun``; its
hypernyms are its ``@`` / ``@i`` pointers. A class's group is its highest ancestor whose
subtree holds at most ``MAX_GROUP`` of the 1000 classes (so groups never nest: two
classes share a group or their groups are disjoint); classes whose group would have fewer
than ``MIN_GROUP`` classes are left without a group (``null``). With several hypernym
paths, the ancestor with the most classes (within the bound) wins; ties: lower offset.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLASS_INDEX = ROOT / "data" / "imagenet_class_index.json"
OUT = ROOT / "data" / "imagenet_groups.json"
DEFAULT_WORDNET = Path("/usr/share/wordnet/data.noun")
MAX_GROUP = 60
MIN_GROUP = 5


def read_nouns(path: Path) -> dict[str, tuple[str, list[str]]]:
    """offset (8 digits) -> (first lemma, hypernym offsets), from a WordNet ``data.noun``."""
    nouns = {}
    with open(path, encoding="latin-1") as fh:
        for line in fh:
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            offset, n_words = fields[0], int(fields[3], 16)
            lemma = fields[4]
            i = 4 + 2 * n_words
            n_ptrs = int(fields[i])
            hypernyms = [fields[i + 1 + 4 * k + 1] for k in range(n_ptrs)
                         if fields[i + 1 + 4 * k] in ("@", "@i") and fields[i + 1 + 4 * k + 2] == "n"]
            nouns[offset] = (lemma, hypernyms)
    return nouns


def ancestors(offset: str, nouns: dict) -> set[str]:
    """Every hypernym of *offset*, transitively (itself included)."""
    seen, todo = set(), [offset]
    while todo:
        o = todo.pop()
        if o not in seen:
            seen.add(o)
            todo.extend(nouns[o][1])
    return seen


def build_groups(wnids: list[str], nouns: dict, max_group: int = MAX_GROUP, min_group: int = MIN_GROUP) -> dict:
    """wnid -> {"group": name or None, "group_wnid": wnid or None}."""
    offsets = {w: w[1:] for w in wnids}
    missing = [w for w, o in offsets.items() if o not in nouns]
    if missing:
        raise SystemExit(f"{len(missing)} wnids are not in this WordNet (not 3.0?): {', '.join(missing[:5])}")
    anc = {w: ancestors(o, nouns) for w, o in offsets.items()}
    size: dict[str, int] = {}
    for a in anc.values():
        for o in a:
            size[o] = size.get(o, 0) + 1
    chosen = {}
    for w in wnids:
        fitting = [o for o in anc[w] if size[o] <= max_group]
        chosen[w] = max(fitting, key=lambda o: (size[o], -int(o)))
    members: dict[str, int] = {}
    for o in chosen.values():
        members[o] = members.get(o, 0) + 1
    out = {}
    for w in wnids:
        o = chosen[w]
        keep = members[o] >= min_group
        out[w] = {"group": nouns[o][0].replace("_", " ") if keep else None, "group_wnid": f"n{o}" if keep else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet", type=Path, default=DEFAULT_WORDNET, help=f"WordNet 3.0 data.noun (default {DEFAULT_WORDNET})")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    if not args.wordnet.is_file():
        print(f"make_imagenet_groups: {args.wordnet} not found; on Debian: apt-get install wordnet-base",
              file=sys.stderr)
        return 2
    index = json.loads(CLASS_INDEX.read_text())
    wnids = [index[str(i)][0] for i in range(len(index))]
    groups = build_groups(wnids, read_nouns(args.wordnet))
    named = sorted({g["group"] for g in groups.values() if g["group"]})
    doc = {"source": "WordNet 3.0 noun hypernyms (Princeton University; Debian package wordnet-base, "
                     "/usr/share/wordnet/data.noun), built by scripts/make_imagenet_groups.py",
           "rule": f"highest ancestor holding at most {MAX_GROUP} of the 1000 classes; groups of fewer than "
                   f"{MIN_GROUP} classes dropped (group null)",
           "licence": "WordNet 3.0 licence (https://wordnet.princeton.edu/license-and-commercial-use)",
           "n_groups": len(named), "classes": groups}
    args.out.write_text(json.dumps(doc, indent=0, sort_keys=True) + "\n")
    n_none = sum(g["group"] is None for g in groups.values())
    print(f"wrote {args.out}: {len(named)} groups, {len(groups) - n_none} classes grouped, {n_none} without a group",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
