"""The Delta table layer: one interface (`TableStore`), two backends.

    store = open_store(spark, cfg.storage)
    store.upsert("items", items_df, keys=["item_id"])   # one MERGE, one commit
    store.read("items")                                 # a Spark DataFrame of the live version

- delta-spark: Spark's own Delta (Databricks, or spark-submit with the Delta jars).
- delta-rs: the embedded default, no JVM Delta: `deltalake` commits from the driver, Spark reads the
  version's live parquet files.
`storage.backend: auto` picks delta-spark when the session has Delta, else delta-rs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from captionrec.tables.base import CommitConflictError, MergeResult, TableNotFoundError, TableStore
from captionrec.tables.deltars import DeltaRsStore
from captionrec.tables.deltaspark import DeltaSparkStore, has_delta, is_databricks

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from captionrec.config.schema import StorageConfig

__all__ = [
    "BACKENDS",
    "CommitConflictError",
    "DeltaRsStore",
    "DeltaSparkStore",
    "DeltaUnavailableError",
    "MergeResult",
    "TableNotFoundError",
    "TableStore",
    "has_delta",
    "is_databricks",
    "open_store",
    "resolve_backend",
]

BACKENDS = ("auto", "delta-spark", "delta-rs")


class DeltaUnavailableError(RuntimeError):
    """delta-spark was asked for on a session without Delta."""


def resolve_backend(spark: "SparkSession", backend: str) -> str:
    """ "auto" -> "delta-spark" when the session has Delta configured (or is Databricks), else "delta-rs"."""
    if backend not in BACKENDS:
        raise ValueError(f"storage.backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "delta-spark" if has_delta(spark) else "delta-rs"
    return backend


def open_store(spark: "SparkSession", storage_cfg: "StorageConfig") -> TableStore:
    """The table store `storage_cfg` describes, on `spark`."""
    backend = resolve_backend(spark, storage_cfg.backend)
    policy = {
        "commit_retries": storage_cfg.commit_retries,
        "retry_backoff_s": storage_cfg.retry_backoff_s,
        "optimize_min_files": storage_cfg.optimize_min_files,
    }
    if backend == "delta-spark":
        if not has_delta(spark):
            raise DeltaUnavailableError(
                "storage.backend=delta-spark but this Spark session has no Delta: spark.sql.extensions lacks "
                "io.delta.sql.DeltaSparkSessionExtension and it is not Databricks. Start Spark with "
                "the Delta package and extension/catalog settings of conf/spark-gpu.conf (spark.jars.packages "
                "io.delta:delta-spark_<spark major.minor>_2.13:<delta version>), or use storage.backend=delta-rs "
                "(or auto)."
            )
        return DeltaSparkStore(
            spark, root=storage_cfg.root, catalog=storage_cfg.catalog, schema=storage_cfg.schema, **policy
        )
    if storage_cfg.catalog or storage_cfg.schema:
        raise ValueError(
            f"catalog tables (storage.catalog={storage_cfg.catalog!r}, storage.schema={storage_cfg.schema!r}) need "
            "a Spark session with Delta (backend delta-spark); the delta-rs backend works on paths/URIs (storage.root)"
        )
    return DeltaRsStore(spark, storage_cfg.root, storage_options=storage_cfg.options, **policy)
