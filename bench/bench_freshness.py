"""Freshness without retraining (issue 21, point 5): 10 new videos land in the source; how long until the
served tables show them, with the model trained before they existed.

    python bench/bench_freshness.py                       # the sample, 10 new videos, target <= 180 s
    python bench/bench_freshness.py --new 5 --epochs 2 --json /tmp/fresh.json

What runs is the pipeline's own stages (`captionrec.cli.run_stage`: ingest -> caption -> embed -> train ->
recommend) in ONE process with one SparkSession (local[2], delta-rs tables, MLflow on sqlite, all in a temp
working folder; tiny random caption models from `models/tiny`). Setup (not timed against the target): copy
`data/sample` into the work folder, run ingest -> caption -> embed once (`caption.kinds=[video]`,
`embed.feature_sets=[mllm_video]`: the cheapest caption feature set), train a Two-Tower on `mllm_video` once
(log_model=true, few epochs) and run `recommend run_id=<that run>` once.

Then the timed part: `--new` videos land in the source: new item ids (90001, ...) whose media are copies of
sample clips (so the tiny models caption them for real) and whose titles come from the clip's topic's title
templates (`captionrec.sample.topics`). The clock starts when the files and title rows are written; ingest,
caption, embed and recommend run incrementally (no training). Reported: each stage's seconds; the wall time from
landing to the first commit of `similar_items` and of `recommendations` that holds the new items (the Delta
commit timestamps); how many new items are in `similar_items`, in any user's list, and in at least one user's
top 10. Target: landing -> both tables <= `--target-s` (180 s on the 2-core machine with the tiny models).
Exit code 1 when the target is missed or a new item never shows up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

NEW_ID_START = 90001


def overrides(work: Path, epochs: int) -> list[str]:
    """The config of every stage: everything under the work folder, the cheapest caption feature set."""
    tiny = ROOT / "models" / "tiny"
    return [
        f"data.source={work / 'source'}",
        f"storage.root={work / 'lake'}",
        "storage.backend=delta-rs",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        f"tracking.artifact_location={work / 'mlartifacts'}",
        "tracking.experiment=freshness",
        f"report.out_dir={work / 'reports'}",
        f"caption.tiny_models_dir={tiny}",
        f"embed.tiny_models_dir={tiny}",
        "caption.kinds=[video]",
        "embed.feature_sets=[mllm_video]",
        f"train.inputs_dir={work / 'train_inputs'}",
        "train.model=two_tower",
        "train.features=mllm_video",
        "train.log_model=true",
        f"train.epochs={epochs}",
        "train.num_processes=1",
        "train.torch_threads=1",
        "train.split.num_windows=1",
    ]


def pick_clips(manifest: dict, n: int) -> list[tuple[str, str]]:
    """(source item id, topic) for `n` clean clips with audio, round-robin over the topics."""
    items = manifest["items"]
    clean = set(manifest["clean_items"]) - set(manifest.get("no_audio_items", []))
    by_topic: dict[str, list[str]] = {}
    for item_id in sorted(clean, key=int):
        by_topic.setdefault(items[item_id]["topic"], []).append(item_id)
    topics = sorted(by_topic)
    return [(by_topic[topics[k % len(topics)]][k // len(topics)], topics[k % len(topics)]) for k in range(n)]


def land(source: Path, n: int) -> list[dict]:
    """Write `n` new videos (copies of sample clips) and their title rows into the source; returns them."""
    import csv

    from captionrec.sample.topics import TOPICS

    manifest = json.loads((source / "manifest.json").read_text())
    templates = {t.name: t for t in TOPICS}
    new = []
    for k, (src_id, topic) in enumerate(pick_clips(manifest, n)):
        t = templates[topic]
        title = t.title_templates[k % len(t.title_templates)].format(w=t.words[k % len(t.words)], n=k + 1)
        new.append({"item_id": str(NEW_ID_START + k), "copied_from": src_id, "topic": topic, "title": title})
    for row in new:
        shutil.copyfile(source / "videos" / f"{row['copied_from']}.mp4", source / "videos" / f"{row['item_id']}.mp4")
    titles = source / manifest["layout"]["titles_file"]
    text = titles.read_text()
    with titles.open("a", newline="") as f:
        if text and not text.endswith("\n"):
            f.write("\n")
        csv.writer(f).writerows([[r["item_id"], r["title"]] for r in new])
    return new


def stage(name: str, cfg, spark, store, log: list[dict], t0: float) -> dict:
    """Run one stage through the CLI's runner; record its seconds and the offset from `t0` when it ended."""
    from captionrec.cli import run_stage

    summary = run_stage(name, cfg, spark, store)
    log.append({"stage": name, "seconds": round(summary["seconds"], 2), "ended_at_s": round(time.time() - t0, 2)})
    print(f"  {name:<10} {summary['seconds']:7.1f} s", flush=True)
    return summary


