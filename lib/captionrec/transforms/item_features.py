"""The frozen item vectors of the requested feature sets, collected to the driver and aligned with the
item index (a Spark read of `item_features`, then numpy).

Each set is z-scored per dimension with a mean and standard deviation computed over the items seen before the
first window's test start t_0 only (`stats_items`, from `training.candidates.seen_before`): one set of
statistics for every window, so an item first seen at or after t_0 (a cold item of any window) cannot move
them. Every item with a vector, later ones included, is then standardised with those statistics."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass
class ItemFeatures:
    """Frozen item vectors aligned with the item index: row i = item_idx i, row 0 = padding."""

    matrix: np.ndarray  # (N + 1, F) float32, standardised per dimension (statistics of the `stats_items`)
    mask: np.ndarray  # (N + 1,) bool: the item has a vector in every requested set
    model_ids: dict[str, str] = field(default_factory=dict)  # feature_set -> model_id used
    dims: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # items without a full vector


def _collect_set(
    item_features: "DataFrame", item_index: "DataFrame", fs: str, model_id: str | None
) -> tuple[str, list]:
    """(chosen model_id, rows (item_idx, vector)) of one feature set: the given model, else the newest."""
    from pyspark.sql import functions as F

    rows_fs = item_features.where(F.col("feature_set") == fs)
    if model_id is not None:
        rows_fs = rows_fs.where(F.col("model_id") == model_id)
    created = F.col("created_at") if "created_at" in item_features.columns else F.lit(None).cast("timestamp")
    got = (  # one action per set: every model's vectors, the model is chosen here
        rows_fs.join(item_index.select("item_id", "item_idx"), "item_id")
        .where(F.col("vector").isNotNull())
        .select("model_id", created.alias("created_at"), "item_idx", "vector")
        .collect()
    )
    chosen = model_id
    if got and chosen is None:  # the newest model: latest created_at, then the largest model_id
        chosen = max(got, key=lambda r: (r["created_at"] or _dt.datetime.min, r["model_id"]))["model_id"]
    got = [r for r in got if r["model_id"] == chosen]
    if not got:
        what = f"model_id {model_id!r}" if model_id else "any model"
        raise ValueError(
            f"no vectors for feature set {fs!r} ({what}) in item_features for the indexed items; "
            f"run the embed stage for it or pick another `features`"
        )
    return str(chosen), got


def _standardised(
    got: list, num_items: int, fs: str, model: str, stats_items: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N + 1, F) z-scored per dimension, and the mask of items with a finite vector. The mean and standard
    deviation are over the items that have one and are in `stats_items` ((N + 1,) bool; None: all of them)."""
    lengths = {len(r["vector"]) for r in got}
    if len(lengths) != 1:
        raise ValueError(f"feature set {fs!r} (model {model!r}) has vectors of different lengths {sorted(lengths)}")
    dim = lengths.pop()
    mat = np.zeros((num_items + 1, dim), dtype=np.float32)
    has = np.zeros(num_items + 1, dtype=bool)
    idx = np.array([r["item_idx"] for r in got], dtype=np.int64)
    mat[idx] = np.asarray([r["vector"] for r in got], dtype=np.float32)
    has[idx] = True
    has &= np.isfinite(mat).all(axis=1)
    mat[~has] = 0.0
    ref = has if stats_items is None else has & np.asarray(stats_items, dtype=bool)
    if not ref.any():
        raise ValueError(
            f"feature set {fs!r} (model {model!r}): no item seen before the first test window has a vector, "
            f"so there is nothing to standardise the vectors with; embed the catalogue's items first"
        )
    mean = mat[ref].mean(axis=0)
    std = mat[ref].std(axis=0)
    std[std < 1e-6] = 1.0
    mat[has] = (mat[has] - mean) / std
    return mat, has


def item_feature_matrix(
    item_features: "DataFrame",
    item_index: "DataFrame",
    feature_sets: Sequence[str],
    num_items: int,
    model_id: str | None = None,
    stats_items: np.ndarray | None = None,
) -> ItemFeatures:
    """Collect the vectors of `feature_sets` for the indexed items to the driver.

    Per set, one model_id: the given one, or the one with the newest `created_at`. Vectors of a set
    must all have one length (else ValueError). Each set is standardised (z-score per dimension with the
    statistics of the items in `stats_items` ((N + 1,) bool, None: every item) that have a vector) and the
    sets are concatenated. Items without a vector in some set keep
    zeros there and `mask` False (the model gives them its learned missing-feature vector).
    """
    needed = {"item_id", "feature_set", "model_id", "vector"}
    missing_cols = needed - set(item_features.columns)
    if missing_cols:
        raise ValueError(f"item_features lacks column(s) {sorted(missing_cols)}")
    blocks, masks, model_ids, dims = [], [], {}, {}
    for fs in feature_sets:
        chosen, got = _collect_set(item_features, item_index, fs, model_id)
        mat, has = _standardised(got, num_items, fs, chosen, stats_items)
        blocks.append(mat)
        masks.append(has)
        model_ids[fs] = chosen
        dims[fs] = mat.shape[1]
    matrix = np.concatenate(blocks, axis=1).astype(np.float32)
    mask = np.logical_and.reduce(masks)
    mask[0] = False
    matrix[~mask] = 0.0
    return ItemFeatures(
        matrix=matrix, mask=mask, model_ids=model_ids, dims=dims, missing=int(num_items - mask[1:].sum())
    )
