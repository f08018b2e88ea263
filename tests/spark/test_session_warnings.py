"""Spark's known-benign warnings are filtered where the session is made (captionrec.spark.session), and only they.

A subprocess makes a real local session with `get_spark`, runs the key indexing (transforms.sequences: the global
row_number behind WindowExec's "No Partition Defined for Window operation"), then triggers two other warnings: a
real one of Spark's (a deprecated SQL config) and another message on WindowExec's own logger. Its console (stderr,
where Spark's log4j writes) is read with markers between the steps. As a control, the filter is then removed and the
same indexing is shown to warn, so the absence before it is the filter's doing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.spark

SCRIPT = textwrap.dedent(
    """
    import logging, sys
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="PY %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    from captionrec.config.schema import SparkConfig
    from captionrec.spark.session import BENIGN_SPARK_WARNINGS, get_spark, quiet_benign_warnings
    from captionrec.transforms.sequences import build_item_index, build_user_index

    def mark(text):
        sys.stderr.write(f"MARK {text}\\n")
        sys.stderr.flush()

    cfg = SparkConfig(master="local[1]", app_name="captionrec-warnings", driver_memory="1g", shuffle_partitions=1)
    spark = get_spark(cfg)
    assert get_spark(cfg) is spark and quiet_benign_warnings(spark) == []  # idempotent: one filter, one DEBUG line
    df = spark.createDataFrame([("u2", "i1", 1), ("u1", "i2", 2)], "user_id string, item_id string, ts_ms long")
    mark("indexing")
    assert [r.user_idx for r in build_user_index(df).orderBy("user_id").collect()] == [1, 2]
    assert len(build_item_index(df).collect()) == 2
    mark("other warnings")
    spark.conf.set("spark.sql.execution.arrow.enabled", "true")  # deprecated since 3.0: SQLConf warns
    log4j = spark.sparkContext._jvm.org.apache.logging.log4j
    log4j.LogManager.getLogger("org.apache.spark.sql.execution.window.WindowExec").warn("another WindowExec message")
    mark("filter removed")
    context = log4j.LogManager.getContext(False)
    for name in BENIGN_SPARK_WARNINGS:
        context.getConfiguration().removeLogger(name)
    context.updateLoggers()
    assert len(build_user_index(df.select("user_id", "ts_ms")).collect()) == 2  # collect: count() prunes the window
    mark("end")
    spark.stop()
    """
)
BENIGN = "No Partition Defined for Window operation"


def _spark_warned(text: str) -> bool:
    """Spark's log4j printed the benign warning (this process's own DEBUG line, prefixed PY, names it too)."""
    return any(BENIGN in line and not line.startswith("PY ") for line in text.splitlines())


def _sections(console: str) -> dict[str, str]:
    parts = console.split("MARK ")
    return {p.split("\n", 1)[0]: p.split("\n", 1)[1] if "\n" in p else "" for p in parts[1:]} | {"start": parts[0]}


def test_only_the_key_indexing_warning_is_filtered_and_said_once_at_debug():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    sections = _sections(out.stderr)
    assert set(sections) == {"start", "indexing", "other warnings", "filter removed", "end"}, out.stderr[-4000:]
    shown = "".join(sections[k] for k in ("start", "indexing", "other warnings"))
    assert not _spark_warned(shown)
    other = sections["other warnings"]
    assert "WARN SQLConf" in other and "spark.sql.execution.arrow.enabled" in other  # Spark's other warnings show
    assert "WARN WindowExec: another WindowExec message" in other  # the same logger's other messages too
    assert _spark_warned(sections["filter removed"])  # the control: unfiltered, the indexing does warn
    said = "PY DEBUG captionrec.spark.session"
    debug = [ln for ln in out.stderr.splitlines() if ln.startswith(said) and BENIGN in ln]
    assert len(debug) == 1 and "global row_number on purpose" in debug[0], debug
