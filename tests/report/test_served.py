"""The report's "new items served" section, `captionrec served` and the notebook's user view (report/served.py).

On real Delta tables (the delta-rs store) and a real MLflow sqlite store: a model run with its item index and
training cutoff, a recommendations table written twice (an older run's rows for a user no longer active, then the
current run's), items ingested and first interacted before and after the cutoff."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from captionrec import contracts as C

CUTOFF = "2026-03-01T00:00:00+00:00"  # the model's train.split.start
DAY = 86_400_000


def _ms(day: int) -> int:
    """Epoch ms of 2026-03-01 + `day` days (negative: before the cutoff)."""
    return int(dt.datetime.fromisoformat(CUTOFF).timestamp() * 1000) + day * DAY


def test_new_items_are_the_ones_the_model_never_trained_on():
    from captionrec.report.served import NEW_ITEM_COLUMNS, NewItemsServed, new_items_frame

    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4", "5"],
            "first_ms": [_ms(-5), _ms(0), _ms(2), float("nan"), _ms(-1)],
            "ingested_at": pd.to_datetime(["2026-01-01"] * 5, utc=True),
        }
    )
    top = pd.DataFrame({"item_id": ["3", "2", "1"], "users": [2, 1, 7], "best_rank": [4, 9, 1]})
    # 1 and 2 in the index, 2 first interacted at the cutoff (the refit trains before it); 3 and 4 not in the index
    out = new_items_frame(items, {"1", "2", "5"}, _ms(0), {"2", "4"}, top)
    assert list(out.columns) == list(NEW_ITEM_COLUMNS)
    assert out["item_id"].tolist() == ["3", "2", "4"]  # most-served first, unserved last
    assert out.set_index("item_id")["users"].to_dict() == {"3": 2, "2": 1, "4": 0}
    assert out.set_index("item_id")["has_vector"].to_dict() == {"3": False, "2": True, "4": True}
    assert out.set_index("item_id")["in_training_index"].to_dict() == {"3": False, "2": True, "4": False}
    # without a cutoff the whole index counts as trained
    assert new_items_frame(items, {"1", "2", "5"}, None, set(), top)["item_id"].tolist() == ["3", "4"]
    # every item in the training data (the demo's sample): the line says so instead of "0 of 0"
    none = new_items_frame(items, {"1", "2", "3", "4", "5"}, None, set(), top)
    got = NewItemsServed(3, "r1", "m", "2", "mllm_av", None, 40, None, 5, none)
    assert (got.new_items, got.served) == (0, 0) and got.line().startswith(
        "none: the serving model trained on every item that exists (40 user(s)); recommendations Delta version 3, "
        "run r1 (m v2, trained on its item index)"
    )


def _rec_rows(run_id: str, lists: dict[str, list[str | None]], created: str, version: int) -> pd.DataFrame:
    rows = [
        {
            "user_id": user,
            "rank": rank,
            "item_id": item,
            "score": None if item is None else 1.0 / rank,
            "run_id": run_id,
            "model_name": "captionrec_recommender",
            "model_version": "1",
            "feature_set": "mllm_av",
            "interactions_version": version,
            "item_features_version": 0,
            "created_at": pd.Timestamp(created, tz="UTC"),
        }
        for user, items in lists.items()
        for rank, item in enumerate(items, 1)
    ]
    return pd.DataFrame(rows)


def _model_run(tracking_uri: str, tmp_path) -> str:
    """A refit-like run: its item index (items 1-5) and its training cutoff, as the train stage logs them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri, tracking_uri)  # registry pinned: the process-wide URI may be another test's
    exp = client.create_experiment("served-tests", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(exp, run_name="refit", tags={C.TAG_KIND: "refit"})
    rid = run.info.run_id
    client.log_param(rid, "train.split.start", CUTOFF)
    client.log_dict(rid, {"item_ids": ["1", "2", "3", "4", "5"]}, C.ITEM_INDEX_ARTIFACT)
    client.set_terminated(rid, "FINISHED")
    client.create_registered_model("captionrec_recommender")
    mv = client.create_model_version("captionrec_recommender", f"runs:/{rid}/model", run_id=rid)
    client.set_registered_model_alias("captionrec_recommender", "champion", mv.version)
    mlflow.set_tracking_uri(tracking_uri)
    return rid


@pytest.fixture
def served_lake(spark, tmp_path):
    """items 1-8 with interactions, vectors and two recommendation writes (see the module docstring)."""
    from captionrec.config import load_config
    from captionrec.tables import open_store

    cfg = load_config(
        "local",
        [f"storage.root={tmp_path}/lake", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db"],
    )
    store = open_store(spark, cfg.storage)
    rid = _model_run(cfg.tracking.tracking_uri, tmp_path)
    old, new = pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-03-02", tz="UTC")
    items = pd.DataFrame({"item_id": [str(i) for i in range(1, 8)], "title": [f"t{i}" for i in range(1, 8)]}).assign(
        ingested_at=[old] * 5 + [new] * 2
    )  # 6 and 7 ingested after the model
    store.overwrite(C.ITEMS, spark.createDataFrame(items))
    # 5 first interacted at the cutoff (in the index, not trained on), 7 after it, 6 never; 8 only in interactions
    inter = [("u1", "1", -9), ("u1", "2", -8), ("u1", "3", -3), ("u2", "2", -7), ("u2", "4", -2), ("u3", "1", -6)]
    inter += [("u3", "5", 0), ("u1", "7", 1), ("u2", "8", 2), ("u3", "3", -1)]
    frame = pd.DataFrame(inter, columns=["user_id", "item_id", "day"])
    frame = frame.assign(ts_ms=frame["day"].map(_ms)).drop(columns="day")
    frame["ts"] = pd.to_datetime(frame["ts_ms"], unit="ms", utc=True)
    store.overwrite(C.INTERACTIONS, spark.createDataFrame(frame[["user_id", "item_id", "ts", "ts_ms"]]))
    feats = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "5", "6", "7"],
            "feature_set": "mllm_av",
            "model_id": "m",
            "dim": 2,
            "vector": [[1.0, 0.0]] * 6,
            "source_version": "v",
            "created_at": old,
        }
    )
    store.overwrite(C.ITEM_FEATURES, spark.createDataFrame(feats))
    # an older run's list for a user no longer active (6 at rank 1: must not count), then the current run's
    store.overwrite(C.RECOMMENDATIONS, spark.createDataFrame(_rec_rows("old-run", {"u9": ["6"]}, "2026-02-01", 0)))
    eleven = ["4", "1", "2", "3", "1", "2", "3", "4", "1", "2", "6"]  # 6 at rank 11: outside the top 10
    current = {"u1": ["7", "4", "5"], "u2": eleven, "u3": ["4", "2", None]}
    store.upsert(
        C.RECOMMENDATIONS,
        spark.createDataFrame(_rec_rows(rid, current, "2026-03-03", 0)),
        C.KEYS[C.RECOMMENDATIONS],
    )
    return cfg, store, rid