def first_commit_with(store, table: str, column: str, ids: set[str], since: float) -> dict | None:
    """The first commit of `table` after `since` (epoch s) whose snapshot holds one of `ids` in `column`."""
    from pyspark.sql import functions as F

    commits = sorted(
        (h for h in store.history(table) if h["timestamp"].timestamp() >= since), key=lambda h: h["version"]
    )
    for h in commits:
        n = store.read(table, version=h["version"]).where(F.col(column).isin(sorted(ids))).count()
        if n:
            return {
                "version": h["version"],
                "seconds_after_landing": round(h["timestamp"].timestamp() - since, 2),
                "rows_with_new_items": n,
            }
    return None


def served(store, new: list[dict]) -> dict:
    """Where the new items are in the current tables. A new item's media is a copy of a sample clip, so its
    caption vector equals that clip's: `top10_user_saw_source` counts top-10 slots whose user had watched the
    source clip (seen items are excluded, the copy is not: the optimistic case for a near-duplicate upload)."""
    from captionrec import contracts as C

    ids = {r["item_id"] for r in new}
    source = {r["item_id"]: r["copied_from"] for r in new}
    seen = set(store.read(C.INTERACTIONS).select("user_id", "item_id").toPandas().itertuples(index=False, name=None))
    recs = store.read(C.RECOMMENDATIONS).toPandas()
    sim = store.read(C.SIMILAR_ITEMS).toPandas()
    mine = recs[recs["item_id"].isin(ids)]
    top10 = mine[mine["rank"] <= 10]
    sim_new = sim[sim["item_id"].isin(ids)]
    return {
        "users_with_lists": int(recs["user_id"].nunique()),
        "in_similar_items": int(sim_new["item_id"].nunique()),
        "as_neighbour_in_similar_items": int(sim[sim["neighbor_id"].isin(ids)]["neighbor_id"].nunique()),
        "in_recommendations": int(mine["item_id"].nunique()),
        "in_some_top10": int(top10["item_id"].nunique()),
        "top10_slots": int(len(top10)),
        "users_with_new_in_top10": int(top10["user_id"].nunique()),
        "top10_user_saw_source": int(sum((u, source[i]) in seen for u, i in zip(top10["user_id"], top10["item_id"]))),
        "best_rank": {i: int(r) for i, r in mine.groupby("item_id")["rank"].min().items()},
        "top_neighbour": {i: str(g.sort_values("rank")["neighbor_id"].iloc[0]) for i, g in sim_new.groupby("item_id")},
    }


def setup(cfg, spark, store) -> tuple[str, list[dict]]:
    """The world before the new videos: the sample ingested, captioned, embedded, a model trained and served."""
    import dataclasses

    log: list[dict] = []
    t0 = time.time()
    for name in ("ingest", "caption", "embed"):
        stage(name, cfg, spark, store, log, t0)
    run_id = stage("train", cfg, spark, store, log, t0)["run_id"]
    rcfg = dataclasses.replace(cfg, recommend=dataclasses.replace(cfg.recommend, run_id=run_id))
    stage("recommend", rcfg, spark, store, log, t0)
    return run_id, log


