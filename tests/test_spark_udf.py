"""Per-worker model cache and device binding inside real Spark tasks."""

from __future__ import annotations

import os

import pandas as pd
from pyspark.sql import types as T

from captionrec.spark.udf import cached_model, gpu_resource_profile, map_in_pandas, supports_stage_scheduling, task_device

def _load_and_count(batches):
    for batch in batches:
        model = cached_model("test-model", lambda: {"pid": os.getpid(), "id": object()})
        yield pd.DataFrame({"pid": [os.getpid()] * len(batch), "model_pid": [model["pid"]] * len(batch),
                            "model_obj": [id(model["id"])] * len(batch), "device": [task_device()] * len(batch)})


def test_model_loads_once_per_worker_process(spark):
    df = spark.range(0, 400, numPartitions=16)
    schema = T.StructType([T.StructField("pid", T.LongType()), T.StructField("model_pid", T.LongType()),
                           T.StructField("model_obj", T.LongType()), T.StructField("device", T.StringType())])
    out = map_in_pandas(df, _load_and_count, schema).toPandas()
    assert len(out) == 400
    # every batch reused the model its own worker process built (one object per pid)
    assert (out["pid"] == out["model_pid"]).all()
    per_pid = out.groupby("pid")["model_obj"].nunique()
    assert (per_pid == 1).all()
    # 16 tasks ran on far fewer Python workers (worker reuse keeps the cache warm)
    assert out["pid"].nunique() <= 4
    assert set(out["device"]) == {"cpu"}  # no GPU here; on a GPU task it is cuda:<addr>


def test_stage_scheduling_detection_and_profile(spark):
    assert supports_stage_scheduling(spark) is False  # local[*] cannot take ResourceProfiles
    profile = gpu_resource_profile(0.5, task_cpus=1, executor_gpus=1)
    assert profile.taskResources["gpu"].amount == 0.5
    assert profile.executorResources["gpu"].amount == 1


# -- map_rows: declared Arrow types for any mix of rows -----------------------------------------------------

def _all_failed(rows):
    """Every row 'fails': only the key and a reason, every other column null (strings, ints, lists, maps)."""
    out = [{"item_id": r["item_id"], "probe_status": "corrupt"} for r in rows]
    yield out


def _nothing(rows):
    for _ in rows:
        pass
    yield []


def test_map_rows_keeps_declared_types_for_all_failed_and_empty_batches(spark):
    from captionrec import contracts as C
    from captionrec.spark.udf import map_rows

    df = spark.createDataFrame([(str(i), f"/nope/{i}.mp4") for i in range(6)], "item_id string, video_path string")
    failed = map_rows(df.repartition(2), _all_failed, C.schema(C.PROBE_ROWS))
    got = failed.collect()
    assert len(got) == 6 and {r["probe_status"] for r in got} == {"corrupt"}
    assert all(r["video_codec"] is None and r["width"] is None for r in got)
    assert dict(failed.dtypes)["video_codec"] == "string" and dict(failed.dtypes)["width"] == "int"

    empty = map_rows(df, _nothing, C.schema(C.CAPTIONS))
    assert empty.count() == 0 and empty.columns == list(C.columns(C.CAPTIONS))
    none = map_rows(df.limit(0), _all_failed, C.schema(C.PROBE_ROWS))
    assert none.count() == 0


def test_arrow_batch_rejects_undeclared_columns():
    import pytest

    from captionrec import contracts as C
    from captionrec.spark.udf import arrow_batch

    batch = arrow_batch([{"item_id": "1", "probe_status": "ok", "width": 2}], C.schema(C.PROBE_ROWS))
    assert batch.schema == C.schema(C.PROBE_ROWS)
    with pytest.raises(KeyError, match="widht"):
        arrow_batch([{"item_id": "1", "probe_status": "ok", "widht": 2}], C.schema(C.PROBE_ROWS))
