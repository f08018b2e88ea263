"""Which model the recommend stage serves (Spark-free: MLflow only).

- `choose_configuration`: the configuration of a grid with the best mean VALIDATION metric (`valid_<metric>` per
  window, mean over windows, then over the seeds of one configuration; test metrics are never read). A
  configuration is a (model, features) row and, when the grid tunes a row over several trials (child runs that
  differ in hyperparameters), the trial's hyperparameters: every `train.*` param of the child except the seed.
  Trials their row did not choose (tag captionrec.trial_chosen = "false", the experiment's own choice on
  validation) are left out, as the report leaves them out; untagged children all count. Children may sit directly under the grid run or one level deeper (a row
  run holding its trials).
- `Served` / `served_model`: what a logged model is made of (its run's params, tags and item index) and where it
  is registered.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from captionrec import contracts as C

TRIAL_CHOSEN_TAG = C.TAG_TRIAL_CHOSEN  # "false" on a tuned row's trials its row did not choose (skipped here)
# train.* params that are not a configuration's hyperparameters: the seed (averaged over), what the refit
# replaces (split, retrain) and where / how it runs.
NOT_HYPERPARAMETERS = frozenset(
    {"seed", "log_model", "num_processes", "local_mode", "use_gpu", "torch_threads", "loader", "inputs_dir",
     "petastorm_cache_dir", "sequences_table", "retrain", "eval_batch_size", "warn_k_share"}
)  # fmt: skip


def mlflow_client(cfg: Any) -> tuple[Any, str]:
    """(MlflowClient, absolute tracking URI) of the config's tracking section; sets mlflow's URIs too."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from captionrec.tracking.mlflow_utils import _absolute_uri

    uri = _absolute_uri(cfg.tracking.tracking_uri)
    mlflow.set_tracking_uri(uri)
    # Always pinned: unset, MLflow resolves the registry from the process-wide URI, which an earlier run in the
    # same process may have pointed at another store.
    registry = cfg.tracking.registry_uri or uri
    mlflow.set_registry_uri(registry)
    return MlflowClient(uri, registry), uri


def newest_grid(client: Any, experiment: str) -> Any:
    """The newest grid (parent) run of the experiment; a clear error when there is none."""
    exp = client.get_experiment_by_name(experiment)
    runs = (
        []
        if exp is None
        else client.search_runs(
            [exp.experiment_id],
            f"tags.`{C.TAG_KIND}` = '{C.GRID_RUN}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
    )
    if not runs:
        raise ValueError(
            f"recommend.from_grid=latest: no grid run in experiment {experiment!r}; run "
            "`captionrec experiment` first or pass recommend.run_id=<run id>"
        )
    return runs[0]


def hyperparameters(params: dict[str, str]) -> dict[str, str]:
    """A child's configuration beyond (model, features): its train.* params (as logged) but the seed and the
    execution settings (NOT_HYPERPARAMETERS), split settings included."""
    from captionrec.config.loader import flatten
    from captionrec.config.train import TrainConfig

    keys = set(flatten(TrainConfig())) - NOT_HYPERPARAMETERS - {"model", "features"}
    return {k: params[f"train.{k}"] for k in sorted(keys) if f"train.{k}" in params}


def _children(client: Any, run: Any) -> list[Any]:
    """The grid's child runs with a training config, one level of nesting (row -> trials) followed."""
    found = client.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'", max_results=5000
    )
    out = []
    for child in found:
        if "train.model" in child.data.params:
            out.append(child)
        else:  # a row run: its trials are its children
            out += [
                r
                for r in client.search_runs(
                    [run.info.experiment_id], f"tags.mlflow.parentRunId = '{child.info.run_id}'", max_results=5000
                )
                if "train.model" in r.data.params
            ]
    return out


def _label(key: tuple[str, str, str], varying: set[str]) -> str:
    model, features, hp = key
    values = {k: v for k, v in json.loads(hp).items() if k in varying}
    return f"{model} {features}" + (" [" + ", ".join(f"{k}={v}" for k, v in values.items()) + "]" if values else "")