def test_section_counts_new_items_in_a_top_10_of_the_current_run(served_lake):
    from captionrec.report import build
    from captionrec.report.runs import RunSet
    from captionrec.report.sections import SECTIONS, ReportContext, build_sections
    from captionrec.report.served import new_items_served

    cfg, store, rid = served_lake
    got = new_items_served(store, cfg.tracking.tracking_uri)
    # new to the model: 5 (at the cutoff), 6 and 7 (ingested after), 8 (first interacted after; not in `items`)
    assert sorted(got.items["item_id"]) == ["5", "6", "7", "8"]
    assert got.items.set_index("item_id")["users"].to_dict() == {"7": 1, "5": 1, "6": 0, "8": 0}
    assert (got.served, got.new_items, got.with_vector, got.users, got.run_id) == (2, 4, 3, 3, rid)
    assert got.table_version == store.version(C.RECOMMENDATIONS) == 1 and got.cutoff == CUTOFF
    assert got.trained_items == 4  # items 1-4 of the index

    assert "served" in SECTIONS and "served" in cfg.report.sections  # registered by build, listed by default
    runset = RunSet(cfg.tracking.tracking_uri, "0", pd.DataFrame(), pd.DataFrame())
    assert build.GALLERY_FILE  # importing build (as the report stage does) registers the section

    def context(runset, rc, **extras):
        return ReportContext(config=rc, runset=runset, order=[], extras=extras)

    (sec,) = build_sections(context(runset, cfg.report, store=store), ("served",))
    assert sec.title == "New items served"
    assert "2 of 4 item(s) the serving model never trained on appear in at least one user's top 10" in sec.markdown
    assert f"recommendations Delta version 1, run {rid} (captionrec_recommender v1" in sec.markdown
    assert sec.tables["served"]["item_id"].tolist()[:2] == ["7", "5"] and "<table" in sec.html
    # no store handed in: left out; no table: one sentence
    assert build_sections(context(runset, cfg.report), ("served",)) == []
    (none,) = build_sections(context(runset, cfg.report, store=store, recommendations_table="not_there"), ("served",))
    assert none.markdown.startswith("No recommendations yet") and not none.tables


def test_served_command_prints_both_tables_and_the_registered_model(served_lake, capsys):
    from captionrec import cli

    cfg, store, rid = served_lake
    overrides = [f"storage.root={cfg.storage.root}", f"tracking.tracking_uri={cfg.tracking.tracking_uri}"]
    assert cli.main(["served", *overrides]) == 0
    out = capsys.readouterr().out
    assert "recommendations: 18 rows, Delta version 1" in out
    assert "similar_items: none yet" in out
    model = "registered model: captionrec_recommender version 1 (alias champion)"
    assert f"{model}; URI models:/captionrec_recommender@champion" in out
    assert f"runs:/{rid}/model (run {rid}); validation not recorded" in out
    assert "new items served: 2 of 4 item(s)" in out
    rows = [line.split()[:3] for line in out.splitlines() if line.split()[:1] == ["u1"]]
    assert rows == [["u1", "1", "7"], ["u1", "2", "4"], ["u1", "3", "5"]]  # the first user's rows, by rank


def test_user_view_and_missing_tables(served_lake, spark, tmp_path):
    from captionrec.config.schema import StorageConfig
    from captionrec.report.served import new_items_served, user_view
    from captionrec.tables import open_store

    cfg, store, rid = served_lake
    view = user_view(store, n_history=2, n_top=2)
    assert view["user_id"] == "u1"  # the most interactions among the users the current run scored (u9 is not)
    assert view["history"] == ["3", "7"] and view["top"] == ["7", "4"] and view["run_id"] == rid
    assert user_view(store, "u3", n_top=5)["top"] == ["4", "2"]  # the null past its candidates is left out
    assert user_view(store, "nobody") is None
    empty = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path / "empty")))
    assert user_view(empty) is None and new_items_served(empty, cfg.tracking.tracking_uri) is None
