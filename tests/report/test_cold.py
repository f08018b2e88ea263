"""The report's cold section (captionrec.report.cold) over a real MLflow sqlite store of contract-shaped runs whose
cases artifacts carry the cold baselines' ranks: every number recomputed here from the artifacts, the ID-only
row and the popularity scorers say they cannot score cold items, one kNN row per vector set; the main table's
cold column and the gains follow the same rule."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.report import build
from captionrec.report.cold import POPULARITY_NO_COLD

WINDOWS = (0, 1)
N = 60  # cases per window, the first 20 cold
FEATURES = ("id", "title", "id+title")


def _cases(window: int) -> pd.DataFrame:
    """The test cases every run shares, with the run-independent baselines' ranks."""
    rng = np.random.default_rng(window)
    cold = (np.arange(N) < 20).astype(np.int64)
    return pd.DataFrame(
        {
            "window": window,
            "user_idx": np.arange(1, N + 1),
            "chunk": 0,
            "target": rng.integers(1, 500, N),
            "cold": cold,
            "rank_random": rng.integers(1, 500, N),
            "rank_popularity": np.where(cold == 1, 480, rng.integers(1, 40, N)),
            "candidates": 500,
            "rank_recent_popularity": np.where(cold == 1, 480, rng.integers(1, 30, N)),
            "rank_random_new": np.where(cold == 1, rng.integers(1, 41, N), 40 + rng.integers(1, 461, N)),
        }
    )


def _run_cases(features: str, seed: int, window: int) -> pd.DataFrame:
    cases = _cases(window)
    rng = np.random.default_rng(100 * seed + 10 * len(features) + window)
    cold = cases["cold"].to_numpy() == 1
    scale = 8.0 if features != "id" else 30.0
    cases["rank"] = np.where(cold & (features == "id"), 400, rng.geometric(1 / scale, N).clip(1, 500))
    if features != "id":  # a feature run ranks kNN over its vectors (title in both runs of both feature sets)
        cases["rank_knn"] = np.random.default_rng(7 + window).geometric(1 / 12.0, N).clip(1, 500)
    return cases


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    import mlflow
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("cold-grid")
    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    exp = client.create_experiment("cold-tests", artifact_location=(root / "art").as_uri())
    pid = client.create_run(exp, run_name="grid", tags={C.TAG_KIND: C.GRID_RUN, C.TAG_GRID_KEY: "g"}).info.run_id
    runs = {}
    for features in FEATURES:
        for seed in (1, 2):
            tags = {C.TAG_KIND: C.CHILD_RUN, C.TAG_CHILD_KEY: f"{features}/{seed}", "mlflow.parentRunId": pid}
            rid = client.create_run(exp, run_name=features, tags=tags).info.run_id
            params = {"train.features": features, "train.model": "sasrec", "train.seed": str(seed)}
            metrics = []
            with tempfile.TemporaryDirectory() as tmp:
                for w in WINDOWS:
                    cases = _run_cases(features, seed, w)
                    cases.to_parquet(Path(tmp) / f"test_w{w}.parquet", index=False)
                    r = cases["rank"].to_numpy()
                    c = cases["cold"].to_numpy() == 1
                    metrics += [
                        Metric("test_hr_10", float((r <= 10).mean()), 0, w),
                        Metric("test_ndcg_10", float(np.where(r <= 10, 1 / np.log2(r + 1), 0).mean()), 0, w),
                        Metric("test_cold_hr_10", float((r[c] <= 10).mean()), 0, w),
                    ]
                client.log_artifacts(rid, tmp, "cases")
            client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
            client.set_terminated(rid, "FINISHED")
            runs[(features, seed)] = rid
    client.set_terminated(pid, "FINISHED")
    cfg = load_config(
        "local",
        [
            f"tracking.tracking_uri={uri}",
            "tracking.experiment=cold-tests",
            f"report.out_dir={root}/reports",
            "report.bootstrap_samples=200",
            "report.comparisons=[title vs id, id+title vs id]",
        ],
    )
    runset = build.load(cfg.tracking, cfg.report)
    return runs, build.context(runset, cfg.report)


