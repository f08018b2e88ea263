"""The embedded session's JVM runs with the heap options that keep its footprint near its live set."""

from __future__ import annotations


def test_embedded_jvm_runs_with_the_local_heap_options(spark):
    from captionrec.spark.session import LOCAL_JVM_OPTIONS

    runtime = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    args = [str(a) for a in runtime.getInputArguments()]
    assert set(LOCAL_JVM_OPTIONS.split()) <= set(args), args
    assert spark.conf.get("spark.driver.extraJavaOptions") == LOCAL_JVM_OPTIONS
