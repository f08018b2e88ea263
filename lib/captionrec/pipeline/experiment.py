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

Equal tuning (`experiment.tuning`, captionrec.training.tuning): every (feature set, model) row first runs
`budget` trials on the first seed (trial 0: the config as given; then seeded random points over lr, dropout,
temperature and, for fusion rows, id_dropout; epochs chosen by validation inside each trial as always). The
row's choice reads only the trials' validation metric histories (`valid_<metric>`, GridTracker.
validation_score); no test number is read until every row has chosen. The chosen values then run on the other
seeds. Trials and seeds are ordinary children (keyed, reused, recorded when they fail), tagged with row,
trial, values and chosen (contracts.TAG_ROW ...); the plan artifact holds each row's tuning and the report
reads only chosen runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.config.loader import deep_merge, flatten, from_dict, parse_overrides, to_plain
from captionrec.config.train import TrainConfig
from captionrec.pipeline import StageFailed
from captionrec.report.grid import GridTracker
from captionrec.training import tuning

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
    trial: int = 0
    values: dict[str, float] = field(default_factory=dict)  # the trial's values of the searched train keys

    @property
    def row(self) -> str:
        return f"{self.model} {self.features}"

    @property
    def label(self) -> str:
        return f"{self.model} {self.features} seed {self.seed}"


def child_train_config(
    cfg: "Config", features: str, model: str, seed: int, values: dict[str, float] | None = None
) -> TrainConfig:
    """The train section + experiment.train_overrides + this child's model, features and seed (+ a tuning
    trial's values of the searched keys)."""
    tree = deep_merge(to_plain(cfg.train), parse_overrides(cfg.experiment.train_overrides))
    tree.update(model=model, features=features, seed=seed, **(values or {}))
    return from_dict(TrainConfig, tree, prefix="train")


def input_tables(store: "TableStore", train: TrainConfig) -> dict[str, dict[str, Any]]:
    """Location, Delta version and that version's commit time of each table a child reads (the commit time
    tells a table rebuilt at the same location, whose versions start again at 0, from the old one)."""
    from captionrec.pipeline.train import sequence_tables  # interactions (+ items for the catalogue candidates)

    names = sequence_tables(train) + ([C.ITEM_FEATURES] if train.feature_sets else [])
    out = {}
    for n in names:
        last = store.history(n, limit=1)
        committed = last[0]["timestamp"].isoformat() if last and last[0].get("timestamp") else None
        out[n] = {"location": store.location(n), "version": store.version(n), "committed_at": committed}
    return out


# Train keys that change what a run reports while it runs, never what it trains: not part of a child's key.
NOT_IN_KEY = ("progress_every_s",)


def child_key(train: TrainConfig, inputs: dict[str, Any]) -> str:
    plain = {k: v for k, v in to_plain(train).items() if k not in NOT_IN_KEY}
    blob = json.dumps({"train": plain, "inputs": inputs}, sort_keys=True, default=str)
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


def _child(cfg: "Config", store: "TableStore", fs: str, model: str, seed: int, trial: int, values: dict) -> Child:
    train = child_train_config(cfg, fs, model, seed, values)
    key = child_key(train, input_tables(store, train))
    return Child(fs, model, seed, dataclasses.replace(cfg, train=train), key, trial, dict(values))


def row_trials(cfg: "Config", store: "TableStore", fs: str, model: str) -> list[Child]:
    """The row's `experiment.tuning.budget` trials, all on the first seed (trial 0: the config as given)."""
    seed = cfg.experiment.seeds[0]
    base = child_train_config(cfg, fs, model, seed)
    keys = tuning.searched_keys(base.item_repr)
    points = tuning.trial_points(cfg.experiment.tuning, {k: getattr(base, k) for k in keys}, base.item_repr)
    return [_child(cfg, store, fs, model, seed, t, vals) for t, vals in enumerate(points)]


def seed_children(cfg: "Config", store: "TableStore", chosen: Child) -> list[Child]:
    """The chosen trial's values on the other seeds (the first seed's run is the trial itself)."""
    return [
        _child(cfg, store, chosen.features, chosen.model, s, chosen.trial, chosen.values)
        for s in cfg.experiment.seeds[1:]
    ]


