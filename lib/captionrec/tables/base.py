"""The table-store interface shared by both Delta backends, and the helpers both use.

Semantics every backend keeps (the contract tests in tests/tables/test_tables.py check them):
- every write is one driver-side commit and returns the table's new version;
- `upsert` / `insert_missing` MERGE on `keys`; the source is deduplicated on the keys first and the
  LAST row per key (in the DataFrame's order, i.e. the order `collect()` returns) wins; rows with a
  null key are rejected (`ValueError`): a null never matches in MERGE, so they would be re-inserted
  on every run;
- `append` / MERGE need the DataFrame's columns to be the table's columns (any order); a type may be
  widened (int -> long, float -> double, timestamp_ntz -> timestamp); anything else is a `ValueError`.
  `overwrite` replaces data and schema;
- timestamp_ntz columns are stored as Delta `timestamp`, their wall-clock values taken as UTC (keeps
  tables on protocol (1, 2)); a MERGE that changes nothing commits nothing (delta-rs);
- concurrent writers: a commit that loses a race (Delta's optimistic concurrency) is retried from the
  start, re-reading the table, at most `commit_retries` times with exponential backoff (`CommitConflictError`
  after that). A MERGE into a table that doesn't exist yet creates it exclusively; a concurrent first
  writer that loses that race MERGEs into the winner's table instead, so keys stay unique;
- `optimize(name)` compacts small files (OPTIMIZE); with `optimize_min_files` > 0 every write that
  committed is followed by one once the table holds that many files.
"""

from __future__ import annotations

import datetime as _dt
import logging
import random
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # pyspark is imported lazily: nothing here needs it at import time
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

log = logging.getLogger(__name__)
T = TypeVar("T")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEDUP_ORDER = "__captionrec_order"
_DEDUP_RANK = "__captionrec_rank"


class TableNotFoundError(LookupError):
    """A table that is read (or asked for its history) does not exist."""

    def __init__(self, name: str, location: str):
        super().__init__(f"Delta table {name!r} not found at {location}")
        self.name = name
        self.location = location


class CommitConflictError(RuntimeError):
    """A write kept losing to concurrent commits on the same table after every retry."""


@dataclass(frozen=True)
class MergeResult:
    inserted: int
    updated: int
    version: int | None  # the table's version after the MERGE (unchanged when nothing was written)


