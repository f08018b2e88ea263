"""Did a change alter what the pipeline computes? Run ingest -> caption -> embed -> train on the sample, dump the tables.

    python scripts/snapshot_tables.py run OUT.json [--workdir DIR] [--models models/tiny]
    python scripts/snapshot_tables.py compare BEFORE.json AFTER.json

`run` runs the four stages with the interpreter's `-m captionrec.cli` (the code on its path: this checkout, or an old
commit's worktree put first with `PYTHONPATH=<worktree>/lib`, together with `--repo <worktree>` for its conf/) in a fresh working directory (its own lakehouse and sqlite MLflow store), then writes every
Delta table's rows (sorted, values as JSON) and the train summary's metrics to OUT.json. Columns that record when or
where a row was made (`*_at`, durations, run ids, hosts) are left out, and the working directory in error details
reads `<work>`: they differ between any two runs (two runs of one commit compare equal). The
copied sample files get one fixed mtime, so media fingerprints (size and mtime) agree across checkouts. `compare`
prints the differences per table and exits 1 when there is any.

To check a refactor: run it on the old commit (a `git worktree` with `PYTHONPATH=<worktree>/lib`) and on the new one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

STAGES = ("ingest", "caption", "embed", "train")
# Columns (and train-summary keys) that record when, where or how fast a row was made: they differ between any two
# runs. Everything else -- texts, versions, statuses, frame times, durations of the media -- is compared.
VOLATILE = re.compile(
    r"^(ingested_at|created_at|captioned_at|embedded_at|seen_at|updated_at|video_mtime|"
    r"decode_s|model_s|total_s|seconds|run_id|parent_run_id|experiment_id|host|worker|"
    r"tracking_uri|artifact_uri|elapsed_s|wall_s|\w+_seconds|\w+_per_s|\w+_mb)$"
)
TRAIN_ARGS = ("train.epochs=2",)
FIXED_MTIME = 1_700_000_000


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in sorted(value.items())}
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def dump_tables(root: Path) -> dict[str, list[dict[str, Any]]]:
    from deltalake import DeltaTable

    tables = {}
    for log in sorted(root.rglob("_delta_log")):
        table = log.parent
        name = table.relative_to(root).as_posix()
        rows = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
        kept = [{k: _jsonable(v) for k, v in sorted(r.items()) if not VOLATILE.search(k)} for r in rows]
        tables[name] = sorted(kept, key=lambda r: json.dumps(r, sort_keys=True))
    return tables


def _metrics(summary: Any) -> Any:
    """The numbers of a train summary that describe the model (not the run): metric-like keys, recursively."""
    if isinstance(summary, dict):
        out = {k: _metrics(v) for k, v in sorted(summary.items()) if not VOLATILE.search(k)}
        return {k: v for k, v in out.items() if v not in ({}, [], None)}
    if isinstance(summary, list):
        return [_metrics(v) for v in summary]
    return _jsonable(summary)


def run(out: Path, workdir: Path | None, models: Path, repo: Path) -> None:
    work = Path(workdir or tempfile.mkdtemp(prefix="snapshot-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copytree(repo / "data" / "sample", work / "data" / "sample")
    for f in (work / "data" / "sample").rglob("*"):  # one mtime for every checkout: fingerprints hold it
        os.utime(f, (FIXED_MTIME, FIXED_MTIME))
    shutil.copytree(repo / "conf", work / "conf")
    env = dict(os.environ, PYTHONHASHSEED="0")
    summaries = {}
    for stage in STAGES:
        extra = TRAIN_ARGS if stage == "train" else ()
        cmd = [
            sys.executable,
            "-m",
            "captionrec.cli",
            "--json",
            stage,
            f"caption.tiny_models_dir={models.resolve()}",
            f"embed.tiny_models_dir={models.resolve()}",
            *extra,
        ]
        proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{stage} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        docs = proc.stdout[proc.stdout.index("{") :]
        summaries[stage] = json.JSONDecoder().raw_decode(docs)[0]
    snapshot = {"tables": dump_tables(work / "lakehouse"), "train": _metrics(summaries["train"])}
    # paths inside error details name the working directory: the same file in any run reads `<work>/...`
    out.write_text(json.dumps(snapshot, indent=1, sort_keys=True).replace(str(work.resolve()), "<work>"))
    print(f"{out}: {', '.join(f'{k} {len(v)} rows' for k, v in snapshot['tables'].items())}")


def compare(before: Path, after: Path) -> int:
    a, b = json.loads(before.read_text()), json.loads(after.read_text())
    bad = 0
    for name in sorted(set(a["tables"]) | set(b["tables"])):
        ra, rb = a["tables"].get(name), b["tables"].get(name)
        if ra == rb:
            print(f"same      {name}: {len(ra)} rows")
            continue
        bad += 1
        if ra is None or rb is None:
            print(f"DIFFERENT {name}: only in {'after' if ra is None else 'before'}")
            continue
        cols = sorted({k for r in ra + rb for k in r})
        diff = [c for c in cols if [r.get(c) for r in ra] != [r.get(c) for r in rb]]
        print(f"DIFFERENT {name}: {len(ra)} vs {len(rb)} rows; columns differing (in sorted order): {diff}")
    same_train = _metrics(a["train"]) == _metrics(b["train"])  # today's VOLATILE, also over older snapshots
    print(f"{'same     ' if same_train else 'DIFFERENT'} train summary metrics")
    return 1 if bad or not same_train else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--workdir", type=Path)
    r.add_argument("--models", type=Path, default=Path("models/tiny"))
    r.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.out, args.workdir, args.models, args.repo)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
