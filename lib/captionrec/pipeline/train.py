"""Train stage: interactions (+ item_features) -> splits -> sequences table -> TorchDistributor training
-> per-window full-ranking metrics, beside random and popularity baselines, in MLflow.

    captionrec train model=sasrec features=title
    captionrec train model=two_tower features=id+mllm_av split.protocol=loo num_processes=1

The recipe: read the input tables at a pinned version (those versions tag the run), split and index them
and build the sequences table (`captionrec.transforms`, Spark), write it once, collect what every
training process needs (item vectors, per-window item counts), materialise the rows the processes read
through Spark to `train.inputs_dir` (reused while the input versions and settings are unchanged: processes
never open a table's own files), launch the pure-torch loop
(`captionrec.training`) and return a summary. As a child run of an experiment grid:
`run(cfg, spark, store, parent_run_id=..., tags=...)`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from captionrec.contracts import INTERACTIONS, ITEM_FEATURES, ITEMS
from captionrec.training.windows import FIT, REFIT, ROLE_NAMES, Window

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config import Config
    from captionrec.config.train import TrainConfig
    from captionrec.tables import TableStore
    from captionrec.transforms.item_features import ItemFeatures

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Driver-side result of data preparation, before training."""

    sequences: "DataFrame"  # the written-and-read-back sequences table
    windows: list[Window]
    num_items: int
    num_users: int
    num_interactions: int
    item_ids: list[str]  # item_idx - 1 -> item_id
    item_first_ms: np.ndarray  # (N + 1,) first interaction of each item (candidates.NEVER for none)
    item_available_ms: np.ndarray  # (N + 1,) from when each item is a candidate (`split.candidates`)
    counts: dict[int, dict[str, np.ndarray]]  # window -> {"fit", "prior"} interactions per item
    features: "ItemFeatures" | None
    sequence_stats: list[dict]  # per (window, role): rows, cold/repeat cases, items, cold items
    # What the sequences rows were built from: per input table its location, Delta version and commit time
    # (`pinned_inputs`); with the split/sequence settings it keys the training inputs the ranks read.
    inputs: dict[str, dict[str, Any]] | None = None
    candidates: str = "catalogue"  # the candidate rule the cases are ranked with (`split.candidates`)


def uses_catalogue(t: "TrainConfig") -> bool:
    """Rolling windows rank the `items` table's catalogue (`split.candidates=catalogue`); leave-one-out, and the
    `interacted` rule, only the interacted items."""
    return t.split.protocol == "rolling" and t.split.candidates == "catalogue"


def sequence_tables(t: "TrainConfig") -> list[str]:
    """The tables the sequences rows (and the item index) are built from."""
    return [INTERACTIONS, ITEMS] if uses_catalogue(t) else [INTERACTIONS]


def read_sequence_inputs(
    store: "TableStore", t: "TrainConfig"
) -> tuple["DataFrame", "DataFrame" | None, dict[str, dict[str, Any]]]:
    """(interactions, items or None, pinned_inputs) read at one pinned version each, for `prepare`."""
    versions = {name: store.version(name) for name in sequence_tables(t)}
    if ITEMS in versions and versions[ITEMS] is None:
        raise ValueError(
            f"split.candidates=catalogue ranks every item of the {ITEMS!r} table, which does not exist: run the "
            f"ingest stage first, or set split.candidates=interacted (the items someone interacted with)"
        )
    pinned = pinned_inputs(store, versions)
    interactions = store.read(INTERACTIONS, version=versions[INTERACTIONS])
    items = store.read(ITEMS, version=versions[ITEMS]) if ITEMS in versions else None
    return interactions, items, pinned


def pinned_inputs(store: "TableStore", versions: dict[str, int | None]) -> dict[str, dict[str, Any]]:
    """Location, Delta version and that version's commit time of each table (the commit time tells a table
    rebuilt at the same location, whose versions start again at 0, from the old one)."""
    out = {}
    for name, version in versions.items():
        entry = None
        if version is not None:  # the newest commit first; the whole history only when a writer came since
            latest = store.history(name, limit=1)
            history = latest if latest and latest[0].get("version") == version else store.history(name)
            entry = next((h for h in history if h.get("version") == version), None)
        stamp = entry.get("timestamp") if entry else None
        out[name] = {
            "location": store.location(name),
            "version": version,
            "committed_at": stamp.isoformat() if hasattr(stamp, "isoformat") else stamp,
        }
    return out


