"""delta-spark backend: Spark's own Delta (`delta.tables.DeltaTable`, `df.write.format("delta")`).

Needs a session with Delta: Databricks, or spark-submit with Delta's package
(`io.delta:delta-spark_<spark major.minor>_2.13:<delta version>`; conf/spark-gpu.conf has the pinned one) plus
`spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension` and
`spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog`.
Writes run on the executors and commit once on the driver (Delta's own protocol), so they scale
past driver memory. Tables are paths `<root>/<name>` or catalog tables `<catalog>.<schema>.<name>`.

Concurrency: Delta's commit conflicts (`delta.exceptions.Concurrent*`, `MetadataChangedException`,
`ProtocolChangedException`) are retried from a fresh read (base.py). A MERGE into a missing table creates it
with mode `errorifexists`; a concurrent first writer that loses (a conflict, or "already exists") retries
as a MERGE into the winner's table. OPTIMIZE is Delta's `optimize().executeCompaction()` / `executeZOrderBy`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from captionrec.tables.base import (
    MergeResult,
    TableNotFoundError,
    TableStore,
    align_to_schema,
    check_keys,
    check_name,
    dedupe_last,
    history_entry,
    merge_predicate,
    ntz_to_utc,
    resolve_root,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_DELTA_EXTENSION = "DeltaSparkSessionExtension"


def _conf(spark: "SparkSession", key: str) -> str | None:
    try:
        return spark.conf.get(key, None)
    except Exception:  # some managed sessions refuse to show some keys
        return None


def is_databricks(spark: "SparkSession") -> bool:
    return bool(os.environ.get("DATABRICKS_RUNTIME_VERSION")) or bool(
        _conf(spark, "spark.databricks.clusterUsageTags.clusterId")
    )


def has_delta(spark: "SparkSession") -> bool:
    """True when `spark` can read/write Delta itself: Delta's session extension is set, or Databricks."""
    return _DELTA_EXTENSION in (_conf(spark, "spark.sql.extensions") or "") or is_databricks(spark)


def _quote(part: str) -> str:
    return "`" + part.replace("`", "``") + "`"


