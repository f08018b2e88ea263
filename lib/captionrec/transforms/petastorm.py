"""Petastorm converters over the materialised training inputs (driver side; needs Spark).

The cache dir is where `make_spark_converter` materialises each converter's parquet copy: every
training process must read it. On a local master a temp folder is fine; on a cluster it must be shared
storage (`train.petastorm_cache_dir`: a DBFS / Unity Catalog Volume path on Databricks, an object-store
or shared-mount URI elsewhere), never the driver's local disk, so a cluster run without one is an error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from captionrec.contracts import TRAIN_BATCH_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


PETASTORM_CACHE_CONF = "petastorm.spark.converter.parentCacheDirUrl"  # SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF


def is_local_master(master: str) -> bool:
    """True when every process of the session runs on this machine (local[...], local-cluster[...])."""
    return (master or "").startswith("local")


def cache_dir_for(master: str, configured: str | None, spark_setting: str | None) -> str:
    """The petastorm cache dir: `train.petastorm_cache_dir`, else Spark's petastorm setting, else (local
    masters only) a new temp folder. A cluster without either is an error: never driver-local disk."""
    if configured:
        return configured
    if spark_setting:
        return spark_setting
    if not is_local_master(master):
        raise ValueError(
            f"loader=petastorm on a cluster (master {master!r}) needs shared storage for its cache: set "
            f"train.petastorm_cache_dir (e.g. file:///Volumes/<catalog>/<schema>/<volume>/petastorm on Databricks, or "
            f"an s3a:// / shared-mount URI); the driver's local disk is not readable by the training processes"
        )
    return "file://" + tempfile.mkdtemp(prefix="captionrec-petastorm-")


def resolve_cache_dir(spark: "SparkSession", cache_dir: str | None) -> str:
    try:
        setting = spark.conf.get(PETASTORM_CACHE_CONF)
    except Exception:  # the key is unset: Spark raises for an unknown key without a default
        setting = None
    return cache_dir_for(spark.sparkContext.master, cache_dir, setting)


def petastorm_converters(
    spark: "SparkSession",
    parts: Mapping[tuple[int, int], Sequence[str]],
    keys: Sequence[tuple[int, int]],
    world: int,
    cache_dir: str | None = None,
) -> dict[tuple[int, int], Any]:
    """One petastorm converter per (window, training role) over its materialised training inputs
    (`transforms.train_inputs`: files Spark wrote, never the table's own), >= `world` files each."""
    from petastorm.spark import make_spark_converter

    spark.conf.set(PETASTORM_CACHE_CONF, resolve_cache_dir(spark, cache_dir))
    out = {}
    for window, role in keys:
        if (window, role) not in parts:
            raise ValueError(f"no training inputs for window {window}, role {role}")
        part = (
            spark.read.parquet(*parts[(window, role)])
            .select(*TRAIN_BATCH_COLUMNS)  # ints already (contracts.schema(TRAIN_SEQUENCES))
            .repartition(max(2, world))  # petastorm shards by row group: every rank needs at least one
        )
        out[(int(window), int(role))] = make_spark_converter(part)
    return out
