"""MLflow tracking: run specs made on the driver, logging done only by rank 0."""

from captionrec.tracking.mlflow_utils import RunLogger, TrackingSpec, git_commit, metric_key, tracking_spec

__all__ = ["RunLogger", "TrackingSpec", "git_commit", "metric_key", "tracking_spec"]
