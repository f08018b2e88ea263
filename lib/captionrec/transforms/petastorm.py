"""Petastorm converters over the sequences table's training rows (driver side; needs Spark).

The cache dir is where `make_spark_converter` materialises each converter's parquet copy: every
training process must read it. On a local master a temp folder is fine; on a cluster it must be shared
storage (`train.petastorm_cache_dir`: a DBFS / Unity Catalog Volume path on Databricks, an object-store
or shared-mount URI elsewhere), never the driver's local disk, so a cluster run without one is an error.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from captionrec.contracts import TRAIN_BATCH_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


PETASTORM_CACHE_CONF = "petastorm.spark.converter.parentCacheDirUrl"  # SparkDatasetConverter.PARENT_CACHE_DIR_URL_CONF


def is_local_master(master: str) -> bool:
    """True when every process of the session runs on this machine (local[...], local-cluster[...])."""
    return (master or "").startswith("local")


def cache_dir_for(master: str, configured: Optional[str], spark_setting: Optional[str]) -> str:
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


def resolve_cache_dir(spark: "SparkSession", cache_dir: Optional[str]) -> str:
    try:
        setting = spark.conf.get(PETASTORM_CACHE_CONF)
    except Exception:  # the key is unset: Spark raises for an unknown key without a default
        setting = None
    return cache_dir_for(spark.sparkContext.master, cache_dir, setting)


def petastorm_converters(
    sequences: "DataFrame", keys: Sequence[tuple[int, int]], world: int, cache_dir: Optional[str] = None
) -> dict[tuple[int, int], Any]:
    """One petastorm converter per (window, training role) over its rows (TRAIN_BATCH_COLUMNS), >= `world` files."""
    from petastorm.spark import make_spark_converter
    from pyspark.sql import functions as F

    spark = sequences.sparkSession
    spark.conf.set(PETASTORM_CACHE_CONF, resolve_cache_dir(spark, cache_dir))
    out = {}
    for window, role in keys:
        part = (
            sequences.where((F.col("window") == window) & (F.col("role") == role))
            .select(*TRAIN_BATCH_COLUMNS)  # ints already (contracts.schema(TRAIN_SEQUENCES))
            .repartition(max(2, world))  # petastorm shards by row group: every rank needs at least one
        )
        out[(int(window), int(role))] = make_spark_converter(part)
    return out


def make_source(
    sequences: "DataFrame",
    keys: Sequence[tuple[int, int]],
    loader: str = "auto",
    world: int = 1,
    cache_dir: Optional[str] = None,
):
    """Driver side: `sequences` must be a read of the table (its `inputFiles()` are the live files).

    keys: the (window, role) pairs the ranks will train on (petastorm converters are made for those).
    """
    from captionrec.training.loaders import SequenceSource, resolve_loader

    kind = resolve_loader(loader)
    files = tuple(sequences.inputFiles())
    if not files:
        raise ValueError("the sequences table has no files (nothing to train on)")
    source = SequenceSource(loader=kind, files=files)
    if kind == "petastorm":
        source.converters = petastorm_converters(sequences, keys, world, cache_dir)
    return source
