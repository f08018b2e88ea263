"""Spark transforms from split interactions to the training table: item/user indices, per-user
left-padded sequences, and per-window item counts. Everything in the sequences table is an int or an
array of ints, so pyarrow 14 (petastorm) reads it (schema: `contracts.schema(TRAIN_SEQUENCES)`).

Sequences table (one row per training chunk or evaluation case), keyed by (window, role, user_idx, chunk):
    window    int         split window (0 for leave-one-out)
    role      int         0 fit / 3 refit (training rows), 1 validation case, 2 test case
    user_idx  int         1..U (0 = unknown)
    chunk     int         training: row number counted back from the newest item; eval: case number per user
    seq       array<int>  max_seq_len + 1 item indices, left-padded with 0 (items are 1..N).
                          training: consecutive items, inputs seq[:-1] -> next-item targets seq[1:];
                          eval: the last max_seq_len items of the case's history, then the target.
    seq_len   int         non-padding entries of seq
    new_targets int       training: how many of the row's newest targets it trains (with train_stride <
                          max_seq_len rows overlap; a row's older targets are trained by an older row, where
                          more history precedes them); eval: 1
    target    int         the last item of seq
    cold      int         eval: 1 when the target has no interaction in the phase's training data
                          (validation: none in fit; test: none before t_k)
    repeat    int         eval: 1 when the target is already in the case's history
    seen      array<int>  eval: the case's history (every item of it, for exclusion)

Test history (`split.test_history`): `rolling` (a test case sees everything the user did before it,
earlier test-week items included; the model is never trained on them) or `frozen` (every test case of a
user sees the history as it was at t_k).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from captionrec.contracts import RECENT_POPULARITY_DAYS, TRAIN_SEQUENCES, columns
from captionrec.training.windows import DAY_MS, FIT, REFIT, TEST, VALID

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

SEQUENCE_COLUMNS = columns(TRAIN_SEQUENCES)
TEST_HISTORIES = ("rolling", "frozen")


def _numbered(df: "DataFrame", key: str, idx: str) -> "DataFrame":
    """Distinct `key` values numbered 1..n in `key` order.

    A global row_number (Spark moves the distinct keys to one partition to number them: fine for item
    and user catalogs of millions, and it works on Spark Connect / shared clusters, unlike RDD zipWithIndex).
    """
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    keys = df.select(key).distinct()
    return keys.withColumn(idx, F.row_number().over(W.orderBy(key)).cast("int"))


def build_item_index(interactions: "DataFrame", items: "DataFrame | None" = None) -> "DataFrame":
    """(item_id, item_idx, first_ts_ms) numbered 1..N by item_id: every item that has an interaction, and with
    `items` (the catalogue, `split.candidates=catalogue`) every item of it too; an item nobody interacted with
    has first_ts_ms null (it is ranked, a feature model scores it from its vector, an id model with the
    unknown vector)."""
    from pyspark.sql import functions as F

    first = interactions.groupBy("item_id").agg(F.min("ts_ms").alias("first_ts_ms"))
    keys = interactions.select("item_id")
    if items is not None:
        keys = keys.unionByName(items.select("item_id").where(F.col("item_id").isNotNull()))
    return (
        _numbered(keys, "item_id", "item_idx")
        .join(first, "item_id", "left")
        .select("item_id", "item_idx", "first_ts_ms")
    )


def build_user_index(interactions: "DataFrame") -> "DataFrame":
    """(user_id, user_idx) numbered 1..U by user_id."""
    return _numbered(interactions, "user_id", "user_idx")


def _left_pad(col: "Column", length: int) -> "Column":
    from pyspark.sql import functions as F

    return F.concat(F.array_repeat(F.lit(0).cast("int"), F.lit(length) - F.size(col)), col)


def _indexed(split: "DataFrame", item_index: "DataFrame", user_index: "DataFrame") -> "DataFrame":
    return (
        split.select("user_id", "item_id", "ts_ms", "window", "role")
        .join(item_index.select("item_id", "item_idx"), "item_id")
        .join(user_index, "user_id")
    )


def _histories(rows: "DataFrame", roles: tuple[int, ...]) -> "DataFrame":
    """(window, user_idx, items): each user's items of `roles` in time order."""
    from pyspark.sql import functions as F

    return (
        rows.where(F.col("role").isin(*roles))
        .groupBy("window", "user_idx")
        .agg(F.array_sort(F.collect_list(F.struct("ts_ms", "item_idx"))).alias("events"))
        .select("window", "user_idx", F.transform("events", lambda e: e["item_idx"]).alias("items"))
    )


