"""A train run's logged model, loaded back, and the production refit registered (Spark-free: MLflow and torch).

- `load_recommender`: the Recommender inside a train run's logged HistoryScorer (`mlflow.pytorch`), eval mode.
- `item_index_ids`: the item ids of a train run's item_index.json (position i <-> item_idx i + 1).
- `register_refit`: the refit run's model logged as the pyfunc (`pyfunc.log_recommender`; with retrieval=ann
  with an ItemIndex over its items), registered as a new version, and the alias moved only on a better
  validation metric (`pyfunc.promote_if_better`; `recommend.force_promote` re-baselines); the outcome is tagged
  on the run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from captionrec import contracts as C

log = logging.getLogger(__name__)


def load_recommender(model_uri: str, tracking_uri: str, device: str = "cpu") -> Any:
    """The Recommender inside a logged HistoryScorer (`mlflow.pytorch`), in eval mode on `device`."""
    import mlflow
    import mlflow.pytorch

    mlflow.set_tracking_uri(tracking_uri)
    scorer = mlflow.pytorch.load_model(model_uri, map_location=device)
    model = getattr(scorer, "model", scorer)
    model.objective = None
    return model.to(device).eval()


def item_index_ids(text: str) -> list[str]:
    """The item ids of a train run's item_index.json (position i <-> item_idx i + 1)."""
    return [str(i) for i in json.loads(text)["item_ids"]]


def register_refit(
    rc: Any,
    client: Any,
    tracking_uri: str,
    run_id: str,
    feature_set: str,
    history_len: int,
    queries_for: Callable[[Any, list[str]], np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """Log the refit run's model as a pyfunc, register it as `rc.registered_model` and promote it to `rc.alias`
    when its validation metric (mean of `valid_<rc.select_metric>`) beats the champion's (or rc.force_promote).
    rc: the RecommendConfig; queries_for(model, item ids): user states the pyfunc's ANN index (retrieval=ann) is
    calibrated on (ItemIndex.build's `queries`). Returns promote_if_better's result + model_name, version,
    metric, value."""
    import mlflow
    import torch

    from captionrec.serving.index import ItemIndex
    from captionrec.serving.pyfunc import log_recommender, promote_if_better, register_recommender

    model = load_recommender(f"runs:/{run_id}/model", tracking_uri)
    ids = item_index_ids(json.dumps(mlflow.artifacts.load_dict(f"runs:/{run_id}/{C.ITEM_INDEX_ARTIFACT}")))
    index = None
    if rc.retrieval == "ann":  # the served pyfunc retrieves through the same kind of index as the stage
        with torch.no_grad():
            vectors = model.item_vectors()[1:].float().cpu().numpy()
        queries = queries_for(model, ids) if queries_for else None
        index = ItemIndex.build(vectors, ids[-len(vectors) :], device="cpu", queries=queries)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        uri = log_recommender(
            model, ids, feature_set=feature_set, model_name=rc.registered_model, history_len=history_len, index=index
        )
    version = register_recommender(uri, rc.registered_model)
    metric = f"valid_{C.metric_name(rc.select_metric)}"
    values = [m.value for m in client.get_metric_history(run_id, metric)]
    value = float(np.mean(values)) if values else float("nan")
    result = promote_if_better(rc.registered_model, version, metric, value, alias=rc.alias, force=rc.force_promote)
    result = {**result, "model_name": rc.registered_model, "version": str(version), "metric": metric, "value": value}
    log.info("registered %s version %s (%s %.4f): %s", rc.registered_model, version, metric, value, result)
    for k, v in {
        "captionrec.promotion": json.dumps(result, default=str),
        "captionrec.model_version": version,
        "captionrec.registered_model": rc.registered_model,
    }.items():
        client.set_tag(run_id, k, str(v)[:5000])
    return result
