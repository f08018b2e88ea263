"""The one place a SparkSession is created. Everything else receives the session as an argument.

On a cluster master (spark-submit's session, spark://, local-cluster[...]) the session's default task
request is checked against its executors at start (`captionrec.spark.cluster.check_session`): a
request no executor can ever satisfy is a `ClusterConfigError` naming the settings, not a silent hang.

Spark warnings that are known to be benign for this project are filtered where the session is made
(`quiet_benign_warnings`, BENIGN_SPARK_WARNINGS): exactly those messages of exactly those loggers, through a
log4j2 RegexFilter on the driver; everything else Spark warns still shows. Each is logged once at DEBUG with
the reason.
"""

from __future__ import annotations

import logging
import os
import sys

from captionrec.config.schema import SparkConfig

log = logging.getLogger(__name__)

# log4j2 logger (and its descendants) -> (start of the message, why it is benign here).
BENIGN_SPARK_WARNINGS: dict[str, tuple[str, str]] = {
    # WindowExec (WindowExecBase.requiredChildDistribution) warns on every plan of a window without PARTITION BY.
    "org.apache.spark.sql.execution.window": (
        "No Partition Defined for Window operation!",
        "the key indexing (transforms.sequences._numbered) numbers the distinct user and item ids with a global "
        "row_number on purpose: one partition of distinct keys is cheap for catalogs of millions, and unlike "
        "RDD zipWithIndex it works on Spark Connect and shared clusters",
    ),
}
_quieted: set[str] = set()  # loggers whose benign warning this process has filtered (and said so at DEBUG)


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
        quiet_benign_warnings(spark)
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
        .config("spark.driver.extraJavaOptions", LOCAL_JVM_OPTIONS)
    )
    for k, v in cfg.conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    quiet_benign_warnings(spark)
    _check(spark)
    return spark


# The embedded JVM's heap follows its live set instead of growing to spark.driver.memory: G1 otherwise expands to
# the maximum under allocation bursts and keeps it (bench_scale, 100k users: the experiment's JVM held 4.3-4.6 GB
# for ~60 MB of live objects). Allowing more GC time (GCTimeRatio 4 = up to 20%), shrinking after collections
# and a periodic collection when idle: the 10k experiment's driver peak 3.30 -> 2.60 GB at the same wall time
# (139 s vs 141 s); a 2 GB heap gave 2.52 GB but took 163 s. spark.conf's own value replaces this.
LOCAL_JVM_OPTIONS = "-XX:GCTimeRatio=4 -XX:MaxHeapFreeRatio=30 -XX:MinHeapFreeRatio=10 -XX:G1PeriodicGCInterval=15000"


def quiet_benign_warnings(spark) -> list[str]:
    """Filter BENIGN_SPARK_WARNINGS out of the driver's log4j2 output (idempotent); returns the loggers filtered
    by this call. A logger without a configuration of its own gets one that inherits its level and appenders."""
    try:
        jvm = spark.sparkContext._jvm
    except Exception:  # noqa: BLE001 - Spark Connect: the driver's log4j is not reachable from here
        log.debug("Spark Connect: Spark's benign warnings are not filtered (%s)", ", ".join(BENIGN_SPARK_WARNINGS))
        return []
    log4j = jvm.org.apache.logging.log4j
    result = getattr(log4j.core, "Filter$Result")
    context = log4j.LogManager.getContext(False)
    config = context.getConfiguration()
    done = []
    for name, (message, reason) in BENIGN_SPARK_WARNINGS.items():
        regex = f"\\Q{message}\\E.*"
        own = config.getLoggerConfig(name)
        if own.getName() != name:
            own = log4j.core.config.LoggerConfig(name, None, True)  # level None: the parent's, as it changes
            config.addLogger(name, own)
        elif regex in str(own.getFilter()):
            continue
        own.addFilter(log4j.core.filter.RegexFilter.createFilter(regex, None, False, result.DENY, result.NEUTRAL))
        done.append(name)
        if name not in _quieted:
            _quieted.add(name)
            log.debug("Spark's warning %r (logger %s) is filtered from the console: %s", message, name, reason)
    if done:
        context.updateLoggers()
    return done


def _check(spark) -> None:
    from captionrec.spark.cluster import check_session, is_local_master

    try:
        master = spark.sparkContext.master
    except Exception:  # noqa: BLE001 - Spark Connect sessions have no SparkContext: nothing to check
        return
    if not is_local_master(master):
        check_session(spark)
