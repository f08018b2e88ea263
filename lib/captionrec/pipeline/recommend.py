"""Recommend stage: a chosen model -> the `recommendations` table (top k per active user) and `similar_items`.

    captionrec recommend                         # conf: from_grid=latest (the newest grid's best by validation)
    captionrec recommend run_id=<run id>         # serve that run's logged model
    captionrec recommend retrieval=ann k=50 active_days=7

Model choice. `run_id` serves that run's logged model (`model/`, `item_index.json`). `from_grid=latest` (or a
grid run id) ranks the grid's finished children by their mean VALIDATION metric (`valid_<select_metric>` per
window, averaged over windows and seeds; test metrics are never read), and trains that configuration once on
every interaction up to now (the production refit, keyed by grid and configuration: a re-run reuses it): the
train stage with one rolling window whose test week starts at the newest interaction, so epoch selection uses
the last week and the refit model trains on everything before the newest timestamp. The refit is logged as a
pyfunc (`captionrec.serving.pyfunc.log_recommender`), registered, and promoted to the alias only when its
validation metric beats the champion's (`promote_if_better`; `recommend.force_promote=true` re-baselines it, e.g.
after `select_metric` changed). The choice, its reason and the Delta versions
are tagged on the run and returned.

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
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from captionrec import contracts as C

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger("captionrec.recommend")
DAY_MS = 86_400_000
TAG_REFIT_KEY = "captionrec.refit_key"
REFIT_RUN = "refit"


@dataclass
class Served:
    """The model being served: its run, what it is made of, and where it is registered."""

    run_id: str
    features: str
    max_seq_len: int
    index_ids: list[str]
    model_ids: dict[str, str]  # feature_set -> embedding model_id it trained on
    trained_versions: dict[str, int | None]
    model_name: str | None = None
    model_version: str | None = None
    choice: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_sets(self) -> list[str]:
        return [p for p in self.features.split("+") if p != C.ID]


# ------------------------------------------------------------------------------------ model choice


def _client(cfg: "Config"):
    import mlflow
    from mlflow.tracking import MlflowClient

    from captionrec.tracking.mlflow_utils import _absolute_uri

    uri = _absolute_uri(cfg.tracking.tracking_uri)
    mlflow.set_tracking_uri(uri)
    if cfg.tracking.registry_uri:
        mlflow.set_registry_uri(cfg.tracking.registry_uri)
    return MlflowClient(uri), uri


def newest_grid(client, experiment: str) -> Any:
    exp = client.get_experiment_by_name(experiment)
    runs = (
        []
        if exp is None
        else client.search_runs(
            [exp.experiment_id],
            f"tags.`{C.TAG_KIND}` = '{C.GRID_RUN}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    if not runs:
        raise ValueError(
            f"recommend.from_grid=latest: no grid run in experiment {experiment!r}; run "
            "`captionrec experiment` first or pass recommend.run_id=<run id>"
        )
    return runs[0]


def choose_configuration(client, grid_run_id: str, metric: str = "ndcg@10") -> dict[str, Any]:
    """The (model, features) of the grid whose finished children have the best mean validation metric
    (per window `valid_<metric>`, mean over windows, then over seeds). Test metrics are not read."""
    name = f"valid_{C.metric_name(metric)}"
    grid = client.get_run(grid_run_id)
    children = client.search_runs(
        [grid.info.experiment_id], f"tags.mlflow.parentRunId = '{grid_run_id}'", max_results=5000
    )
    scores: dict[tuple[str, str], list[float]] = {}
    seeds: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for run in children:
        if run.info.status != "FINISHED":
            continue
        values = [m.value for m in client.get_metric_history(run.info.run_id, name)]
        if not values:
            continue
        key = (run.data.params.get("train.model", ""), run.data.params.get("train.features", ""))
        scores.setdefault(key, []).append(float(np.mean(values)))
        seeds[key] = seeds.get(key, []) + [(run.data.params.get("train.seed", ""), run.info.run_id)]
    if not scores:
        raise ValueError(f"grid run {grid_run_id} has no finished child with the validation metric {name}")
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    best = max(sorted(means), key=lambda k: means[k])
    ranked = sorted(means.items(), key=lambda kv: -kv[1])
    runner_up = ranked[1] if len(ranked) > 1 else None
    reason = (
        f"best mean {name} of grid {grid_run_id}: {best[0]} {best[1]} = {means[best]:.4f} over "
        f"{len(scores[best])} seed(s)"
        + (f"; next {runner_up[0][0]} {runner_up[0][1]} = {runner_up[1]:.4f}" if runner_up else "")
    )
    return {
        "grid_run_id": grid_run_id,
        "model": best[0],
        "features": best[1],
        "metric": name,
        "value": means[best],
        "seed": int(sorted(seeds[best])[0][0] or 42),
        "children": seeds[best],
        "candidates": {f"{m} {f}": round(v, 6) for (m, f), v in ranked},
        "reason": reason,
    }


def _refit_config(cfg: "Config", choice: dict[str, Any], newest_ms: int) -> "Config":
    """The chosen child's train config (experiment.child_train_config) for the production refit: one rolling
    window whose test week starts at the newest interaction, + recommend.refit_overrides."""
    import dataclasses

    from captionrec.config.loader import deep_merge, from_dict, parse_overrides, to_plain
    from captionrec.config.train import TrainConfig
    from captionrec.pipeline.experiment import child_train_config

    train = child_train_config(cfg, choice["features"], choice["model"], choice["seed"])
    start = dt.datetime.fromtimestamp(newest_ms / 1000, tz=dt.UTC).isoformat()
    tree = deep_merge(to_plain(train), parse_overrides(cfg.recommend.refit_overrides))
    tree["split"].update(protocol="rolling", num_windows=1, start=start)
    tree.update(retrain=True)
    return dataclasses.replace(cfg, train=from_dict(TrainConfig, tree, prefix="train"))


def refit_from_grid(cfg: "Config", spark: "SparkSession", store: "TableStore", client, uri: str) -> tuple[str, dict]:
    """The refit run of the grid's chosen configuration: reused when one with the same key finished, else trained
    (the train stage), logged as a pyfunc and registered. Returns (run id, choice)."""
    from pyspark.sql import functions as F

    from captionrec.pipeline import train as train_stage

    rc = cfg.recommend
    grid = newest_grid(client, cfg.tracking.experiment) if rc.from_grid == "latest" else client.get_run(rc.from_grid)
    choice = choose_configuration(client, grid.info.run_id, rc.select_metric)
    key = hashlib.sha256(
        json.dumps([grid.info.run_id, choice["model"], choice["features"], list(rc.refit_overrides)]).encode()
    ).hexdigest()[:16]
    choice["refit_key"] = key
    found = client.search_runs(
        [grid.info.experiment_id], f"tags.`{TAG_REFIT_KEY}` = '{key}' and attributes.status = 'FINISHED'", max_results=1
    )
    if found:
        log.info("refit %s of %s %s reused (run %s)", key, choice["model"], choice["features"], found[0].info.run_id)
        choice.update(refit="reused", promotion=json.loads(found[0].data.tags.get("captionrec.promotion", "null")))
        return found[0].info.run_id, choice
    newest = int(store.read(C.INTERACTIONS).agg(F.max("ts_ms")).first()[0])
    rcfg = _refit_config(cfg, choice, newest)
    log.info("refit of %s %s on every interaction (%s)", choice["model"], choice["features"], choice["reason"])
    out = train_stage.run(
        rcfg,
        spark,
        store,
        tags={
            C.TAG_KIND: REFIT_RUN,
            TAG_REFIT_KEY: key,
            "captionrec.choice": choice["reason"][:4000],
            "captionrec.grid_run_id": grid.info.run_id,
        },
    )
    choice.update(refit="trained", promotion=register(cfg, client, uri, out["run_id"], rcfg))
    return out["run_id"], choice


def register(cfg: "Config", client, uri_tracking: str, run_id: str, rcfg: "Config") -> dict[str, Any]:
    """Log the refit model as a pyfunc (with retrieval=ann, with an ItemIndex over its items), register it
    (register_recommender) and move the alias only on a better validation metric (or recommend.force_promote)."""
    import mlflow
    import torch

    from captionrec.serving.index import ItemIndex
    from captionrec.serving.pyfunc import log_recommender, promote_if_better, register_recommender
    from captionrec.transforms.recommend import item_index_ids, load_recommender

    rc = cfg.recommend
    model = load_recommender(f"runs:/{run_id}/model", uri_tracking)
    ids = item_index_ids(json.dumps(mlflow.artifacts.load_dict(f"runs:/{run_id}/{C.ITEM_INDEX_ARTIFACT}")))
    index = None
    if rc.retrieval == "ann":  # the served pyfunc retrieves through the same kind of index as the stage
        with torch.no_grad():
            vectors = model.item_vectors()[1:].float().cpu().numpy()
        index = ItemIndex.build(vectors, ids[-len(vectors) :], device="cpu")
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        uri = log_recommender(
            model,
            ids,
            feature_set=rcfg.train.features,
            model_name=rc.registered_model,
            history_len=rcfg.train.max_seq_len,
            index=index,
        )
    version = register_recommender(uri, rc.registered_model)
    metric = f"valid_{C.metric_name(rc.select_metric)}"
    values = [m.value for m in client.get_metric_history(run_id, metric)]
    value = float(np.mean(values)) if values else float("nan")
    result = promote_if_better(rc.registered_model, version, metric, value, alias=rc.alias, force=rc.force_promote)
    result = {**result, "model_name": rc.registered_model, "version": str(version), "metric": metric, "value": value}
    log.info("registered %s version %s (%s %.4f): %s", rc.registered_model, version, metric, value, result)
    for k, v in {
        "captionrec.promotion": json.dumps(result, default=str),
        "captionrec.model_version": version,
        "captionrec.registered_model": rc.registered_model,
    }.items():
        client.set_tag(run_id, k, str(v)[:5000])
    return result


def served_model(client, run_id: str, choice: dict[str, Any]) -> Served:
    """What the run's logged model is: its params, tags, item index and registered version (if any)."""
    import mlflow

    run = client.get_run(run_id)
    p, tags = run.data.params, run.data.tags
    index = mlflow.artifacts.load_dict(f"runs:/{run_id}/{C.ITEM_INDEX_ARTIFACT}")
    model_ids = dict(kv.split("=", 1) for kv in tags.get("feature_model_ids", "").split(",") if "=" in kv)
    versions = {
        t: (int(tags[f"delta_version.{t}"]) if tags.get(f"delta_version.{t}") not in (None, "", "None") else None)
        for t in (C.INTERACTIONS, C.ITEM_FEATURES)
    }
    name, version = tags.get("captionrec.registered_model"), tags.get("captionrec.model_version")
    return Served(
        run_id,
        p.get("train.features", C.ID),
        int(p.get("train.max_seq_len", 20)),
        [str(i) for i in index["item_ids"]],
        model_ids,
        versions,
        name,
        version,
        choice,
    )


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


