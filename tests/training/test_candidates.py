"""Which items a test case is ranked among (`train.split.candidates`), end to end through the train stage: real
Spark, real Delta tables (delta-rs) in tmp_path, real MLflow (sqlite).

The default (`catalogue`) ranks every item of the `items` table, whether or not anyone watched it, so the
candidate set of a window does not depend on what happened in its test week (issue 20.2: before, a new item was
a candidate only once someone had interacted with it by the week's end, so the cold distractors were exactly the
items watched that week). Each case's `candidates` count (cases artifact) = catalogue size - its distinct history
items (`exclude_seen`).
"""

from __future__ import annotations

import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.config.schema import StorageConfig
from captionrec.pipeline import train as train_stage
from captionrec.training.synthetic import make_interactions
from captionrec.training.windows import TEST

UNWATCHED = "i_unwatched"  # in the items table, no interaction at all
LATE = "i_late"  # in the items table; run B adds one interaction of it in the test week

SMALL = [
    "dim=8",
    "max_seq_len=6",
    "layers=1",
    "heads=1",
    "batch_size=64",
    "epochs=1",
    "split.num_windows=1",
    "eval_batch_size=256",
    "torch_threads=1",
    "num_processes=1",
    "log_model=false",
]


def _cfg(tmp, *overrides):
    return load_config(
        "local",
        [
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/mlartifacts",
            "tracking.experiment=captionrec-candidates",
            f"train.inputs_dir={tmp}/train_inputs",
            *SMALL,
            *overrides,
        ],
        stage="train",
    )


@pytest.fixture(scope="module")
def synthetic():
    return make_interactions(n_users=40, n_items=30, n_topics=3, days=21, per_user=(5, 8), seed=11)


def _lake(spark, root, synthetic, extra_rows=()):
    from captionrec.tables import open_store

    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(root)))
    inter = synthetic.interactions
    if extra_rows:
        extra = pd.DataFrame(extra_rows, columns=["user_id", "item_id", "ts_ms"])
        extra["ts"] = pd.to_datetime(extra["ts_ms"], unit="ms", utc=True)
        inter = pd.concat([inter, extra[inter.columns]], ignore_index=True)
    store.overwrite(C.INTERACTIONS, spark.createDataFrame(inter))
    ids = [*synthetic.items["item_id"], UNWATCHED, LATE]
    store.overwrite(C.ITEMS, spark.createDataFrame(pd.DataFrame({"item_id": ids, "title": ids})))
    return store


def _run(spark, store, tmp, *overrides):
    """The train stage's summary, each test case's candidate count and the test rows' histories."""
    import mlflow
    import pyarrow.parquet as pq

    cfg = _cfg(tmp, *overrides)
    summary = train_stage.run(cfg, spark, store)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    local = client.download_artifacts(summary["run_id"], C.cases_artifact(0), str(tmp / "dl"))
    cases = pq.read_table(local).to_pandas()
    rows = store.read(cfg.train.sequences_table).where(f"role = {TEST}").select("user_idx", "chunk", "seen")
    seen = {(r["user_idx"], r["chunk"]): set(r["seen"]) for r in rows.collect()}
    params = client.get_run(summary["run_id"]).data.params
    return summary, cases, seen, params


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory, synthetic):
    """Run A on the synthetic lake; run B on the same lake plus one test-week interaction of LATE by a new user."""
    tmp_a, tmp_b = tmp_path_factory.mktemp("cand_a"), tmp_path_factory.mktemp("cand_b")
    store_a = _lake(spark, tmp_a / "lake", synthetic)
    a = _run(spark, store_a, tmp_a)
    t_end = int(synthetic.interactions["ts_ms"].max())  # the last test week ends at the data's end
    store_b = _lake(spark, tmp_b / "lake", synthetic, [("zz_new_user", LATE, t_end - 3_600_000)])
    b = _run(spark, store_b, tmp_b)
    return {"a": a, "b": b, "catalogue": len(synthetic.items) + 2}


def test_an_item_nobody_watched_is_still_a_candidate(runs):
    summary, cases, seen, params = runs["a"]
    assert len(cases) > 0
    assert summary["items"] == runs["catalogue"]  # every item of the items table has an index
    expected = [runs["catalogue"] - len(seen[(u, c)]) for u, c in zip(cases["user_idx"], cases["chunk"])]
    assert cases["candidates"].tolist() == expected
    assert summary["candidates"] == "catalogue" and params["train.split.candidates"] == "catalogue"


def test_a_test_week_interaction_does_not_change_the_candidate_set(runs):
    _, cases_a, _, _ = runs["a"]
    _, cases_b, _, _ = runs["b"]
    a = cases_a.set_index(["user_idx", "chunk"])["candidates"]
    b = cases_b.set_index(["user_idx", "chunk"])["candidates"]
    assert len(a) > 0 and a.index.isin(b.index).all()  # the new user sorts last: the others keep their user_idx
    assert (b.loc[a.index] == a).all()


def test_a_test_week_interaction_does_not_move_the_popularity_baseline(runs):
    """The popularity baseline counts interactions before t_k only: run B's extra test-week interaction (of an
    item nobody had watched) leaves every common case's popularity rank as it was."""
    _, cases_a, _, _ = runs["a"]
    _, cases_b, _, _ = runs["b"]
    a = cases_a.set_index(["user_idx", "chunk"])
    b = cases_b.set_index(["user_idx", "chunk"]).loc[a.index]
    assert (a["rank_popularity"] == b["rank_popularity"]).all()
    assert (a["rank_random"] == b["rank_random"]).all()  # the same cases and candidates: the same random ranks
