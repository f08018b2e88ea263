"""A trained recommender as an MLflow pyfunc, registered, with a `champion` alias that only moves up.

`log_recommender` (inside an active MLflow run) logs a pyfunc whose input is a pandas DataFrame with a
column `history` (a list of item ids, most recent last) and an optional `k` (top k, default 10), and whose
output is a DataFrame with `item_ids` (the top k, best first) and `scores` (their scores): the model's own
full-catalogue ranking (`Recommender.score_all` over the newest `history_len` known items), with the
history's items excluded. With an `ItemIndex`, candidates come from the ANN index instead (k + the
history's length of them, seen items dropped). An empty history, or one with no item the model knows,
gets empty lists. Ids the model does not know are ignored.

Item ids: `item_ids` lists the catalogue by item index, `item_ids[i]` = the item id of item_idx i + 1 (as
`item_index.json` of a train run; index 0 is padding). A list of num_items + 1 ids is read as including a
placeholder for index 0. Integer ids give a signature of longs, any other ids (the project's item_id is a
string) one of strings.

The model carries the `captionrec` package it pickles (code_paths: the model's `code/captionrec`, put on
sys.path by MLflow at load), so it loads where captionrec is not installed: MLflow's virtualenv env manager
or Databricks Model Serving install the pip requirements (torch, faiss-cpu, numpy, pandas, mlflow-skinny) and
import captionrec from `code/`. `mlflow models serve -m models:/<name>@champion --env-manager local` serves it
from the current environment.

`promote_if_better` records the version's validation metric as model-version tags and moves the alias to
it only when the value beats the current champion's (strictly; higher is better unless told otherwise).
Aliases and tags work on the local sqlite registry and on Unity Catalog (which has no stages).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from captionrec.serving.index import is_int_ids, plain_ids

log = logging.getLogger(__name__)

DEFAULT_K = 10
METRIC_VALUE_TAG = "captionrec.validation_metric"
METRIC_NAME_TAG = "captionrec.validation_metric_name"
_BATCH = 256


def _catalogue(item_ids: Sequence[Any], num_items: int) -> list[Any]:
    ids = list(item_ids)
    if len(ids) == num_items + 1:
        ids = ids[1:]
    if len(ids) != num_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {num_items} items (want {num_items})")
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    return ids


def _signature(int_ids: bool):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema

    id_type = DataType.long if int_ids else DataType.string
    inputs = Schema([ColSpec(Array(id_type), "history"), ColSpec(DataType.long, "k", required=False)])
    outputs = Schema([ColSpec(Array(id_type), "item_ids"), ColSpec(Array(DataType.double), "scores")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for pkg in ("torch", "faiss-cpu", "numpy", "pandas", "mlflow-skinny"):
        try:
            reqs.append(f"{pkg}=={version(pkg).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(pkg)
    return reqs


def _package_copy(where: Path) -> Path:
    """A copy of the installed `captionrec` package (sources only, no __pycache__) under `where`: logged as the
    model's code_paths, it lands in the model's `code/captionrec`, which MLflow puts on sys.path when it loads
    the model, so the pickled Recommender (captionrec.models.*) loads where captionrec is not installed."""
    import shutil

    import captionrec

    source = Path(captionrec.__file__).resolve().parent
    dest = where / source.name
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo"))
    return dest


def log_recommender(
    model: Any,
    item_ids: Sequence[Any],
    *,
    feature_set: str,
    model_name: str,
    history_len: int,
    index: Any = None,
    artifact_path: str = "recommender",
    registered_model_name: str | None = None,
) -> str:
    """Log `model` (a trained Recommender) as a pyfunc in the active MLflow run; returns the model URI.

    `index` (an ItemIndex over the same item ids, in the same order) makes the pyfunc retrieve through it.
    `registered_model_name` also registers the logged model as a new version of that registered model.
    """
    import mlflow
    import pandas as pd
    import torch

    if mlflow.active_run() is None:
        raise RuntimeError("log_recommender needs an active MLflow run (mlflow.start_run())")
    ids = _catalogue(item_ids, model.num_items)
    if index is not None and list(index.item_ids) != ids:
        raise ValueError("the index's item ids are not the model's catalogue (same ids, same order)")
    int_ids = is_int_ids(ids)
    meta = {
        "item_ids": plain_ids(ids),
        "int_ids": int_ids,
        "feature_set": feature_set,
        "model_name": model_name,
        "history_len": int(history_len),
        "retrieval": "exact" if index is None else f"ann:{index.kind}",
    }
    example = pd.DataFrame({"history": [meta["item_ids"][: min(3, len(ids))]], "k": [min(DEFAULT_K, len(ids))]})
    with tempfile.TemporaryDirectory(prefix="captionrec-pyfunc-") as tmp:
        artifacts = {"model": str(Path(tmp) / "model.pt"), "meta": str(Path(tmp) / "meta.json")}
        objective, was_training = model.objective, model.training
        model.objective = None  # the training objective is not part of the served model
        try:
            torch.save(model.eval(), artifacts["model"])
        finally:
            model.objective = objective
            model.train(was_training)
        Path(artifacts["meta"]).write_text(json.dumps(meta))
        if index is not None:
            artifacts["index"] = str(index.save(Path(tmp) / "index"))
        info = mlflow.pyfunc.log_model(
            name=artifact_path,
            python_model=RecommenderModel(),
            artifacts=artifacts,
            signature=_signature(int_ids),
            input_example=example,
            pip_requirements=_pip_requirements(),
            code_paths=[str(_package_copy(Path(tmp) / "code"))],
            registered_model_name=registered_model_name,
        )
    log.info(
        "logged recommender %s (%s, %s, %d items, retrieval %s)",
        info.model_uri,
        model_name,
        feature_set,
        len(ids),
        meta["retrieval"],
    )
    return info.model_uri


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """The pyfunc: a pickled Recommender, its catalogue (meta.json) and optionally an ItemIndex."""

    def load_context(self, context) -> None:
        import torch

        meta = json.loads(Path(context.artifacts["meta"]).read_text())
        self.item_ids = meta["item_ids"]
        self.int_ids = bool(meta["int_ids"])
        self.history_len = int(meta["history_len"])
        self.idx_of = {item: i + 1 for i, item in enumerate(self.item_ids)}  # item id -> item_idx
        self.model = torch.load(context.artifacts["model"], map_location="cpu", weights_only=False).eval()
        with torch.no_grad():
            self.vectors = self.model.item_vectors().detach()  # (N + 1, D), once
        self.index = None
        if context.artifacts.get("index"):
            from captionrec.serving.index import ItemIndex

            self.index = ItemIndex.load(context.artifacts["index"])

    def _key(self, item: Any) -> Any:
        if self.int_ids:
            return int(item)
        return str(item)

    def _histories(self, histories: list) -> tuple[np.ndarray, list[set[int]]]:
        """Each history -> its known item indexes (left-padded, newest history_len) and the set it holds."""
        rows = np.zeros((len(histories), self.history_len), dtype=np.int64)
        seen = []
        for r, hist in enumerate(histories):
            known = [] if hist is None else [self.idx_of.get(self._key(h)) for h in list(hist)]
            known = [i for i in known if i is not None]
            seen.append(set(known))
            tail = known[-self.history_len :]
            if tail:
                rows[r, -len(tail) :] = tail
        return rows, seen

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        import pandas as pd

        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "history" not in df.columns:
            raise ValueError(f"input needs a 'history' column (got {list(df.columns)})")
        ks = [_k(v) for v in (df["k"] if "k" in df.columns else [None] * len(df))]
        out_ids: list[list] = []
        out_scores: list[list[float]] = []
        histories = list(df["history"])
        for s in range(0, len(histories), _BATCH):
            rows, seen = self._histories(histories[s : s + _BATCH])
            ids, scores = self._rank(rows, seen, ks[s : s + _BATCH])
            out_ids += ids
            out_scores += scores
        return pd.DataFrame({"item_ids": out_ids, "scores": out_scores})

    def _rank(self, rows: np.ndarray, seen: list[set[int]], ks: list[int]) -> tuple[list, list]:
        import torch

        kmax = max(ks)
        with torch.no_grad():
            hist = torch.from_numpy(rows)
            if self.index is None:
                scores = self.model.score_all(hist, item_vectors=self.vectors)  # (B, N + 1), column 0 -inf
                for r, items in enumerate(seen):
                    scores[r, list(items)] = float("-inf")
                want = min(kmax, scores.shape[1])
                top_s, top_i = (t.numpy() for t in torch.topk(scores, want, dim=1))
            else:
                states = self.model.user_states(hist).numpy()
                want = kmax + max((len(x) for x in seen), default=0)
                pos, top_s = self.index.search_positions(states, want)
                top_i = np.where(pos >= 0, pos + 1, 0)
        ids, out = [], []
        for r in range(rows.shape[0]):
            if not seen[r]:  # nothing the model knows: no ranking to give
                ids.append([]), out.append([])
                continue
            keep = [
                (int(i), float(v))
                for i, v in zip(top_i[r], top_s[r])
                if i > 0 and int(i) not in seen[r] and math.isfinite(v)
            ][: ks[r]]
            ids.append([self.item_ids[i - 1] for i, _ in keep])
            out.append([v for _, v in keep])
        return ids, out


def _k(value: Any) -> int:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DEFAULT_K
    k = int(value)
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    return k


def register_recommender(
    model_uri: str, name: str, *, metric_name: str | None = None, value: float | None = None
) -> str:
    """Register `model_uri` as a new version of `name` (the registry set by mlflow.set_registry_uri);
    with a metric, record it as the version's tags. Returns the version (a string)."""
    import mlflow

    mv = mlflow.register_model(model_uri, name)
    if metric_name is not None and value is not None:
        _tag_metric(name, str(mv.version), metric_name, value)
    return str(mv.version)


