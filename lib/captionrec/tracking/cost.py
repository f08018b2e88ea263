"""What a stage cost: wall, CPU and GPU seconds, peak memory and items per second, per stage and per caption kind
or feature set, in the stage summaries and in MLflow.

    clock = StageClock(spark)                        # driver: wall, CPU (this process, its waited-for children
    ...                                              #   and, where /proc is readable, the driver JVM), peak RSS
    driver = clock.stop()
    per_kind = group_cost(meter.value[kind], driver)            # + the model-map's workers (spark.modelmap.CostMeter)
    summary["cost"] = stage_cost(driver, meter.value)
    run_id = log_stage_run(cfg, "caption", summary)  # cli: a run tagged captionrec.kind=stage with the cost metrics

Per group (`group_cost`): `items`, `device` ("gpu" when a task ran on CUDA, else "cpu"), `wall_seconds` (elapsed
on the driver; embed's feature sets share one Spark job, so each gets the stage's wall by its share of items),
`items_per_s`, `cpu_seconds` = `worker_cpu_seconds` (the Python workers running the model-map) +
`driver_cpu_seconds` (the driver's share), `gpu_seconds` (device time of the model calls, 0 on a CPU),
`task_seconds` (the workers' task time, summed over parallel tasks), `load_seconds` / `load_cpu_seconds` (model
loads: the fixed cost, not in the per-item numbers), `per_1k_{wall,cpu,gpu}_seconds` (per 1,000 items, loads
excluded), `worker_peak_rss_mb`, `peak_gpu_mb` (torch.cuda.max_memory_allocated). Peak RSS is the process's
maximum so far (getrusage), not the stage's alone. Timing keys end in `_seconds` / `_per_s` (volatile for
scripts/snapshot_tables.py).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import time
from pathlib import Path
from typing import Any

from captionrec import contracts as C
from captionrec.inference.cost import peak_rss_mb

log = logging.getLogger(__name__)

COST_KEY = "cost"  # the summary key of a stage's cost (and of each caption kind's / feature set's)
METRIC_PREFIX = "cost"  # MLflow metric names: cost/<key> (the stage), cost/<group>/<key> (a kind or feature set)


def _proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc (Linux), None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _proc_peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def jvm_pid(spark: Any) -> int | None:
    """The driver JVM's pid when it runs on this host (py4j gateway), else None."""
    try:
        pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # noqa: BLE001 - a remote (Connect) session has no local JVM to read
        return None
    return pid if Path(f"/proc/{pid}").exists() else None


def _cpu_now(pid: int | None) -> tuple[float, float | None]:
    own = time.process_time()
    children = os.times()
    waited = children.children_user + children.children_system  # e.g. TorchDistributor's local processes
    return own + waited, _proc_cpu_seconds(pid) if pid is not None else None


class StageClock:
    """Driver-side wall and CPU seconds from construction to `stop()`, and peak RSS: this Python process and its
    waited-for children, plus the driver JVM where /proc shows it (local mode: the JVM is also the executors)."""

    def __init__(self, spark: Any = None):
        self.pid = jvm_pid(spark) if spark is not None else None
        self.t0 = time.perf_counter()
        self.cpu0, self.jvm0 = _cpu_now(self.pid)

    def stop(self) -> dict[str, Any]:
        cpu, jvm = _cpu_now(self.pid)
        out: dict[str, Any] = {
            "wall_seconds": round(time.perf_counter() - self.t0, 3),
            "driver_cpu_seconds": round(cpu - self.cpu0, 3),
            "driver_peak_rss_mb": peak_rss_mb(),
            "children_peak_rss_mb": peak_rss_mb(resource.RUSAGE_CHILDREN),
        }
        if jvm is not None and self.jvm0 is not None:
            out["jvm_cpu_seconds"] = round(jvm - self.jvm0, 3)
            out["driver_cpu_seconds"] = round(out["driver_cpu_seconds"] + out["jvm_cpu_seconds"], 3)
            out["jvm_peak_rss_mb"] = _proc_peak_rss_mb(self.pid)
        return out


def _per_1k(value: float, items: float) -> float | None:
    return round(value / items * 1000, 3) if items else None


