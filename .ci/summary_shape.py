"""Do two runs of the pipeline print summaries of the same shape? (.ci/runtime.sh: main env vs runtime env)

    python .ci/summary_shape.py MAIN.json OTHER.json

Each file holds the stage summaries `captionrec all --json` printed (JSON documents one after another). The
shape of a summary is the set of its key paths, recursively (`stage`, `tables/items/rows`, `runs[]/status`: a
list contributes the keys of the mappings in it); values are not compared (timings, counts and the tiny
models' noise differ between runs). Exit 1 with the differing paths per stage, 0 when every stage matches.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def load_summaries(text: str) -> list[dict[str, Any]]:
    """The JSON documents in `text`, in order (whitespace between them)."""
    dec, pos, out = json.JSONDecoder(), 0, []
    while text[pos:].strip():
        pos += len(text[pos:]) - len(text[pos:].lstrip())
        doc, pos = dec.raw_decode(text, pos)
        if not isinstance(doc, dict):
            raise ValueError(f"a summary is a JSON object, got {type(doc).__name__}")
        out.append(doc)
    return out


def shape(obj: Any, prefix: str = "") -> set[str]:
    """Key paths of `obj` (mappings recursively; lists through the mappings they hold)."""
    paths: set[str] = set()
    if isinstance(obj, dict):
        for key, value in obj.items():
            path = f"{prefix}/{key}" if prefix else str(key)
            paths.add(path)
            paths |= shape(value, path)
    elif isinstance(obj, list):
        for item in obj:
            paths |= shape(item, f"{prefix}[]")
    return paths


def compare(main: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[str]:
    """Differences between two runs' summaries: stage order, then per stage the key paths only one side has."""
    stages_a = [s.get("stage") for s in main]
    stages_b = [s.get("stage") for s in other]
    if stages_a != stages_b:
        return [f"stages differ: main {stages_a}, other {stages_b}"]
    problems = []
    for a, b in zip(main, other):
        sa, sb = shape(a), shape(b)
        for path in sorted(sa - sb):
            problems.append(f"{a.get('stage')}: only in main: {path}")
        for path in sorted(sb - sa):
            problems.append(f"{a.get('stage')}: only in other: {path}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as fa, open(argv[1]) as fb:
        main_runs, other = load_summaries(fa.read()), load_summaries(fb.read())
    if not main_runs:
        print(f"[shape] FAIL: no summaries in {argv[0]}", file=sys.stderr)
        return 1
    problems = compare(main_runs, other)
    if problems:
        print("[shape] FAIL: the summaries differ in shape:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    n = sum(len(shape(s)) for s in main_runs)
    print(f"[shape] same shape: {len(main_runs)} stages ({', '.join(str(s.get('stage')) for s in main_runs)}), {n} key paths")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
