"""Experiment stage: feature sets x models x seeds as child MLflow runs under one parent (grid) run.

    captionrec experiment
    captionrec experiment feature_sets=[id,title,mllm_av] models=[sasrec] seeds=[1,2,3]

Plan: one child per (feature set, model, seed): the train section + `experiment.train_overrides` + that
model / features / seed. A child's key hashes its effective train config and the locations and versions of
its input tables (tag captionrec.child_key). A child whose key already has a FINISHED run in the experiment
is reused, not trained again, so a re-run of the grid on the same tables does nothing. A feature set with no
vectors in item_features is skipped with the reason. A child that fails becomes a FAILED run carrying its
error (tag captionrec.error + error.txt) and the grid goes on. The parent keeps the plan (grid/plan.json).
After every child is recorded, more failed children than `experiment.max_failed` (default 0) fail the stage:
`run` raises `StageFailed` carrying the summary, whose text and the error name each failed child and its error
(the CLI prints the summary and exits non-zero, so a Databricks task or spark-submit run fails too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.config.loader import deep_merge, flatten, from_dict, parse_overrides, to_plain
from captionrec.config.train import TrainConfig
from captionrec.pipeline import StageFailed
from captionrec.report.grid import GridTracker

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger("captionrec.experiment")


@dataclass
class Child:
    features: str
    model: str
    seed: int
    cfg: "Config"
    key: str

    @property
    def label(self) -> str:
        return f"{self.model} {self.features} seed {self.seed}"


def child_train_config(cfg: "Config", features: str, model: str, seed: int) -> TrainConfig:
    """The train section + experiment.train_overrides + this child's model, features and seed."""
    tree = deep_merge(to_plain(cfg.train), parse_overrides(cfg.experiment.train_overrides))
    tree.update(model=model, features=features, seed=seed)
    return from_dict(TrainConfig, tree, prefix="train")


def input_tables(store: "TableStore", train: TrainConfig) -> dict[str, dict[str, Any]]:
    """Location, Delta version and that version's commit time of each table a child reads (the commit time
    tells a table rebuilt at the same location, whose versions start again at 0, from the old one)."""
    names = [C.INTERACTIONS] + ([C.ITEM_FEATURES] if train.feature_sets else [])
    out = {}
    for n in names:
        last = store.history(n, limit=1)
        committed = last[0]["timestamp"].isoformat() if last and last[0].get("timestamp") else None
        out[n] = {"location": store.location(n), "version": store.version(n), "committed_at": committed}
    return out


