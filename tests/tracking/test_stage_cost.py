"""Cost accounting (captionrec.inference.cost, captionrec.tracking.cost): the per-task meter's attribution, the
driver's clock over real CPU work (its own and a child process's), and the stage run in a real MLflow store."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from captionrec import contracts as C
from captionrec.inference.cost import TaskMeter, gpu_seconds, merge, model_call
from captionrec.tracking.cost import StageClock, cost_metrics, group_cost, log_stage_run, stage_cost


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_task_meter_shares_each_batch_by_its_rows_groups():
    meter = TaskMeter("cpu", "default", group_of=lambda r: r["g"])
    meter.loaded(2.0, 1.5)
    _burn(0.2)
    meter.batch([{"g": "a"}, {"g": "a"}, {"g": "b"}, {"g": "b"}])  # 0.2 s shared 2:2
    _burn(0.3)
    meter.batch([{"g": "a"}])  # 0.3 s all a's
    out = meter.finish()
    a, b = out["a"], out["b"]
    assert (a["items"], b["items"], a["batches"], b["batches"]) == (3, 2, 2, 1)
    assert a["cpu_seconds"] == pytest.approx(0.1 + 0.3, abs=0.05) and b["cpu_seconds"] == pytest.approx(0.1, abs=0.03)
    assert a["cpu_seconds"] + b["cpu_seconds"] <= a["task_seconds"] + b["task_seconds"] + 0.05
    assert a["gpu_seconds"] == b["gpu_seconds"] == 0 and a["gpu_tasks"] == 0
    assert a["load_seconds"] == b["load_seconds"] == 1.0 and a["load_cpu_seconds"] == 0.75  # the load, shared
    assert a["tasks"] == b["tasks"] == 1 and a["peak_rss_mb"] > 10 and a["peak_gpu_mb"] == 0


def test_merge_sums_counters_and_keeps_the_highest_peak():
    a = {"video": {"items": 4.0, "cpu_seconds": 1.0, "peak_rss_mb": 500.0}}
    merge(a, {"video": {"items": 6.0, "cpu_seconds": 2.5, "peak_rss_mb": 300.0}, "audio": {"items": 1.0}})
    assert a == {"video": {"items": 10.0, "cpu_seconds": 3.5, "peak_rss_mb": 500.0}, "audio": {"items": 1.0}}


def test_model_call_on_a_cpu_adds_no_gpu_time():
    before = gpu_seconds()
    with model_call("cpu"):
        _burn(0.05)
    assert gpu_seconds() == before


def test_stage_clock_counts_its_own_and_a_child_process_cpu():
    clock = StageClock()
    _burn(0.3)
    child = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    subprocess.run([sys.executable, "-c", child], check=True)
    out = clock.stop()
    assert out["driver_cpu_seconds"] >= 0.65  # 0.3 here + 0.4 in the waited-for child (+ its start-up)
    assert out["wall_seconds"] > 0.6
    assert out["driver_peak_rss_mb"] > 10 and out["children_peak_rss_mb"] > 1


def test_group_and_stage_cost_per_1000_items():
    workers = {"cpu_seconds": 8.0, "gpu_seconds": 0.0, "items": 400.0, "task_seconds": 12.0, "load_seconds": 3.0}
    driver = {"wall_seconds": 10.0, "driver_cpu_seconds": 4.0, "driver_peak_rss_mb": 900.0}
    g = group_cost({**workers, "peak_rss_mb": 700.0}, driver, share=0.5)
    assert g["items"] == 400 and g["device"] == "cpu"
    assert g["cpu_seconds"] == 10.0 and g["driver_cpu_seconds"] == 2.0 and g["wall_seconds"] == 5.0
    assert g["per_1k_cpu_seconds"] == 25.0 and g["per_1k_wall_seconds"] == 12.5 and g["items_per_s"] == 80.0
    assert g["per_1k_gpu_seconds"] == 0.0 and g["load_seconds"] == 3.0 and g["worker_peak_rss_mb"] == 700.0
    s = stage_cost(driver, {"title": workers, "mllm_av": {**workers, "gpu_tasks": 1.0, "gpu_seconds": 2.0}})
    assert s["items"] == 800 and s["device"] == "gpu" and s["cpu_seconds"] == 20.0 and s["gpu_seconds"] == 2.0
    assert s["items_per_s"] == 80.0 and s["worker_cpu_seconds"] == 16.0
    empty = group_cost(None, driver)
    assert empty["items"] == 0 and empty["per_1k_cpu_seconds"] is None  # nothing pending: no per-item cost
    assert "cost/per_1k_cpu_seconds" not in cost_metrics({"cost": empty})


def test_stage_run_in_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    from captionrec.config.schema import Config, TrackingConfig

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = Config(tracking=TrackingConfig(tracking_uri=uri, experiment="cost", artifact_location=str(tmp_path / "a")))
    driver = {"wall_seconds": 10.0, "driver_cpu_seconds": 4.0}
    video = group_cost({"items": 20.0, "cpu_seconds": 6.0}, driver)
    summary = {"kinds": {"video": {"pending": 20, "cost": video}}, "cost": stage_cost(driver, {"video": {}})}
    run_id = log_stage_run(cfg, "caption", summary)
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags[C.TAG_KIND] == C.STAGE_RUN and run.data.tags[C.TAG_STAGE] == "caption"
    m = run.data.metrics
    assert m["cost/video/per_1k_cpu_seconds"] == 500.0 and m["cost/video/items"] == 20
    assert m["cost/wall_seconds"] == 10.0 and "cost/video/device" not in m
    assert run.info.status == "FINISHED"
    assert [a.path for a in MlflowClient(uri).list_artifacts(run_id)] == ["summary.json"]
    assert log_stage_run(cfg, "caption", {"kinds": {}}) is None  # a summary without a cost logs nothing
