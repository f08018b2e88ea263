"""Recommend stage: a chosen model -> the `recommendations` table (top k per active user) and `similar_items`.

    captionrec recommend                         # conf: from_grid=latest (the newest grid's best by validation)
    captionrec recommend run_id=<run id>         # serve that run's logged model
    captionrec recommend retrieval=ann k=50 active_days=7

The recipe (`run`): resolve the model -> its servable catalogue -> plan the users to (re)write -> score them and
write once -> similar_items -> the summary.

Model. `run_id` serves that run's logged model (`model/`, `item_index.json`; a run without one is an error saying
what to set). `from_grid=latest` (or a grid run id) picks the grid's configuration with the best mean VALIDATION
metric (`captionrec.serving.choice.choose_configuration`; test metrics are never read) and trains it once on
every interaction up to now, epochs chosen on the last week (`captionrec.pipeline.refit`: keyed by grid and
configuration, a re-run reuses it), logged as a pyfunc, registered and promoted to the alias only when its
validation metric beats the champion's (`captionrec.serving.registry.register_refit`). The choice, its reason
and the Delta versions are tagged on the run and returned.

Scoring. Active users (an interaction in the `active_days` before the newest interaction, or `now`) against
every servable item (`transforms.recommend.build_catalogue`: feature models serve items embedded after
training), seen items excluded, top k, in a Spark job (`transforms.recommend.score_users`, model-map). With
`retrieval=ann` the catalogue's ItemIndex is built once here on the driver, logged on the served run
(`ann_index/<catalogue digest>`, reused while the catalogue is unchanged) and loaded by the workers.
Incremental: the table's newest write records the model run, k and the input versions; a new model, another k
or a changed servable catalogue rewrites every active user; new interactions rewrite only their users; nothing
new writes nothing. Rows are replaced by MERGE on (user_id, rank) (ranks 1..k always, item null past a user's
candidates), so nothing is duplicated. Users no longer active keep their last list.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from captionrec import contracts as C
from captionrec.serving.choice import Served

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger("captionrec.recommend")
DAY_MS = 86_400_000


# ------------------------------------------------------------------------------------ the catalogue


def feature_vectors(
    store: "TableStore", served: Served, version: int | None, items: set[str] | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """feature_set -> item_id -> raw vector of the model's sets and embedding models at `version`."""
    from pyspark.sql import functions as F

    if not served.feature_sets or not store.exists(C.ITEM_FEATURES):
        return {}
    df = store.read(C.ITEM_FEATURES, version=version).where(F.col("vector").isNotNull())
    out: dict[str, dict[str, np.ndarray]] = {fs: {} for fs in served.feature_sets}
    for fs in served.feature_sets:
        part = df.where(F.col("feature_set") == fs)
        if fs in served.model_ids:
            part = part.where(F.col("model_id") == served.model_ids[fs])
        for r in part.select("item_id", "vector").collect():
            if items is None or r["item_id"] in items:
                out[fs][r["item_id"]] = np.asarray(r["vector"], dtype=np.float32)
    return out


def catalogue_of(store: "TableStore", served: Served, model: Any, version: int | None):
    """The model's servable items at item_features `version` (transforms.recommend.build_catalogue)."""
    from captionrec.transforms.recommend import build_catalogue, feature_stats

    if not served.feature_sets:
        return build_catalogue(model, served.index_ids)
    trained = feature_vectors(store, served, served.trained_versions[C.ITEM_FEATURES], set(served.index_ids))
    stats = {fs: feature_stats(trained[fs]) for fs in served.feature_sets}
    return build_catalogue(model, served.index_ids, feature_vectors(store, served, version), stats)


def catalogue_changed(
    store: "TableStore", served: Served, model: Any, catalogue: Any, prev: dict[str, Any] | None, versions: dict
) -> bool:
    """Whether the servable items differ from those of the table's last write (feature models, item_features newer)."""
    if not (prev and served.feature_sets and prev["item_features_version"] != versions[C.ITEM_FEATURES]):
        return False
    before = catalogue_of(store, served, model, prev["item_features_version"])
    return set(before.item_ids) != set(catalogue.item_ids)


# ------------------------------------------------------------------------------------ what to rewrite


def previous_state(store: "TableStore", table: str) -> dict[str, Any] | None:
    """The newest write's run id and input versions, and the table's largest rank (None: no table)."""
    from pyspark.sql import functions as F

    if not store.exists(table):
        return None
    df = store.read(table)
    last = (
        df.orderBy(F.col("created_at").desc())
        .select("run_id", "interactions_version", "item_features_version", "created_at")
        .first()
    )
    if last is None:
        return None
    return {**last.asDict(), "k": int(df.agg(F.max("rank")).first()[0])}