def group_cost(workers: dict[str, float] | None, driver: dict[str, Any], share: float = 1.0) -> dict[str, Any]:
    """One caption kind's / feature set's cost: its model-map workers' numbers (`CostMeter.value[group]`) plus
    `share` of the driver's (`StageClock.stop()`)."""
    w = workers or {}
    items = w.get("items", 0.0)
    wall = driver["wall_seconds"] * share
    driver_cpu = driver["driver_cpu_seconds"] * share
    cpu = w.get("cpu_seconds", 0.0) + driver_cpu
    return {
        "items": int(items),
        "device": "gpu" if w.get("gpu_tasks", 0) else "cpu",
        "wall_seconds": round(wall, 3),
        "items_per_s": round(items / wall, 3) if wall > 0 else None,
        "cpu_seconds": round(cpu, 3),
        "worker_cpu_seconds": round(w.get("cpu_seconds", 0.0), 3),
        "driver_cpu_seconds": round(driver_cpu, 3),
        "gpu_seconds": round(w.get("gpu_seconds", 0.0), 3),
        "task_seconds": round(w.get("task_seconds", 0.0), 3),
        "load_seconds": round(w.get("load_seconds", 0.0), 3),
        "load_cpu_seconds": round(w.get("load_cpu_seconds", 0.0), 3),
        "per_1k_wall_seconds": _per_1k(wall, items),
        "per_1k_cpu_seconds": _per_1k(cpu, items),
        "per_1k_gpu_seconds": _per_1k(w.get("gpu_seconds", 0.0), items),
        "worker_peak_rss_mb": w.get("peak_rss_mb", 0.0),
        "peak_gpu_mb": w.get("peak_gpu_mb", 0.0),
    }