def plan_grid(cfg: "Config", store: "TableStore") -> tuple[list[Child], list[dict[str, str]]]:
    """The rows' tuning trials (in grid order; each row's trials on the first seed) and feature sets skipped
    with their reason. The chosen trial's other seeds are planned after the choice (seed_children)."""
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
            children += row_trials(cfg, store, fs, model)
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
            interactions, items, inputs = train.read_sequence_inputs(self.store, t)
            self.prepared[key] = train.prepare(cfg, interactions, features, persist, inputs=inputs, items=items)
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


def grid_key(cfg: "Config", trials: list[Child]) -> str:
    """The trials' keys, the seeds and the selection metric: the same grid finds its parent run again."""
    exp = cfg.experiment
    blob = ",".join(sorted(c.key for c in trials)) + f"|seeds={list(exp.seeds)}|metric={exp.tuning.metric}"
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _progress(i: int, n: int, child: Child, outcome: str, t_start: float, done: int) -> None:
    elapsed = time.perf_counter() - t_start
    rate = done / elapsed * 60 if elapsed > 0 and done else 0.0
    eta = f", ~{(n - i) / rate:.1f} min left" if rate and i < n else ""
    log.info("[%d/%d] %s trial %d: %s (%.2f children/min%s)", i, n, child.label, child.trial, outcome, rate, eta)


def _entry(c: Child, **more: Any) -> dict[str, Any]:
    return {
        "features": c.features,
        "model": c.model,
        "seed": c.seed,
        "trial": c.trial,
        "values": c.values,
        "key": c.key,
        **more,
    }


@dataclass
class _Grid:
    """One invocation's state: the tracker, the shared sequences, the progress counter."""

    cfg: "Config"
    spark: "SparkSession"
    store: "TableStore"
    tracker: GridTracker
    finished: dict[str, str]
    total: int
    shared: SharedSequences
    done: int = 0
    t_start: float = field(default_factory=time.perf_counter)

    def open(self) -> None:
        if not self.tracker.opened:
            params = {f"experiment.{k}": v for k, v in flatten(self.cfg.experiment).items()}
            self.tracker.open_parent(params=params)

    def entries(self, children: list[Child], saved: list[dict]) -> list[dict]:
        """Reuse the children with a finished run, train the others (validation score only: no test read)."""
        metric = self.cfg.experiment.tuning.metric
        out = []
        for c in children:
            if c.key in self.finished:
                run_id = self.finished[c.key]
                valid = self.tracker.validation_score(run_id, metric)
                out.append(_entry(c, status="reused", run_id=run_id, valid=valid))
                continue
            self.open()
            out.append(self.train(c, metric, saved + out))
        return out

    def train(self, child: Child, metric: str, before: list[dict]) -> dict[str, Any]:
        t0, started_ms = time.perf_counter(), int(time.time() * 1000)
        entry = _entry(child)
        try:
            run_id = train_child(
                child.cfg,
                self.spark,
                self.store,
                self.shared,
                parent_run_id=self.tracker.parent_id,
                tags={C.TAG_KIND: C.CHILD_RUN, C.TAG_CHILD_KEY: child.key},
            )
            valid = self.tracker.validation_score(run_id, metric)
            entry.update(status="ran", run_id=run_id, valid=valid)
            outcome = f"finished in {time.perf_counter() - t0:.1f} s, validation {metric} {valid:.4f}"
        except Exception as exc:  # noqa: BLE001 - recorded as a FAILED child run; the grid goes on
            run_id = self.tracker.record_failure(child, exc, traceback.format_exc(), started_ms)
            entry.update(status="failed", run_id=run_id, error=f"{type(exc).__name__}: {exc}")
            outcome = f"FAILED ({type(exc).__name__}: {str(exc)[:200]}), recorded as run {run_id}"
            if self.cfg.experiment.stop_on_error:
                self.tracker.save_plan(before + [entry], finished=False)
                raise
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        self.done += 1
        _progress(len(before) + 1, self.total, child, outcome, self.t_start, self.done)
        return entry