def measure(args, work: Path) -> dict:
    """Setup, then land the new videos and time the incremental run to both tables."""
    import dataclasses

    from captionrec.config import load_config
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    shutil.copytree(ROOT / "data" / "sample", work / "source")
    cfg = load_config("local", overrides(work, args.epochs))
    spark = get_spark(cfg.spark)
    store = open_store(spark, cfg.storage)
    print("setup (not timed against the target):", flush=True)
    run_id, setup_log = setup(cfg, spark, store)
    cfg = dataclasses.replace(cfg, recommend=dataclasses.replace(cfg.recommend, run_id=run_id))
    load_before = os.getloadavg()
    time.sleep(1.0)  # commit timestamps are in ms; keep the setup's commits clearly before the landing
    t_land = time.time()
    new = land(work / "source", args.new)
    ids = {r["item_id"] for r in new}
    print(
        f"landed {len(new)} videos at {dt.datetime.fromtimestamp(t_land, dt.UTC):%H:%M:%S} UTC; incremental run:",
        flush=True,
    )
    log: list[dict] = []
    summaries = {
        name: stage(name, cfg, spark, store, log, t_land) for name in ("ingest", "caption", "embed", "recommend")
    }
    wall = time.time() - t_land
    load_after = os.getloadavg()
    from captionrec import contracts as C

    sim_at = first_commit_with(store, C.SIMILAR_ITEMS, "item_id", ids, t_land)
    rec_at = first_commit_with(store, C.RECOMMENDATIONS, "item_id", ids, t_land)
    where = served(store, new)
    spark.stop()
    return {
        "new_items": new,
        "run_id": run_id,
        "setup": setup_log,
        "incremental": log,
        "incremental_wall_s": round(wall, 2),
        "similar_items_at": sim_at,
        "recommendations_at": rec_at,
        "served": where,
        "recommend_plan": summaries["recommend"].get("plan"),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in load_after],
    }


def verdict(res: dict, n: int, target: float) -> tuple[bool, list[str]]:
    """Whether the target is met, and the lines that say why."""
    lines, ok = [], True
    for table, key in (("similar_items", "similar_items_at"), ("recommendations", "recommendations_at")):
        at = res[key]
        if at is None:
            ok = False
            lines.append(f"{table}: the new items never appeared")
        else:
            met = at["seconds_after_landing"] <= target
            ok &= met
            lines.append(
                f"{table}: new items at {at['seconds_after_landing']:.1f} s after landing "
                f"(version {at['version']}) -> target <= {target:.0f} s {'met' if met else 'MISSED'}"
            )
    s = res["served"]
    lines.append(
        f"new items in similar_items {s['in_similar_items']}/{n}, in recommendations "
        f"{s['in_recommendations']}/{n}, in at least one user's top 10: {s['in_some_top10']}/{n} "
        f"({s['users_with_new_in_top10']} of {s['users_with_lists']} users have one in their top 10; "
        f"{s['top10_user_saw_source']} of {s['top10_slots']} such slots belong to users who watched the "
        "clip the new video copies)"
    )
    ok &= s["in_similar_items"] == n
    return ok, lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--new", type=int, default=10, help="new videos to land (default 10)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the served model (setup)")
    p.add_argument("--target-s", type=float, default=180.0, help="landing -> both tables, seconds")
    p.add_argument("--workdir", default=None, help="work folder (default: a fresh temp folder, removed after)")
    p.add_argument("--json", default=None, help="write the results here (e.g. bench/results/freshness.json)")
    args = p.parse_args(argv)
    tmp = None if args.workdir else tempfile.mkdtemp(prefix="captionrec-freshness-")
    work = Path(args.workdir or tmp)
    if args.workdir and any(work.iterdir() if work.exists() else ()):
        p.error(f"--workdir {work} is not empty")
    work.mkdir(parents=True, exist_ok=True)
    try:
        res = measure(args, work)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    ok, lines = verdict(res, args.new, args.target_s)
    res.update(
        {
            "target_s": args.target_s,
            "target_met": ok,
            "cpus": os.cpu_count(),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
    )
    print(
        f"\nincremental ingest -> caption -> embed -> recommend: {res['incremental_wall_s']:.1f} s wall "
        f"(load average {res['load_avg_before'][0]:.1f} before, {res['load_avg_after'][0]:.1f} after)"
    )
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