def stage_cost(driver: dict[str, Any], workers: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """A stage's total: the driver's numbers plus every model-map group's (none for ingest and train)."""
    groups = list((workers or {}).values())
    total = {k: sum(g.get(k, 0.0) for g in groups) for k in ("items", "cpu_seconds", "gpu_seconds", "load_seconds")}
    out = dict(driver)
    worker_cpu = total["cpu_seconds"]
    out["cpu_seconds"] = round(driver["driver_cpu_seconds"] + worker_cpu, 3)
    if workers is not None:
        items = total["items"]
        out.update(
            items=int(items),
            device="gpu" if any(g.get("gpu_tasks", 0) for g in groups) else "cpu",
            items_per_s=round(items / driver["wall_seconds"], 3) if driver["wall_seconds"] > 0 else None,
            worker_cpu_seconds=round(worker_cpu, 3),
            gpu_seconds=round(total["gpu_seconds"], 3),
            load_seconds=round(total["load_seconds"], 3),
            worker_peak_rss_mb=max((g.get("peak_rss_mb", 0.0) for g in groups), default=0.0),
            peak_gpu_mb=max((g.get("peak_gpu_mb", 0.0) for g in groups), default=0.0),
        )
    return out


def cost_metrics(summary: dict[str, Any], groups_key: str | None = None) -> dict[str, float]:
    """MLflow metrics of a summary's cost: `cost/<key>` for the stage and `cost/<group>/<key>` for each entry of
    `summary[groups_key]` (caption: kinds, embed: feature sets) that carries a cost; numbers only."""

    def numeric(prefix: str, cost: dict[str, Any]) -> dict[str, float]:
        return {
            f"{prefix}/{k}": float(v)
            for k, v in cost.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }

    out = numeric(METRIC_PREFIX, summary.get(COST_KEY) or {})
    groups = (summary.get(groups_key) or {}) if groups_key else {}
    for group, entry in groups.items():
        cost = entry.get(COST_KEY) if isinstance(entry, dict) and COST_KEY in entry else entry
        if isinstance(cost, dict):
            out.update(numeric(f"{METRIC_PREFIX}/{group}", cost))
    return out


GROUPS_OF = {"caption": "kinds", "embed": "cost_per_feature_set"}  # where a stage's summary keeps its groups' cost


def log_stage_run(cfg: Any, stage: str, summary: dict[str, Any]) -> str | None:
    """A finished stage's cost as an MLflow run (tags captionrec.kind=stage, captionrec.stage=<stage>; metrics
    `cost_metrics`; the summary as artifact summary.json) in `tracking.experiment`. Returns its run id, or None
    (with a warning) where MLflow refuses: the stage's own work is done."""
    if COST_KEY not in summary or not cfg.tracking.tracking_uri:
        return None
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from captionrec.tracking.mlflow_utils import _absolute_location, _absolute_uri, git_commit

    t = cfg.tracking
    try:
        client = MlflowClient(_absolute_uri(t.tracking_uri))
        exp = client.get_experiment_by_name(t.experiment)
        exp_id = (
            exp.experiment_id
            if exp
            else client.create_experiment(t.experiment, artifact_location=_absolute_location(t.artifact_location))
        )
        tags = {C.TAG_KIND: C.STAGE_RUN, C.TAG_STAGE: stage, "git_commit": t.git_commit or git_commit()}
        run_id = client.create_run(exp_id, run_name=f"{stage}-cost", tags=tags).info.run_id
        ts = int(time.time() * 1000)
        metrics = [Metric(k, v, ts, 0) for k, v in cost_metrics(summary, GROUPS_OF.get(stage)).items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        client.log_dict(run_id, json.loads(json.dumps(summary, default=str)), "summary.json")  # e.g. timestamps
        client.set_terminated(run_id, "FINISHED")
    except Exception as exc:  # noqa: BLE001 - a tracking store that refuses must not fail a finished stage
        log.warning("%s: cost not logged to MLflow (%s): %s", stage, t.tracking_uri, exc)
        return None
    log.info("%s: cost logged to MLflow run %s", stage, run_id)
    return run_id


def log_run_cost(tracking_uri: str, run_id: str, cost: dict[str, Any]) -> None:
    """A train run's cost (`StageClock.stop()`) as metrics `cost/<key>` of that run."""
    from mlflow.tracking import MlflowClient

    from captionrec.tracking.mlflow_utils import _absolute_uri

    client = MlflowClient(_absolute_uri(tracking_uri))
    for k, v in cost_metrics({COST_KEY: cost}).items():
        client.log_metric(run_id, k, v)


def _n(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def per_1k_line(cost: dict[str, Any]) -> str:
    """One kind's / feature set's cost on one line: per 1,000 items (CPU, GPU, wall), items/s, loads, peaks."""
    if not cost.get("items"):
        return "cost: no items"
    gpu = f", {_n(cost['per_1k_gpu_seconds'])} GPU-s" if cost["device"] == "gpu" else " (cpu, no GPU-s)"
    peak_gpu = f", GPU {_n(cost['peak_gpu_mb'], 0)} MB" if cost["peak_gpu_mb"] else ""
    return (
        f"cost per 1,000 items: {_n(cost['per_1k_cpu_seconds'])} CPU-s{gpu}, {_n(cost['per_1k_wall_seconds'])} s "
        f"wall; {_n(cost['items_per_s'], 2)} items/s; model loads {_n(cost['load_seconds'])} s; peak RSS worker "
        f"{_n(cost['worker_peak_rss_mb'], 0)} MB{peak_gpu}"
    )


def total_line(cost: dict[str, Any]) -> str:
    """A stage's total cost on one line."""
    workers = f", workers {_n(cost['worker_cpu_seconds'])}" if "worker_cpu_seconds" in cost else ""
    gpu = f", {_n(cost['gpu_seconds'])} GPU-s" if cost.get("device") == "gpu" else ""
    jvm = f", JVM {_n(cost['jvm_peak_rss_mb'], 0)} MB" if cost.get("jvm_peak_rss_mb") else ""
    rss = f"; peak RSS driver {_n(cost['driver_peak_rss_mb'], 0)} MB{jvm}"
    if cost.get("worker_peak_rss_mb"):
        rss += f", workers {_n(cost['worker_peak_rss_mb'], 0)} MB"
    return (
        f"cost: {_n(cost['wall_seconds'])} s wall, {_n(cost['cpu_seconds'])} CPU-s (driver "
        f"{_n(cost['driver_cpu_seconds'])}{workers}){gpu}{rss}"
    )