def choose_rows(cfg: "Config", trials: list[Child], entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per row: its budget, each finished trial's validation score and the chosen trial (tuning.choose over
    the entries' `valid` scores, GridTracker.validation_score; an entry's test metrics are never looked at)."""
    by_key = {e["key"]: e for e in entries}
    out: dict[str, dict[str, Any]] = {}
    for row in dict.fromkeys(c.row for c in trials):
        mine = [c for c in trials if c.row == row]
        scores = {c.trial: by_key[c.key]["valid"] for c in mine if by_key[c.key]["status"] != "failed"}
        info: dict[str, Any] = {
            "model": mine[0].model,
            "features": mine[0].features,
            "budget": len(mine),
            "finished": len(scores),
            "metric": f"valid_{C.metric_name(cfg.experiment.tuning.metric)}",
            "scores": {str(t): s for t, s in scores.items()},
            "trial": None,
            "values": None,
        }
        if scores:
            t = tuning.choose(scores)
            info.update(trial=t, values=mine[t].values, valid=scores[t], overrides=tuning.overrides(mine[t].values))
        out[row] = info
    return out


def _mark(entries: list[dict[str, Any]], choices: dict[str, dict[str, Any]]) -> None:
    for e in entries:
        e["chosen"] = choices[f"{e['model']} {e['features']}"]["trial"] == e["trial"]


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec experiment`: plan the rows' trials, reuse finished children, train the rest, choose each
    row's trial by validation, run its other seeds; returns a summary."""
    trials, skipped = plan_grid(cfg, store)
    for s in skipped:
        log.warning("skipping feature set %s: %s", s["features"], s["reason"])
    if not trials:
        raise ValueError("nothing to run: " + "; ".join(f"{s['features']}: {s['reason']}" for s in skipped))
    exp = cfg.experiment
    gkey = grid_key(cfg, trials)
    tracker = GridTracker(cfg, store, gkey)
    rows = len({c.row for c in trials})
    total = len(trials) + rows * (len(exp.seeds) - 1)
    grid = _Grid(cfg, spark, store, tracker, tracker.finished_children(), total, SharedSequences(spark, store))
    log.info(
        "grid %s: %d row(s) x budget %d trial(s) (seed %s), then %d more seed(s) of each choice; %d feature set(s) "
        "skipped",
        gkey,
        rows,
        exp.tuning.budget,
        exp.seeds[0],
        len(exp.seeds) - 1,
        len(skipped),
    )
    entries = grid.entries(trials, [])
    choices = choose_rows(cfg, trials, entries)  # validation only: nothing above read a test metric
    chosen = [c for c in trials if choices[c.row]["trial"] == c.trial]
    entries += grid.entries([s for c in chosen for s in seed_children(cfg, store, c)], entries)
    _mark(entries, choices)
    for e in entries:  # test numbers, read only now and only for the chosen configurations' runs
        if e["chosen"] and e["status"] != "failed":
            e["hr_10"] = tracker.metric(e["run_id"], "test_hr_10_mean")
    failed = sum(e["status"] == "failed" for e in entries)
    if grid.tracker.opened or not tracker.has_parent:
        grid.open()
        tracker.tag_trials(entries)
        tracker.save_plan(entries, skipped=skipped, finished=failed <= exp.max_failed, tuning=choices)  # else FAILED
    count = {s: sum(e["status"] == s for e in entries) for s in ("ran", "reused", "failed")}
    summary = {
        "experiment": cfg.tracking.experiment,
        "parent_run_id": tracker.parent_id,
        "grid_key": gkey,
        "children": len(entries),
        **count,
        "max_failed": exp.max_failed,
        "budget": exp.tuning.budget,
        "tuning": {row: {k: c[k] for k in ("trial", "values", "finished")} for row, c in choices.items()},
        "skipped_feature_sets": {s["features"]: s["reason"] for s in skipped},
        "runs": entries,
        "tracking_uri": tracker.tracking_uri,
    }
    if count["failed"] > exp.max_failed:
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
    budget = s.get("budget", 1)
    lines.append(
        "tuning: budget 1: no tuning (every row runs its train config as given)"
        if budget == 1
        else f"tuning: budget {budget} trials per row on the first seed, chosen by validation (* = chosen)"
    )
    for e in s["runs"][:40]:
        hr, valid = e.get("hr_10"), e.get("valid")
        if e["status"] == "failed":
            val = (e.get("error") or "")[:70]
        elif e.get("chosen") and isinstance(hr, float):
            val = f"test HR@10 {hr:.4f}"
        else:
            val = f"valid {valid:.4f}" if isinstance(valid, float) else ""
        mark = f"t{e.get('trial', 0)}{'*' if e.get('chosen') else ' '}"
        lines.append(f"  {e['status']:<7} {e['model']:<9} {e['features']:<14} seed {e['seed']:<4} {mark:<4} {val}")
    for row, t in s.get("tuning", {}).items():
        if budget > 1:
            chosen = "no finished trial" if t["trial"] is None else f"trial {t['trial']} {t['values']}"
            lines.append(f"  chose {row}: {chosen}")
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
