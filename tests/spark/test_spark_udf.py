"""Per-worker model cache and device binding inside real Spark tasks."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from captionrec.spark.udf import (
    DeviceRule,
    GpuBindingError,
    cached_model,
    cached_model_keys,
    choose_device,
    clear_model_cache,
    gpu_resource_profile,
    map_rows,
    supports_stage_scheduling,
    task_device,
)

MODEL_ROWS = pa.schema(
    [("pid", pa.int64()), ("model_pid", pa.int64()), ("model_obj", pa.int64()), ("device", pa.string())]
)


def _load_and_count(rows):
    for _row in rows:
        model = cached_model("test-model", lambda: {"pid": os.getpid(), "id": object()})
        yield [{"pid": os.getpid(), "model_pid": model["pid"], "model_obj": id(model["id"]), "device": task_device()}]


def test_model_loads_once_per_worker_process(spark):
    df = spark.range(0, 400, numPartitions=16)
    out = map_rows(df, _load_and_count, MODEL_ROWS).toPandas()
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


# -- the device of a task, without guesses (pure: what Spark, torch and the environment report) ------------------

GPU_ON = DeviceRule("caption", enabled=True, scheduled=True)


def test_device_choice_follows_the_assigned_gpu():
    assert choose_device(GPU_ON, ["1"], True, 2, None) == "cuda:1"
    # YARN / Kubernetes isolation: the physical address is mapped to its index among the visible devices
    assert choose_device(GPU_ON, ["3"], True, 2, "2,3") == "cuda:1"
    assert choose_device(DeviceRule("caption"), ["0"], True, 1, None) == "cpu"  # GPUs disabled: the CPU
    # a master without GPU scheduling (local[*]) with GPUs enabled: the machine's first visible GPU
    assert choose_device(DeviceRule("caption", enabled=True), [], True, 1, "5") == "cuda:0"


def test_device_choice_errors_name_the_settings():
    with pytest.raises(GpuBindingError, match=r"spark.task.resource.gpu.amount.*caption.gpu.task_amount"):
        choose_device(GPU_ON, [], True, 2, None)  # GPU profile attached, but no address: no plain "cuda"
    with pytest.raises(GpuBindingError, match=r"CUDA_VISIBLE_DEVICES='2,3' does not list it"):
        choose_device(GPU_ON, ["0"], True, 2, "2,3")  # no fallback to index 0
    with pytest.raises(GpuBindingError, match="sees 2 CUDA device"):
        choose_device(GPU_ON, ["7"], True, 2, None)
    with pytest.raises(GpuBindingError, match=r"embed.gpu.on_missing_cuda=cpu"):
        choose_device(DeviceRule("embed", enabled=True, scheduled=True), ["0"], False, 0, None)
    with pytest.raises(GpuBindingError, match=r"caption.gpu.on_missing_cuda=cpu"):
        choose_device(DeviceRule("caption", enabled=True), [], False, 0, None)
    fake = DeviceRule("caption", enabled=True, scheduled=True, on_missing_cuda="cpu")
    assert choose_device(fake, ["1"], False, 0, None) == "cpu"  # fake GPUs in tests, set explicitly


def test_model_cache_keeps_one_copy_per_gpu():
    clear_model_cache()
    loads = []

    def load(name, device):
        loads.append((name, device))
        return {"name": name, "device": device}

    try:
        a0 = cached_model("video", lambda: load("video", "cuda:0"), device="cuda:0", evict="caption")
        a1 = cached_model("video", lambda: load("video", "cuda:1"), device="cuda:1", evict="caption")
        # the worker serves both GPUs again: no reload ping-pong
        assert cached_model("video", lambda: load("video", "cuda:0"), device="cuda:0", evict="caption") is a0
        assert cached_model("video", lambda: load("video", "cuda:1"), device="cuda:1", evict="caption") is a1
        # the next caption kind on cuda:0 drops the video models there only; cuda:1 keeps its copy
        cached_model("audio", lambda: load("audio", "cuda:0"), device="cuda:0", evict="caption")
        assert sorted(cached_model_keys()) == ["audio@cuda:0", "video@cuda:1"]
        # models outside the group and CPU models are never evicted
        cached_model("text", lambda: load("text", "cuda:0"), device="cuda:0")
        cached_model("video", lambda: load("video", "cpu"), device="cpu", evict="caption")
        cached_model("audio", lambda: load("audio", "cpu"), device="cpu", evict="caption")
        assert "text@cuda:0" in cached_model_keys() and "video@cpu" in cached_model_keys()
        assert loads.count(("video", "cuda:0")) == 1 and loads.count(("video", "cuda:1")) == 1
    finally:
        clear_model_cache()
