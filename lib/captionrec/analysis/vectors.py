"""How discriminative item vectors are: near-duplicates and nearest-neighbour topic purity. Pure numpy.

Vectors are L2-normalised; similarities are cosines, computed in row blocks (memory ~ block x n floats),
each item's own column excluded.

- near-duplicate share: the share of items whose nearest other item has cosine >= the threshold;
- purity@k (items with a topic label only, neighbours among them): the mean over items of the share of its
  k nearest neighbours with the same topic; `chance` is what random neighbours give: the mean over items of
  (items of its topic - 1) / (labelled items - 1);
- mean cosine of all distinct pairs (from the vectors' sum, no n x n matrix): high means the vectors crowd
  in one direction (e.g. captions that all read alike).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


def unit_rows(vectors: Sequence[Sequence[float]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(unit-norm float32 matrix, mask of the input rows kept): rows with a zero or non-finite norm are dropped."""
    if isinstance(vectors, np.ndarray):
        x = vectors.astype(np.float32)
    else:
        x = np.asarray([np.asarray(v, dtype=np.float32) for v in vectors])
    if x.ndim != 2:
        raise ValueError(f"vectors must form an (n, dim) matrix, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1)
    keep = np.isfinite(norms) & (norms > 0)
    return x[keep] / norms[keep, None], keep


def neighbours(x: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(indices, cosines), each (n, min(k, n - 1)): every row's nearest other rows, most similar first."""
    n = x.shape[0]
    k = min(k, n - 1)
    idx = np.zeros((n, max(k, 0)), dtype=np.int64)
    sims = np.zeros((n, max(k, 0)), dtype=np.float32)
    if k <= 0:
        return idx, sims
    for start in range(0, n, block):
        stop = min(start + block, n)
        s = x[start:stop] @ x.T  # (b, n)
        s[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # never one's own neighbour
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        top_s = np.take_along_axis(s, top, axis=1)
        order = np.lexsort((top, -top_s), axis=1)  # by similarity, ties by index: deterministic
        idx[start:stop] = np.take_along_axis(top, order, axis=1)
        sims[start:stop] = np.take_along_axis(top_s, order, axis=1)
    return idx, sims


def mean_pair_cosine(x: np.ndarray) -> float:
    """Mean cosine over distinct pairs of unit rows: (|sum x|^2 - n) / (n (n - 1))."""
    n = x.shape[0]
    if n < 2:
        return math.nan
    s = x.astype(np.float64).sum(axis=0)
    return float((s @ s - n) / (n * (n - 1)))


def purity(labels: np.ndarray, idx: np.ndarray, k: int) -> float:
    """Mean share of each row's first k neighbours (`idx`) with the row's label."""
    if idx.shape[1] == 0:
        return math.nan
    k = min(k, idx.shape[1])
    same = labels[idx[:, :k]] == labels[:, None]
    return float(same.mean())


def chance_purity(labels: np.ndarray) -> float:
    n = len(labels)
    if n < 2:
        return math.nan
    counts = pd.Series(labels).value_counts()
    per_item = pd.Series(labels).map(counts).to_numpy(dtype=np.float64)
    return float(((per_item - 1) / (n - 1)).mean())


def vector_stats(
    vectors: Sequence[Sequence[float]] | np.ndarray,
    item_ids: Sequence[str],
    topics: pd.Series | None,
    knn: int,
    threshold: float,
) -> dict[str, float]:
    """Near-duplicates and pair cosine over all items; purity@1 / purity@knn over the labelled ones.

    `topics`: item_id -> topic (None: no labels; purity columns are NaN)."""
    x, keep = unit_rows(vectors)
    ids = np.asarray(item_ids, dtype=object)[keep]
    out: dict[str, float] = {"items": int(len(ids)), "dropped": int((~keep).sum())}
    idx, sims = neighbours(x, 1)
    out["nn_cosine_mean"] = float(sims[:, 0].mean()) if sims.shape[1] else math.nan
    out["near_duplicates"] = float((sims[:, 0] >= threshold).mean()) if sims.shape[1] else math.nan
    out["pair_cosine_mean"] = mean_pair_cosine(x)
    out.update(labelled=0, topics=0, purity_1=math.nan, purity_k=math.nan, chance=math.nan)
    if topics is not None and len(ids):
        lab = pd.Series(ids).map(topics)
        has = lab.notna().to_numpy()
        if has.sum() >= 2:
            labels = lab[has].astype(str).to_numpy()
            nidx, _ = neighbours(x[has], knn)
            out.update(
                labelled=int(has.sum()),
                topics=int(pd.Series(labels).nunique()),
                purity_1=purity(labels, nidx, 1),
                purity_k=purity(labels, nidx, knn),
                chance=chance_purity(labels),
            )
    return out