def child_key(train: TrainConfig, inputs: dict[str, Any]) -> str:
    blob = json.dumps({"train": to_plain(train), "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def vector_counts(store: "TableStore") -> dict[str, int]:
    """Items with a vector per feature set in item_features (empty when the table does not exist)."""
    from pyspark.sql import functions as F

    if not store.exists(C.ITEM_FEATURES):
        return {}
    df = store.read(C.ITEM_FEATURES).where(F.col("vector").isNotNull())
    return {
        r["feature_set"]: int(r["n"])
        for r in df.groupBy("feature_set").agg(F.countDistinct("item_id").alias("n")).collect()
    }


def plan_grid(cfg: "Config", store: "TableStore") -> tuple[list[Child], list[dict[str, str]]]:
    """Children to run (in grid order) and feature sets skipped with their reason."""
    exp = cfg.experiment
    counts = vector_counts(store)
    children, skipped = [], []
    for fs in exp.feature_sets:
        lacking = [p for p in fs.split("+") if p != C.ID and counts.get(p, 0) == 0]
        if lacking:
            where = (
                "the item_features table does not exist"
                if not store.exists(C.ITEM_FEATURES)
                else f"no vectors for {', '.join(lacking)} in item_features"
            )
            skipped.append(
                {"features": fs, "reason": f"{where}; run the embed stage with embed.feature_sets including it"}
            )
            continue
        for model in exp.models:
            for seed in exp.seeds:
                train = child_train_config(cfg, fs, model, seed)
                key = child_key(train, input_tables(store, train))
                children.append(Child(fs, model, seed, dataclasses.replace(cfg, train=train), key))
    return children, skipped


class SharedSequences:
    """The train stage's `prepare` once per grid: the first child writes the train_sequences table, later
    children read it back (every child has the same split, sequence settings and input tables; only the item
    features differ, and those are collected per feature set)."""

    def __init__(self, spark: "SparkSession", store: "TableStore"):
        self.spark, self.store = spark, store
        self.written = False
        self.prepared: dict[tuple, Any] = {}

    def get(self, cfg: "Config") -> Any:
        from captionrec.pipeline import train

        t = cfg.train
        key = (t.feature_sets, t.feature_model_id)
        if key not in self.prepared:

            def persist(df):
                if not self.written:
                    self.store.overwrite(t.sequences_table, df)
                    self.written = True
                return self.store.read(t.sequences_table)

            features = self.store.read(C.ITEM_FEATURES) if t.feature_sets else None
            inputs = train.pinned_inputs(self.store, {C.INTERACTIONS: self.store.version(C.INTERACTIONS)})
            interactions = self.store.read(C.INTERACTIONS, version=inputs[C.INTERACTIONS]["version"])
            self.prepared[key] = train.prepare(cfg, interactions, features, persist, inputs=inputs)
        return self.prepared[key]


def train_child(
    cfg: "Config",
    spark: "SparkSession",
    store: "TableStore",
    shared: SharedSequences,
    *,
    parent_run_id: str,
    tags: dict[str, str],
) -> str:
    """The grid's one call into the train stage; returns the child's run id.

    Uses the train stage's `prepare` (once per grid, see SharedSequences) and `train_prepared`, which logs the
    MLflow run contract (per-window `test_<metric>` at step = window, baselines, cases artifacts) as a child of
    `parent_run_id`. (`train.run` would prepare the sequences per child: ~90 s instead of ~12 s per child on
    the sample, measured under load.)
    """
    prepared = shared.get(cfg)
    t = cfg.train
    tags = {
        **tags,
        "storage_backend": store.backend,
        f"delta_version.{C.INTERACTIONS}": store.version(C.INTERACTIONS),
        f"delta_version.{t.sequences_table}": store.version(t.sequences_table),
    }
    if t.feature_sets:
        tags[f"delta_version.{C.ITEM_FEATURES}"] = store.version(C.ITEM_FEATURES)
    from captionrec.pipeline import train

    return train.train_prepared(cfg, prepared, tags, parent_run_id=parent_run_id)["run_id"]


def grid_key(children: list[Child]) -> str:
    return hashlib.sha256(",".join(sorted(c.key for c in children)).encode()).hexdigest()[:16]


def _progress(i: int, n: int, child: Child, outcome: str, t_start: float, done: int) -> None:
    elapsed = time.perf_counter() - t_start
    rate = done / elapsed * 60 if elapsed > 0 and done else 0.0
    eta = f", ~{(n - i) / rate:.1f} min left" if rate and i < n else ""
    log.info("[%d/%d] %s: %s (%.2f children/min%s)", i, n, child.label, outcome, rate, eta)


def _run_children(
    cfg, spark, store, tracker: GridTracker, pending: list[Child], n_total: int, offset: int
) -> list[dict]:
    shared = SharedSequences(spark, store)
    entries, t_start, done = [], time.perf_counter(), 0
    for j, child in enumerate(pending, start=offset + 1):
        t0, started_ms = time.perf_counter(), int(time.time() * 1000)
        entry = {"features": child.features, "model": child.model, "seed": child.seed, "key": child.key}
        try:
            run_id = train_child(
                child.cfg,
                spark,
                store,
                shared,
                parent_run_id=tracker.parent_id,
                tags={C.TAG_KIND: C.CHILD_RUN, C.TAG_CHILD_KEY: child.key},
            )
            metric = tracker.metric(run_id, "test_hr_10_mean")
            entry.update(status="ran", run_id=run_id, hr_10=metric)
            outcome = f"finished in {time.perf_counter() - t0:.1f} s, test HR@10 {metric:.4f}"
        except Exception as exc:  # noqa: BLE001 - recorded as a FAILED child run; the grid goes on
            run_id = tracker.record_failure(child, exc, traceback.format_exc(), started_ms)
            entry.update(status="failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
            outcome = f"FAILED ({type(exc).__name__}: {str(exc)[:200]}), recorded as run {run_id}"
            if cfg.experiment.stop_on_error:
                tracker.save_plan(entries + [entry], finished=False)
                raise
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        done += 1
        entries.append(entry)
        _progress(j, n_total, child, outcome, t_start, done)
    return entries


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec experiment`: plan the grid, reuse finished children, train the rest; returns a summary."""
    children, skipped = plan_grid(cfg, store)
    for s in skipped:
        log.warning("skipping feature set %s: %s", s["features"], s["reason"])
    if not children:
        raise ValueError("nothing to run: " + "; ".join(f"{s['features']}: {s['reason']}" for s in skipped))
    gkey = grid_key(children)
    tracker = GridTracker(cfg, store, gkey)
    finished = tracker.finished_children()
    reused = [c for c in children if c.key in finished]
    pending = [c for c in children if c.key not in finished]
    log.info(
        "grid %s: %d children (%d reused from finished runs, %d to train); %d feature set(s) skipped",
        gkey,
        len(children),
        len(reused),
        len(pending),
        len(skipped),
    )
    entries = [
        {
            "features": c.features,
            "model": c.model,
            "seed": c.seed,
            "key": c.key,
            "status": "reused",
            "run_id": finished[c.key],
            "hr_10": tracker.metric(finished[c.key], "test_hr_10_mean"),
        }
        for c in reused
    ]
    if pending or not tracker.has_parent:
        tracker.open_parent(params={f"experiment.{k}": v for k, v in flatten(cfg.experiment).items()})
        entries += _run_children(cfg, spark, store, tracker, pending, len(children), len(reused))
        failed = sum(e["status"] == "failed" for e in entries)
        tracker.save_plan(entries, skipped=skipped, finished=failed <= cfg.experiment.max_failed)  # else: FAILED
    order = {c.key: i for i, c in enumerate(children)}
    entries.sort(key=lambda e: order[e["key"]])
    count = {s: sum(e["status"] == s for e in entries) for s in ("ran", "reused", "failed")}
    summary = {
        "experiment": cfg.tracking.experiment,
        "parent_run_id": tracker.parent_id,
        "grid_key": gkey,
        "children": len(children),
        **count,
        "max_failed": cfg.experiment.max_failed,
        "skipped_feature_sets": {s["features"]: s["reason"] for s in skipped},
        "runs": entries,
        "tracking_uri": tracker.tracking_uri,
    }
    if count["failed"] > cfg.experiment.max_failed:
        raise StageFailed(failure_message(summary), summary)
    return summary


def _label(e: dict[str, Any]) -> str:
    return f"{e['model']} {e['features']} seed {e['seed']}"


def failure_message(s: dict[str, Any]) -> str:
    """The stage's error when too many children failed: each failed child, its run and its error."""
    failed = [e for e in s["runs"] if e["status"] == "failed"]
    each = "; ".join(f"{_label(e)} (run {e.get('run_id')}): {e.get('error')}" for e in failed)
    return (
        f"experiment {s['experiment']}: {len(failed)} of {s['children']} children failed, more than "
        f"experiment.max_failed={s['max_failed']} (grid run {s['parent_run_id']}; every child is recorded "
        f"in MLflow): {each}"
    )


def format_summary(s: dict[str, Any]) -> str:
    """One screen: counts, one line per child, skipped feature sets, where to look next."""
    lines = [
        f"experiment {s['experiment']}: grid run {s['parent_run_id']} ({s['children']} children: "
        f"{s['ran']} trained, {s['reused']} reused, {s['failed']} failed) in {s.get('seconds', 0):.0f} s"
    ]
    for e in s["runs"][:40]:
        hr = e.get("hr_10")
        val = f"HR@10 {hr:.4f}" if isinstance(hr, float) and not math.isnan(hr) else (e.get("error") or "")[:70]
        lines.append(f"  {e['status']:<7} {e['model']:<9} {e['features']:<14} seed {e['seed']:<4} {val}")
    if len(s["runs"]) > 40:
        lines.append(f"  ... {len(s['runs']) - 40} more")
    for fs, reason in s["skipped_feature_sets"].items():
        lines.append(f"  skipped {fs}: {reason}")
    failed = [e for e in s["runs"] if e["status"] == "failed"]
    if failed:
        allowed = s.get("max_failed", 0)
        verdict = "the stage FAILS" if len(failed) > allowed else "allowed"
        lines.append(f"failed children: {len(failed)} (experiment.max_failed={allowed}: {verdict})")
        for e in failed[:10]:
            lines.append(f"  {_label(e)} (run {e.get('run_id')}): {(e.get('error') or '')[:300]}")
        if len(failed) > 10:
            lines.append(f"  ... {len(failed) - 10} more (--json for all)")
    lines.append(f"next: captionrec report parent_run_id={s['parent_run_id']}   (MLflow: {s['tracking_uri']})")
    return "\n".join(lines)
