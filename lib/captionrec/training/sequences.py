"""Spark transforms from split interactions to the training table: item/user indices and per-user
left-padded sequences. Everything in the sequences table is an int or an array of ints, so pyarrow 14
(petastorm) reads it.

Sequences table (one row per training chunk or evaluation case), keyed by (window, role, user_idx, chunk):
    window    int         split window (0 for leave-one-out)
    role      int         0 fit (training rows), 1 validation case, 2 test case
    user_idx  int         1..U (0 = unknown)
    chunk     int         fit: chunk number counted back from the newest item; eval: case number per user
    seq       array<int>  max_seq_len + 1 item indices, left-padded with 0 (items are 1..N).
                          fit: consecutive items, inputs seq[:-1] -> next-item targets seq[1:];
                          eval: the last max_seq_len items before the target, then the target.
    seq_len   int         non-padding entries of seq
    target    int         the last item of seq
    cold      int         eval: 1 when the target has no fit interaction in this window
    repeat    int         eval: 1 when the target is already in the user's history
    seen      array<int>  eval: every item the user interacted with before the target (for exclusion)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from captionrec.training.splits import FIT, TEST, VALID

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SEQUENCE_COLUMNS = ("window", "role", "user_idx", "chunk", "seq", "seq_len", "target", "cold", "repeat", "seen")


def _numbered(df: "DataFrame", key: str, idx: str) -> "DataFrame":
    """Distinct `key` values numbered 1..n in `key` order.

    A global row_number (Spark moves the distinct keys to one partition to number them: fine for item
    and user catalogs of millions, and it works on Spark Connect / shared clusters, unlike RDD zipWithIndex).
    """
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    keys = df.select(key).distinct()
    return keys.withColumn(idx, F.row_number().over(W.orderBy(key)).cast("int"))


def build_item_index(interactions: "DataFrame") -> "DataFrame":
    """(item_id, item_idx, first_ts_ms): every item that has an interaction, numbered 1..N by item_id."""
    from pyspark.sql import functions as F

    first = interactions.groupBy("item_id").agg(F.min("ts_ms").alias("first_ts_ms"))
    return _numbered(interactions, "item_id", "item_idx").join(first, "item_id").select("item_id", "item_idx", "first_ts_ms")


def build_user_index(interactions: "DataFrame") -> "DataFrame":
    """(user_id, user_idx) numbered 1..U by user_id."""
    return _numbered(interactions, "user_id", "user_idx")


def _left_pad(col, length: int):
    from pyspark.sql import functions as F

    return F.concat(F.array_repeat(F.lit(0).cast("int"), F.lit(length) - F.size(col)), col)


def build_sequences(
    split: "DataFrame",
    item_index: "DataFrame",
    user_index: "DataFrame",
    max_seq_len: int,
    test_targets: str = "all",
) -> "DataFrame":
    """split interactions (user_id, item_id, ts_ms, window, role) -> the sequences table (see module doc)."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    L = int(max_seq_len)
    rows = (
        split.select("user_id", "item_id", "ts_ms", "window", "role")
        .join(item_index.select("item_id", "item_idx"), "item_id")
        .join(user_index, "user_id")
    )

    # -- fit rows: per (window, user) the fit items in time order, cut into chunks of L + 1 from the newest
    fit = (
        rows.where(F.col("role") == FIT)
        .groupBy("window", "user_idx")
        .agg(F.array_sort(F.collect_list(F.struct("ts_ms", "item_idx"))).alias("events"))
        .withColumn("items", F.transform("events", lambda e: e["item_idx"]))
        .withColumn("n", F.size("items"))
        .where(F.col("n") >= 2)
        .withColumn("chunk", F.explode(F.sequence(F.lit(0), (F.ceil((F.col("n") - 1) / L) - 1).cast("int"))))
        .withColumn("end", F.col("n") - F.col("chunk") * L)  # exclusive, 0-based
        .withColumn("begin", F.greatest(F.col("end") - L - 1, F.lit(0)))
        .withColumn("part", F.slice("items", F.col("begin") + 1, F.col("end") - F.col("begin")))
        .select(
            "window",
            F.lit(FIT).cast("int").alias("role"),
            "user_idx",
            F.col("chunk").cast("int").alias("chunk"),
            _left_pad(F.col("part"), L + 1).alias("seq"),
            F.size("part").cast("int").alias("seq_len"),
            F.element_at("part", -1).cast("int").alias("target"),
            F.lit(0).cast("int").alias("cold"),
            F.lit(0).cast("int").alias("repeat"),
            F.array().cast("array<int>").alias("seen"),
        )
    )

    # -- eval rows: each validation/test interaction, with everything the user did before it
    order = W.partitionBy("window", "user_idx").orderBy("ts_ms", "item_idx")
    before = order.rowsBetween(W.unboundedPreceding, -1)
    hist = rows.withColumn("seen", F.collect_list("item_idx").over(before))
    cases = hist.where(F.col("role").isin(VALID, TEST)).where(F.size("seen") > 0)
    case_no = F.row_number().over(W.partitionBy("window", "role", "user_idx").orderBy("ts_ms", "item_idx")) - 1
    cases = cases.withColumn("chunk", case_no.cast("int"))
    if test_targets == "first":
        cases = cases.where(F.col("chunk") == 0)
    elif test_targets != "all":
        raise ValueError(f"test_targets {test_targets!r} is not all | first")
    fit_items = rows.where(F.col("role") == FIT).select("window", "item_idx").distinct().withColumn("_fit", F.lit(1))
    cases = cases.join(fit_items, ["window", "item_idx"], "left")
    start = F.greatest(F.size("seen") - L + 1, F.lit(1))
    recent = F.slice("seen", start, F.lit(L))
    part = F.concat(recent, F.array(F.col("item_idx")))
    evals = cases.select(
        "window",
        F.col("role").cast("int").alias("role"),
        "user_idx",
        "chunk",
        _left_pad(part, L + 1).alias("seq"),
        F.size(part).cast("int").alias("seq_len"),
        F.col("item_idx").cast("int").alias("target"),
        F.when(F.col("_fit").isNull(), 1).otherwise(0).cast("int").alias("cold"),
        F.array_contains("seen", F.col("item_idx")).cast("int").alias("repeat"),
        F.col("seen").cast("array<int>").alias("seen"),
    )
    return fit.unionByName(evals)


