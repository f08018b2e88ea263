"""MLflow helpers. The driver builds a `TrackingSpec` (URI, experiment, params, tags, an optional parent
run); inside training only rank 0 turns it into a run through `RunLogger`, every other rank gets a logger
that does nothing.

MLflow metric names may not contain '@': `hr@10` is logged as `hr_10` (`contracts.metric_name`).
MLflow drops NaN metric values without a word; `RunLogger.log_metrics` never logs a NaN: it leaves the
metric out and lists it in the run tag `nan_metrics`, so a missing number is visible (an infinite value
is an error: it would hide a failure).
"""

from __future__ import annotations

import inspect
import logging
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captionrec.config import flatten
from captionrec.contracts import metric_name

log = logging.getLogger(__name__)

NAN_TAG = "nan_metrics"


def metric_key(name: str) -> str:
    return metric_name(name)


def git_commit(path: str | Path | None = None) -> str:
    """HEAD of the repository holding `path` (default: this package), or 'unknown'."""
    where = Path(path) if path else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _absolute_uri(uri: str) -> str:
    """sqlite:///relative.db -> sqlite:////abs/relative.db, so child processes in other cwds find it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _absolute_location(loc: str | None) -> str | None:
    if loc is None or "://" in loc or loc.startswith("dbfs:"):
        return loc
    return Path(loc).resolve().as_uri()


@dataclass
class TrackingSpec:
    """Everything rank 0 needs to log a run; picklable."""

    tracking_uri: str
    experiment: str
    artifact_location: str | None = None
    run_name: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    log_model: bool = True
    enabled: bool = True
    parent_run_id: str | None = None  # create the run as a child (nested) run of this one
    registry_uri: str | None = None  # e.g. databricks-uc (Unity Catalog)
    registered_model: str | None = None  # log_model also registers a version of this model


def tracking_spec(
    cfg: Any,
    tags: dict[str, Any] | None = None,
    extra_params: dict[str, Any] | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
) -> TrackingSpec:
    """From the root Config: flattened config as params (+ extras), the git commit + given tags."""
    params = {k: "" if v is None else str(v) for k, v in flatten(cfg).items()}
    params.update({k: str(v) for k, v in (extra_params or {}).items()})
    all_tags = {"git_commit": cfg.tracking.git_commit or git_commit()}  # a wheel has no .git: jobs pass it
    all_tags.update({k: str(v) for k, v in (tags or {}).items()})
    t = cfg.tracking
    return TrackingSpec(
        tracking_uri=_absolute_uri(t.tracking_uri),
        experiment=t.experiment,
        artifact_location=_absolute_location(t.artifact_location),
        run_name=run_name,
        params=params,
        tags=all_tags,
        log_model=bool(cfg.train.log_model),
        parent_run_id=parent_run_id,
        registry_uri=t.registry_uri,
        registered_model=t.registered_model,
    )


class RunLogger:
    """Rank 0: an MLflow run; other ranks (or a disabled spec): no-ops. Use as a context manager."""

    def __init__(self, spec: TrackingSpec | None, rank: int = 0):
        self.active = spec is not None and spec.enabled and rank == 0
        self.spec = spec
        self.run_id: str | None = None
        self.nan_metrics: set[str] = set()
        self._client = None

    def _experiment_id(self, client) -> str:
        spec = self.spec
        if spec.parent_run_id:  # a child run lives in its parent's experiment
            return client.get_run(spec.parent_run_id).info.experiment_id
        exp = client.get_experiment_by_name(spec.experiment)
        return (
            exp.experiment_id
            if exp
            else client.create_experiment(spec.experiment, artifact_location=spec.artifact_location)
        )

    def __enter__(self) -> "RunLogger":
        if not self.active:
            return self
        import mlflow
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        spec = self.spec
        mlflow.set_tracking_uri(spec.tracking_uri)
        client = MlflowClient(spec.tracking_uri)
        tags = dict(spec.tags)
        if spec.parent_run_id:
            tags["mlflow.parentRunId"] = spec.parent_run_id
        run = client.create_run(self._experiment_id(client), run_name=spec.run_name, tags=tags)
        self.run_id = run.info.run_id
        self._client = client
        params = [Param(k, v[:6000]) for k, v in spec.params.items()]
        for i in range(0, len(params), 100):
            client.log_batch(self.run_id, params=params[i : i + 100])
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.active and self._client is not None:
            self._client.set_terminated(self.run_id, status="FAILED" if exc_type else "FINISHED")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log finite values; a NaN is left out and named in the `nan_metrics` tag; +-inf is an error."""
        if not self.active:
            return
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        rows, nans = [], []
        for k, v in metrics.items():
            if v is None:
                continue
            v = float(v)
            if math.isinf(v):
                raise ValueError(f"metric {k!r} is {v} (step {step}): an infinite metric hides a failure")
            if math.isnan(v):
                nans.append(metric_key(k) if step == 0 else f"{metric_key(k)}@step{step}")
                continue
            rows.append(Metric(metric_key(k), v, ts, step))
        for i in range(0, len(rows), 1000):
            self._client.log_batch(self.run_id, metrics=rows[i : i + 1000])
        if nans:
            self.nan_metrics.update(nans)
            log.info("not logged (NaN, e.g. no case to average over): %s", ", ".join(nans))
            self._client.set_tag(self.run_id, NAN_TAG, ",".join(sorted(self.nan_metrics))[:5000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, str(v))

    def log_dict(self, data: Any, name: str) -> None:
        if self.active:
            self._client.log_dict(self.run_id, data, name)

    def log_table(self, table: Any, name: str) -> None:
        """A pyarrow Table as a parquet artifact at `name` (e.g. cases/test_w0.parquet)."""
        if not self.active:
            return
        import os
        import tempfile

        import pyarrow.parquet as pq

        folder, base = os.path.split(name)
        with tempfile.TemporaryDirectory(prefix="captionrec-artifact-") as tmp:
            path = os.path.join(tmp, base)
            pq.write_table(table, path)
            self._client.log_artifact(self.run_id, path, folder or None)

    def log_model(self, model: Any, example_input: Any, name: str = "model") -> None:
        """mlflow.pytorch.log_model, pickled (not torch.export: an exported GraphModule can't `.eval()`),
        with a signature inferred from `example_input` -> model(example_input)."""
        if not (self.active and self.spec.log_model):
            return
        import mlflow
        import torch
        from mlflow.models import infer_signature

        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(example_input)).cpu().numpy()
        signature = infer_signature(example_input, out)
        torch_req = f"torch=={torch.__version__.split('+')[0]}"
        if self.spec.registry_uri:
            mlflow.set_registry_uri(self.spec.registry_uri)
        # nested: the caller may hold an active run (e.g. the experiment grid's parent run, in this process)
        # MLflow >= 3.2 asks for the format (pickle: see above); older ones (DBR 17.3's 3.0.1) only pickle, and
        # pass unknown keywords on to torch.save, which rejects them
        fmt = {"serialization_format": "pickle"}
        if "serialization_format" not in inspect.signature(mlflow.pytorch.log_model).parameters:
            fmt = {}
        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            mlflow.pytorch.log_model(
                model,
                name=name,
                signature=signature,
                input_example=example_input,
                pip_requirements=[torch_req],
                registered_model_name=self.spec.registered_model,
                **fmt,
            )