def rows_identity(t: "TrainConfig", inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Everything that determines the sequences rows: the input tables' versions, the split and sequence
    settings, the code that builds them (a hash of its source: a changed transform never reuses old rows, while
    the package version stays 0.1.0 in development) and the materialised layout."""
    import dataclasses
    import hashlib
    from pathlib import Path

    from captionrec import contracts
    from captionrec.transforms import sequences, splits, train_inputs

    code = hashlib.sha256()
    for module in (contracts, splits, sequences, train_inputs):
        code.update(Path(module.__file__).read_bytes())
    return {
        "inputs": inputs,
        "split": dataclasses.asdict(t.split),
        "sequences": {"max_seq_len": t.max_seq_len, "train_stride": t.train_stride, "retrain": t.retrain},
        "code": code.hexdigest()[:16],
        "layout": train_inputs.LAYOUT,
    }


def _feature_matrix(
    t: "TrainConfig", item_features: "DataFrame" | None, item_index: "DataFrame", num_items: int, stats_items
) -> "ItemFeatures" | None:
    """The run's item vectors (None for an ID-only run), z-scored with the statistics of `stats_items`."""
    from captionrec.transforms.item_features import item_feature_matrix

    if not t.feature_sets:
        return None
    if item_features is None:
        raise ValueError(f"features={t.features!r} needs the item_features table; run the embed stage first")
    features = item_feature_matrix(
        item_features, item_index, t.feature_sets, num_items, t.feature_model_id, stats_items=stats_items
    )
    if features.missing:
        log.warning(
            "%d of %d items have no %s vector: they use the learned missing-feature vector",
            features.missing,
            num_items,
            "+".join(t.feature_sets),
        )
    return features


def prepare(
    cfg: "Config",
    interactions: "DataFrame",
    item_features: "DataFrame" | None,
    persist: Callable[["DataFrame"], "DataFrame"],
    inputs: dict[str, dict[str, Any]] | None = None,
    items: "DataFrame" | None = None,
) -> Prepared:
    """Split, index, build sequences (written through `persist`, which returns the table read back), count
    items per window and collect the feature matrix.

    inputs: `pinned_inputs` of the tables `interactions` (and `items`) were read from (at that version); training
    needs it to key the materialised training inputs. items: the `items` table, needed by
    `split.candidates=catalogue` (every item of it gets an index and is ranked; see `read_sequence_inputs`)."""
    from pyspark.sql import functions as F

    from captionrec.training.candidates import NEVER, available_from, seen_before
    from captionrec.transforms.sequences import (
        build_item_index,
        build_sequences,
        build_user_index,
        item_counts,
        sequence_stats,
    )
    from captionrec.transforms.splits import check_interactions, split_interactions

    t = cfg.train
    check_interactions(interactions)
    interactions = (
        interactions.select("user_id", "item_id", "ts_ms")
        .where(F.col("user_id").isNotNull() & F.col("item_id").isNotNull() & F.col("ts_ms").isNotNull())
        .cache()
    )
    split, windows = split_interactions(
        interactions, t.split.protocol, t.split.num_windows, t.split.window_days, t.split.start
    )
    split = split.cache()
    if uses_catalogue(t) and items is None:
        raise ValueError("split.candidates=catalogue needs the items table: pass prepare(..., items=...)")
    item_index = build_item_index(interactions, items if uses_catalogue(t) else None).cache()
    user_index = build_user_index(interactions)
    indexed = item_index.orderBy("item_idx").collect()
    num_items = len(indexed)
    if num_items == 0:
        raise ValueError("interactions are empty: nothing to train on")
    item_first_ms = np.full(num_items + 1, NEVER, dtype=np.int64)
    item_first_ms[1:] = [NEVER if r["first_ts_ms"] is None else r["first_ts_ms"] for r in indexed]
    rule = t.split.candidates if uses_catalogue(t) else "interacted"
    # z-score statistics of the item vectors: items seen before the first test window only (one set for all)
    stats_items = seen_before(item_first_ms, None if windows[0].is_loo else windows[0].test_start_ms)

    features = _feature_matrix(t, item_features, item_index, num_items, stats_items)
    seqs = build_sequences(
        split,
        item_index,
        user_index,
        t.max_seq_len,
        t.split.test_targets,
        t.split.test_history,
        refit=t.retrain,
        stride=t.train_stride,
    )
    written = persist(seqs)
    stats = sequence_stats(written)
    recent_before = {w.index: w.test_start_ms for w in windows if not w.is_loo}  # recent popularity's cutoff: t_k
    counts = item_counts(split, item_index, [w.index for w in windows], num_items, recent_before)
    n_interactions = interactions.count()
    for df in (split, item_index, interactions):
        df.unpersist()
    num_users = max((r["max_user_idx"] for r in stats), default=0)
    return Prepared(
        written,
        windows,
        num_items,
        num_users,
        n_interactions,
        [r["item_id"] for r in indexed],
        item_first_ms,
        available_from(rule, item_first_ms),
        counts,
        features,
        stats,
        inputs,
        rule,
    )


def steps_per_epoch(cfg: "Config", stats: list[dict], world: int) -> dict[tuple[int, int], int]:
    """Fixed steps per epoch per (window, training role): the configured count, or
    ceil(rows / (batch_size * world))."""
    t = cfg.train
    return {
        (row["window"], row["role"]): t.steps_per_epoch or max(1, math.ceil(row["rows"] / (t.batch_size * world)))
        for row in stats
        if row["role"] in (FIT, REFIT)
    }


def _window_stats(prepared: Prepared) -> dict[int, dict[str, float]]:
    """Per window (logged with step = window): training rows, evaluation rows and their cold/repeat parts."""
    out: dict[int, dict[str, float]] = {}
    for row in prepared.sequence_stats:
        role, st = ROLE_NAMES[row["role"]], out.setdefault(row["window"], {})
        if row["role"] in (FIT, REFIT):
            st[f"{role}_sequences"] = row["rows"]
            continue
        st.update(
            {
                f"{role}_rows": row["rows"],
                f"{role}_cold_rows": row["cold"],
                f"{role}_repeat_rows": row["repeat"],
                f"{role}_items": row["items"],
                f"{role}_cold_items": row["cold_items"],
            }
        )
    return out


def train_prepared(
    cfg: "Config", prepared: Prepared, tags: dict[str, Any] | None = None, parent_run_id: str | None = None
) -> dict[str, Any]:
    """Launch training on the prepared data; returns rank 0's results (metrics per window, summary, run_id)."""
    from captionrec.tracking import tracking_spec
    from captionrec.training.distributed import launch
    from captionrec.training.loop import TrainJob, run_rank
    from captionrec.transforms.train_inputs import inputs_dir_for, make_source

    t = cfg.train
    if prepared.inputs is None:
        raise ValueError(
            "prepared data without its input tables' versions: call prepare(..., "
            "inputs=pinned_inputs(store, {table: version})) so the training inputs can be keyed"
        )
    world = t.num_processes
    steps = steps_per_epoch(cfg, prepared.sequence_stats, world)
    roles = (FIT, REFIT) if t.retrain else (FIT,)
    missing = sorted({w.index for w in prepared.windows for r in roles if (w.index, r) not in steps})
    if missing:
        raise ValueError(f"window(s) {missing} have no training sequences (every user has < 2 training interactions)")
    spark = prepared.sequences.sparkSession
    inputs_dir = inputs_dir_for(spark.sparkContext.master, t.inputs_dir, cfg.storage)
    source = make_source(
        prepared.sequences,
        sorted(steps),
        inputs_dir,
        rows_identity(t, prepared.inputs),
        t.loader,
        world,
        t.petastorm_cache_dir,
    )
    stats: dict[str, float] = dict(n_items=prepared.num_items, n_users=prepared.num_users)
    stats.update(n_interactions=prepared.num_interactions, train_inputs_seconds=round(source.seconds, 3))
    stats["train_inputs_reused"] = float(source.reused)
    extra = {
        "train.item_repr": t.item_repr,
        "train.candidates_resolved": prepared.candidates,
        "train.loader_resolved": source.loader,
        "train.inputs_folder": source.folder,
        "train.steps_per_epoch_resolved": ",".join(f"{k}/{ROLE_NAMES[r]}:{v}" for (k, r), v in sorted(steps.items())),
    }
    all_tags = {
        "model": t.model,
        "features": t.features,
        "item_repr": t.item_repr,
        "split_protocol": t.split.protocol,
        "test_history": t.split.test_history,
        "loader": source.loader,
    }
    if prepared.features is not None:
        all_tags["feature_model_ids"] = ",".join(f"{k}={v}" for k, v in prepared.features.model_ids.items())
        stats["items_missing_features"] = prepared.features.missing
    all_tags.update(tags or {})
    spec = tracking_spec(
        cfg, tags=all_tags, extra_params=extra, run_name=f"{t.model}-{t.features}", parent_run_id=parent_run_id
    )
    feats = prepared.features
    job = TrainJob(
        cfg=t,
        num_items=prepared.num_items,
        num_users=prepared.num_users,
        windows=prepared.windows,
        source=source,
        steps=steps,
        item_available_ms=prepared.item_available_ms,
        counts=prepared.counts,
        features=None if feats is None else feats.matrix,
        feature_mask=None if feats is None else feats.mask,
        tracking=spec,
        item_ids=prepared.item_ids,
        stats=stats,
        window_stats=_window_stats(prepared),
    )
    try:
        out = launch(run_rank, job, num_processes=world, local_mode=t.local_mode, use_gpu=t.use_gpu)
    finally:
        source.close()
    out.update(
        loader=source.loader,
        inputs_folder=source.folder,
        inputs_reused=source.reused,
        inputs_seconds=source.seconds,
        steps_per_epoch=steps,
        windows_bounds=[w.as_dict() for w in prepared.windows],
        sequence_stats=prepared.sequence_stats,
    )
    return out


def run(
    cfg: "Config",
    spark: "SparkSession",
    store: "TableStore",
    *,
    parent_run_id: str | None = None,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`captionrec train`: read tables (pinned versions), prepare, train, log; return a summary with run_id.

    parent_run_id: log the run as a child (nested) run of that MLflow run; tags: extra run tags.
    """
    from captionrec.tracking.cost import StageClock, log_run_cost, stage_cost

    clock = StageClock(spark)  # the run's cost: wall, CPU (the training processes included), peak RSS
    t = cfg.train
    t0 = time.perf_counter()
    # The versions read here are the data trained on (a writer committing meanwhile changes neither).
    interactions, items, sequence_inputs = read_sequence_inputs(store, t)
    versions = {name: entry["version"] for name, entry in sequence_inputs.items()}
    if t.feature_sets:
        versions[ITEM_FEATURES] = store.version(ITEM_FEATURES)
    features_df = store.read(ITEM_FEATURES, version=versions[ITEM_FEATURES]) if t.feature_sets else None

    def persist(df: "DataFrame") -> "DataFrame":
        store.overwrite(t.sequences_table, df)
        return store.read(t.sequences_table)

    prepared = prepare(cfg, interactions, features_df, persist, inputs=sequence_inputs, items=items)
    t_prep = time.perf_counter() - t0
    run_tags = {f"delta_version.{name}": v for name, v in versions.items()}
    run_tags.update(
        {f"delta_version.{t.sequences_table}": store.version(t.sequences_table), "storage_backend": store.backend}
    )
    run_tags.update(tags or {})
    out = train_prepared(cfg, prepared, run_tags, parent_run_id=parent_run_id)
    summary, cost = summary_of(out, prepared, t_prep), stage_cost(clock.stop())
    summary["cost"] = {k: v for k, v in cost.items() if k.endswith("_seconds")}  # volatile keys; memory: MLflow
    if summary.get("run_id") and cfg.tracking.tracking_uri:
        log_run_cost(cfg.tracking.tracking_uri, summary["run_id"], cost)
    return summary


def _rounded(metrics: dict[str, float], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: round(metrics[k], 4) for k in keys if k in metrics and not math.isnan(metrics[k])}


def summary_of(out: dict[str, Any], prepared: Prepared, prepare_seconds: float) -> dict[str, Any]:
    """The CLI's printed summary: per-window test HR@10 / nDCG@10 (overall and cold) beside the baselines,
    and the means over windows."""
    keys = ("hr@10", "ndcg@10", "cold_hr@10", "cold_ndcg@10", "user_hr@10")
    windows = []
    for w in out["windows"]:
        m = w["test"]
        windows.append(
            {
                "window": w["window"],
                "best_epoch": w["best_epoch"],
                "train_epochs": w["train_epochs"],
                "test_cases": int(m["cases"]),
                "cold_cases": int(m["cold_cases"]),
                **_rounded(m, keys),
                **{name: _rounded(b, ("hr@10", "cold_hr@10")) for name, b in w["baselines"].items()},
                "train_sequences_per_s": round(w["train_sequences_per_s"], 1),
            }
        )
    s = out["summary"]
    return {
        "run_id": out["run_id"],
        "loader": out["loader"],
        "items": prepared.num_items,
        "candidates": prepared.candidates,
        "users": prepared.num_users,
        "windows": windows,
        "mean": {
            k: round(s[k], 4)
            for k in (
                f"test_{p}{m}_mean"
                for p in ("", "random_", "popularity_")
                for m in ("hr@10", "ndcg@10", "cold_hr@10", "user_hr@10")
            )
            if k in s and not math.isnan(s[k])
        },
        "prepare_seconds": round(prepare_seconds, 2),
    }
