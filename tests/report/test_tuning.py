"""The report over a tuned grid: only the chosen trials' runs are read (report.runs.drop_unchosen), and the
"tuning" section shows each row's budget and chosen values ("budget 1: no tuning" when nothing was tuned).
Runs are logged into a real MLflow sqlite store (tests/report_fixtures.py), the plan as the experiment stage
writes it."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from captionrec import contracts as C
from captionrec.config.experiment import ReportConfig
from captionrec.report import build
from captionrec.report.runs import read_runs
from captionrec.report.sections import ReportContext
from captionrec.report.tuning import tuning_frame, tuning_section
from report_fixtures import log_child

ROWS = {  # row -> (budget, chosen trial, each trial's values)
    "id": (2, 1, [{"lr": 0.001, "dropout": 0.2}, {"lr": 0.003, "dropout": 0.1}]),
    "title": (2, 0, [{"lr": 0.001, "dropout": 0.2}, {"lr": 0.0003, "dropout": 0.4}]),
}


@pytest.fixture(scope="module")
def tuned_grid(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("tuned")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    exp_id = client.create_experiment("tuning-report", artifact_location=(root / "art").as_uri())
    pid = client.create_run(exp_id, run_name="grid", tags={C.TAG_KIND: C.GRID_RUN, C.TAG_GRID_KEY: "gt"}).info.run_id
    children, tuning, ids = [], {}, {}
    for fs, (budget, chosen, points) in ROWS.items():
        for t, values in enumerate(points):
            for seed in (1, 2) if t == chosen else (1,):
                status = "FAILED" if (fs, t) == ("id", 0) else "FINISHED"  # a failed trial stays in the report
                key = f"{fs}/t{t}/s{seed}"
                rid = log_child(client, exp_id, pid, fs, "sasrec", seed, status, "RuntimeError: x", key)
                client.set_tag(rid, C.TAG_TRIAL_CHOSEN, "true" if t == chosen else "false")
                ids[(fs, t, seed)] = rid
                children.append(
                    {
                        "features": fs,
                        "model": "sasrec",
                        "seed": seed,
                        "trial": t,
                        "values": values,
                        "run_id": rid,
                        "status": "ran" if status == "FINISHED" else "failed",
                        "chosen": t == chosen,
                    }
                )
        tuning[f"sasrec {fs}"] = {
            "model": "sasrec",
            "features": fs,
            "budget": budget,
            "finished": budget,
            "metric": "valid_ndcg_10",
            "scores": {"0": 0.1, "1": 0.2 if chosen else 0.05},
            "trial": chosen,
            "values": points[chosen],
            "valid": 0.2 if chosen else 0.1,
        }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        path.write_text(json.dumps({"grid_key": "gt", "children": children, "skipped": [], "tuning": tuning}))
        client.log_artifact(pid, str(path), "grid")
    client.set_terminated(pid, "FINISHED")
    return uri, pid, ids


def test_report_reads_only_the_chosen_trials_and_shows_the_choice(tuned_grid):
    uri, pid, ids = tuned_grid
    rs = read_runs(uri, "tuning-report", ("hr@10",), parent_run_id=pid)
    chosen = {ids[("id", 1, 1)], ids[("id", 1, 2)], ids[("title", 0, 1)], ids[("title", 0, 2)]}
    failed = {ids[("id", 0, 1)]}  # a failed trial is listed as a failure, not dropped
    assert set(rs.runs["run_id"]) == chosen | failed  # the unchosen finished trial (title t1) is left out
    assert set(rs.finished["run_id"]) == chosen and set(rs.failed["run_id"]) == failed
    assert set(rs.windows["run_id"]) == chosen
    filtered = read_runs(uri, "tuning-report", ("hr@10",), filter_string="params.`train.model` = 'sasrec'")
    assert set(filtered.runs["run_id"]) == chosen | failed  # without a plan: by the trial_chosen tag
    cfg = ReportConfig(sections=("tuning",))
    s = tuning_section(ReportContext(cfg, rs, ["id", "title"]))
    assert "the same budget of 2 trials" in s.markdown and "no test number was read" in s.markdown
    assert "lr=0.003" in s.markdown and "dropout=0.1" in s.markdown  # id's chosen values
    assert "lr=0.0003" not in s.markdown  # title's unchosen trial
    frame = s.tables["tuning"]
    assert list(frame["features"]) == ["id", "title"] and list(frame["chosen_trial"]) == [1, 0]
    assert frame["chosen_valid"].tolist() == pytest.approx([0.2, 0.1])
    files = build.write_report(build.context(rs, cfg), Path(tempfile.mkdtemp()) / "r")
    assert "## Tuning" in files.markdown.read_text() and (files.out_dir / "tuning.csv").exists()


def test_budget_1_says_no_tuning_and_no_plan_leaves_the_section_out(tuned_grid):
    uri, pid, _ = tuned_grid
    rs = read_runs(uri, "tuning-report", ("hr@10",), parent_run_id=pid)
    rs.plan = {
        "tuning": {
            "sasrec id": {
                "model": "sasrec",
                "features": "id",
                "budget": 1,
                "finished": 1,
                "metric": "valid_ndcg_10",
                "scores": {"0": 0.1},
                "trial": 0,
                "values": {"lr": 0.001},
                "valid": 0.1,
            }
        }
    }
    s = tuning_section(ReportContext(ReportConfig(), rs, ["id"]))
    assert s.markdown.startswith("Budget 1: no tuning")
    rs.plan = {}
    assert tuning_section(ReportContext(ReportConfig(), rs, ["id"])) is None
    assert tuning_frame({}, []).empty