def _training_rows(rows: "DataFrame", roles: tuple[int, ...], out_role: int, L: int, stride: int) -> "DataFrame":
    """Per (window, user) the items of `roles` in time order, as rows of up to L + 1 items ending every
    `stride` items back from the newest; a row's newest `stride` targets are its own (`new_targets`), so
    every target (items 2..n) is trained by exactly one row."""
    from pyspark.sql import functions as F

    return (
        _histories(rows, roles)
        .withColumn("n", F.size("items"))
        .where(F.col("n") >= 2)
        .withColumn("chunk", F.explode(F.sequence(F.lit(0), (F.ceil((F.col("n") - 1) / stride) - 1).cast("int"))))
        .withColumn("end", F.col("n") - F.col("chunk") * stride)  # exclusive, 0-based
        .withColumn("begin", F.greatest(F.col("end") - L - 1, F.lit(0)))
        .withColumn("part", F.slice("items", F.col("begin") + 1, F.col("end") - F.col("begin")))
        .select(
            "window",
            F.lit(out_role).cast("int").alias("role"),
            "user_idx",
            F.col("chunk").cast("int").alias("chunk"),
            _left_pad(F.col("part"), L + 1).alias("seq"),
            F.size("part").cast("int").alias("seq_len"),
            F.least(F.lit(stride), F.col("end") - 1).cast("int").alias("new_targets"),
            F.element_at("part", -1).cast("int").alias("target"),
            F.lit(0).cast("int").alias("cold"),
            F.lit(0).cast("int").alias("repeat"),
            F.array().cast("array<int>").alias("seen"),
        )
    )


