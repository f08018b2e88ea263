"""The recommend stage at MicroLens-100K scale: wall time and peak memory of `captionrec recommend` for
100k users x 20k items (synthetic interactions and caption vectors), then an incremental re-run.

    python bench/bench_recommend.py                               # 100k users x 20k items, k = 100
    python bench/bench_recommend.py --users 5000 --items 2000     # a smoke run

What runs is the stage itself (`captionrec.pipeline.recommend.run`, local[2] Spark, delta-rs tables in a temp
folder, MLflow on sqlite) serving a logged SASRec over `mllm_av`-style 384-d item vectors (feature mode, so
the catalogue is computed from item_features): the users' histories are built in Spark, scored in blocks
through the model-map (mapInArrow, one model per Python worker), the top 100 of 20k items per user MERGEd once
(10M rows), then similar_items (top 20 cosine neighbours of 20k items). The model is untrained (random
weights): the cost of serving doesn't depend on what the weights learned. Peak memory is the largest summed
RSS of this process and every process under it (the Spark JVM and its Python workers), sampled every 0.2 s.
Then 1% of the users get a new interaction and the stage runs again (only they are rewritten).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

DAY_MS = 86_400_000


class PeakRss:
    """Largest summed RSS of this process tree, sampled in a thread."""

    def __init__(self, every_s: float = 0.2):
        import psutil

        self.proc, self.every_s, self.peak = psutil.Process(), every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> int:
        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except Exception:  # noqa: BLE001 - a worker that just exited
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self._sample())

    def __enter__(self) -> "PeakRss":
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


def synthetic(n_users: int, n_items: int, per_user: int, dim: int, n_topics: int = 50, seed: int = 0):
    """Interactions (users follow a topic) and topic-carrying item vectors, as Arrow tables."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    topic = rng.integers(0, n_topics, n_items)
    by_topic = [np.nonzero(topic == t)[0] for t in range(n_topics)]
    start = 1_700_000_000_000
    users = np.repeat(np.arange(n_users), per_user)
    user_topic = rng.integers(0, n_topics, n_users)[users]
    items = np.array([by_topic[t][rng.integers(len(by_topic[t]))] for t in user_topic])
    ts = start + rng.integers(0, 28 * DAY_MS, len(users))
    inter = pa.table(
        {
            "user_id": pa.array([f"u{u:06d}" for u in users]),
            "item_id": pa.array([f"i{i:06d}" for i in items]),
            "ts": pa.array(ts * 1000, pa.timestamp("us", tz="UTC")),
            "ts_ms": pa.array(ts, pa.int64()),
        }
    )
    vec = rng.normal(0, 0.3, (n_items, dim)).astype(np.float32)
    vec[np.arange(n_items), topic % dim] += 1.0
    feats = pa.table(
        {
            "item_id": pa.array([f"i{i:06d}" for i in range(n_items)]),
            "feature_set": pa.array(["mllm_av"] * n_items),
            "model_id": pa.array(["bench-v1"] * n_items),
            "dim": pa.array([dim] * n_items, pa.int32()),
            "vector": pa.array(list(vec), pa.list_(pa.float32())),
            "source_version": pa.array(["bench"] * n_items),
            "created_at": pa.array([start * 1000] * n_items, pa.timestamp("us", tz="UTC")),
        }
    )
    return inter, feats, vec


def log_model(tracking_uri: str, n_items: int, vec: np.ndarray, seq_len: int, versions: dict) -> str:
    """An untrained SASRec over the item vectors, logged like a train run (model/, item_index.json, params)."""
    import mlflow
    import torch

    from captionrec.models import HistoryScorer, ItemRepresentation, build_model

    torch.manual_seed(0)
    feats = torch.zeros(n_items + 1, vec.shape[1])
    feats[1:] = torch.from_numpy((vec - vec.mean(0)) / vec.std(0))
    rep = ItemRepresentation(n_items, 64, "feature", features=feats, hidden=256)
    model = build_model("sasrec", rep, num_users=0, max_seq_len=seq_len, dim=64, layers=2, heads=2, dropout=0.1)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("bench-recommend")
    with mlflow.start_run() as run:
        mlflow.log_params({"train.features": "mllm_av", "train.max_seq_len": seq_len, "train.model": "sasrec"})
        mlflow.set_tags(
            {"feature_model_ids": "mllm_av=bench-v1", **{f"delta_version.{k}": v for k, v in versions.items()}}
        )
        mlflow.log_dict({"item_ids": [f"i{i:06d}" for i in range(n_items)]}, "item_index.json")
        mlflow.pytorch.log_model(
            HistoryScorer(model.eval()), name="model", serialization_format="pickle", pip_requirements=["torch"]
        )
    return run.info.run_id