def plan_users(
    cfg: "Config",
    store: "TableStore",
    interactions: "DataFrame",
    versions: dict[str, int | None],
    served: Served,
    catalogue_changed: bool,
    prev: dict[str, Any] | None,
) -> tuple["DataFrame", str]:
    """The active users to (re)write and why (`all: <reason>`, `new interactions` or `nothing new`)."""
    from pyspark.sql import functions as F

    rc = cfg.recommend
    now_ms = (
        int(dt.datetime.fromisoformat(rc.now).replace(tzinfo=dt.UTC).timestamp() * 1000)
        if rc.now
        else int(interactions.agg(F.max("ts_ms")).first()[0])
    )
    active = interactions.where(F.col("ts_ms") >= now_ms - rc.active_days * DAY_MS).select("user_id").distinct()
    reasons = [] if prev else ["first run"]
    if prev and prev["run_id"] != served.run_id:
        reasons.append(f"new model (run {served.run_id}, was {prev['run_id']})")
    if prev and prev["k"] != rc.k:
        reasons.append(f"k {prev['k']} -> {rc.k}")
    if prev and catalogue_changed:
        reasons.append("the servable items changed")
    if reasons:
        return active, "all: " + "; ".join(reasons)
    if prev["interactions_version"] == versions[C.INTERACTIONS]:
        return active.limit(0), "nothing new"
    keys = ["user_id", "item_id", "ts_ms"]
    old = store.read(C.INTERACTIONS, version=int(prev["interactions_version"])).select(*keys)
    changed = interactions.select(*keys).join(old, keys, "left_anti").select("user_id").distinct()
    return active.join(changed, "user_id"), "new interactions"


# ------------------------------------------------------------------------------------ the stage


