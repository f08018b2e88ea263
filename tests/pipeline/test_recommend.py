"""The recommend stage: model choice by validation only, seen items excluded, incremental re-runs, items embedded
after training served from their features, similar_items against a numpy reference.

Real local Spark, Delta tables (delta-rs) in tmp folders, MLflow on sqlite, real (small) models trained by the
train stage on topic-structured synthetic data (`captionrec.training.synthetic`: each user follows a topic, the
`mllm_av` vectors carry the item's topic).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.training.synthetic import feature_rows, make_interactions, topic_features

SMALL = [
    "train.dim=32",
    "train.max_seq_len=10",
    "train.layers=1",
    "train.heads=2",
    "train.batch_size=64",
    "train.lr=0.01",
    "train.dropout=0.1",
    "train.split.num_windows=1",
    "train.eval_batch_size=256",
    "train.torch_threads=1",
    "train.num_processes=1",
    "train.epochs=6",
    "train.model=two_tower",
    "train.features=mllm_av",
    "experiment.train_overrides=[]",
]


def _cfg(tmp, *overrides):
    return load_config(
        "local",
        [
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/mlartifacts",
            "tracking.experiment=recommend-tests",
            f"train.inputs_dir={tmp}/train_inputs",
            f"storage.root={tmp}/lake",
            "storage.backend=delta-rs",
            "recommend.k=20",
            "recommend.active_days=1000",
            "recommend.similar_k=5",
            "recommend.refit_overrides=[num_processes=1,log_model=true]",
            *SMALL,
            *overrides,
        ],
    )


# ------------------------------------------------------------------------------------ pure parts


def _grid(client, exp_id, children):
    """A grid run with FINISHED children: (model, features, seed, valid per window, test mean[, more params])."""
    parent = client.create_run(exp_id, tags={C.TAG_KIND: C.GRID_RUN}).info.run_id
    for model, features, seed, valid, test, *more in children:
        r = client.create_run(exp_id, tags={C.TAG_KIND: C.CHILD_RUN, "mlflow.parentRunId": parent}).info.run_id
        params = {"train.model": model, "train.features": features, "train.seed": seed, **(more[0] if more else {})}
        for k, v in params.items():
            client.set_tag(r, k[4:], v) if k.startswith("tag:") else client.log_param(r, k, v)
        for w, v in enumerate(valid):
            client.log_metric(r, "valid_ndcg_10", v, step=w)
            client.log_metric(r, "test_ndcg_10", test, step=w)
        client.log_metric(r, "test_ndcg_10_mean", test)
        client.log_metric(r, "test_hr_10_mean", test)
        client.set_terminated(r, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent


def test_choice_ranks_by_validation_never_test(tmp_path):
    """The best test model (sasrec id) differs from the best validation model (two_tower mllm_av, mean over
    windows and seeds): the validation one is chosen; a later grid is the `latest` one."""
    from mlflow.tracking import MlflowClient

    from captionrec.serving.choice import choose_configuration, newest_grid

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("choice", artifact_location=str(tmp_path / "art"))
    _grid(client, exp, [("sasrec", "id", "1", [0.30, 0.30], 0.9)])
    grid = _grid(
        client,
        exp,
        [
            ("sasrec", "id", "1", [0.20, 0.22], 0.90),
            ("sasrec", "id", "2", [0.21, 0.20], 0.95),
            ("two_tower", "mllm_av", "1", [0.25, 0.27], 0.10),
            ("two_tower", "mllm_av", "2", [0.26, 0.24], 0.12),
            ("sasrec", "title", "1", [0.40, 0.00], 0.50),
        ],
    )  # mean 0.20: a single good window doesn't win
    assert newest_grid(client, "choice").info.run_id == grid
    choice = choose_configuration(client, grid)
    assert (choice["model"], choice["features"]) == ("two_tower", "mllm_av")
    assert choice["metric"] == "valid_ndcg_10" and choice["value"] == pytest.approx(0.255)
    assert "test" not in choice["reason"] and len(choice["children"]) == 2


def test_choice_among_trials_and_the_refit_trains_on_everything(tmp_path):
    """A tuned row's trials (children differing in train.lr) are configurations of their own: the best mean
    validation one wins (never the best test one), and the production refit trains that trial's values on one
    window whose (empty) test week starts just after the newest interaction: every interaction is refit data."""
    from mlflow.tracking import MlflowClient

    from captionrec.pipeline.refit import refit_config
    from captionrec.serving.choice import choose_configuration
    from captionrec.training.windows import rolling_windows

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("trials", artifact_location=str(tmp_path / "art"))

    def lr(v, chosen):
        return {"train.lr": v, "train.dropout": "0.1", f"tag:{C.TAG_TRIAL_CHOSEN}": chosen}

    grid = _grid(
        client,
        exp,
        [
            ("two_tower", "mllm_av", "1", [0.20], 0.90, lr("0.001", "false")),  # trial 0, first seed: best test
            ("two_tower", "mllm_av", "1", [0.30], 0.10, lr("0.01", "true")),  # trial 1: best validation, chosen
            ("two_tower", "mllm_av", "2", [0.28], 0.10, lr("0.01", "true")),  # the chosen trial's other seed
            ("sasrec", "id", "1", [0.25], 0.95, lr("0.001", "true")),
            ("sasrec", "id", "1", [0.40], 0.95, lr("0.003", "false")),  # a trial its row did not choose: left out
        ],
    )
    choice = choose_configuration(client, grid)
    assert (choice["model"], choice["features"], choice["hyperparameters"]) == ("two_tower", "mllm_av", {"lr": "0.01"})
    assert choice["value"] == pytest.approx(0.29) and len(choice["children"]) == 2 and "lr=0.01" in choice["reason"]
    assert len(choice["candidates"]) == 2  # the unchosen trials are no candidates

    newest = 1_700_000_000_000
    rcfg = refit_config(load_config("local", ["train.lr=0.005"]), choice, newest)
    assert rcfg.train.lr == 0.01 and rcfg.train.dropout == 0.1 and rcfg.train.retrain
    (w,) = rolling_windows(newest - 60 * 86_400_000, newest, 1, 7, rcfg.train.split.start)
    # the retrain phase trains on everything before test_start (the newest interaction included); validation:
    # the last 7 days, the newest included
    assert w.test_start_ms == newest + 1 and w.valid_start_ms == newest + 1 - 7 * 86_400_000


def test_top_k_excludes_seen_and_pads():
    from captionrec.transforms.recommend import top_k

    scores = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    pos, val = top_k(scores, [[0, 2], [0, 1, 2]], k=3)
    assert pos.tolist() == [[1, 3, -1], [3, -1, -1]]
    assert val[0, :2].tolist() == pytest.approx([0.8, 0.1])
    cand = np.array([[2, 0, -1], [3, 1, 0]])  # ANN candidates: positions, -1 padded
    pos, _ = top_k(np.array([[0.7, 0.9, 0.0], [0.4, 0.2, 0.1]], dtype=np.float32), [[0], []], 2, candidates=cand)
    assert pos.tolist() == [[2, -1], [3, 1]]


def _reference(vectors: dict[str, np.ndarray], k: int) -> dict[str, list[str]]:
    ids = sorted(vectors)
    m = np.asarray([vectors[i] for i in ids], dtype=np.float64)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    sims = m @ m.T
    np.fill_diagonal(sims, -np.inf)
    return {ids[r]: [ids[j] for j in np.argsort(-sims[r], kind="stable")[:k]] for r in range(len(ids))}


def test_ann_scorer_loads_the_drivers_index_never_builds_one():
    """A worker's scorer with retrieval=ann needs the driver's index (its artifact URI): none given is an error,
    raised before any model is loaded (no per-worker rebuild)."""
    from captionrec.transforms.recommend import ScorerSpec, construct_scorer

    spec = ScorerSpec(
        "runs:/nope/model", "sqlite:///nowhere.db", np.zeros((3, 4), np.float32), ["a", "b", "c"], retrieval="ann", k=2
    )
    with pytest.raises(ValueError, match="index_uri"):
        construct_scorer(spec, "cpu")


def test_force_promote_config():
    assert load_config("local", []).recommend.force_promote is False
    assert load_config("local", ["recommend.force_promote=true"]).recommend.force_promote is True


def test_similar_rows_incremental_matches_full():
    from captionrec.transforms.similar_items import similar_rows

    rng = np.random.default_rng(0)
    vecs = {f"i{n:03d}": rng.normal(size=8).astype(np.float32) for n in range(40)}
    rows, n = similar_rows(vecs, set(), {}, 5)
    assert n == 40
    table = {(r[0], r[1]): r for r in rows}
    assert {i: [table[(i, k)][2] for k in range(1, 6)] for i in vecs} == _reference(vecs, 5)
    kth = {i: table[(i, 5)][3] for i in vecs}
    new = {f"n{n:03d}": rng.normal(size=8).astype(np.float32) for n in range(3)}
    rows2, n2 = similar_rows({**vecs, **new}, set(new), kth, 5)
    assert 3 <= n2 < 43
    table.update({(r[0], r[1]): r for r in rows2})
    ref = _reference({**vecs, **new}, 5)
    assert {i: [table[(i, k)][2] for k in range(1, 6)] for i in ref} == ref


# ------------------------------------------------------------------------------------ the stage, end to end

NEW_TOPIC = 1


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    from captionrec.pipeline import train as train_stage
    from captionrec.tables import open_store

    tmp = tmp_path_factory.mktemp("recommend")
    syn = make_interactions(n_users=120, n_items=60, n_topics=4, days=35, per_user=(8, 12), seed=5)
    cfg = _cfg(tmp)
    store = open_store(spark, cfg.storage)
    store.overwrite(C.INTERACTIONS, spark.createDataFrame(syn.interactions))
    store.overwrite(C.ITEMS, spark.createDataFrame(syn.items[["item_id"]]))  # train.split.candidates=catalogue
    items = pd.concat(
        [syn.items, pd.DataFrame({"item_id": [f"n{i:03d}" for i in range(3)], "topic": NEW_TOPIC, "release_ms": 0})],
        ignore_index=True,
    )
    vecs = topic_features(items, dim=16, noise=0.2)
    store.overwrite(C.ITEM_FEATURES, spark.createDataFrame(feature_rows(items[:60], vecs[:60], "mllm_av")))
    run_id = train_stage.run(cfg, spark, store)["run_id"]
    return {"tmp": tmp, "store": store, "syn": syn, "items": items, "vecs": vecs, "run_id": run_id, "cfg": cfg}


def _table(store) -> pd.DataFrame:
    return store.read(C.RECOMMENDATIONS).toPandas()


def _user_topics(syn) -> dict[str, int]:
    topic = dict(zip(syn.items["item_id"], syn.items["topic"]))
    per = syn.interactions.assign(topic=syn.interactions["item_id"].map(topic))
    return per.groupby("user_id")["topic"].agg(lambda t: int(t.mode().iloc[0])).to_dict()


def test_recommend_incremental_end_to_end(spark, world):
    from captionrec.pipeline import recommend

    store, syn, tmp = world["store"], world["syn"], world["tmp"]
    cfg = _cfg(tmp, f"recommend.run_id={world['run_id']}")
    s1 = recommend.run(cfg, spark, store)
    df = _table(store)
    users = syn.interactions["user_id"].nunique()
    assert s1["plan"].startswith("all: first run") and s1["users_written"] == users
    assert len(df) == users * 20 and not df.duplicated(["user_id", "rank"]).any()
    assert sorted(df["rank"].unique()) == list(range(1, 21))
    seen = set(zip(syn.interactions["user_id"], syn.interactions["item_id"]))
    assert not any((u, i) in seen for u, i in zip(df["user_id"], df["item_id"]))
    assert (df.groupby("user_id")["score"].apply(lambda s: s.dropna().is_monotonic_decreasing)).all()
    assert set(df["run_id"]) == {world["run_id"]} and set(df["feature_set"]) == {"mllm_av"}

    # nothing new -> no commit
    v1 = store.version(C.RECOMMENDATIONS)
    s2 = recommend.run(cfg, spark, store)
    assert s2["plan"] == "nothing new" and store.version(C.RECOMMENDATIONS) == v1

    # new interactions of two users -> only their rows are rewritten
    last = syn.interactions["ts_ms"].max()
    extra = pd.DataFrame(
        {"user_id": ["u00003", "u00007"], "item_id": ["i00000", "i00001"], "ts_ms": [last + 1000, last + 2000]}
    )
    extra["ts"] = pd.to_datetime(extra["ts_ms"], unit="ms", utc=True)
    store.append(C.INTERACTIONS, spark.createDataFrame(extra[["user_id", "item_id", "ts", "ts_ms"]]))
    s3 = recommend.run(cfg, spark, store)
    df3 = _table(store)
    assert s3["plan"] == "new interactions" and s3["users_written"] == 2
    assert store.version(C.RECOMMENDATIONS) == v1 + 1 and len(df3) == len(df)
    newer = df3[df3["interactions_version"] == store.version(C.INTERACTIONS)]
    assert set(newer["user_id"]) == {"u00003", "u00007"} and len(newer) == 40
    assert not ((df3["user_id"] == "u00003") & (df3["item_id"] == "i00000")).any()
    unchanged = df3[~df3["user_id"].isin(["u00003", "u00007"])].sort_values(["user_id", "rank"])
    before = df[~df["user_id"].isin(["u00003", "u00007"])].sort_values(["user_id", "rank"])
    assert unchanged["item_id"].tolist() == before["item_id"].tolist()


def test_new_items_then_new_model(spark, world):
    """Items embedded after training reach on-topic users (all users rewritten); then a refit from the grid
    (a new, registered model) rewrites everyone again, and a re-run reuses the refit and commits nothing."""
    from mlflow.tracking import MlflowClient

    from captionrec.pipeline import recommend

    store, tmp, items, vecs = world["store"], world["tmp"], world["items"], world["vecs"]
    cfg = _cfg(tmp, f"recommend.run_id={world['run_id']}")
    if not store.exists(C.RECOMMENDATIONS):
        recommend.run(cfg, spark, store)
    n_rows = store.count(C.RECOMMENDATIONS)
    new = feature_rows(items[60:], vecs[60:], "mllm_av").assign(created_at=pd.Timestamp("2024-04-01", tz="UTC"))
    store.append(C.ITEM_FEATURES, spark.createDataFrame(new))
    s = recommend.run(cfg, spark, store)
    df = _table(store)
    assert s["plan"].startswith("all:") and "servable items changed" in s["plan"]
    import mlflow

    indexed = set(mlflow.artifacts.load_dict(f"runs:/{world['run_id']}/{C.ITEM_INDEX_ARTIFACT}")["item_ids"])
    outside = set(items["item_id"]) - indexed  # new to the model (not in its item index): the 3 embedded after it
    assert {"n000", "n001", "n002"} <= outside
    assert s["catalogue"]["new_items"] == len(outside) and len(df) == n_rows
    assert set(df["item_features_version"]) == {store.version(C.ITEM_FEATURES)}
    topics = _user_topics(world["syn"])
    hits = df[df["item_id"].str.startswith("n") & (df["rank"] <= 10)]
    on_topic = hits[hits["user_id"].map(topics) == NEW_TOPIC]
    assert len(on_topic) > 0, "no item embedded after training reached an on-topic user's top 10"
    assert len(on_topic) > len(hits) - len(on_topic)  # mostly users of the items' topic

    sim = store.read(C.SIMILAR_ITEMS).toPandas()
    assert s["similar_items"]["mllm_av"]["items"] == 63
    vec = {i: v for i, v in zip(items["item_id"], vecs)}
    ref = _reference(vec, 5)
    got = sim.sort_values(["item_id", "rank"]).groupby("item_id")["neighbor_id"].apply(list).to_dict()
    assert got == ref

    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    exp = client.get_experiment_by_name("recommend-tests").experiment_id
    _grid(client, exp, [("sasrec", "id", "42", [0.1], 0.9), ("two_tower", "id+mllm_av", "42", [0.3], 0.1)])
    # the newest interaction of all, with an item no one had: the production refit must train on it
    newest = int(store.read(C.INTERACTIONS).toPandas()["ts_ms"].max()) + 60_000
    late = pd.DataFrame({"user_id": ["u00005"], "item_id": ["late01"], "ts_ms": [newest]})
    late["ts"] = pd.to_datetime(late["ts_ms"], unit="ms", utc=True)
    store.append(C.INTERACTIONS, spark.createDataFrame(late[["user_id", "item_id", "ts", "ts_ms"]]))
    gcfg = _cfg(tmp, "recommend.from_grid=latest", "recommend.retrieval=ann")
    g = recommend.run(gcfg, spark, store)
    df2 = _table(store)
    from captionrec.serving.registry import load_recommender

    refit = load_recommender(f"runs:/{g['run_id']}/model", f"sqlite:///{tmp}/mlflow.db")
    index = mlflow.artifacts.load_dict(f"runs:/{g['run_id']}/{C.ITEM_INDEX_ARTIFACT}")["item_ids"]
    assert bool(refit.item_repr.known[index.index("late01") + 1]), "the refit did not train on the newest interaction"
    assert g["choice"]["newest_interaction_ms"] == newest and not df2.duplicated(["user_id", "rank"]).any()
    assert g["ann_index"]["built"] and g["ann_index"]["artifact_uri"].startswith(f"runs:/{g['run_id']}/ann_index/")
    champion = mlflow.pyfunc.load_model("models:/captionrec_recommender@champion")
    assert champion.unwrap_python_model().index is not None  # retrieval=ann: the registered pyfunc has its index
    source = mlflow.artifacts.download_artifacts("models:/captionrec_recommender@champion", dst_path=str(tmp / "v1"))
    assert (tmp / "v1" / "code" / "captionrec" / "models" / "base.py").is_file(), source  # carries captionrec
    assert g["choice"]["features"] == "id+mllm_av" and g["choice"]["refit"] == "trained"
    assert g["plan"].startswith("all: new model") and g["run_id"] != world["run_id"]
    assert set(df2["run_id"]) == {g["run_id"]} and len(df2) == n_rows
    assert g["model"]["name"] == "captionrec_recommender" and g["model"]["version"] == "1"
    assert g["choice"]["promotion"]["promoted"] is True
    assert str(client.get_model_version_by_alias("captionrec_recommender", "champion").version) == "1"
    version = store.version(C.RECOMMENDATIONS)
    again = recommend.run(gcfg, spark, store)
    assert again["choice"]["refit"] == "reused" and again["plan"] == "nothing new"
    assert store.version(C.RECOMMENDATIONS) == version


def test_ann_retrieval_matches_exact(spark, world):
    """retrieval=ann (the serving package's ItemIndex; exact FAISS at this size) gives the exact lists; the ann
    table is written in blocks of users (write_block_rows), one MERGE each, with the same rows."""
    from captionrec.pipeline import recommend

    store, tmp = world["store"], world["tmp"]
    cfg = _cfg(
        tmp,
        f"recommend.run_id={world['run_id']}",
        "recommend.recommendations_table=recs_ann",
        "recommend.retrieval=ann",
        "recommend.write_block_rows=500",
    )
    blocked = recommend.run(cfg, spark, store)
    assert blocked["commits"] > 1 and store.version("recs_ann") == blocked["commits"] - 1
    ann = store.read("recs_ann").toPandas().sort_values(["user_id", "rank"])
    exact = recommend.run(
        dataclasses.replace(
            cfg,
            recommend=dataclasses.replace(
                cfg.recommend, retrieval="exact", recommendations_table="recs_exact", write_block_rows=0
            ),
        ),
        spark,
        store,
    )
    assert exact["users_written"] == ann["user_id"].nunique() and exact["commits"] == 1
    assert len(ann) == blocked["rows_written"] and not ann.duplicated(["user_id", "rank"]).any()
    ex = store.read("recs_exact").toPandas().sort_values(["user_id", "rank"])
    assert ann["item_id"].fillna("").tolist() == ex["item_id"].fillna("").tolist()

    # the index was built once on the driver and logged on the served run; the workers loaded it from there
    import mlflow

    from captionrec.serving.index import ItemIndex

    built = blocked["ann_index"]
    assert built["built"] and built["artifact_uri"].startswith(f"runs:/{world['run_id']}/ann_index/")
    assert 0 < built["calibration_queries"] <= 200  # a sample of the scored users' states (IVF's calibration)
    index = ItemIndex.load(mlflow.artifacts.download_artifacts(built["artifact_uri"]))
    assert index.kind == built["kind"] == "exact" and len(index) == built["n_items"]
    assert set(ann["item_id"].dropna()) <= set(index.item_ids)
    again = recommend.run(
        dataclasses.replace(
            cfg, recommend=dataclasses.replace(cfg.recommend, recommendations_table="recs_ann2", write_block_rows=0)
        ),
        spark,
        store,
    )
    assert again["ann_index"] == {"artifact_uri": built["artifact_uri"], "built": False, "seconds": 0.0}
    ann2 = store.read("recs_ann2").toPandas().sort_values(["user_id", "rank"])
    assert ann2["item_id"].fillna("").tolist() == ann["item_id"].fillna("").tolist()


def test_a_run_without_a_model_is_a_clear_error(spark, world):
    """recommend.run_id=<a run that logged no model> stops before any scoring, naming what to set."""
    from mlflow.tracking import MlflowClient

    from captionrec.pipeline import recommend

    tmp = world["tmp"]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    bare = client.create_run(client.get_experiment_by_name("recommend-tests").experiment_id).info.run_id
    client.set_terminated(bare, "FINISHED")
    cfg = _cfg(tmp, f"recommend.run_id={bare}", "recommend.recommendations_table=recs_none")
    with pytest.raises(ValueError, match=r"logged no model.*train\.log_model=true.*from_grid=latest"):
        recommend.run(cfg, spark, world["store"])
    assert not world["store"].exists("recs_none")
