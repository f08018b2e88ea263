"""MLflow helpers. The driver builds a `TrackingSpec` (URI, experiment, params, tags); inside training only
rank 0 turns it into a run through `RunLogger`, every other rank gets a logger that does nothing.

MLflow metric names may not contain '@': `hr@10` is logged as `hr_10`.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from captionrec.config import flatten

log = logging.getLogger(__name__)


def metric_key(name: str) -> str:
    return name.replace("@", "_")


def git_commit(path: Optional[str | Path] = None) -> str:
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
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _absolute_location(loc: Optional[str]) -> Optional[str]:
    if loc is None or "://" in loc or loc.startswith("dbfs:"):
        return loc
    return Path(loc).resolve().as_uri()


@dataclass
class TrackingSpec:
    """Everything rank 0 needs to log a run; picklable."""

    tracking_uri: str
    experiment: str
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    log_model: bool = True
    enabled: bool = True


def tracking_spec(cfg: Any, tags: Optional[dict[str, Any]] = None, extra_params: Optional[dict[str, Any]] = None,
                  run_name: Optional[str] = None) -> TrackingSpec:
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
    )


class RunLogger:
    """Rank 0: an MLflow run; other ranks (or a disabled spec): no-ops. Use as a context manager."""

    def __init__(self, spec: Optional[TrackingSpec], rank: int = 0):
        self.active = spec is not None and spec.enabled and rank == 0
        self.spec = spec
        self.run_id: Optional[str] = None
        self._client = None

    def __enter__(self) -> "RunLogger":
        if not self.active:
            return self
        import mlflow
        from mlflow.tracking import MlflowClient

        spec = self.spec
        mlflow.set_tracking_uri(spec.tracking_uri)
        client = MlflowClient(spec.tracking_uri)
        exp = client.get_experiment_by_name(spec.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(spec.experiment, artifact_location=spec.artifact_location)
        run = client.create_run(exp_id, run_name=spec.run_name, tags=spec.tags)
        self.run_id = run.info.run_id
        self._client = client
        from mlflow.entities import Param

        params = [Param(k, v[:6000]) for k, v in spec.params.items()]
        for i in range(0, len(params), 100):
            client.log_batch(self.run_id, params=params[i : i + 100])
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.active and self._client is not None:
            self._client.set_terminated(self.run_id, status="FAILED" if exc_type else "FINISHED")

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        if not self.active:
            return
        import math
        import time

        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        rows = [Metric(metric_key(k), float(v), ts, step) for k, v in metrics.items() if v is not None and not math.isnan(float(v))]
        for i in range(0, len(rows), 1000):
            self._client.log_batch(self.run_id, metrics=rows[i : i + 1000])

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            for k, v in tags.items():
                self._client.set_tag(self.run_id, k, str(v))

    def log_dict(self, data: Any, name: str) -> None:
        if self.active:
            self._client.log_dict(self.run_id, data, name)

    def log_model(self, model: Any, example_input: Any, name: str = "model") -> None:
        """mlflow.pytorch.log_model with a signature inferred from `example_input` -> model(example_input)."""
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
        with mlflow.start_run(run_id=self.run_id):
            mlflow.pytorch.log_model(model, name=name, signature=signature, input_example=example_input, pip_requirements=[torch_req])