class TableStore(ABC):
    """Named Delta tables under one root (a path/URI) or one catalog schema."""

    backend: str

    def __init__(
        self,
        spark: "SparkSession",
        commit_retries: int = 5,
        retry_backoff_s: float = 0.5,
        optimize_min_files: int = 0,
    ):
        if commit_retries < 0 or retry_backoff_s < 0 or optimize_min_files < 0:
            raise ValueError("commit_retries, retry_backoff_s and optimize_min_files must be >= 0")
        self.spark = spark
        self.commit_retries = commit_retries
        self.retry_backoff_s = retry_backoff_s
        self.optimize_min_files = optimize_min_files
        self.conflicts = 0  # commits retried after losing a race (for summaries and tests)

    # -- the interface -------------------------------------------------------------------------
    @abstractmethod
    def exists(self, name: str) -> bool: ...

    @abstractmethod
    def location(self, name: str) -> str: ...

    @abstractmethod
    def read(self, name: str, version: int | None = None) -> "DataFrame": ...

    @abstractmethod
    def append(self, name: str, df: "DataFrame") -> int: ...

    @abstractmethod
    def overwrite(self, name: str, df: "DataFrame") -> int: ...

    def upsert(self, name: str, df: "DataFrame", keys: Sequence[str]) -> MergeResult:
        """MERGE on `keys`: matched rows are updated, the others inserted."""
        return self._merge(name, df, keys, update=True)

    def insert_missing(self, name: str, df: "DataFrame", keys: Sequence[str]) -> MergeResult:
        """MERGE on `keys`: only rows whose keys are not in the table are inserted."""
        return self._merge(name, df, keys, update=False)

    @abstractmethod
    def _merge(self, name: str, df: "DataFrame", keys: Sequence[str], update: bool) -> MergeResult:
        """The backend's MERGE (with its retries and `after_write`) behind `upsert` and `insert_missing`."""

    @abstractmethod
    def version(self, name: str) -> int | None: ...

    @abstractmethod
    def history(self, name: str, limit: int | None = None) -> list[dict]:
        """Commits newest first: dicts with version, timestamp (aware UTC datetime), operation,
        operationParameters, operationMetrics (numeric strings turned into ints)."""

    @abstractmethod
    def optimize(self, name: str, zorder_by: Sequence[str] = ()) -> dict:
        """OPTIMIZE: compact the table's small files (Z-ordered by `zorder_by` when given). Returns
        {"files_removed", "files_added", "version"}; a table with nothing to compact commits nothing."""

    @abstractmethod
    def num_files(self, name: str) -> int:
        """Data files in the table's current version."""

    @abstractmethod
    def is_conflict(self, exc: BaseException) -> bool:
        """True when `exc` means a commit lost a race with a concurrent writer (safe to retry)."""

    def count(self, name: str) -> int:
        """Rows in the table's current version."""
        return self.read(name).count()

    # -- concurrency and maintenance -----------------------------------------------------------
    def with_retries(self, name: str, op: str, fn: Callable[[], T], sleep: Callable[[float], None] = time.sleep) -> T:
        """Run `fn` (one whole read-compute-commit attempt); retry it when it loses a commit race."""
        attempts = self.commit_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified below, everything else re-raised
                if not self.is_conflict(exc):
                    raise
                self.conflicts += 1
                if attempt == attempts:
                    raise CommitConflictError(
                        f"{op} on table {name!r} lost to concurrent commits {attempts} times; last error: {exc}. "
                        f"Raise storage.commit_retries or keep concurrent jobs off the same table"
                    ) from exc
                delay = self.retry_backoff_s * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.warning(
                    "%s on %r conflicted with a concurrent commit (attempt %d of %d): %s; retrying in %.2f s",
                    op,
                    name,
                    attempt,
                    attempts,
                    str(exc).splitlines()[0][:200],
                    delay,
                )
                sleep(delay)
        raise AssertionError("unreachable")

    def after_write(self, name: str) -> None:
        """OPTIMIZE once the table holds `optimize_min_files` files (0: never automatically).

        A failed OPTIMIZE is logged, not raised: the write before it has committed and nothing is lost;
        the next write (or an explicit `optimize`) tries again."""
        if not self.optimize_min_files:
            return
        n = self.num_files(name)
        if n < self.optimize_min_files:
            return
        try:
            metrics = self.optimize(name)
        except Exception as exc:  # noqa: BLE001 - maintenance only, see the docstring
            log.warning("OPTIMIZE %r (%d files) failed: %s", name, n, exc)
            return
        log.info("OPTIMIZE %r: %d files -> %s", name, n, metrics)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r})"


# -- helpers shared by the backends ------------------------------------------------------------


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"table name must be an identifier ([A-Za-z_][A-Za-z0-9_]*), got {name!r}")
    return name


def check_keys(df: "DataFrame", keys: Sequence[str]) -> list[str]:
    if isinstance(keys, str):
        keys = [keys]
    keys = list(keys)
    if not keys:
        raise ValueError("MERGE needs at least one key column")
    missing = [k for k in keys if k not in df.columns]
    if missing:
        raise ValueError(f"key column(s) {missing} not in the DataFrame (columns: {df.columns})")
    return keys


def merge_predicate(keys: Sequence[str], target: str = "t", source: str = "s") -> str:
    return " AND ".join(f"`{target}`.`{k}` = `{source}`.`{k}`" for k in keys)