def _tag_metric(name: str, version: str, metric_name: str, value: float) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(name, version, METRIC_NAME_TAG, metric_name)
    client.set_model_version_tag(name, version, METRIC_VALUE_TAG, repr(float(value)))


def _champion(client: Any, name: str, alias: str) -> Any | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def promote_if_better(
    model_name: str,
    version: str,
    metric_name: str,
    value: float,
    alias: str = "champion",
    greater_is_better: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Record `value` on the version, then point `alias` at it only if it beats the champion's recorded value.

    Rule: no champion yet -> promote; the champion has no value for the same metric -> keep it (not
    comparable); otherwise promote only when strictly better. A NaN value never promotes.
    `force` (config recommend.force_promote) re-baselines: the alias moves to this version whatever the
    champion's value or metric name (the way out when the configured metric changed: otherwise the old
    champion is kept forever); logged as a warning and marked `forced` in the result.
    Returns {promoted, forced, reason, new, champion_before, champion_version_before, version, metric, alias,
    rule}.
    """
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    version = str(version)
    value = float(value)
    _tag_metric(model_name, version, metric_name, value)
    champ = _champion(client, model_name, alias)
    before, before_version = None, None
    better = "higher" if greater_is_better else "lower"
    rule = f"{alias} moves to a version whose validation {metric_name} is strictly {better} than {alias}'s"
    if champ is not None:
        before_version = str(champ.version)
        tags = champ.tags or {}
        if tags.get(METRIC_NAME_TAG) == metric_name and METRIC_VALUE_TAG in tags:
            before = float(tags[METRIC_VALUE_TAG])
    forced = False
    if math.isnan(value):
        promoted, reason = False, f"new {metric_name} is NaN"
    elif force and champ is not None and before_version != version:
        promoted, forced = True, True
        was = f"{before:.6g}" if before is not None else f"no recorded {metric_name}"
        reason = (
            f"forced (force_promote): {alias} re-baselined from v{before_version} ({was}) to v{version} "
            f"with {metric_name} {value:.6g}"
        )
        log.warning("promote %s: %s", model_name, reason)
    elif champ is None:
        promoted, reason = True, f"no {alias} yet"
    elif before_version == version:
        promoted, reason = False, f"version {version} is already {alias}"
    elif before is None:
        promoted, reason = False, f"{alias} v{before_version} has no recorded {metric_name}: not comparable, kept"
    else:
        promoted = value > before if greater_is_better else value < before
        verdict = "beats" if promoted else "does not beat"
        reason = f"{metric_name} {value:.6g} {verdict} {alias} v{before_version}'s {before:.6g}"
    if promoted:
        client.set_registered_model_alias(model_name, alias, version)
    log.info("promote %s v%s: %s (%s)", model_name, version, "yes" if promoted else "no", reason)
    return {
        "promoted": promoted,
        "forced": forced,
        "reason": reason,
        "new": value,
        "champion_before": before,
        "champion_version_before": before_version,
        "version": version,
        "metric": metric_name,
        "alias": alias,
        "rule": rule,
    }