def timed(label: str, fn):
    with PeakRss() as mem:
        t0 = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t0
    print(
        f"{label}: {secs:.1f} s wall, peak RSS {mem.peak / 2**30:.2f} GiB (driver + JVM + Python workers)", flush=True
    )
    return out, secs, mem.peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--per-user", type=int, default=20)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--retrieval", default="exact")
    p.add_argument("--driver-memory", default="6g")
    p.add_argument("--one-merge", action="store_true", help="one MERGE of every row (recommend.write_block_rows=0)")
    args = p.parse_args(argv)

    from deltalake import write_deltalake

    from captionrec.config import load_config
    from captionrec.pipeline import recommend
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    tmp = Path(tempfile.mkdtemp(prefix="bench-recommend-"))
    inter, feats, vec = synthetic(args.users, args.items, args.per_user, args.dim)
    write_deltalake(str(tmp / "lake" / "interactions"), inter)
    write_deltalake(str(tmp / "lake" / "item_features"), feats)
    uri = f"sqlite:///{tmp}/mlflow.db"
    run_id = log_model(uri, args.items, vec, 20, {"interactions": 0, "item_features": 0})
    cfg = load_config(
        "local",
        [
            f"tracking.tracking_uri={uri}",
            "tracking.experiment=bench-recommend",
            f"storage.root={tmp}/lake",
            f"recommend.run_id={run_id}",
            f"recommend.k={args.k}",
            f"recommend.retrieval={args.retrieval}",
            "recommend.active_days=365",
            "recommend.similar_feature_sets=[mllm_av]",
            "recommend.batch_size=2048",
            f"spark.driver_memory={args.driver_memory}",
        ],
    )
    # delta-rs commits on the driver: the MERGE source is collected there. By default the stage MERGEs blocks of
    # recommend.write_block_rows rows; --one-merge writes all 10M rows in one MERGE (~1.1 GB serialized at 100k
    # x 100, past Spark's default 1 GiB spark.driver.maxResultSize, lifted here for it)
    conf = {**cfg.spark.conf, **({"spark.driver.maxResultSize": "0"} if args.one_merge else {})}
    if args.one_merge:
        cfg = dataclasses.replace(cfg, recommend=dataclasses.replace(cfg.recommend, write_block_rows=0))
    spark = get_spark(dataclasses.replace(cfg.spark, conf=conf))
    store = open_store(spark, cfg.storage)
    print(
        f"{args.users} users x {args.items} items, {inter.num_rows} interactions, k={args.k}, "
        f"retrieval={args.retrieval}, {tmp}",
        flush=True,
    )
    s1, t1, m1 = timed("first run (every user + similar_items)", lambda: recommend.run(cfg, spark, store))
    n = max(1, args.users // 100)
    new = inter.slice(0, n * args.per_user).filter(np.arange(n * args.per_user) % args.per_user == 0)
    ts = np.asarray(new["ts_ms"]) + 30 * DAY_MS
    import pyarrow as pa

    new = new.set_column(2, "ts", pa.array(ts * 1000, pa.timestamp("us", tz="UTC"))).set_column(
        3, "ts_ms", pa.array(ts, pa.int64())
    )
    write_deltalake(str(tmp / "lake" / "interactions"), new, mode="append")
    s2, t2, m2 = timed(f"re-run after {n} users' new interactions", lambda: recommend.run(cfg, spark, store))
    out = {
        "users": args.users,
        "items": args.items,
        "k": args.k,
        "retrieval": args.retrieval,
        "first": {
            "seconds": round(t1, 1),
            "peak_rss_gib": round(m1 / 2**30, 2),
            "users": s1["users_written"],
            "rows": s1["rows_written"],
            "commits": s1.get("commits"),
            "similar": s1["similar_items"],
        },
        "incremental": {
            "seconds": round(t2, 1),
            "peak_rss_gib": round(m2 / 2**30, 2),
            "users": s2["users_written"],
            "plan": s2["plan"],
        },
    }
    print(json.dumps(out, indent=2, default=str))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