def dedupe_last(df: "DataFrame", keys: Sequence[str]) -> "DataFrame":
    """Reject null keys; keep the last row per key in the DataFrame's order (Spark-side).

    `monotonically_increasing_id` follows partition index then position, i.e. `collect()` order.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    any_null = None
    for k in keys:
        cond = F.col(k).isNull()
        any_null = cond if any_null is None else (any_null | cond)
    n_null = df.filter(any_null).limit(1).count()
    if n_null:
        raise ValueError(f"source has rows with a null key in {list(keys)}: null keys never match in MERGE")
    w = Window.partitionBy(*[F.col(k) for k in keys]).orderBy(F.col(_DEDUP_ORDER).desc())
    return (
        df.withColumn(_DEDUP_ORDER, F.monotonically_increasing_id())
        .withColumn(_DEDUP_RANK, F.row_number().over(w))
        .filter(F.col(_DEDUP_RANK) == 1)
        .drop(_DEDUP_ORDER, _DEDUP_RANK)
    )


def _nullable(dt: "DataType") -> "DataType":
    """The same type with every nullable flag set (for comparisons that ignore nullability)."""
    from pyspark.sql.types import ArrayType, MapType, StructField, StructType

    if isinstance(dt, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType), True) for f in dt.fields])
    if isinstance(dt, ArrayType):
        return ArrayType(_nullable(dt.elementType), True)
    if isinstance(dt, MapType):
        return MapType(_nullable(dt.keyType), _nullable(dt.valueType), True)
    return dt


def _widens(src: "DataType", dst: "DataType") -> bool:
    from pyspark.sql.types import (
        ByteType,
        DoubleType,
        FloatType,
        IntegerType,
        LongType,
        ShortType,
        TimestampNTZType,
        TimestampType,
    )

    ints = [ByteType, ShortType, IntegerType, LongType]
    si = next((i for i, t in enumerate(ints) if isinstance(src, t)), None)
    di = next((i for i, t in enumerate(ints) if isinstance(dst, t)), None)
    if si is not None and di is not None:
        return si <= di
    if isinstance(src, FloatType) and isinstance(dst, DoubleType):
        return True
    return isinstance(src, TimestampNTZType) and isinstance(dst, TimestampType)


def align_to_schema(df: "DataFrame", target: "StructType", name: str) -> "DataFrame":
    """Select `df`'s columns in `target`'s order, widening types where safe; ValueError otherwise."""
    from pyspark.sql import functions as F

    cols = {c.lower(): c for c in df.columns}
    tcols = [f.name for f in target.fields]
    missing = [c for c in tcols if c.lower() not in cols]
    extra = [c for c in df.columns if c.lower() not in {t.lower() for t in tcols}]
    if missing or extra:
        raise ValueError(
            f"columns don't match table {name!r}: missing {missing}, not in table {extra} "
            f"(use overwrite to change a table's schema)"
        )
    src_types = {f.name: f.dataType for f in df.schema.fields}
    out, bad = [], []
    for f in target.fields:
        src_name = cols[f.name.lower()]
        st = src_types[src_name]
        if _nullable(st) == _nullable(f.dataType):
            out.append(F.col(f"`{src_name}`").alias(f.name))
        elif _widens(st, f.dataType):
            out.append(F.col(f"`{src_name}`").cast(f.dataType).alias(f.name))
        else:
            bad.append(f"{f.name}: {st.simpleString()} vs table {f.dataType.simpleString()}")
    if bad:
        raise ValueError(f"column types don't match table {name!r}: " + "; ".join(bad))
    return df.select(*out)


def ntz_to_utc(df: "DataFrame") -> "DataFrame":
    """Top-level timestamp_ntz columns become timestamps, their wall-clock values taken as UTC.

    Keeps tables on Delta protocol (1, 2): timestamp_ntz needs the timestampNtz table feature.
    """
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType

    ntz = [f.name for f in df.schema.fields if isinstance(f.dataType, TimestampNTZType)]
    if not ntz:
        return df
    tz = df.sparkSession.conf.get("spark.sql.session.timeZone", "UTC") or "UTC"
    cols = []
    for c in df.columns:
        if c in ntz:
            local = F.convert_timezone(F.lit("UTC"), F.lit(tz), F.col(f"`{c}`"))  # UTC wall clock -> session's
            cols.append(local.cast("timestamp").alias(c))
        else:
            cols.append(F.col(f"`{c}`"))
    return df.select(*cols)


def _intish(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            return v
    return v


def history_entry(
    version: int, timestamp_ms: int | None, operation: str | None, params: Mapping | None, metrics: Mapping | None
) -> dict:
    ts = None if timestamp_ms is None else _dt.datetime.fromtimestamp(int(timestamp_ms) / 1000, tz=_dt.UTC)
    return {
        "version": int(version),
        "timestamp": ts,
        "operation": operation,
        "operationParameters": dict(params or {}),
        "operationMetrics": {k: _intish(v) for k, v in dict(metrics or {}).items()},
    }


def is_uri(root: str) -> bool:
    return "://" in root or root.startswith("file:")


def resolve_root(root: str) -> str:
    """A URI stays as given (without a trailing slash); a local path becomes absolute."""
    from pathlib import Path

    if not root:
        raise ValueError("storage root is empty")
    if is_uri(root):
        return root.rstrip("/")
    return str(Path(root).expanduser().resolve())
