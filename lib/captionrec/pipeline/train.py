"""Train stage: interactions (+ item_features) -> splits -> sequences table -> TorchDistributor training
-> per-window full-ranking metrics in MLflow.

    captionrec train model=sasrec features=title
    captionrec train model=two_tower features=id+mllm_av split.protocol=loo num_processes=1

Table reads and the one write (the derived `train_sequences` table, overwritten each run) live here;
everything else is DataFrame in / DataFrame out (training.splits, training.sequences) or pure torch
(training.loop, models).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from captionrec.training.splits import FIT, Window, split_interactions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)

INTERACTIONS = "interactions"
ITEM_FEATURES = "item_features"


@dataclass
class Prepared:
    """Driver-side result of data preparation, before training."""

    sequences: "DataFrame"  # the written-and-read-back sequences table
    windows: list[Window]
    num_items: int
    num_users: int
    item_ids: list[str]  # item_idx - 1 -> item_id
    item_first_ms: np.ndarray  # (N + 1,)
    features: Optional[Any]  # captionrec.training.sequences.ItemFeatures
    sequence_stats: list[dict]  # per (window, role): rows, cold/repeat cases, items, cold items


def prepare(
    cfg: "Config",
    interactions: "DataFrame",
    item_features: Optional["DataFrame"],
    persist: Callable[["DataFrame"], "DataFrame"],
) -> Prepared:
    """Split, index, build sequences (written through `persist`, which returns the table read back) and
    collect the feature matrix."""
    from pyspark.sql import functions as F

    from captionrec.training.sequences import (
        build_item_index,
        build_sequences,
        build_user_index,
        item_feature_matrix,
        sequence_stats,
    )
    from captionrec.training.splits import check_interactions

    t = cfg.train
    check_interactions(interactions)
    interactions = interactions.select("user_id", "item_id", "ts_ms").where(
        F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts_ms").isNotNull()
    )
    split, windows = split_interactions(
        interactions, t.split.protocol, t.split.num_windows, t.split.window_days, t.split.start
    )
    split = split.cache()
    item_index = build_item_index(interactions).cache()
    user_index = build_user_index(interactions)
    items = item_index.orderBy("item_idx").collect()
    num_items = len(items)
    if num_items == 0:
        raise ValueError("interactions are empty: nothing to train on")
    item_ids = [r["item_id"] for r in items]
    item_first_ms = np.zeros(num_items + 1, dtype=np.int64)
    item_first_ms[1:] = [r["first_ts_ms"] for r in items]

    features = None
    if t.feature_sets:
        if item_features is None:
            raise ValueError(f"features={t.features!r} needs the item_features table; run the embed stage first")
        features = item_feature_matrix(item_features, item_index, t.feature_sets, num_items, t.feature_model_id)
        if features.missing:
            log.warning("%d of %d items have no %s vector: they use the learned missing-feature vector",
                        features.missing, num_items, "+".join(t.feature_sets))

    seqs = build_sequences(split, item_index, user_index, t.max_seq_len, t.split.test_targets)
    written = persist(seqs)
    stats = sequence_stats(written)
    split.unpersist()
    item_index.unpersist()
    num_users = max((r["max_user_idx"] for r in stats), default=0)
    return Prepared(written, windows, num_items, num_users, item_ids, item_first_ms, features, stats)


def steps_per_epoch(cfg: "Config", stats: list[dict], world: int) -> dict[int, int]:
    """Fixed steps per epoch per window: the configured count, or ceil(fit rows / (batch_size * world))."""
    t = cfg.train
    out = {}
    for row in stats:
        if row["role"] != FIT:
            continue
        out[row["window"]] = t.steps_per_epoch or max(1, math.ceil(row["rows"] / (t.batch_size * world)))
    return out


def train_prepared(cfg: "Config", prepared: Prepared, tags: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Launch training on the prepared data; returns rank 0's results (metrics per window, summary, run_id)."""
    from captionrec.tracking import tracking_spec
    from captionrec.training.distributed import launch
    from captionrec.training.loaders import make_source
    from captionrec.training.loop import TrainJob, run_rank

    t = cfg.train
    world = t.num_processes
    steps = steps_per_epoch(cfg, prepared.sequence_stats, world)
    missing = [w.index for w in prepared.windows if w.index not in steps]
    if missing:
        raise ValueError(f"window(s) {missing} have no training sequences (every user has < 2 fit interactions)")
    source = make_source(prepared.sequences, [w.index for w in prepared.windows], t.loader, world, t.petastorm_cache_dir)
    stats: dict[str, float] = {"n_items": prepared.num_items, "n_users": prepared.num_users}
    for row in prepared.sequence_stats:
        role, k = {0: "fit", 1: "valid", 2: "test"}[row["role"]], row["window"]
        if row["role"] == FIT:
            stats[f"fit_sequences_w{k}"] = row["rows"]
            continue
        # eval cases (interactions with some history) and their items; cold = no fit interaction in the window
        stats[f"{role}_cases_w{k}"] = row["rows"]
        stats[f"{role}_cold_cases_w{k}"] = row["cold"]
        stats[f"{role}_repeat_cases_w{k}"] = row["repeat"]
        stats[f"{role}_items_w{k}"] = row["items"]
        stats[f"{role}_cold_items_w{k}"] = row["cold_items"]
    extra = {
        "train.item_repr": t.item_repr,
        "train.loader_resolved": source.loader,
        "train.steps_per_epoch_resolved": ",".join(f"{k}:{v}" for k, v in sorted(steps.items())),
    }
    all_tags = {"model": t.model, "features": t.features, "item_repr": t.item_repr,
                "split_protocol": t.split.protocol, "loader": source.loader}
    if prepared.features is not None:
        all_tags["feature_model_ids"] = ",".join(f"{k}={v}" for k, v in prepared.features.model_ids.items())
        stats["items_missing_features"] = prepared.features.missing
    all_tags.update(tags or {})
    spec = tracking_spec(cfg, tags=all_tags, extra_params=extra, run_name=f"{t.model}-{t.features}")
    job = TrainJob(
        cfg=t,
        num_items=prepared.num_items,
        num_users=prepared.num_users,
        windows=prepared.windows,
        source=source,
        steps_per_epoch=steps,
        item_first_ms=prepared.item_first_ms,
        features=None if prepared.features is None else prepared.features.matrix,
        feature_mask=None if prepared.features is None else prepared.features.mask,
        tracking=spec,
        item_ids=prepared.item_ids,
        stats=stats,
    )
    try:
        out = launch(run_rank, job, num_processes=world, local_mode=t.local_mode, use_gpu=t.use_gpu)
    finally:
        source.close()
    out["loader"] = source.loader
    out["steps_per_epoch"] = steps
    out["windows_bounds"] = [w.as_dict() for w in prepared.windows]
    out["sequence_stats"] = prepared.sequence_stats
    return out


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec train`: read tables, prepare, train, log; return a summary."""
    t = cfg.train
    t0 = time.perf_counter()
    interactions = store.read(INTERACTIONS)
    features_df = store.read(ITEM_FEATURES) if t.feature_sets else None

    def persist(df: "DataFrame") -> "DataFrame":
        store.overwrite(t.sequences_table, df)
        return store.read(t.sequences_table)

    prepared = prepare(cfg, interactions, features_df, persist)
    t_prep = time.perf_counter() - t0
    tags = {
        "delta_version.interactions": store.version(INTERACTIONS),
        f"delta_version.{t.sequences_table}": store.version(t.sequences_table),
        "storage_backend": store.backend,
    }
    if t.feature_sets:
        tags["delta_version.item_features"] = store.version(ITEM_FEATURES)
    out = train_prepared(cfg, prepared, tags)
    return summary_of(out, prepared, t_prep)


def summary_of(out: dict[str, Any], prepared: Prepared, prepare_seconds: float) -> dict[str, Any]:
    """The CLI's printed summary: per-window test HR@10 / nDCG@10 (overall and cold) and the means."""
    windows = []
    for w in out["windows"]:
        m = w["test"]
        windows.append({
            "window": w["window"], "best_epoch": w["best_epoch"], "test_cases": int(m["n"]), "cold_cases": int(m["n_cold"]),
            **{k: round(m[k], 4) for k in ("hr@10", "ndcg@10", "cold_hr@10", "cold_ndcg@10") if k in m and not math.isnan(m[k])},
            "train_sequences_per_s": round(w["train_sequences_per_s"], 1),
        })
    s = out["summary"]
    return {
        "run_id": out["run_id"],
        "loader": out["loader"],
        "items": prepared.num_items,
        "users": prepared.num_users,
        "windows": windows,
        "mean": {k: round(v, 4) for k, v in s.items() if k.endswith("_mean") and not math.isnan(v)
                 and any(x in k for x in ("hr@10", "ndcg@10", "mrr"))},
        "prepare_seconds": round(prepare_seconds, 2),
    }