def sequence_stats(sequences: "DataFrame") -> list[dict]:
    """Per (window, role): rows, cold and repeat cases, distinct target items and distinct cold ones,
    and the largest user_idx. One Spark action."""
    from pyspark.sql import functions as F

    rows = (
        sequences.groupBy("window", "role")
        .agg(
            F.count("*").alias("rows"),
            F.sum("cold").alias("cold"),
            F.sum("repeat").alias("repeat"),
            F.countDistinct("target").alias("items"),
            F.countDistinct(F.when(F.col("cold") == 1, F.col("target"))).alias("cold_items"),
            F.max("user_idx").alias("max_user_idx"),
        )
        .orderBy("window", "role")
        .collect()
    )
    return [{k: int(v or 0) for k, v in r.asDict().items()} for r in rows]


@dataclass
class ItemFeatures:
    """Frozen item vectors aligned with the item index: row i = item_idx i, row 0 = padding."""

    matrix: np.ndarray  # (N + 1, F) float32, standardised per dimension over the items that have it
    mask: np.ndarray  # (N + 1,) bool: the item has a vector in every requested set
    model_ids: dict[str, str] = field(default_factory=dict)  # feature_set -> model_id used
    dims: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # items without a full vector


def item_feature_matrix(
    item_features: "DataFrame",
    item_index: "DataFrame",
    feature_sets: Sequence[str],
    num_items: int,
    model_id: Optional[str] = None,
) -> ItemFeatures:
    """Collect the vectors of `feature_sets` for the indexed items to the driver.

    Per set, one model_id: the given one, or the one with the newest `created_at`. Vectors of a set
    must all have one length (else ValueError). Each set is standardised (z-score per dimension over
    the items that have it) and the sets are concatenated. Items without a vector in some set keep
    zeros there and `mask` False (the model gives them its learned missing-feature vector).
    """
    from pyspark.sql import functions as F

    needed = {"item_id", "feature_set", "model_id", "vector"}
    missing_cols = needed - set(item_features.columns)
    if missing_cols:
        raise ValueError(f"item_features lacks column(s) {sorted(missing_cols)}")
    blocks, masks, model_ids, dims = [], [], {}, {}
    for fs in feature_sets:
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
            import datetime as _dt

            chosen = max(got, key=lambda r: (r["created_at"] or _dt.datetime.min, r["model_id"]))["model_id"]
        got = [r for r in got if r["model_id"] == chosen]
        if not got:
            what = f"model_id {model_id!r}" if model_id else "any model"
            raise ValueError(
                f"no vectors for feature set {fs!r} ({what}) in item_features for the interacted items; "
                f"run the embed stage for it or pick another `features`"
            )
        lengths = {len(r["vector"]) for r in got}
        if len(lengths) != 1:
            raise ValueError(f"feature set {fs!r} (model {chosen!r}) has vectors of different lengths {sorted(lengths)}")
        dim = lengths.pop()
        mat = np.zeros((num_items + 1, dim), dtype=np.float32)
        has = np.zeros(num_items + 1, dtype=bool)
        idx = np.array([r["item_idx"] for r in got], dtype=np.int64)
        mat[idx] = np.asarray([r["vector"] for r in got], dtype=np.float32)
        has[idx] = True
        has &= np.isfinite(mat).all(axis=1)
        mat[~has] = 0.0
        mean = mat[has].mean(axis=0)
        std = mat[has].std(axis=0)
        std[std < 1e-6] = 1.0
        mat[has] = (mat[has] - mean) / std
        blocks.append(mat)
        masks.append(has)
        model_ids[fs] = str(chosen)
        dims[fs] = dim
    matrix = np.concatenate(blocks, axis=1).astype(np.float32)
    mask = np.logical_and.reduce(masks)
    mask[0] = False
    matrix[~mask] = 0.0
    return ItemFeatures(matrix=matrix, mask=mask, model_ids=model_ids, dims=dims, missing=int(num_items - mask[1:].sum()))
