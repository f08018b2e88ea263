"""The report's "quality per cost" section over a logged grid (tests/report_fixtures.py) and the caption / embed
stage runs `tracking.cost.log_stage_run` writes, in a real MLflow sqlite store."""

from __future__ import annotations

import math
import time

import pytest

from captionrec.config import load_config
from captionrec.report import build
from captionrec.report.cost import cost_section, production_cost, read_stage_costs
from captionrec.tracking.cost import group_cost, log_stage_run, stage_cost
from report_fixtures import log_grid

DRIVER = {"wall_seconds": 10.0, "driver_cpu_seconds": 0.0}


def _caption_summary(per_kind: dict[str, tuple[float, float]]) -> dict:
    """per kind: (items, worker CPU-seconds) -> a caption summary whose cost is exactly that."""
    workers = {k: {"items": n, "cpu_seconds": cpu, "load_seconds": 2.0} for k, (n, cpu) in per_kind.items()}
    kinds = {k: {"cost": group_cost(w, DRIVER)} for k, w in workers.items()}
    return {"kinds": kinds, "cost": stage_cost(DRIVER, workers)}


def _embed_summary(per_set: dict[str, tuple[float, float, float]]) -> dict:
    """per feature set: (items, worker CPU-seconds, GPU-seconds)."""
    workers = {
        fs: {"items": n, "cpu_seconds": cpu, "gpu_seconds": gpu, "gpu_tasks": float(gpu > 0)}
        for fs, (n, cpu, gpu) in per_set.items()
    }
    per = {fs: group_cost(w, DRIVER, 0.0) for fs, w in workers.items()}
    return {"cost_per_feature_set": per, "cost": stage_cost(DRIVER, workers)}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cost-report")
    grid = log_grid(f"sqlite:///{tmp}/mlflow.db")
    cfg = load_config(
        "local",
        [
            f"tracking.tracking_uri={grid.tracking_uri}",
            "tracking.experiment=report-tests",
            f"report.out_dir={tmp}",
            "report.bootstrap_samples=400",
        ],
    )
    # caption: an older run that captioned 100 video items, then a re-run with nothing new (0 items: no cost),
    # then a run that captioned 50 audio items; embed: every feature set of the grid
    log_stage_run(cfg, "caption", _caption_summary({"video": (100, 200.0)}))  # 2,000 CPU-s per 1k
    time.sleep(0.01)
    log_stage_run(cfg, "caption", _caption_summary({"video": (0, 0.0)}))
    log_stage_run(cfg, "caption", _caption_summary({"audio": (50, 25.0)}))  # 500 per 1k
    embed = {"title": (100, 1.0, 0.0), "mllm_video": (100, 2.0, 0.0), "mllm_audio": (50, 1.0, 0.0)}
    embed |= {"videomae": (100, 30.0, 0.0), "audio_raw": (50, 10.0, 0.0)}
    log_stage_run(cfg, "embed", _embed_summary(embed))
    runset = build.load(cfg.tracking, cfg.report)
    ctx = build.context(runset, cfg.report)
    return ctx, build.write_report(ctx, build.out_folder(tmp, runset, cfg.report))


def test_newest_stage_run_that_processed_items_counts(report):
    ctx, _ = report
    costs = read_stage_costs(ctx.runset.tracking_uri, ctx.runset.experiment_id)
    assert costs["caption"]["video"]["per_1k_cpu_seconds"] == 2000.0  # not the later run with nothing to do
    assert costs["caption"]["audio"]["per_1k_cpu_seconds"] == 500.0
    assert costs["embed"]["videomae"]["per_1k_cpu_seconds"] == 300.0 and costs["embed"]["title"]["items"] == 100
    mllm_video = production_cost("mllm_video", costs)
    assert mllm_video["cpu_seconds_per_1k"] == 2000.0 + 20.0 and mllm_video["missing"] == ""
    assert mllm_video["load_seconds"] == 2.0  # the caption kind's model load, apart from the per-item cost
    assert production_cost("id+mllm_video", costs)["cpu_seconds_per_1k"] == 2020.0  # id costs nothing
    assert production_cost("id", costs)["cpu_seconds_per_1k"] == 0.0
    av = production_cost("mllm_av", costs)  # reads video and audio captions; no embed run for mllm_av
    assert math.isnan(av["cpu_seconds_per_1k"]) and av["missing"] == "embed mllm_av"


def test_quality_per_cost_beside_the_gains(report):
    ctx, files = report
    section = cost_section(ctx)
    table = section.tables["quality_per_cost"]
    gains = ctx.gains[ctx.gains["metric"] == ctx.config.metrics[0]]
    assert len(table) == len(gains) > 0
    row = table[(table["comparison"] == "mllm_video vs videomae") & (table["model"] == "sasrec")].iloc[0]
    gain = gains[(gains["comparison"] == "mllm_video vs videomae") & (gains["model"] == "sasrec")].iloc[0]
    assert row["gain"] == gain["gain"] and row["gain_lo"] == gain["gain_lo"] and row["gain"] > 0
    assert row["unit"] == "CPU-seconds"
    assert (row["feature_seconds_per_1k"], row["baseline_seconds_per_1k"]) == (2020.0, 300.0)
    assert row["extra_seconds_per_1k"] == 1720.0
    audio = table[table["comparison"] == "mllm_audio vs audio_raw"].iloc[0]
    assert (audio["feature_seconds_per_1k"], audio["baseline_seconds_per_1k"]) == (520.0, 200.0)
    md = section.markdown
    assert section.title == "Quality per cost" and "mllm_video vs videomae" in md and "2020.00" in md
    assert "Quality per cost" in files.markdown.read_text()  # the configured sections include it
    assert "quality_per_cost" in files.tables and "cost_per_feature_set" in files.tables


def test_gpu_seconds_where_a_gpu_served(report):
    ctx, _ = report
    costs = read_stage_costs(ctx.runset.tracking_uri, ctx.runset.experiment_id)
    costs["embed"]["mllm_video"] = {**costs["embed"]["mllm_video"], "per_1k_gpu_seconds": 4.0}
    cost = production_cost("mllm_video", costs)
    assert cost["gpu_seconds_per_1k"] == 4.0 and cost["cpu_seconds_per_1k"] == 2020.0