def _eval_cases(rows: "DataFrame", test_targets: str, test_history: str) -> "DataFrame":
    """Validation and test interactions with their history (`seen`), case number and cold flag."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    order = W.partitionBy("window", "user_idx").orderBy("ts_ms", "item_idx")
    hist = rows.withColumn("seen", F.collect_list("item_idx").over(order.rowsBetween(W.unboundedPreceding, -1)))
    cases = hist.where(F.col("role").isin(VALID, TEST))
    if test_history == "frozen":  # test cases see the history at t_k (everything before the test week)
        at_tk = _histories(rows, (FIT, VALID)).withColumnRenamed("items", "_at_tk")
        cases = (
            cases.join(at_tk, ["window", "user_idx"], "left")
            .withColumn(
                "seen",
                F.when(F.col("role") == TEST, F.coalesce("_at_tk", F.array().cast("array<int>"))).otherwise(
                    F.col("seen")
                ),
            )
            .drop("_at_tk")
        )
    elif test_history != "rolling":
        raise ValueError(f"test_history {test_history!r} is not one of {TEST_HISTORIES}")
    cases = cases.where(F.size("seen") > 0)
    case_no = F.row_number().over(W.partitionBy("window", "role", "user_idx").orderBy("ts_ms", "item_idx")) - 1
    cases = cases.withColumn("chunk", case_no.cast("int"))
    if test_targets == "first":
        cases = cases.where(F.col("chunk") == 0)
    elif test_targets != "all":
        raise ValueError(f"test_targets {test_targets!r} is not all | first")
    # cold: no interaction in the phase's training data (validation: fit; test: everything before t_k)
    fit_items = rows.where(F.col("role") == FIT).select("window", "item_idx").distinct().withColumn("_fit", F.lit(1))
    prior = (
        rows.where(F.col("role").isin(FIT, VALID))
        .select("window", "item_idx")
        .distinct()
        .withColumn("_prior", F.lit(1))
    )
    cases = cases.join(fit_items, ["window", "item_idx"], "left").join(prior, ["window", "item_idx"], "left")
    trained = F.when(F.col("role") == VALID, F.col("_fit")).otherwise(F.col("_prior"))
    return cases.withColumn("cold", F.when(trained.isNull(), 1).otherwise(0).cast("int"))


def build_sequences(
    split: "DataFrame",
    item_index: "DataFrame",
    user_index: "DataFrame",
    max_seq_len: int,
    test_targets: str = "all",
    test_history: str = "rolling",
    refit: bool = False,
    stride: int | None = None,
) -> "DataFrame":
    """split interactions (user_id, item_id, ts_ms, window, role) -> the sequences table (see module doc).

    refit: also write the test phase's training rows (role 3: every interaction before t_k).
    stride: a training row every `stride` items (None: max_seq_len, rows that do not overlap).
    """
    from pyspark.sql import functions as F

    L = int(max_seq_len)
    S = L if stride is None else int(stride)
    if not 1 <= S <= L:
        raise ValueError(f"stride must be in 1..max_seq_len ({L}), got {S}")
    rows = _indexed(split, item_index, user_index)
    out = _training_rows(rows, (FIT,), FIT, L, S)
    if refit:
        out = out.unionByName(_training_rows(rows, (FIT, VALID), REFIT, L, S))
    cases = _eval_cases(rows, test_targets, test_history)
    recent = F.slice("seen", F.greatest(F.size("seen") - L + 1, F.lit(1)), F.lit(L))
    part = F.concat(recent, F.array(F.col("item_idx")))
    evals = cases.select(
        "window",
        F.col("role").cast("int").alias("role"),
        "user_idx",
        "chunk",
        _left_pad(part, L + 1).alias("seq"),
        F.size(part).cast("int").alias("seq_len"),
        F.lit(1).cast("int").alias("new_targets"),
        F.col("item_idx").cast("int").alias("target"),
        "cold",
        F.array_contains("seen", F.col("item_idx")).cast("int").alias("repeat"),
        F.col("seen").cast("array<int>").alias("seen"),
    )
    return out.unionByName(evals).select(*SEQUENCE_COLUMNS)


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


def item_counts(
    split: "DataFrame",
    item_index: "DataFrame",
    windows: list[int],
    num_items: int,
    recent_before: dict[int, int] | None = None,
) -> dict[int, dict[str, np.ndarray]]:
    """Per window: interactions per item (N + 1,) int64 in the fit data (`fit`) and before t_k (`prior`), and
    for each window of `recent_before` (window -> t_k in ms) in the RECENT_POPULARITY_DAYS before t_k (`recent`).

    They are the popularity baselines of the test cases (`prior`, `recent`), the training items of each
    phase (count > 0) and the in-batch negatives' sampling distribution. One Spark action.
    """
    from pyspark.sql import functions as F

    recent_before = recent_before or {}
    ts, in_recent = F.col("ts_ms"), F.lit(False)
    for w, cutoff in recent_before.items():
        since = cutoff - RECENT_POPULARITY_DAYS * DAY_MS
        in_recent = in_recent | ((F.col("window") == int(w)) & (ts >= since) & (ts < cutoff))
    got = (
        split.join(item_index.select("item_id", "item_idx"), "item_id")
        .where(F.col("role").isin(FIT, VALID))
        .groupBy("window", "item_idx")
        .agg(
            F.sum(F.when(F.col("role") == FIT, 1).otherwise(0)).alias("fit"),
            F.count("*").alias("prior"),
            F.sum(F.when(in_recent, 1).otherwise(0)).alias("recent"),
        )
        .collect()
    )
    out = {}
    for w in windows:
        keys = ("fit", "prior", "recent") if w in recent_before else ("fit", "prior")
        out[int(w)] = {key: np.zeros(num_items + 1, np.int64) for key in keys}
    for r in got:
        counts = out.get(int(r["window"]))
        if counts is not None:
            for key in counts:
                counts[key][r["item_idx"]] = r[key]
    return out
