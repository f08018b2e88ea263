"""Leakage-proof splits as Spark DataFrame transforms (interactions in -> interactions + role/window out).

Roles: 0 = fit (the model trains on these), 1 = validation (epoch selection), 2 = test.

Rolling window (the paper's protocol), window k with start t_k:
    fit         ts <  t_k - window_days
    validation  t_k - window_days <= ts < t_k        ("the last 7 days before t_k")
    test        t_k <= ts < t_k + window_days
Interactions at or after t_k + window_days are not part of window k. Every training interaction is
before t_k (the tests assert it). Windows follow each other: t_{k+1} = t_k + window_days.

Leave-one-out (MicroLens / RecBole): per user, in time order, the last interaction is test, the one before
it validation, the rest fit; users with fewer than 3 interactions only contribute fit rows. One window (0).

Order within a user is (ts_ms, item_id), so equal timestamps split deterministically.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

FIT, VALID, TEST = 0, 1, 2
DAY_MS = 86_400_000
REQUIRED_COLUMNS = ("user_id", "item_id", "ts_ms")
LOO_END = 2**62  # leave-one-out's single window has no time bounds


@dataclass(frozen=True)
class Window:
    """One evaluation window; all bounds in epoch milliseconds (UTC), `[start, end)`."""

    index: int
    valid_start_ms: int  # = t_k - window_days
    test_start_ms: int  # = t_k
    test_end_ms: int  # = t_k + window_days

    def as_dict(self) -> dict:
        if self.test_end_ms >= LOO_END:
            return {"window": self.index, "protocol": "loo"}
        iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).isoformat()  # noqa: E731
        return {
            "window": self.index,
            "valid_start": iso(self.valid_start_ms),
            "test_start": iso(self.test_start_ms),
            "test_end": iso(self.test_end_ms),
        }


def check_interactions(df: "DataFrame") -> None:
    """Clear error for a DataFrame that is not an interactions table."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"interactions lack column(s) {missing}; got {df.columns}")


def _to_ms(value: str) -> int:
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp() * 1000)


def rolling_windows(
    min_ts_ms: int,
    max_ts_ms: int,
    num_windows: int,
    window_days: int = 7,
    start: Optional[str] = None,
) -> list[Window]:
    """The windows of the rolling protocol.

    start None: t_0 is chosen so that the last test window ends just after the newest interaction
    (`max_ts_ms + 1`). Raises ValueError when the first window would leave no fit data (its validation
    start must be after the oldest interaction) or when a given start lies outside the data.
    """
    w = window_days * DAY_MS
    if start is None:
        t0 = max_ts_ms + 1 - num_windows * w
    else:
        t0 = _to_ms(start)
    windows = [Window(k, t0 + k * w - w, t0 + k * w, t0 + (k + 1) * w) for k in range(num_windows)]
    if windows[0].valid_start_ms <= min_ts_ms:
        span = (max_ts_ms - min_ts_ms) / DAY_MS
        raise ValueError(
            f"{num_windows} window(s) of {window_days} days need more history: the first validation week would "
            f"start before the oldest interaction (data span {span:.1f} days); lower split.num_windows or move split.start"
        )
    if windows[-1].test_start_ms > max_ts_ms:
        raise ValueError(f"split.start={start!r}: the last window starts after the newest interaction")
    return windows


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
    start: Optional[str] = None,
) -> tuple["DataFrame", list[Window]]:
    """All windows of a protocol as one DataFrame (+ the window bounds; LOO has one window without bounds)."""
    from functools import reduce

    from pyspark.sql import functions as F

    check_interactions(interactions)
    if protocol == "loo":
        return leave_one_out_split(interactions), [Window(0, 0, 0, LOO_END)]
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
        .agg(F.count("*").alias("test_items"), F.sum(F.when(F.col("_fit").isNull(), 1).otherwise(0)).alias("cold_test_items"))
    )
    counts = split.groupBy("window").agg(
        *[F.sum(F.when(F.col("role") == r, 1).otherwise(0)).alias(n) for r, n in ((FIT, "fit"), (VALID, "valid"), (TEST, "test"))],
        F.max(F.when(F.col("role") == FIT, F.col("ts_ms"))).alias("max_fit_ts_ms"),
    )
    rows = counts.join(cold, "window", "left").orderBy("window").collect()
    return [{k: (int(v) if v is not None else 0) for k, v in r.asDict().items()} for r in rows]
