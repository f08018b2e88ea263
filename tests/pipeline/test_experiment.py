"""The experiment grid end to end: real Spark, real Delta tables (delta-rs), the real train stage, a real
MLflow sqlite store; then the report stage on the grid it made.

Synthetic topic-structured interactions (captionrec.training.synthetic): `title` vectors carry the topic,
`videomae` vectors come in two lengths (the child fails), `mllm_video` has no vectors (skipped).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.config.schema import StorageConfig
from captionrec.pipeline import StageFailed, experiment
from captionrec.pipeline import report as report_stage
from captionrec.training.synthetic import feature_rows, make_interactions, noise_features, topic_features

SMALL = [
    "dim=32",
    "max_seq_len=10",
    "layers=1",
    "heads=2",
    "batch_size=64",
    "lr=0.005",
    "eval_batch_size=256",
    "negatives.num_uniform=64",
    "split.num_windows=2",
    "torch_threads=1",
    "num_processes=1",
    "epochs=1",
    "log_model=false",
]


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    from captionrec.tables import open_store

    root = tmp_path_factory.mktemp("lake")
    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(root)))
    syn = make_interactions(n_users=150, n_items=80, n_topics=4, days=28, per_user=(6, 10), seed=5)
    store.overwrite(C.INTERACTIONS, spark.createDataFrame(syn.interactions))
    store.overwrite(C.ITEMS, spark.createDataFrame(syn.items[["item_id"]]))  # train.split.candidates=catalogue
    title = feature_rows(syn.items, topic_features(syn.items, dim=16), "title")
    half = len(syn.items) // 2  # videomae: two vector lengths -> that child fails in the train stage
    bad = pd.concat(
        [
            feature_rows(syn.items.iloc[:half], noise_features(syn.items.iloc[:half], dim=8), "videomae"),
            feature_rows(syn.items.iloc[half:], noise_features(syn.items.iloc[half:], dim=12), "videomae"),
        ]
    )
    store.overwrite(C.ITEM_FEATURES, spark.createDataFrame(pd.concat([title, bad], ignore_index=True)))
    return store, root


def _cfg(tmp, root, feature_sets="[id,title,videomae,mllm_video]", *extra):
    return load_config(
        "local",
        [
            f"storage.root={root}",
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/art",
            "tracking.experiment=grid-tests",
            f"experiment.feature_sets={feature_sets}",
            "experiment.models=[two_tower]",
            "experiment.seeds=[1]",
            "experiment.train_overrides=[" + ",".join(SMALL) + "]",
            f"report.out_dir={tmp}/reports",
            "report.bootstrap_samples=200",
            *extra,
        ],
    )


def _all_runs(cfg):
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return mlflow.search_runs(experiment_names=[cfg.tracking.experiment])


def test_grid_runs_skips_fails_and_reruns_nothing(spark, lake, tmp_path, caplog):
    from mlflow.tracking import MlflowClient

    store, root = lake
    cfg = _cfg(tmp_path, root)
    with caplog.at_level(logging.INFO, logger="captionrec.experiment"):
        with pytest.raises(StageFailed) as failed_grid:  # experiment.max_failed=0 (default): the failure fails it
            experiment.run(cfg, spark, store)
    s = failed_grid.value.summary  # ... after every child was run and recorded
    assert "1 of 3 children failed" in str(failed_grid.value) and "two_tower videomae seed 1 (run " in str(
        failed_grid.value
    )
    assert "different lengths" in str(failed_grid.value)
    print(experiment.format_summary({**s, "seconds": 0}))
    assert (s["children"], s["ran"], s["reused"], s["failed"]) == (3, 2, 0, 1)
    assert "no vectors for mllm_video" in s["skipped_feature_sets"]["mllm_video"]
    assert any("[3/3] two_tower videomae seed 1 trial 0: FAILED" in r.getMessage() for r in caplog.records)
    assert s["budget"] == 1 and {e["trial"] for e in s["runs"]} == {0}  # conf/local.yaml: budget 1, no tuning
    assert all(e["chosen"] for e in s["runs"] if e["status"] != "failed")
    client = MlflowClient(cfg.tracking.tracking_uri)
    by = {e["features"]: e for e in s["runs"]}
    for fs in ("id", "title"):
        run = client.get_run(by[fs]["run_id"])
        t, m = run.data.tags, run.data.metrics
        assert run.info.status == "FINISHED" and t["mlflow.parentRunId"] == s["parent_run_id"]
        assert t[C.TAG_CHILD_KEY] == by[fs]["key"] and t["delta_version.interactions"] == str(
            store.version(C.INTERACTIONS)
        )
        assert run.data.params["train.features"] == fs and run.data.params["train.epochs"] == "1"
        hist = {h.step: h.value for h in client.get_metric_history(run.info.run_id, "test_hr_10")}
        assert sorted(hist) == [0, 1]  # per window, step = window (the run contract)
        assert hist[1] == pytest.approx(m.get("test_hr_10_w1", hist[1]))
    failed = client.get_run(by["videomae"]["run_id"])
    assert failed.info.status == "FAILED" and "different lengths" in failed.data.tags[C.TAG_ERROR]
    assert failed.data.tags["mlflow.parentRunId"] == s["parent_run_id"]
    trace = open(client.download_artifacts(failed.info.run_id, C.ERROR_ARTIFACT, str(tmp_path))).read()
    assert trace.startswith("Traceback") and "different lengths" in trace
    n_runs = len(_all_runs(cfg))

    allowing = _cfg(tmp_path, root, "[id,title,videomae,mllm_video]", "experiment.max_failed=1")
    again = experiment.run(allowing, spark, store)  # finished children are reused; the failed one is retried
    assert (again["ran"], again["reused"], again["failed"]) == (0, 2, 1)
    assert again["parent_run_id"] == s["parent_run_id"]
    assert len(_all_runs(cfg)) == n_runs + 1  # only the retried failure

    sub = _cfg(tmp_path, root, "[title,id]")
    first = experiment.run(sub, spark, store)  # another grid over the same children: reuses both
    assert (first["ran"], first["reused"]) == (0, 2) and first["parent_run_id"] != s["parent_run_id"]
    n_runs = len(_all_runs(sub))
    second = experiment.run(sub, spark, store)  # the same grid again: nothing at all happens
    assert second["parent_run_id"] == first["parent_run_id"] and len(_all_runs(sub)) == n_runs

    # the report on the first grid: one table row per finished (feature set, model), the failure, the skip
    rcfg = _cfg(tmp_path, root, "[id]", f"report.parent_run_id={s['parent_run_id']}")
    out = report_stage.run(rcfg, spark, store)
    print(report_stage.format_summary({**out, "seconds": 0}))
    table = pd.read_csv(out["files"]["csv"])
    assert sorted(table["features"]) == ["id", "title"] and (out["runs_finished"], out["runs_failed"]) == (2, 1)
    for row in table.itertuples():
        run_id = by[row.features]["run_id"]
        vals = [h.value for h in client.get_metric_history(run_id, "test_hr_10")]
        assert row.hr_10_mean == pytest.approx(np.mean(vals)) and row.hr_10_std == pytest.approx(np.std(vals, ddof=1))
    md = open(out["files"]["markdown"]).read()
    assert "mllm_video" in md and "different lengths" in md and out["files"]["gallery"] is None
    arts = {a.path for a in client.list_artifacts(s["parent_run_id"], C.REPORT_ARTIFACTS)}
    assert {"report/report.html", "report/report.md", "report/report.csv", "report/plots"} <= arts


def test_plan_keys_follow_config_and_table_versions(spark, lake, tmp_path):
    store, root = lake
    cfg = _cfg(tmp_path, root, "[id,title]")
    children, skipped = experiment.plan_grid(cfg, store)
    assert [(c.features, c.model, c.seed) for c in children] == [("id", "two_tower", 1), ("title", "two_tower", 1)]
    assert not skipped and children[0].cfg.train.epochs == 1 and children[1].cfg.train.features == "title"
    other_seed, _ = experiment.plan_grid(_cfg(tmp_path, root, "[id,title]", "experiment.seeds=[2]"), store)
    assert {c.key for c in other_seed}.isdisjoint(c.key for c in children)
    same, _ = experiment.plan_grid(cfg, store)
    assert [c.key for c in same] == [c.key for c in children]
    chatty, _ = experiment.plan_grid(_cfg(tmp_path, root, "[id,title]", "train.progress_every_s=5"), store)
    assert chatty[0].cfg.train.progress_every_s == 5  # how often a run reports trains nothing else: same keys
    assert [c.key for c in chatty] == [c.key for c in children]
    inputs = experiment.input_tables(store, children[1].cfg.train)
    bumped = {**inputs, C.ITEM_FEATURES: {**inputs[C.ITEM_FEATURES], "version": inputs[C.ITEM_FEATURES]["version"] + 1}}
    assert experiment.child_key(children[1].cfg.train, bumped) != children[1].key
    assert set(experiment.input_tables(store, children[0].cfg.train)) == {C.INTERACTIONS, C.ITEMS}  # no features
    rebuilt = {**inputs, C.ITEM_FEATURES: {**inputs[C.ITEM_FEATURES], "committed_at": "2030-01-01T00:00:00+00:00"}}
    assert experiment.child_key(children[1].cfg.train, rebuilt) != children[1].key  # same version, another table
    assert inputs[C.ITEM_FEATURES]["committed_at"]
    with pytest.raises(ValueError, match="nothing to run"):
        experiment.run(_cfg(tmp_path, root, "[mllm_audio]"), spark, store)


# ------------------------------------------------------------- failures fail the job (issue 19, item 3)
# Every child asks for 2 GPU training processes on the driver (TorchDistributor local mode): this machine's
# driver has no CUDA (or, with a GPU, no spark.driver.resource.gpu.amount), so the train stage's own check
# refuses every child, as a 1-GPU Databricks target with train.num_processes=2 would.
NO_GPU_SLOTS = [*SMALL, "use_gpu=true", "num_processes=2"]  # later keys win


def _cli_args(tmp, root, *extra):
    return [
        "experiment",
        "--log-level",
        "WARNING",
        f"storage.root={root}",
        "storage.backend=delta-rs",
        f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.artifact_location={tmp}/art",
        "tracking.experiment=grid-fail-tests",
        "feature_sets=[id,title]",
        "models=[two_tower]",
        "seeds=[1]",
        "train_overrides=[" + ",".join(NO_GPU_SLOTS) + "]",
        f"report.out_dir={tmp}/reports",
        *extra,
    ]


def _runs(tmp, kind):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["grid-fail-tests"])
    return runs[runs[f"tags.{C.TAG_KIND}"] == kind]


def _failed_children(tmp):
    runs = _runs(tmp, C.CHILD_RUN)
    return runs[runs["status"] == "FAILED"]


def test_all_failed_grid_fails_the_job_through_main_unless_max_failed_allows(spark, lake, tmp_path, capsys):
    from captionrec import cli

    _, root = lake
    with pytest.raises(SystemExit) as exited:
        cli.main(_cli_args(tmp_path, root))
    assert exited.value.code == 3
    out = capsys.readouterr()
    # the summary (stdout) and the error (stderr) name every failed child and its error
    assert "0 trained, 0 reused, 2 failed" in out.out and "experiment.max_failed=0: the stage FAILS" in out.out
    for text in (out.out, out.err):
        assert "two_tower id seed 1 (run " in text and "two_tower title seed 1 (run " in text
        assert "train.use_gpu=true" in text
    assert "2 of 2 children failed, more than experiment.max_failed=0" in out.err
    failed = _failed_children(tmp_path)
    assert sorted(failed["params.train.features"]) == ["id", "title"]  # recorded before the job failed
    assert all("train.use_gpu=true" in e for e in failed[f"tags.{C.TAG_ERROR}"])
    assert list(_runs(tmp_path, C.GRID_RUN)["status"]) == ["FAILED"]  # the grid run too

    assert cli.main(_cli_args(tmp_path, root, "max_failed=2")) == 0  # allowed: exit 0, failures recorded again
    out = capsys.readouterr()
    assert "2 failed" in out.out and "experiment.max_failed=2: allowed" in out.out and "train.use_gpu=true" in out.out
    assert len(_failed_children(tmp_path)) == 4
    assert list(_runs(tmp_path, C.GRID_RUN)["status"]) == ["FINISHED"]  # the same grid run, now allowed

    with pytest.raises(SystemExit) as exited:  # one allowed, two failed: still a failed job
        cli.main(_cli_args(tmp_path, root, "max_failed=1", "--json"))
    assert exited.value.code == 3
    out = capsys.readouterr()
    import json

    summary = json.loads(out.out)  # --json: stdout is the summary only
    assert (summary["stage"], summary["failed"], summary["max_failed"]) == ("experiment", 2, 1)
    assert {e["status"] for e in summary["runs"]} == {"failed"} and all(
        "train.use_gpu=true" in e["error"] for e in summary["runs"]
    )


def test_spark_submit_job_script_exits_non_zero_on_a_failed_grid(lake, tmp_path):
    """`jobs/experiment.py` (what spark-submit runs on the driver) in its own process: exit status 3."""
    import subprocess
    import sys
    from pathlib import Path

    _, root = lake
    job = Path(__file__).resolve().parents[2] / "jobs" / "experiment.py"
    done = subprocess.run(
        [sys.executable, str(job), *_cli_args(tmp_path, root)[1:]], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 3, done.stderr[-3000:]
    assert "2 failed" in done.stdout and "2 of 2 children failed" in done.stderr
    assert len(_failed_children(tmp_path)) == 2