def resolve(cfg: "Config", spark: "SparkSession", store: "TableStore") -> tuple[Served, str]:
    """The served model (recommend.run_id, or the grid's refit: pipeline.refit) and the tracking URI."""
    from captionrec.pipeline.refit import refit_from_grid
    from captionrec.serving.choice import mlflow_client, served_model

    client, uri = mlflow_client(cfg)
    rc = cfg.recommend
    if rc.run_id:
        run_id, choice = rc.run_id, {"reason": f"recommend.run_id={rc.run_id}"}
    else:
        run_id, choice = refit_from_grid(cfg, spark, store, client, uri)
    return served_model(client, run_id, choice), uri


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec recommend`: resolve the model, plan the users, score them and MERGE once; then similar_items."""
    from captionrec.pipeline import similar_items
    from captionrec.serving.registry import load_recommender

    rc, t0 = cfg.recommend, time.perf_counter()
    served, uri = resolve(cfg, spark, store)
    t_model = time.perf_counter() - t0
    versions = {
        C.INTERACTIONS: store.version(C.INTERACTIONS),
        C.ITEM_FEATURES: store.version(C.ITEM_FEATURES) if served.feature_sets else None,
    }
    model = load_recommender(f"runs:/{served.run_id}/model", uri)
    catalogue = catalogue_of(store, served, model, versions[C.ITEM_FEATURES])
    prev = previous_state(store, rc.recommendations_table)
    changed = catalogue_changed(store, served, model, catalogue, prev, versions)
    interactions = store.read(C.INTERACTIONS, version=versions[C.INTERACTIONS])
    users, why = plan_users(cfg, store, interactions, versions, served, changed, prev)
    written = write_recommendations(
        cfg,
        store,
        served,
        catalogue,
        interactions,
        users,
        versions,
        uri,
        overwrite=bool(prev and prev["k"] > rc.k),
        model=model,
    )
    log.info("recommendations: %s (%s); %s", written, why, served.choice.get("reason"))
    return {
        "run_id": served.run_id,
        "model": {"name": served.model_name, "version": served.model_version, "features": served.features},
        "choice": served.choice,
        "input_versions": versions,
        "trained_versions": served.trained_versions,
        "catalogue": {"items": len(catalogue.item_ids), "new_items": catalogue.new_items},
        "plan": why,
        **written,
        "similar_items": similar_items.run(cfg, store),
        "model_seconds": round(t_model, 2),
        "table": store.location(rc.recommendations_table),
    }


def _provenance_columns(served: Served, versions: dict[str, int | None]) -> list[Any]:
    """The columns every recommendation row carries: which model, which input versions, when."""
    from pyspark.sql import functions as F

    return [
        F.lit(served.run_id).alias("run_id"),
        F.lit(served.model_name).cast("string").alias("model_name"),
        F.lit(served.model_version).cast("string").alias("model_version"),
        F.lit(served.features).alias("feature_set"),
        F.lit(versions[C.INTERACTIONS]).cast("long").alias("interactions_version"),
        F.lit(versions[C.ITEM_FEATURES]).cast("long").alias("item_features_version"),
        F.lit(dt.datetime.now(dt.UTC)).alias("created_at"),
    ]


def write_recommendations(
    cfg: "Config",
    store: "TableStore",
    served: Served,
    catalogue: Any,
    interactions: "DataFrame",
    users: "DataFrame",
    versions: dict[str, int | None],
    tracking_uri: str,
    overwrite: bool = False,
    model: Any = None,
) -> dict[str, Any]:
    """Score `users` and MERGE their rows (one commit, or one per block of users past `write_block_rows` on
    delta-rs); nothing to score: no commit."""
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import release_models, stage_gpu
    from captionrec.transforms.recommend import (
        ScorerSpec,
        calibration_states,
        catalogue_digest,
        catalogue_index,
        score_users,
        user_inputs,
    )

    rc = cfg.recommend
    inputs = user_inputs(
        interactions, users, served.index_ids, catalogue.item_ids, served.max_seq_len, rc.partitions
    ).cache()
    n_users = inputs.count()
    if n_users == 0:
        inputs.unpersist()
        return {"users_written": 0, "rows_written": 0, "version": store.version(rc.recommendations_table)}
    gpu = stage_gpu(inputs.sparkSession, rc.gpu, "recommend")
    index = (
        catalogue_index(
            served.run_id,
            catalogue.item_ids,
            catalogue.vectors,
            tracking_uri,
            lambda: calibration_states(model, inputs),
        )
        if rc.retrieval == "ann"
        else None
    )  # built once here (IVF calibrated on a sample of these users' states), loaded by the workers
    spec = ScorerSpec(
        f"runs:/{served.run_id}/model",
        tracking_uri,
        catalogue.vectors,
        catalogue.item_ids,
        rc.retrieval,
        rc.k,
        index and index["artifact_uri"],
    )
    constants = _provenance_columns(served, versions)
    # a worker's cached scorer holds the catalogue's vectors (and index): keyed by the catalogue, not just the run
    key = f"recommend:{served.run_id}:{rc.retrieval}:{catalogue_digest(catalogue.item_ids, catalogue.vectors)}"
    blocks = 1
    if store.backend == "delta-rs" and rc.write_block_rows and not overwrite:
        blocks = max(1, -(-n_users * rc.k // rc.write_block_rows))
    stats = {"inserted": 0, "updated": 0, "commits": 0}
    for b in range(blocks):
        part = inputs if blocks == 1 else inputs.where(F.abs(F.hash("user_id")) % blocks == b)
        rows = score_users(part, spec, gpu, rc.batch_size, key=key)
        out = rows.select("user_id", "rank", "item_id", "score", *constants)
        if overwrite:
            version = store.overwrite(rc.recommendations_table, out)
            stats["commits"] += 1
            continue
        res = store.upsert(rc.recommendations_table, out, C.KEYS[C.RECOMMENDATIONS])
        version = res.version
        stats.update(
            inserted=stats["inserted"] + res.inserted,
            updated=stats["updated"] + res.updated,
            commits=stats["commits"] + int(bool(res.inserted or res.updated)),
        )
    inputs.unpersist()
    release_models(inputs.sparkSession, gpu, "recommend")
    return {
        "users_written": n_users,
        "rows_written": n_users * rc.k,
        "version": version,
        **stats,
        **({"ann_index": index} if index else {}),
    }


def format_summary(s: dict[str, Any]) -> str:
    m, c = s["model"], s["choice"]
    registered = f"registered {m['name']} v{m['version']}" if m["version"] else "not registered"
    lines = [
        f"recommend: run {s['run_id']} ({m['features']}; {registered}) in {s.get('seconds', 0):.0f} s",
        f"  choice: {c.get('reason')}" + (f" [refit {c['refit']}]" if c.get("refit") else ""),
    ]
    if c.get("promotion"):
        p = c["promotion"]
        lines.append(f"  registry: {p.get('reason', p)}")
    lines += [
        f"  inputs: {s['input_versions']} (model trained on {s['trained_versions']})",
        f"  catalogue: {s['catalogue']['items']} items ({s['catalogue']['new_items']} scored from features)",
        f"  {s['plan']}: {s['users_written']} user(s), {s['rows_written']} row(s), {s.get('commits', 0)} "
        f"commit(s), table version {s['version']}",
        f"  table: {s['table']}",
    ]
    if s.get("ann_index"):
        a = s["ann_index"]
        how = f"built in {a['seconds']:.1f} s" if a["built"] else "reused"
        lines.append(f"  ann index: {a['artifact_uri']} ({how})")
    for fs, v in (s.get("similar_items") or {}).items():
        lines.append(f"  similar_items {fs}: {v}")
    return "\n".join(lines)