def choose_configuration(client: Any, grid_run_id: str, metric: str = "ndcg@10") -> dict[str, Any]:
    """The grid's configuration (model, features, trial hyperparameters) whose FINISHED children have the best
    mean validation metric (per run: mean of `valid_<metric>` over windows; per configuration: mean over its
    seeds). Only the validation metric's history is read, never a test metric."""
    name = f"valid_{C.metric_name(metric)}"
    grid = client.get_run(grid_run_id)
    scores: dict[tuple[str, str, str], list[float]] = {}
    seeds: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
    hps: dict[tuple[str, str, str], dict[str, str]] = {}
    for run in _children(client, grid):
        if run.info.status != "FINISHED" or run.data.tags.get(TRIAL_CHOSEN_TAG) == "false":
            continue
        values = [m.value for m in client.get_metric_history(run.info.run_id, name)]
        if not values:
            continue
        p = run.data.params
        hp = hyperparameters(p)
        key = (p.get("train.model", ""), p.get("train.features", ""), json.dumps(hp, sort_keys=True))
        scores.setdefault(key, []).append(float(np.mean(values)))
        seeds.setdefault(key, []).append((p.get("train.seed", ""), run.info.run_id))
        hps[key] = hp
    if not scores:
        raise ValueError(f"grid run {grid_run_id} has no finished child with the validation metric {name}")
    means = {k: float(np.mean(v)) for k, v in scores.items()}
    ranked = sorted(means.items(), key=lambda kv: (-kv[1], kv[0]))
    best = ranked[0][0]
    varying = {k for k in hps[best] if len({h.get(k) for h in hps.values()}) > 1}  # what tells trials apart
    reason = f"best mean {name} of grid {grid_run_id}: {_label(best, varying)} = {means[best]:.4f} over " + (
        f"{len(scores[best])} seed(s)"
        + (f"; next {_label(ranked[1][0], varying)} = {ranked[1][1]:.4f}" if len(ranked) > 1 else "")
    )
    return {
        "grid_run_id": grid_run_id,
        "model": best[0],
        "features": best[1],
        "hyperparameters": {k: hps[best][k] for k in sorted(varying)},
        "train_params": hps[best],
        "metric": name,
        "value": means[best],
        "seed": int(sorted(seeds[best])[0][0] or 42),
        "children": sorted(seeds[best]),
        "candidates": {_label(k, varying): round(v, 6) for k, v in ranked},
        "reason": reason,
    }


@dataclass
class Served:
    """The model being served: its run, what it is made of, and where it is registered."""

    run_id: str
    features: str
    max_seq_len: int
    index_ids: list[str]
    model_ids: dict[str, str]  # feature_set -> embedding model_id it trained on
    trained_versions: dict[str, int | None]
    model_name: str | None = None
    model_version: str | None = None
    choice: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_sets(self) -> list[str]:
        return [p for p in self.features.split("+") if p != C.ID]


def served_model(client: Any, run_id: str, choice: dict[str, Any]) -> Served:
    """What the run's logged model is: its params, tags, item index and registered version (if any). A run
    without a logged model (its `model` and item_index.json: train.log_model=true) is an error saying what to set."""
    import mlflow

    run = client.get_run(run_id)
    p, tags = run.data.params, run.data.tags
    logged = {f.path for f in client.list_artifacts(run_id)}
    model_files = mlflow.artifacts.list_artifacts(artifact_uri=f"runs:/{run_id}/model")  # a logged model, if any
    if not model_files or C.ITEM_INDEX_ARTIFACT not in logged:
        raise ValueError(
            f"recommend.run_id={run_id}: that run logged no model (run artifacts: {sorted(logged) or 'none'}); "
            "set recommend.run_id to a train run with train.log_model=true (`captionrec train log_model=true`), "
            "or use recommend.from_grid=latest to refit the newest grid's best configuration"
        )
    index = mlflow.artifacts.load_dict(f"runs:/{run_id}/{C.ITEM_INDEX_ARTIFACT}")
    model_ids = dict(kv.split("=", 1) for kv in tags.get("feature_model_ids", "").split(",") if "=" in kv)
    versions = {
        t: (int(tags[f"delta_version.{t}"]) if tags.get(f"delta_version.{t}") not in (None, "", "None") else None)
        for t in (C.INTERACTIONS, C.ITEM_FEATURES)
    }
    name, version = tags.get("captionrec.registered_model"), tags.get("captionrec.model_version")
    if version is None:  # a registered version of this run, if any
        try:
            found = client.search_model_versions(f"run_id = '{run_id}'")
        except Exception:  # noqa: BLE001 - a registry that cannot search by run: unregistered
            found = []
        if found:
            name, version = found[0].name, str(found[0].version)
    return Served(
        run_id,
        p.get("train.features", C.ID),
        int(p.get("train.max_seq_len", 20)),
        [str(i) for i in index["item_ids"]],
        model_ids,
        versions,
        name,
        version,
        choice,
    )
