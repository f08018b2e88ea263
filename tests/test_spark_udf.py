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