class DeltaSparkStore(TableStore):
    """Tables at `<root>/<name>`, or (catalog and/or schema given) catalog tables `<catalog>.<schema>.<name>`."""

    backend = "delta-spark"

    def __init__(
        self,
        spark: "SparkSession",
        root: str | None = None,
        catalog: str | None = None,
        schema: str | None = None,
        **policy: int | float,
    ):
        super().__init__(spark, **policy)  # type: ignore[arg-type]
        try:  # installs Delta's conversion of its JVM conflict exceptions to delta.exceptions.* (is_delta_conflict)
            import delta.exceptions  # noqa: F401
        except ImportError:  # the delta-spark extra is not installed: names are matched in the messages instead
            pass
        if catalog and not schema:
            raise ValueError(f"storage.catalog={catalog!r} needs storage.schema too (tables are catalog.schema.table)")
        self.catalog = catalog or None
        self.schema = schema or None
        self.root = None if self.schema else resolve_root(root or "")

    @property
    def uses_catalog(self) -> bool:
        return self.schema is not None

    # -- locations and metadata ----------------------------------------------------------------
    def location(self, name: str) -> str:
        check_name(name)
        if self.uses_catalog:
            return ".".join(p for p in (self.catalog, self.schema, name) if p)
        return f"{self.root}/{name}"

    def _quoted(self, name: str) -> str:
        return ".".join(_quote(p) for p in self.location(name).split("."))

    def exists(self, name: str) -> bool:
        from delta.tables import DeltaTable

        if self.uses_catalog:
            return bool(self.spark.catalog.tableExists(self._quoted(name)))
        return bool(DeltaTable.isDeltaTable(self.spark, self.location(name)))

    def _table(self, name: str):
        from delta.tables import DeltaTable

        if not self.exists(name):
            raise TableNotFoundError(name, self.location(name))
        if self.uses_catalog:
            return DeltaTable.forName(self.spark, self._quoted(name))
        return DeltaTable.forPath(self.spark, self.location(name))

    def _history_rows(self, name: str, limit: int | None = None) -> list:
        h = self._table(name).history(limit) if limit else self._table(name).history()
        return h.selectExpr(
            "version", "unix_millis(timestamp) AS ts_ms", "operation", "operationParameters", "operationMetrics"
        ).collect()

    def version(self, name: str) -> int | None:
        if not self.exists(name):
            return None
        return int(self._history_rows(name, 1)[0]["version"])

    def history(self, name: str, limit: int | None = None) -> list[dict]:
        return [
            history_entry(r["version"], r["ts_ms"], r["operation"], r["operationParameters"], r["operationMetrics"])
            for r in self._history_rows(name, limit)
        ]

    # -- reads ---------------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None) -> "DataFrame":
        if not self.exists(name):
            raise TableNotFoundError(name, self.location(name))
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", int(version))
        if self.uses_catalog:
            return reader.table(self._quoted(name))
        return reader.load(self.location(name))

    # -- concurrency and maintenance -----------------------------------------------------------
    def is_conflict(self, exc: BaseException) -> bool:
        return is_delta_conflict(exc)

    def num_files(self, name: str) -> int:
        return int(self._table(name).detail().first()["numFiles"])

    def optimize(self, name: str, zorder_by: Sequence[str] = ()) -> dict:
        def attempt() -> dict:
            opt = self._table(name).optimize()
            out = opt.executeZOrderBy(*zorder_by) if zorder_by else opt.executeCompaction()
            metrics = out.first()["metrics"]
            return {
                "files_removed": int(metrics["numFilesRemoved"]),
                "files_added": int(metrics["numFilesAdded"]),
                "version": self.version(name),
            }

        return self.with_retries(name, "OPTIMIZE", attempt)

    # -- writes --------------------------------------------------------------------------------
    def _write(self, name: str, df: "DataFrame", mode: str) -> int:
        writer = df.write.format("delta").mode(mode)
        if mode == "overwrite":
            writer = writer.option("overwriteSchema", "true")
        if self.uses_catalog:
            writer.saveAsTable(self._quoted(name))
        else:
            writer.save(self.location(name))
        return int(self.version(name))

    def _prepare(self, name: str, df: "DataFrame") -> "DataFrame":
        df = ntz_to_utc(df)
        if self.exists(name):
            return align_to_schema(df, self.read(name).schema, name)
        return df

    def append(self, name: str, df: "DataFrame") -> int:
        version = self.with_retries(name, "append", lambda: self._write(name, self._prepare(name, df), "append"))
        self.after_write(name)
        return version

    def overwrite(self, name: str, df: "DataFrame") -> int:
        version = self.with_retries(name, "overwrite", lambda: self._write(name, ntz_to_utc(df), "overwrite"))
        self.after_write(name)
        return version

    def _merge(self, name: str, df: "DataFrame", keys: Sequence[str], update: bool) -> MergeResult:
        keys = check_keys(df, keys)
        result = self.with_retries(name, "MERGE", lambda: self._merge_once(name, df, keys, update))
        if result.inserted or result.updated:
            self.after_write(name)
        return result

    def _merge_once(self, name: str, df: "DataFrame", keys: list[str], update: bool) -> MergeResult:
        src = dedupe_last(self._prepare(name, df), keys)
        if not self.exists(name):  # MERGE into nothing: the table is created (exclusively) with every source row
            version = self._write(name, src, "errorifexists")
            metrics = self._history_rows(name, 1)[0]["operationMetrics"] or {}
            inserted = int(metrics.get("numOutputRows", 0)) if "numOutputRows" in metrics else src.count()
            return MergeResult(inserted=inserted, updated=0, version=version)
        table = self._table(name)
        before = self.version(name)
        merger = table.alias("t").merge(src.alias("s"), merge_predicate(keys))
        if update:
            merger = merger.whenMatchedUpdateAll()
        out = merger.whenNotMatchedInsertAll().execute()  # Delta >= 3: a one-row DataFrame of counts
        last = self._history_rows(name, 1)[0]
        if int(last["version"]) == before:  # nothing committed
            return MergeResult(inserted=0, updated=0, version=before)
        row = out.first() if out is not None else None
        if row is not None and "num_inserted_rows" in row.asDict():
            inserted, updated = row["num_inserted_rows"], row["num_updated_rows"]
        else:  # older Delta: the commit's operation metrics
            metrics = last["operationMetrics"] or {}
            inserted, updated = metrics.get("numTargetRowsInserted", 0), metrics.get("numTargetRowsUpdated", 0)
        return MergeResult(inserted=int(inserted or 0), updated=int(updated or 0), version=int(last["version"]))


# Delta's commit-conflict exceptions (JVM class names / Spark error conditions), and what an exclusive
# create reports when a concurrent writer created the table first.
_CONFLICT_NAMES = (
    "io.delta.exceptions.Concurrent",
    "ConcurrentModificationException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT_",
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
)
_EXISTS_CONDITIONS = (
    "DELTA_PATH_EXISTS",
    "PATH_ALREADY_EXISTS",
    "TABLE_OR_VIEW_ALREADY_EXISTS",
    "DELTA_TABLE_ALREADY_EXISTS",
)


def is_delta_conflict(exc: BaseException) -> bool:
    """True for a Delta commit conflict (retry from a fresh read) or a lost race to create a table."""
    try:
        from delta.exceptions import base as delta_base

        conflict_types = tuple(
            getattr(delta_base, n)
            for n in (
                "DeltaConcurrentModificationException",
                "ConcurrentWriteException",
                "MetadataChangedException",
                "ProtocolChangedException",
                "ConcurrentAppendException",
                "ConcurrentDeleteReadException",
                "ConcurrentDeleteDeleteException",
                "ConcurrentTransactionException",
            )
        )
        if isinstance(exc, conflict_types):
            return True
    except ImportError:  # pragma: no cover - delta-spark's Python package is part of the delta-spark extra
        pass
    condition = ""
    for getter in ("getCondition", "getErrorClass"):
        try:
            condition = getattr(exc, getter)() or ""
            break
        except Exception:  # noqa: BLE001 - not a PySparkException, or an older Spark
            continue
    text = f"{type(exc).__name__} {condition} {exc}"
    if any(n in text for n in _CONFLICT_NAMES):
        return True
    return any(c in text for c in _EXISTS_CONDITIONS) or "already exists" in str(exc).lower()
