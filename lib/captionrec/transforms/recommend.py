"""The recommend stage's transforms: the served catalogue (item vectors of a logged model, new items included),
users' histories as Arrow rows, and top-k scoring through the model-map (similar items: `transforms.similar_items`).

Scoring runs in the workers (`captionrec.spark.modelmap.model_map`): the model is loaded once per worker process
and device from its MLflow URI, the catalogue's vectors travel with the task (a few MB); each Arrow batch of
users becomes user states (one forward pass), scores over the catalogue (exact) or the ANN index's candidates
(`captionrec.serving.index.ItemIndex`: built once on the driver, logged as an artifact of the served run, and
loaded by each worker onto its task's device), the user's seen items masked, and the top k.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from captionrec.spark.modelmap import StageGpu

ANN_INDEX_ARTIFACT = "ann_index"  # the served run's indexes: ann_index/<catalogue digest>/{index.faiss,id_map.json}
SCORED_ROWS = "recommend_rows"  # what a scoring task returns: one row per user, the top k as lists


def scored_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("user_id", pa.string(), False),
            pa.field("item_ids", pa.list_(pa.string())),
            pa.field("scores", pa.list_(pa.float32())),
        ]
    )


@dataclass
class Catalogue:
    """The servable items of a model: vectors (M, D) float32 and ids, position i <-> item_ids[i]."""

    item_ids: list[str]
    vectors: np.ndarray
    new_items: int = 0  # servable items the model has no row for (scored from their features)


# ------------------------------------------------------------------------------------ the catalogue


def feature_stats(raw: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of the vectors (rows) that are finite, the way training standardises a set
    (`transforms.item_features`): std below 1e-6 counts as 1."""
    mat = np.asarray(list(raw.values()), dtype=np.float32)
    mat = mat[np.isfinite(mat).all(axis=1)]
    mean, std = mat.mean(axis=0), mat.std(axis=0)
    std[std < 1e-6] = 1.0
    return mean, std


