"""How each stage's cost grows with the data: MicroLens-100K-shaped sources at 1k, 10k and 100k users.

    python bench/bench_scale.py                                  # 1k, 10k, 100k users (hours at 100k on 2 cores)
    python bench/bench_scale.py --sizes 1000,10000               # the small sizes only
    python bench/bench_scale.py --sizes 1000 --softmax full      # one objective

Data: `captionrec.sample.generate` without videos (titles + interactions, `render=False`) in MicroLens-100K's
proportions: 19,738 items and 719,405 interactions per 100,000 users (0.197 items and 7.19 interactions per user),
8 weeks. Stages, each its own `captionrec <stage>` process (so each pays its own JVM start, as a job does):
ingest -> embed (title, the packaged MiniLM) -> experiment (title x {sasrec, two_tower}, 1 epoch, seed 42; once
per objective: `full` softmax and `uniform` sampled negatives, each its own MLflow experiment) -> report (of the
last grid). Train's test step is the full-catalogue evaluation of every user.

Per stage: wall seconds; CPU seconds of the whole process tree (the CLI's Python, the Spark JVM, Spark's Python
workers and the training ranks: each process's user + system time, sampled every 0.25 s and summed over every pid
seen, so a process living < 0.25 s is missed); peak RSS of the tree (summed) and of the driver alone (the CLI's
Python + the JVM, which hold what a driver-side collect would). Between consecutive sizes, the growth exponent
b = log(t2 / t1) / log(n2 / n1) with n = users + interactions (b = 1: linear; n log n over 10x is about 1.1).
Results: `bench/results/scale.json` (merged by size, so sizes can be run separately) and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

ITEMS_PER_USER = 19_738 / 100_000
INTERACTIONS_PER_USER = 719_405 / 100_000
RESULTS = ROOT / "bench" / "results" / "scale.json"


class TreeMeter:
    """CPU seconds (summed over every pid seen) and peak RSS (tree and driver) of a process tree, sampled."""

    def __init__(self, pid: int, every_s: float = 0.25):
        import psutil

        self.root = psutil.Process(pid)
        self.every_s = every_s
        self.cpu: dict[int, float] = {}
        self.peak_tree = self.peak_driver = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        tree = driver = 0
        try:
            procs = [self.root, *self.root.children(recursive=True)]
        except Exception:  # noqa: BLE001 - the root just exited
            return
        for p in procs:
            try:
                t = p.cpu_times()
                rss = p.memory_info().rss
                name = p.name()
            except Exception:  # noqa: BLE001 - a worker that just exited
                continue
            self.cpu[p.pid] = max(self.cpu.get(p.pid, 0.0), t.user + t.system)
            tree += rss
            if p.pid == self.root.pid or name == "java":
                driver += rss
        self.peak_tree, self.peak_driver = max(self.peak_tree, tree), max(self.peak_driver, driver)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def start(self) -> "TreeMeter":
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return {
            "cpu_seconds": round(sum(self.cpu.values()), 1),
            "peak_rss_gb": round(self.peak_tree / 2**30, 2),
            "peak_driver_rss_gb": round(self.peak_driver / 2**30, 2),
        }


def run_stage(stage: str, overrides: list[str], cwd: Path, log: Path) -> dict[str, float]:
    """One `captionrec <stage>` process, measured; its output goes to `log`; a failure stops the bench."""
    cmd = [sys.executable, "-m", "captionrec.cli", stage, *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lib")}
    t0 = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        meter = TreeMeter(proc.pid).start()
        rc = proc.wait()
        m = meter.stop()
    m["wall_seconds"] = round(time.perf_counter() - t0, 1)
    if rc != 0:
        raise SystemExit(f"{stage} failed (rc {rc}); see {log}")
    print(
        f"  {stage:<22} wall {m['wall_seconds']:>8.1f} s  cpu {m['cpu_seconds']:>8.1f} s  "
        f"peak {m['peak_rss_gb']:.2f} GB (driver {m['peak_driver_rss_gb']:.2f})",
        flush=True,
    )
    return m


def generate_source(users: int, out: Path) -> dict[str, int]:
    from captionrec.sample.generate import generate

    items = max(2, round(users * ITEMS_PER_USER))
    s = generate(
        out,
        seed=7,
        n_items=items,
        n_users=users,
        render=False,
        overwrite=True,
        mean_interactions_per_user=INTERACTIONS_PER_USER,
    )
    return {"users": s["users"], "items": s["items_total"], "interactions": s["interactions_valid"]}


def run_size(users: int, work: Path, softmaxes: list[str], epochs: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    log = work / "bench_scale.log"
    t0 = time.perf_counter()
    counts = generate_source(users, work / "source")
    print(
        f"== {users} users: {counts['items']} items, {counts['interactions']} interactions "
        f"(generated in {time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    common = [
        f"data.source={work / 'source'}",
        "data.name=sample",
        "data.videos=none",
        f"storage.root={work / 'lakehouse'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"report.out_dir={work / 'reports'}",
    ]
    stages = {
        "ingest": run_stage("ingest", common, work, log),
        "embed": run_stage("embed", [*common, "embed.feature_sets=[title]"], work, log),
    }
    for softmax in softmaxes:
        overrides = f"experiment.train_overrides=[log_model=false,epochs={epochs},negatives.mode={softmax}]"
        stages[f"experiment_{softmax}"] = run_stage(
            "experiment",
            [
                *common,
                "experiment.feature_sets=[title]",
                "experiment.models=[sasrec,two_tower]",
                "experiment.seeds=[42]",
                overrides,
                f"tracking.experiment=scale-{softmax}",
            ],
            work,
            log,
        )
    stages["report"] = run_stage("report", [*common, f"tracking.experiment=scale-{softmaxes[-1]}"], work, log)
    return {**counts, "epochs": epochs, "stages": stages}


def growth(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per stage, the exponent of wall and CPU time between consecutive sizes (n = users + interactions)."""
    sizes = sorted(results, key=int)
    out: dict[str, dict[str, float]] = {}
    for a, b in zip(sizes, sizes[1:]):
        ra, rb = results[a], results[b]
        ratio_n = (rb["users"] + rb["interactions"]) / (ra["users"] + ra["interactions"])
        for stage in rb["stages"]:
            if stage not in ra["stages"]:
                continue
            sa, sb = ra["stages"][stage], rb["stages"][stage]
            out.setdefault(stage, {})[f"{a}->{b}"] = {
                k: round(math.log(max(sb[k], 1e-3) / max(sa[k], 1e-3)) / math.log(ratio_n), 2)
                for k in ("wall_seconds", "cpu_seconds")
            }
    return out


