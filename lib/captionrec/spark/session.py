"""The one place a SparkSession is created. Everything else receives the session as an argument.

On a cluster master (spark-submit's session, spark://, local-cluster[...]) the session's default task
request is checked against its executors at start (`captionrec.spark.cluster.check_session`): a
request no executor can ever satisfy is a `ClusterConfigError` naming the settings, not a silent hang.
"""

from __future__ import annotations

import logging
import os
import sys

from captionrec.config.schema import SparkConfig

log = logging.getLogger(__name__)


def _embedded_env() -> None:
    # Python workers must run the driver's interpreter (the venv), or they miss our dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


def get_spark(cfg: SparkConfig):
    """Return a SparkSession for `cfg`.

    master == "active": the session spark-submit or Databricks already made (or the cluster default
    from spark-submit's configuration); its settings are left as they are, `cfg.conf` is only added.
    Anything else (local[N], local-cluster[...], spark://...) starts an embedded/driver session.
    """
    from pyspark.sql import SparkSession

    if cfg.master == "active":
        spark = SparkSession.getActiveSession()
        if spark is None:
            builder = SparkSession.builder.appName(cfg.app_name)
            for k, v in cfg.conf.items():
                builder = builder.config(k, v)
            spark = builder.getOrCreate()
        else:
            for k, v in cfg.conf.items():
                try:
                    spark.conf.set(k, v)
                except Exception as exc:  # static confs can't change on a running session
                    log.warning("could not set %s on the active session: %s", k, exc)
        _check(spark)
        return spark

    _embedded_env()
    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
        .config("spark.default.parallelism", str(cfg.shuffle_partitions))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.adaptive.enabled", "true")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.python.worker.reuse", "true")  # keeps per-worker model caches alive
        .config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
    )
    for k, v in cfg.conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _check(spark)
    return spark


def _check(spark) -> None:
    from captionrec.spark.cluster import check_session, is_local_master

    try:
        master = spark.sparkContext.master
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext: nothing to check
        return
    if not is_local_master(master):
        check_session(spark)
