"""Leakage-proof splits as Spark DataFrame transforms (interactions in -> interactions + window/role out).

The window bounds and roles are defined in `captionrec.training.windows` (pure Python). Every training
interaction of a window is before t_k (before the validation week for the fit role); the tests assert it.
Order within a user is (ts_ms, item_id), so equal timestamps split deterministically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captionrec.training.windows import FIT, TEST, VALID, Window, loo_window, rolling_windows

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

REQUIRED_COLUMNS = ("user_id", "item_id", "ts_ms")


def check_interactions(df: "DataFrame") -> None:
    """Clear error for a DataFrame that is not an interactions table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"interactions lack column(s) {missing}; got {df.columns}")


def rolling_split(interactions: "DataFrame", window: Window) -> "DataFrame":
    """interactions -> interactions of one window with `window` and `role` (fit/valid/test) columns."""
    from pyspark.sql import functions as F

    check_interactions(interactions)
    ts = F.col("ts_ms")
    role = (
        F.when(ts < window.valid_start_ms, F.lit(FIT))
        .when(ts < window.test_start_ms, F.lit(VALID))
        .otherwise(F.lit(TEST))
    )
    return (
        interactions.where(ts < window.test_end_ms)
        .withColumn("window", F.lit(window.index).cast("int"))
        .withColumn("role", role.cast("int"))
    )


def leave_one_out_split(interactions: "DataFrame") -> "DataFrame":
    """interactions -> the same rows with `window` = 0 and `role` by per-user recency (last = test)."""
    from pyspark.sql import Window as W
    from pyspark.sql import functions as F

    check_interactions(interactions)
    by_recency = W.partitionBy("user_id").orderBy(F.col("ts_ms").desc(), F.col("item_id").desc())
    n = F.count(F.lit(1)).over(W.partitionBy("user_id"))
    rn = F.row_number().over(by_recency)
    role = F.when((n >= 3) & (rn == 1), F.lit(TEST)).when((n >= 3) & (rn == 2), F.lit(VALID)).otherwise(F.lit(FIT))
    return interactions.withColumn("window", F.lit(0).cast("int")).withColumn("role", role.cast("int"))


def split_interactions(
    interactions: "DataFrame",
    protocol: str,
    num_windows: int = 3,
    window_days: int = 7,
    start: str | None = None,
) -> tuple["DataFrame", list[Window]]:
    """All windows of a protocol as one DataFrame (+ the window bounds; LOO has one window without bounds)."""
    from functools import reduce

    from pyspark.sql import functions as F

    check_interactions(interactions)
    if protocol == "loo":
        return leave_one_out_split(interactions), [loo_window()]
    if protocol != "rolling":
        raise ValueError(f"split protocol {protocol!r} is not rolling | loo")
    row = interactions.agg(F.min("ts_ms").alias("lo"), F.max("ts_ms").alias("hi")).first()
    if row is None or row["lo"] is None:
        raise ValueError("interactions are empty: nothing to split")
    windows = rolling_windows(int(row["lo"]), int(row["hi"]), num_windows, window_days, start)
    parts = [rolling_split(interactions, w) for w in windows]
    return reduce(lambda a, b: a.unionByName(b), parts), windows


def split_report(split: "DataFrame") -> list[dict]:
    """Per window: counts per role, the newest fit timestamp, test items and how many of them are cold
    (no fit interaction in that window)."""
    from pyspark.sql import functions as F

    fit_items = split.where(F.col("role") == FIT).select("window", "item_id").distinct().withColumn("_fit", F.lit(1))
    test = split.where(F.col("role") == TEST).select("window", "item_id").distinct()
    cold = (
        test.join(fit_items, ["window", "item_id"], "left")
        .groupBy("window")
        .agg(
            F.count("*").alias("test_items"),
            F.sum(F.when(F.col("_fit").isNull(), 1).otherwise(0)).alias("cold_test_items"),
        )
    )
    counts = split.groupBy("window").agg(
        *[
            F.sum(F.when(F.col("role") == r, 1).otherwise(0)).alias(n)
            for r, n in ((FIT, "fit"), (VALID, "valid"), (TEST, "test"))
        ],
        F.max(F.when(F.col("role") == FIT, F.col("ts_ms"))).alias("max_fit_ts_ms"),
    )
    rows = counts.join(cold, "window", "left").orderBy("window").collect()
    return [{k: (int(v) if v is not None else 0) for k, v in r.asDict().items()} for r in rows]
