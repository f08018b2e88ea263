"""Do two runs of the pipeline print summaries of the same shape? (.ci/runtime.sh: main env vs runtime env)

    python .ci/summary_shape.py MAIN.json OTHER.json              two runs' summaries
    python .ci/summary_shape.py --write SHAPE.json MAIN.json      write MAIN's shape (the committed reference)
    python .ci/summary_shape.py --golden SHAPE.json OTHER.json    OTHER against a written shape

Each file holds the stage summaries `captionrec all --json` printed (JSON documents one after another). The
shape of a summary is the set of its key paths, recursively (`stage`, `tables/items/rows`, `runs[]/status`: a
list contributes the keys of the mappings in it); values are not compared (timings, counts and the tiny
models' noise differ between runs). Exit 1 with the differing paths per stage, 0 when every stage matches.
"""

from __future__ import annotations

import json
import os
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


def shapes(summaries: list[dict[str, Any]]) -> list[tuple[Any, set[str]]]:
    """(stage, key paths) per summary, in order."""
    return [(s.get("stage"), shape(s)) for s in summaries]


def compare(main: list[dict[str, Any]] | list[tuple[Any, set[str]]], other: list[dict[str, Any]]) -> list[str]:
    """Differences between two runs' summaries (or a written shape and a run): stage order, then per stage the
    key paths only one side has."""
    ref = shapes(main) if main and isinstance(main[0], dict) else main
    run = shapes(other)
    if [st for st, _ in ref] != [st for st, _ in run]:
        return [f"stages differ: main {[st for st, _ in ref]}, other {[st for st, _ in run]}"]
    problems = []
    for (stage, sa), (_, sb) in zip(ref, run):
        problems += [f"{stage}: only in main: {path}" for path in sorted(sa - sb)]
        problems += [f"{stage}: only in other: {path}" for path in sorted(sb - sa)]
    return problems


def write_shape(summaries: list[dict[str, Any]]) -> str:
    """The reference file: per stage, in order, its sorted key paths (JSON, one path per line for readable diffs)."""
    doc = [{"stage": s.get("stage"), "paths": sorted(shape(s))} for s in summaries]
    return json.dumps(doc, indent=1) + "\n"


def read_shape(text: str) -> list[tuple[Any, set[str]]]:
    """(stage, key paths) per stage, from a file `write_shape` wrote."""
    return [(entry["stage"], set(entry["paths"])) for entry in json.loads(text)]


def main(argv: list[str]) -> int:
    mode = argv[0] if argv and argv[0] in ("--write", "--golden") else None
    if len(argv) != (3 if mode else 2):
        print(__doc__, file=sys.stderr)
        return 2
    if mode == "--write":
        with open(argv[2]) as f:
            runs = load_summaries(f.read())
        if not runs:
            print(f"[shape] FAIL: no summaries in {argv[2]}", file=sys.stderr)
            return 1
        with open(argv[1], "w") as f:
            f.write(write_shape(runs))
        print(f"[shape] wrote {argv[1]}: {len(runs)} stages ({', '.join(str(s.get('stage')) for s in runs)})")
        return 0
    if mode == "--golden" and not os.path.exists(argv[1]):
        print(f"[shape] FAIL: no reference shape {argv[1]}: write it with 'make summary-shape'", file=sys.stderr)
        return 1
    with open(argv[-2]) as fa, open(argv[-1]) as fb:
        main_runs = read_shape(fa.read()) if mode else load_summaries(fa.read())
        other = load_summaries(fb.read())
    if not main_runs:
        print(f"[shape] FAIL: no summaries in {argv[-2]}", file=sys.stderr)
        return 1
    problems = compare(main_runs, other)
    if problems:
        print("[shape] FAIL: the summaries differ in shape:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    ref = shapes(main_runs) if mode is None else main_runs
    n = sum(len(paths) for _, paths in ref)
    print(f"[shape] same shape: {len(ref)} stages ({', '.join(str(st) for st, _ in ref)}), {n} key paths")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