def table(results: dict[str, dict]) -> str:
    exps = growth(results)
    lines = [
        "| users | items | interactions | stage | wall s | CPU s | peak RSS GB (driver) | growth b (wall, cpu) |",
        "|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    prev = None
    for size in sorted(results, key=int):
        r = results[size]
        for stage, m in r["stages"].items():
            g = exps.get(stage, {}).get(f"{prev}->{size}") if prev else None
            gs = f"{g['wall_seconds']}, {g['cpu_seconds']}" if g else ""
            lines.append(
                f"| {r['users']} | {r['items']} | {r['interactions']} | {stage} | {m['wall_seconds']} | "
                f"{m['cpu_seconds']} | {m['peak_rss_gb']} ({m['peak_driver_rss_gb']}) | {gs} |"
            )
        prev = size
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000", help="users per run, comma-separated")
    ap.add_argument("--softmax", default="full,uniform", help="negatives.mode values, comma-separated")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--work", default="/tmp/captionrec-bench-scale", help="work folder (one subfolder per size)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text())["sizes"] if out.exists() else {}
    for users in (int(s) for s in args.sizes.split(",")):
        results[str(users)] = run_size(users, Path(args.work) / str(users), args.softmax.split(","), args.epochs)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"sizes": results, "growth": growth(results), "cores": os.cpu_count()}, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