def standardised(
    ids: Sequence[str], current: dict[str, dict[str, np.ndarray]], stats: dict[str, tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """(M, F) features of `ids` from the current vectors of every set, standardised with the training statistics,
    and the mask of items that have a finite vector in every set."""
    blocks, masks = [], []
    for fs, (mean, std) in stats.items():
        have = current.get(fs, {})
        mat = np.zeros((len(ids), len(mean)), dtype=np.float32)
        ok = np.zeros(len(ids), dtype=bool)
        for i, item in enumerate(ids):
            v = have.get(item)
            if v is not None and len(v) == len(mean) and np.isfinite(v).all():
                mat[i], ok[i] = (np.asarray(v, dtype=np.float32) - mean) / std, True
        blocks.append(mat)
        masks.append(ok)
    mask = np.logical_and.reduce(masks) if masks else np.zeros(len(ids), dtype=bool)
    features = np.concatenate(blocks, axis=1) if blocks else np.zeros((len(ids), 0), dtype=np.float32)
    features[~mask] = 0.0
    return features, mask


def build_catalogue(
    model: Any,
    index_ids: Sequence[str],
    current: dict[str, dict[str, np.ndarray]] | None = None,
    stats: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Catalogue:
    """Every item the model can serve and its vector.

    model: a `captionrec.models.Recommender`; index_ids: its item index (item_idx - 1 -> item_id). ID-only
    models serve the items they trained on (own id rows). Feature models serve every item with a vector in
    every set (`current`: feature_set -> item_id -> raw vector; `stats`: the training standardisation), items
    the model never saw included: their vectors come from the projection of their features (+ the shared
    unknown id vector for id+feature models), no retraining."""
    import torch

    rep = model.item_repr
    pos = {item: i + 1 for i, item in enumerate(index_ids)}
    known = rep.known.cpu().numpy() if rep.use_id else np.zeros(len(index_ids) + 1, dtype=bool)
    ids = list(index_ids)
    if rep.use_feature:
        ids += sorted({i for fs in (current or {}).values() for i in fs} - set(pos))
    idx = np.array([pos.get(i, 0) for i in ids], dtype=np.int64)
    feats, mask = None, np.zeros(len(ids), dtype=bool)
    if rep.use_feature:
        feats, mask = standardised(ids, current or {}, stats or {})
        trained = idx > 0
        buf_mask = rep.feature_mask.cpu().numpy()[idx[trained]]
        keep = np.nonzero(trained)[0][buf_mask]  # items trained with a vector keep exactly the trained features
        feats[keep] = rep.features.cpu().numpy()[idx[keep]]
        mask[keep] = True
    servable = (known[idx] & (idx > 0)) | mask
    idx, ids = idx[servable], [i for i, s in zip(ids, servable) if s]
    with torch.no_grad():
        rep.eval()
        t_feats = None if feats is None else torch.from_numpy(feats[servable])
        t_mask = torch.from_numpy(mask[servable])
        vectors = rep.vectors_for(torch.from_numpy(idx), t_feats, t_mask).float().cpu().numpy()
    return Catalogue(ids, np.ascontiguousarray(vectors, dtype=np.float32), new_items=int((idx == 0).sum()))


# ------------------------------------------------------------------------------------ scoring in workers


@dataclass
class ScorerSpec:
    """What a worker needs to build its scorer (pickled with the task)."""

    model_uri: str
    tracking_uri: str
    vectors: np.ndarray  # (M, D) the catalogue
    item_ids: list[str]
    retrieval: str = "exact"
    k: int = 100
    index_uri: str | None = None  # retrieval=ann: the driver's ItemIndex over `vectors` (an MLflow artifact URI)


def catalogue_digest(item_ids: Sequence[str], vectors: np.ndarray) -> str:
    """16 hex digits of the catalogue's ids and vectors: names its index artifact and keys the workers' cache."""
    import hashlib

    digest = hashlib.sha256(json.dumps(list(item_ids)).encode())
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def catalogue_index(
    run_id: str,
    item_ids: Sequence[str],
    vectors: np.ndarray,
    tracking_uri: str,
    queries_for: Callable[[], np.ndarray | None] | None = None,
) -> dict[str, Any]:
    """retrieval=ann on the driver: the ItemIndex over the catalogue, built once and logged on the served run at
    ann_index/<digest of ids and vectors> (a catalogue logged already is reused, not rebuilt); `queries_for()`: a
    sample of the served users' states, which IVF's nprobe is calibrated on (asked for only when the index is
    built). Returns what was built
    (ItemIndex.describe()), `artifact_uri` (what the workers load), `built` and `seconds`."""
    import time
    from pathlib import PurePosixPath

    import mlflow
    from mlflow.tracking import MlflowClient

    from captionrec.serving.index import ID_MAP_FILE, INDEX_FILE, ItemIndex

    path = f"{ANN_INDEX_ARTIFACT}/{catalogue_digest(item_ids, vectors)}"
    mlflow.set_tracking_uri(tracking_uri)
    logged = {PurePosixPath(f.path).name for f in MlflowClient(tracking_uri).list_artifacts(run_id, path)}
    if {INDEX_FILE, ID_MAP_FILE} <= logged:
        return {"artifact_uri": f"runs:/{run_id}/{path}", "built": False, "seconds": 0.0}
    t0 = time.perf_counter()
    queries = queries_for() if queries_for else None
    index = ItemIndex.build(vectors, list(item_ids), device="cpu", queries=queries)
    info = index.log_artifact(path, run_id=run_id)
    n_queries = 0 if queries is None else len(queries)
    return {**info, "built": True, "seconds": round(time.perf_counter() - t0, 2), "calibration_queries": n_queries}


def load_index(index_uri: str, tracking_uri: str, device: Any = "cpu") -> Any:
    """The ItemIndex logged at `index_uri` (`ItemIndex.log_artifact`), searching on `device` (the task's)."""
    import mlflow

    from captionrec.serving.index import ItemIndex

    mlflow.set_tracking_uri(tracking_uri)
    return ItemIndex.load(mlflow.artifacts.download_artifacts(index_uri), device=device)


def construct_scorer(spec: ScorerSpec, device: str) -> dict[str, Any]:
    """A worker's scorer: the model on `device`, the catalogue's vectors there, and with retrieval=ann the
    driver's index loaded from its artifact (on the same GPU, or the CPU) - never rebuilt here."""
    import torch

    if spec.retrieval == "ann" and not spec.index_uri:
        raise ValueError("retrieval=ann: the scorer loads the driver's index (ScorerSpec.index_uri), none given")
    from captionrec.serving.registry import load_recommender

    out = {
        "model": load_recommender(spec.model_uri, spec.tracking_uri, device),
        "device": device,
        "vectors": torch.from_numpy(spec.vectors).to(device),
        "index": None,
    }
    if spec.retrieval == "ann":
        out["index"] = load_index(spec.index_uri, spec.tracking_uri, device)
        if len(out["index"]) != len(spec.item_ids):
            raise ValueError(
                f"index {spec.index_uri} holds {len(out['index'])} items, the catalogue {len(spec.item_ids)}"
            )
    return out


def top_k(
    scores: Any, seen: list[list[int]], k: int, candidates: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best positions (-1 padded) and scores, seen positions excluded. `scores`: (B, M) over every
    catalogue position (numpy, or a torch tensor on any device: the top k is taken there), or with `candidates`
    (B, C) the positions (ANN, -1 padded) the (B, C) scores belong to."""
    import torch

    s = scores.clone() if isinstance(scores, torch.Tensor) else torch.from_numpy(np.array(scores, dtype=np.float32))
    lengths = torch.as_tensor([len(x) for x in seen], dtype=torch.long)
    flat = torch.as_tensor([p for x in seen for p in x], dtype=torch.long)
    if candidates is None:
        if len(flat):
            rows = torch.repeat_interleave(torch.arange(len(seen)), lengths)
            s[rows.to(s.device), flat.to(s.device)] = float("-inf")
    else:
        cand = torch.from_numpy(candidates).to(s.device)
        for r, items in enumerate(seen):
            if items:
                s[r, torch.isin(cand[r], torch.as_tensor(items, dtype=cand.dtype, device=s.device))] = float("-inf")
        s[cand < 0] = float("-inf")
    val, pos = torch.topk(s, min(k, s.shape[1]), dim=1)
    if candidates is not None:
        pos = torch.gather(cand, 1, pos)
    pos[torch.isinf(val)] = -1
    return pos.cpu().numpy(), val.float().cpu().numpy()


def histories(batch: list[dict[str, Any]]) -> Any:
    """(B, L) long tensor of the rows' `hist` (item indices, oldest first), left-padded with 0."""
    import torch

    L = max(1, max(len(r["hist"] or []) for r in batch))
    hist = torch.zeros((len(batch), L), dtype=torch.long)
    for i, r in enumerate(batch):
        if r["hist"]:
            hist[i, L - len(r["hist"]) :] = torch.as_tensor(r["hist"], dtype=torch.long)
    return hist


def user_states(model: Any, batch: list[dict[str, Any]]) -> np.ndarray:
    """(B, D) float32 states of rows with a history (what the index is queried with; CPU)."""
    import torch

    with torch.no_grad():
        return model.user_states(histories(batch)).float().cpu().numpy()


def calibration_states(model: Any, inputs: "DataFrame") -> np.ndarray | None:
    """The states of up to CALIBRATION_QUERIES users of `inputs` (`user_inputs` rows) that have a history: the
    queries an ANN index over the model's items is calibrated on (None without a model or users: proxies)."""
    from pyspark.sql import functions as F

    from captionrec.serving.index import CALIBRATION_QUERIES

    if model is None:
        return None
    rows = inputs.where(F.size("hist") > 0).select("hist").limit(CALIBRATION_QUERIES).collect()
    return user_states(model, [r.asDict() for r in rows]) if rows else None


def _score_batch(state: dict[str, Any], spec: ScorerSpec, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    import torch

    model, device = state["model"], state["device"]
    hist = histories(batch)
    seen = [list(r["seen"] or []) for r in batch]
    with torch.no_grad():
        users = model.user_states(hist.to(device))
        if state["index"] is None:
            pos, val = top_k((users @ state["vectors"].T).float(), seen, spec.k)
        else:
            extra = max((len(s) for s in seen), default=0)
            cand, _ = state["index"].search_positions(users.float().cpu().numpy(), spec.k + extra)
            sub = torch.gather(users @ state["vectors"].T, 1, torch.from_numpy(np.maximum(cand, 0)).to(device))
            pos, val = top_k(sub.float(), seen, spec.k, candidates=cand)
    ids = spec.item_ids  # a user none of whose items the model knows has no state: no recommendations
    return [
        {
            "user_id": r["user_id"],
            "item_ids": [ids[p] for p in pos[i] if p >= 0] if r["hist"] else [],
            "scores": [float(v) for p, v in zip(pos[i], val[i]) if p >= 0] if r["hist"] else [],
        }
        for i, r in enumerate(batch)
    ]


def apply_scorer(
    spec: ScorerSpec, batch_size: int, state: dict[str, Any], rows: Iterator[dict[str, Any]]
) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_size:
            yield _score_batch(state, spec, batch)
            batch = []
    if batch:
        yield _score_batch(state, spec, batch)


def score_users(users: "DataFrame", spec: ScorerSpec, gpu: "StageGpu", batch_size: int, key: str) -> "DataFrame":
    """users (user_id, hist: model item indices oldest first, seen: catalogue positions) -> (user_id, rank,
    item_id, score) with ranks 1..k (item_id and score null past the user's candidates)."""
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import model_map

    transform = model_map(
        partial(construct_scorer, spec),
        partial(apply_scorer, spec, batch_size),
        scored_schema(),
        key=key,
        gpu=gpu,
        stage="recommend",
    )
    ranks = F.sequence(F.lit(1), F.lit(spec.k))
    return (
        transform(users)
        .select("user_id", "item_ids", "scores", F.explode(ranks).alias("rank"))
        .select(
            "user_id",
            F.col("rank").cast("int").alias("rank"),
            F.get(F.col("item_ids"), F.col("rank") - 1).alias("item_id"),
            F.get(F.col("scores"), F.col("rank") - 1).cast("float").alias("score"),
        )
    )


def user_inputs(
    interactions: "DataFrame",
    users: "DataFrame",
    index_ids: Sequence[str],
    catalogue_ids: Sequence[str],
    max_seq_len: int,
    partitions: int = 0,
) -> "DataFrame":
    """(user_id, hist, seen) of the given users: hist = the newest `max_seq_len` items the model indexes (its item
    indices, oldest first; other items are left out of the history), seen = every catalogue position the user
    interacted with."""
    from pyspark.sql import functions as F

    spark = interactions.sparkSession
    idx = spark.createDataFrame([(i, n + 1) for n, i in enumerate(index_ids)], "item_id string, item_idx int")
    pos = spark.createDataFrame([(i, n) for n, i in enumerate(catalogue_ids)], "item_id string, pos int")
    rows = (
        interactions.join(F.broadcast(users.select("user_id")), "user_id")
        .join(F.broadcast(idx), "item_id", "left")
        .join(F.broadcast(pos), "item_id", "left")
    )
    ordered = F.transform(
        F.array_sort(F.collect_list(F.when(F.col("item_idx").isNotNull(), F.struct("ts_ms", "item_id", "item_idx")))),
        lambda s: s["item_idx"],
    )
    out = rows.groupBy("user_id").agg(ordered.alias("all_hist"), F.array_distinct(F.collect_list("pos")).alias("seen"))
    start = F.greatest(F.lit(1), F.size("all_hist") - F.lit(max_seq_len - 1))
    out = out.select("user_id", F.slice("all_hist", start, F.lit(max_seq_len)).alias("hist"), "seen")
    return out.repartition(partitions, "user_id") if partitions else out
