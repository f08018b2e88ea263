"""Interaction timestamps: which unit each file uses, and which values are plausible.

A timestamp is plausible between `earliest` (config `data.earliest`) and the run's time + 1 day. With
`data.timestamp_unit=auto` each file's unit is the one (ms or s) under which the file's median value is
plausible; a file where neither fits has unit None and all its rows are quarantined. The unit ranges do
not overlap (seconds since 1995 are < 4e9, milliseconds since 1995 are > 7e11), so the choice is unique.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

FACTORS: dict[str, int] = {"ms": 1, "s": 1000}
DEFAULT_EARLIEST: dict[str, str] = {"microlens": "2000-01-01", "recbole": "1995-01-01"}
FUTURE_SLACK_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TimeBounds:
    earliest_ms: int
    latest_ms: int

    def describe(self) -> str:
        return f"{_iso(self.earliest_ms)} .. {_iso(self.latest_ms)}"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def bounds(earliest: str, fmt: str, now_ms: int | None = None) -> TimeBounds:
    """`earliest` as an ISO date ('auto': the format's default) .. now + 1 day, in Unix ms."""
    day = DEFAULT_EARLIEST[fmt] if earliest == "auto" else earliest
    try:
        start = datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC)
    except ValueError:
        raise ValueError(f"data.earliest must be an ISO date (YYYY-MM-DD) or 'auto', got {earliest!r}") from None
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return TimeBounds(int(start.timestamp() * 1000), now + FUTURE_SLACK_MS)


def guess_unit(median: float | None, b: TimeBounds) -> str | None:
    """The unit under which `median` is a plausible time, or None."""
    if median is None:
        return None
    for unit, factor in FACTORS.items():
        if b.earliest_ms <= median * factor <= b.latest_ms:
            return unit
    return None


def numeric(col: str) -> F.Column:
    """A raw timestamp string as a double (null when it is not a number)."""
    return F.expr(f"try_cast(trim({col}) AS DOUBLE)")


def file_units(raw: DataFrame, unit: str, b: TimeBounds) -> dict[str, str | None]:
    """{file name: unit or None} for each file of raw interactions (columns `timestamp`, `_file`).

    With a fixed `unit` every file gets it; with 'auto' one small aggregation finds each file's median.
    """
    stats = (
        raw.select("_file", numeric("timestamp").alias("_v"))
        .groupBy("_file")
        .agg(F.percentile_approx(F.when(F.col("_v") > 0, F.col("_v")), 0.5).alias("_median"))
        .collect()
    )
    if unit != "auto":
        return {r["_file"]: unit for r in stats}
    return {r["_file"]: guess_unit(r["_median"], b) for r in stats}


def to_ms(value: F.Column, file: F.Column, units: dict[str, str | None]) -> F.Column:
    """value x the file's unit factor, rounded to a BIGINT of ms (null for files of unknown unit)."""
    known = {f: FACTORS[u] for f, u in units.items() if u is not None}
    if not known:
        return F.lit(None).cast("bigint")
    factor = F.create_map(*[x for f, k in sorted(known.items()) for x in (F.lit(f), F.lit(k))])[file]
    return F.round(value * factor).try_cast("bigint")  # beyond BIGINT (e.g. 1e30): null, not an ANSI error


def implausible_detail(raw: F.Column, ms: F.Column, file: F.Column, unit: F.Column, b: TimeBounds) -> F.Column:
    """Why a numeric timestamp is implausible (for quarantine.detail)."""
    shown = F.when(
        ms.between(-62135596800000, 253402300799999),  # years 1..9999
        F.date_format(F.timestamp_millis(ms), "yyyy-MM-dd HH:mm:ss"),
    ).otherwise(F.lit("beyond year 9999"))
    where = F.concat(F.lit("timestamp "), raw, F.lit(" in "), file)
    return (
        F.when(ms.isNull() & unit.isin(*FACTORS), F.concat(where, F.lit(" is too large for any unit")))
        .when(
            ms.isNull(),
            F.concat(
                where,
                F.lit(
                    " has no usable unit: the file's median value is a plausible time neither in ms nor in s "
                    f"({b.describe()}); set data.timestamp_unit or data.earliest"
                ),
            ),
        )
        .otherwise(
            F.concat(
                where,
                F.lit(" read as "),
                unit,
                F.lit(" is "),
                shown,
                F.lit(f" UTC, outside the plausible range {b.describe()}"),
            )
        )
    )