def resolve(cfg: "Config", spark: "SparkSession", store: "TableStore") -> tuple[Served, Any, str]:
    client, uri = _client(cfg)
    rc = cfg.recommend
    if rc.run_id:
        run_id, choice = rc.run_id, {"reason": f"recommend.run_id={rc.run_id}"}
    else:
        run_id, choice = refit_from_grid(cfg, spark, store, client, uri)
    served = served_model(client, run_id, choice)
    if served.model_version is None:  # a registered version of this run, if any
        try:
            found = client.search_model_versions(f"run_id = '{run_id}'")
        except Exception:  # noqa: BLE001 - a registry that cannot search by run: unregistered
            found = []
        if found:
            served.model_name, served.model_version = found[0].name, str(found[0].version)
    return served, client, uri


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec recommend`: choose the model, score the pending users, MERGE once; then similar_items."""
    from captionrec.transforms.recommend import load_recommender

    rc, t0 = cfg.recommend, time.perf_counter()
    served, client, uri = resolve(cfg, spark, store)
    t_model = time.perf_counter() - t0
    versions = {
        C.INTERACTIONS: store.version(C.INTERACTIONS),
        C.ITEM_FEATURES: store.version(C.ITEM_FEATURES) if served.feature_sets else None,
    }
    model = load_recommender(f"runs:/{served.run_id}/model", uri)
    catalogue = catalogue_of(store, served, model, versions[C.ITEM_FEATURES])
    prev = previous_state(store, rc.recommendations_table)
    changed = False
    if prev and served.feature_sets and prev["item_features_version"] != versions[C.ITEM_FEATURES]:
        before = catalogue_of(store, served, model, prev["item_features_version"])
        changed = set(before.item_ids) != set(catalogue.item_ids)
    interactions = store.read(C.INTERACTIONS, version=versions[C.INTERACTIONS])
    users, why = plan_users(cfg, store, interactions, versions, served, changed, prev)
    written = write_recommendations(
        cfg, store, served, catalogue, interactions, users, versions, uri, overwrite=bool(prev and prev["k"] > rc.k)
    )
    log.info("recommendations: %s (%s); %s", written, why, served.choice.get("reason"))
    similar = similar_items(cfg, store)
    return {
        "run_id": served.run_id,
        "model": {"name": served.model_name, "version": served.model_version, "features": served.features},
        "choice": served.choice,
        "input_versions": versions,
        "trained_versions": served.trained_versions,
        "catalogue": {"items": len(catalogue.item_ids), "new_items": catalogue.new_items},
        "plan": why,
        **written,
        "similar_items": similar,
        "model_seconds": round(t_model, 2),
        "table": store.location(rc.recommendations_table),
    }


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
) -> dict[str, Any]:
    """Score `users` and MERGE their rows (one commit, or one per block of users past `write_block_rows` on
    delta-rs); nothing to score: no commit."""
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import release_models, stage_gpu
    from captionrec.transforms.recommend import ScorerSpec, catalogue_digest, catalogue_index, score_users, user_inputs

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
        catalogue_index(served.run_id, catalogue.item_ids, catalogue.vectors, tracking_uri)
        if rc.retrieval == "ann"
        else None
    )  # built once here, loaded by the workers
    spec = ScorerSpec(
        f"runs:/{served.run_id}/model",
        tracking_uri,
        catalogue.vectors,
        catalogue.item_ids,
        rc.retrieval,
        rc.k,
        index and index["artifact_uri"],
    )
    constants = [
        F.lit(served.run_id).alias("run_id"),
        F.lit(served.model_name).cast("string").alias("model_name"),
        F.lit(served.model_version).cast("string").alias("model_version"),
        F.lit(served.features).alias("feature_set"),
        F.lit(versions[C.INTERACTIONS]).cast("long").alias("interactions_version"),
        F.lit(versions[C.ITEM_FEATURES]).cast("long").alias("item_features_version"),
        F.lit(dt.datetime.now(dt.UTC)).alias("created_at"),
    ]
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


def similar_items(cfg: "Config", store: "TableStore") -> dict[str, Any]:
    """Per caption feature set (its newest embedding model): top `similar_k` cosine neighbours of every item,
    rewritten only for new / re-embedded items and the items they now enter the top k of; one MERGE."""
    import pandas as pd
    from pyspark.sql import functions as F

    from captionrec.transforms.recommend import similar_rows

    rc, table = cfg.recommend, cfg.recommend.similar_items_table
    if not store.exists(C.ITEM_FEATURES):
        return {}
    version = store.version(C.ITEM_FEATURES)
    feats = store.read(C.ITEM_FEATURES, version=version).where(
        F.col("vector").isNotNull() & F.col("feature_set").isin(list(rc.similar_feature_sets))
    )
    prev = store.read(table) if store.exists(table) else None
    frames, out = [], {}
    for fs in sorted(r["feature_set"] for r in feats.select("feature_set").distinct().collect()):
        rows = feats.where(F.col("feature_set") == fs).select("item_id", "model_id", "vector", "created_at").collect()
        model_id = max(rows, key=lambda r: (r["created_at"], r["model_id"]))["model_id"]
        rows = [r for r in rows if r["model_id"] == model_id]
        vectors = {r["item_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}
        kth, changed = _similar_state(store, prev, fs, model_id, rc.similar_k, rows)
        got, n = similar_rows(vectors, changed, kth, rc.similar_k, rc.similar_batch_size)
        out[fs] = {"model_id": model_id, "items": len(vectors), "rewritten": n}
        if got:
            frames.append(
                pd.DataFrame(got, columns=["item_id", "rank", "neighbor_id", "score"]).assign(
                    feature_set=fs, model_id=model_id
                )
            )
    if not frames:
        return out
    pdf = pd.concat(frames, ignore_index=True)
    df = store.spark.createDataFrame(
        pdf, "item_id string, rank int, neighbor_id string, score float, feature_set string, model_id string"
    )
    df = df.withColumn("item_features_version", F.lit(version).cast("long")).withColumn(
        "created_at", F.lit(dt.datetime.now(dt.UTC))
    )
    res = store.upsert(table, df, C.KEYS[C.SIMILAR_ITEMS])
    out["version"] = res.version
    return out


def _similar_state(
    store: "TableStore", prev: "DataFrame" | None, fs: str, model_id: str, k: int, rows: list
) -> tuple[dict[str, float], set[str]]:
    """(each written item's k-th score, the items new or re-embedded since the set's last write)."""
    from pyspark.sql import functions as F

    if prev is None:
        return {}, set()
    mine = prev.where((F.col("feature_set") == fs) & (F.col("model_id") == model_id))
    state = mine.agg(F.max("rank").alias("k"), F.max("item_features_version").alias("v")).first()
    if state["k"] is None or state["k"] != k:
        return {}, set()
    kth = {
        r["item_id"]: (float("-inf") if r["score"] is None else float(r["score"]))
        for r in mine.where(F.col("rank") == k).select("item_id", "score").collect()
    }
    old = (
        store.read(C.ITEM_FEATURES, version=int(state["v"]))
        .where((F.col("feature_set") == fs) & (F.col("model_id") == model_id))
        .select("item_id", "created_at")
        .collect()
    )
    before = {(r["item_id"], r["created_at"]) for r in old}
    return kth, {r["item_id"] for r in rows if (r["item_id"], r["created_at"]) not in before}


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