def _expected(frames: list[pd.DataFrame], column: str, subset: str, metric: str = "hr@10") -> float:
    """Independently: per run, the mean over windows of the window's mean over the subset; then over runs."""
    out = []
    for f in frames:
        sel = f if subset == "all" else f[f["cold"] == (1 if subset == "cold" else 0)]
        r = sel[column].to_numpy().astype(float)
        v = (r <= 10).astype(float) if metric == "hr@10" else np.where(r <= 10, 1 / np.log2(r + 1), 0.0)
        out.append(pd.Series(v).groupby(sel["window"].to_numpy()).mean().mean())
    return float(np.mean(out))


def test_cold_section_recomputed_from_the_cases(grid):
    from captionrec.report.sections import build_sections

    _, ctx = grid
    (sec,) = build_sections(ctx, ("cold",))
    frame = sec.tables["cold"].set_index("name")
    runs_of = {fs: [pd.concat([_run_cases(fs, s, w) for w in WINDOWS]) for s in (1, 2)] for fs in FEATURES}
    # the models: the mean over their two seeds; the ID-only model has no cold value, it says why
    for fs in ("title", "id+title"):
        for subset in ("cold", "warm", "all"):
            for m in ("hr@10", "ndcg@10"):
                got = frame.loc[fs, f"{subset}_{m}"]
                assert got == pytest.approx(_expected(runs_of[fs], "rank", subset, m), abs=1e-12)
        assert frame.loc[fs, "runs"] == 2 and frame.loc[fs, "cold_cases"] == 20 * len(WINDOWS)
    assert np.isnan(frame.loc["id", "cold_hr@10"]) and frame.loc["id", "note"] == C.ID_NO_COLD
    assert frame.loc["id", "warm_hr@10"] == pytest.approx(_expected(runs_of["id"], "rank", "warm"), abs=1e-12)
    # one content kNN row for the title vectors (title and id+title share them), none for ID
    knn = [n for n in frame.index if n.startswith("content kNN")]
    assert knn == ["content kNN (title)"]
    one = runs_of["title"][:1]
    assert frame.loc[knn[0], "cold_hr@10"] == pytest.approx(_expected(one, "rank_knn", "cold"), abs=1e-12)
    new = "random, new items first"
    assert frame.loc[new, "cold_hr@10"] == pytest.approx(_expected(one, "rank_random_new", "cold"), abs=1e-12)
    assert frame.loc[new, "warm_hr@10"] == 0.0  # the new items come first: a warm target ranks after 40 of them
    for pop in ("recent popularity (7 days before t_k)", "popularity (before t_k)"):
        assert np.isnan(frame.loc[pop, "cold_hr@10"]) and frame.loc[pop, "note"] == POPULARITY_NO_COLD
    rec = frame.loc["recent popularity (7 days before t_k)", "warm_hr@10"]
    assert rec == pytest.approx(_expected(one, "rank_recent_popularity", "warm"), abs=1e-12)
    # rendered: the cold cells say it, no 0.0000 stands in for them
    id_line = next(line for line in sec.markdown.splitlines() if line.startswith("| id |"))
    assert C.ID_NO_COLD in id_line and "0.0000" not in id_line.split("|")[5]
    assert "no cold baselines" not in sec.markdown


def test_main_table_and_gains_leave_id_out_of_cold(grid):
    from captionrec.report.sections import build_sections

    _, ctx = grid
    (table,) = build_sections(ctx, ("table",))
    lines = {line.split("|")[1].strip(): line for line in table.markdown.splitlines() if line.startswith("| ")}
    assert C.ID_NO_COLD in lines["id"] and C.ID_NO_COLD not in lines["title"]
    gains = ctx.gains
    assert set(gains.loc[gains["comparison"] == "id+title vs id", "metric"]) == {"hr@10", "ndcg@10"}
    assert set(gains.loc[gains["comparison"] == "title vs id", "metric"]) == {"hr@10", "ndcg@10"}


def test_runs_without_cold_baselines_say_so(grid, tmp_path):
    """Cases artifacts from before the cold baselines: model rows, random and popularity, and a note."""
    from captionrec.report.cold import cold_frame

    runs_ids, ctx = grid
    old = {rid: ctx.runset.cases(rid)[list(C.CASE_COLUMNS)] for rid in runs_ids.values()}
    frame = cold_frame(ctx.runset.runs, old.get, ["hr@10"], ctx.order)
    assert set(frame["name"]) == {"id", "title", "id+title", "random", "popularity (before t_k)"}
