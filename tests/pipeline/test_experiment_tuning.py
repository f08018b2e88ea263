"""Equal tuning of the experiment grid (captionrec.training.tuning, pipeline.experiment.choose_rows).

Pure parts first (the search space, the trials, the choice), then the choice over real MLflow runs whose best
validation and best test trials differ, then the whole stage on a tiny grid: equal budgets, tags, the chosen
trial's other seeds, a re-run that trains nothing, and the report showing the chosen values only.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.config.experiment import TuningConfig
from captionrec.pipeline import experiment
from captionrec.training import tuning

BASE = {"lr": 0.005, "dropout": 0.2, "temperature": 1.0, "id_dropout": 0.0}


def test_every_row_gets_the_budget_trial_0_is_the_config_and_draws_are_seeded():
    t = TuningConfig(budget=4, seed=3)
    plain = tuning.trial_points(t, BASE, "feature")
    fusion = tuning.trial_points(t, BASE, "id+feature")
    assert len(plain) == len(fusion) == 4
    assert plain[0] == {k: BASE[k] for k in ("lr", "dropout", "temperature")}  # no id_dropout outside fusion
    assert fusion[0] == BASE and all(set(p) == set(BASE) for p in fusion)
    assert len({tuple(sorted(p.items())) for p in plain}) == 4  # distinct points
    assert all(p["lr"] in t.lr and p["temperature"] in t.temperature for p in plain[1:])
    assert tuning.trial_points(t, BASE, "feature") == plain  # the same seed: the same trials
    assert tuning.trial_points(TuningConfig(budget=4, seed=4), BASE, "feature") != plain
    assert tuning.trial_points(TuningConfig(budget=1), BASE, "id") == [plain[0]]  # budget 1: the config as given
    with pytest.raises(ValueError, match="only 1 point.*widen"):
        tuning.trial_points(TuningConfig(budget=3, lr=(0.005,), dropout=(0.2,), temperature=(1.0, 0.5)), BASE, "id")
    assert tuning.overrides({"lr": 0.003, "dropout": 0.1}) == ["dropout=0.1", "lr=0.003"]


def test_choose_takes_the_best_finite_validation_score():
    assert tuning.choose({0: 0.1, 1: 0.3, 2: 0.2}) == 1
    assert tuning.choose({0: 0.3, 1: 0.3}) == 0  # ties: the lower trial
    assert tuning.choose({0: math.nan, 1: 0.05}) == 1
    assert tuning.choose({1: math.nan, 2: math.nan}) == 1
    with pytest.raises(ValueError):
        tuning.choose({})


def _log_trial(client, exp_id: str, parent: str, valid: list[float], test: list[float]) -> str:
    from mlflow.entities import Metric

    rid = client.create_run(exp_id, tags={"mlflow.parentRunId": parent, C.TAG_KIND: C.CHILD_RUN}).info.run_id
    metrics = [Metric("valid_ndcg_10", v, 0, w) for w, v in enumerate(valid)]
    metrics += [Metric(n, v, 0, w) for w, v in enumerate(test) for n in ("test_hr_10", "test_ndcg_10")]
    metrics += [Metric(f"test_{n}_mean", sum(test) / len(test), 0, 0) for n in ("hr_10", "ndcg_10")]
    client.log_batch(rid, metrics=metrics)
    client.set_terminated(rid, "FINISHED")
    return rid


def test_the_choice_follows_validation_and_never_reads_a_test_metric(tmp_path):
    from mlflow.tracking import MlflowClient

    from captionrec.report.grid import GridTracker

    cfg = load_config(
        "local", [f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/a"]
    )
    tracker = GridTracker(cfg, None, "g-test")
    parent = tracker.client.create_run(tracker.experiment_id).info.run_id
    # trial 0: best test, worst validation; trial 1: best validation, middling test; trial 2: failed
    runs = {
        0: _log_trial(tracker.client, tracker.experiment_id, parent, [0.10, 0.12], [0.90, 0.95]),
        1: _log_trial(tracker.client, tracker.experiment_id, parent, [0.30, 0.28], [0.40, 0.42]),
        2: _log_trial(tracker.client, tracker.experiment_id, parent, [0.20, 0.21], [0.60, 0.61]),
    }
    read: list[tuple[str, str]] = []

    class Recording(MlflowClient):  # the real client, recording what selection reads
        def get_metric_history(self, run_id, key):
            read.append(("history", key))
            return super().get_metric_history(run_id, key)

        def get_run(self, run_id):
            read.append(("run", run_id))  # a run's data holds its test metrics: selection must not fetch it
            return super().get_run(run_id)

    tracker.client = Recording(cfg.tracking.tracking_uri)
    trials = [experiment.Child("title", "sasrec", 1, None, f"k{t}", t, {"lr": 0.001 * (t + 1)}) for t in range(4)]
    entries = [
        {**experiment._entry(c), "status": "ran", "run_id": runs[c.trial], "valid": 0.0}
        for c in trials
        if c.trial in runs
    ]
    entries.append({**experiment._entry(trials[3]), "status": "failed", "run_id": "x"})
    for e in entries[:3]:
        e["valid"] = tracker.validation_score(e["run_id"], cfg.experiment.tuning.metric)
    choice = experiment.choose_rows(cfg, trials, entries)["sasrec title"]
    assert read and all(kind == "history" and key == "valid_ndcg_10" for kind, key in read)
    assert choice["trial"] == 1 and choice["values"] == {"lr": 0.002}  # best validation, not best test (trial 0)
    assert (choice["budget"], choice["finished"]) == (4, 3) and choice["valid"] == pytest.approx(0.29)
    assert choice["scores"]["0"] == pytest.approx(0.11) and choice["overrides"] == ["lr=0.002"]


# --------------------------------------------------------------------------------- the stage, end to end

SMALL = [
    "dim=16",
    "max_seq_len=8",
    "layers=1",
    "heads=1",
    "batch_size=64",
    "lr=0.005",
    "eval_batch_size=256",
    "split.num_windows=1",
    "torch_threads=1",
    "num_processes=1",
    "epochs=1",
    "log_model=false",
]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    from captionrec.config.schema import StorageConfig
    from captionrec.tables import open_store
    from captionrec.training.synthetic import feature_rows, make_interactions, topic_features

    root = tmp_path_factory.mktemp("tuning-lake")
    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(root)))
    syn = make_interactions(n_users=80, n_items=50, n_topics=4, days=21, per_user=(6, 9), seed=7)
    store.overwrite(C.INTERACTIONS, spark.createDataFrame(syn.interactions))
    store.overwrite(C.ITEMS, spark.createDataFrame(syn.items[["item_id"]]))
    title = feature_rows(syn.items, topic_features(syn.items, dim=8), "title")
    store.overwrite(C.ITEM_FEATURES, spark.createDataFrame(title))
    return store, root


def _cfg(tmp, root, *extra):
    return load_config(
        "local",
        [
            f"storage.root={root}",
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/art",
            "tracking.experiment=tuning-tests",
            "experiment.feature_sets=[title,id+title]",
            "experiment.models=[two_tower]",
            "experiment.seeds=[1,2]",
            "experiment.tuning.budget=2",
            "experiment.tuning.lr=[0.005,0.02]",
            "experiment.tuning.dropout=[0.2]",
            "experiment.tuning.temperature=[1.0]",
            "experiment.tuning.id_dropout=[0.0]",
            "experiment.train_overrides=[" + ",".join(SMALL) + "]",
            f"report.out_dir={tmp}/reports",
            "report.bootstrap_samples=100",
            "report.comparisons=[]",
            *extra,
        ],
    )


def test_grid_tunes_every_row_alike_reuses_trials_and_reports_the_choice(spark, lake, tmp_path):
    from mlflow.tracking import MlflowClient

    store, root = lake
    cfg = _cfg(tmp_path, root)
    s = experiment.run(cfg, spark, store)
    print(experiment.format_summary({**s, "seconds": 0}))
    assert (s["children"], s["ran"], s["failed"]) == (6, 6, 0)  # 2 rows x 2 trials, then seed 2 of each choice
    trials = [e for e in s["runs"] if e["seed"] == 1]
    assert sorted((e["features"], e["trial"]) for e in trials) == [
        ("id+title", 0),
        ("id+title", 1),
        ("title", 0),
        ("title", 1),
    ]
    assert {e["values"]["lr"] for e in trials} == {0.005, 0.02}
    client = MlflowClient(cfg.tracking.tracking_uri)
    for row, t in s["tuning"].items():
        mine = [e for e in s["runs"] if f"{e['model']} {e['features']}" == row]
        scores = {e["trial"]: e["valid"] for e in mine if e["seed"] == 1}
        assert t["trial"] == tuning.choose(scores) and t["finished"] == 2
        chosen = [e for e in mine if e["chosen"]]
        assert sorted(e["seed"] for e in chosen) == [1, 2] and {e["trial"] for e in chosen} == {t["trial"]}
        for e in mine:
            tags = client.get_run(e["run_id"]).data.tags
            assert tags[C.TAG_ROW] == row and tags[C.TAG_TRIAL] == str(e["trial"])
            assert tags[C.TAG_TRIAL_CHOSEN] == ("true" if e["chosen"] else "false")
            assert ("hr_10" in e) == e["chosen"]  # a test number only for the chosen configuration's runs
        seed2 = client.get_run(next(e["run_id"] for e in chosen if e["seed"] == 2)).data.params
        assert float(seed2["train.lr"]) == t["values"]["lr"]
    n_runs = len(client.search_runs([client.get_experiment_by_name("tuning-tests").experiment_id]))

    again = experiment.run(cfg, spark, store)  # the same grid: every trial and seed reused, nothing trained
    assert (again["ran"], again["reused"], again["parent_run_id"]) == (0, 6, s["parent_run_id"])
    assert again["tuning"] == s["tuning"]
    assert len(client.search_runs([client.get_experiment_by_name("tuning-tests").experiment_id])) == n_runs

    from captionrec.pipeline import report as report_stage

    out = report_stage.run(_cfg(tmp_path, root, f"report.parent_run_id={s['parent_run_id']}"), spark, store)
    runs = pd.read_csv(Path(out["out_dir"]) / "runs.csv")
    assert out["runs_finished"] == 4  # the chosen trial's two seeds per row; unchosen trials left out
    md = open(out["files"]["markdown"]).read()
    assert "## Tuning" in md and "the same budget of 2 trials" in md
    for t in s["tuning"].values():
        assert f"lr={t['values']['lr']:g}" in md
    assert set(runs["run_id"]) == {e["run_id"] for e in s["runs"] if e["chosen"]}
