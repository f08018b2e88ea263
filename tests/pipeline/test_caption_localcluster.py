"""The caption stage's GPU scheduling plumbing on `local-cluster[2,1,1024]` with fake GPUs.

A discovery script reports GPU addresses; `caption.gpu.enabled` attaches a ResourceProfile asking for one GPU per
task; the workers see their assigned address through `TaskContext.resources()["gpu"]` (recorded in
`captions.task_gpus`) and, with no CUDA here, run on the CPU only because `caption.gpu.on_missing_cuda=cpu` says
so (without it the task fails with an error naming that setting). The same stage without the profile gets no
GPU. Runs in a subprocess: one JVM per process, and the suite's session-scoped `local[2]` may already exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, sys
    import pandas as pd
    from dataclasses import replace
    from captionrec.captioning.plan import plan_kind
    from captionrec.config.caption import CaptionConfig, GpuConfig, VideoCaptionConfig
    from captionrec.config.schema import Config, SparkConfig, StorageConfig
    from captionrec.pipeline import caption as pc
    from captionrec.spark.modelmap import StageGpu, stage_gpu
    from captionrec.spark.session import get_spark
    from captionrec.spark.udf import DeviceRule
    from captionrec.tables import open_store
    from captionrec.transforms import caption as tc
    from captionrec.testing.media_fixtures import make_clip

    root, discovery, tiny_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    clips = {f"c{i}": str(make_clip(f"{root}/media/c{i}.mp4", duration_s=1.0, size=(160, 90) if i % 2 else (90, 160)))
             for i in range(4)}
    spark = get_spark(SparkConfig(master="local-cluster[2,1,1024]", shuffle_partitions=2, driver_memory="1g", conf={
        "spark.executor.memory": "1g",
        "spark.worker.resource.gpu.amount": "2",
        "spark.worker.resource.gpu.discoveryScript": discovery,
        "spark.executor.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": discovery,
        "spark.task.maxFailures": "1",  # the strict case fails once, not four times
    }))
    caption = CaptionConfig(
        kinds=("video",), tiny_models_dir=tiny_dir, partitions=2, items_per_batch=2,
        video=VideoCaptionConfig(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4, batch_size=2),
        gpu=GpuConfig(enabled=True, task_amount=1.0, task_cpus=1, on_missing_cuda="cpu"),  # fake GPUs, no CUDA
    )
    cfg = Config(storage=StorageConfig(backend="delta-rs", root=f"{root}/lake"), caption=caption)
    store = open_store(spark, cfg.storage)
    now = dt.datetime.now(dt.timezone.utc)
    items = spark.createDataFrame(pd.DataFrame([
        dict(item_id=k, title=k, video_path=v, duration_s=None, width=None, height=None, fps=None, has_audio=None,
             video_codec=None, audio_codec=None, size_bytes=None, probe_status="ok", ingested_at=now)
        for k, v in clips.items()]),
        schema="item_id string, title string, video_path string, duration_s double, width int, height int, "
               "fps double, has_audio boolean, video_codec string, audio_codec string, size_bytes long, "
               "probe_status string, ingested_at timestamp")
    store.upsert("items", items, ["item_id"])
    gpu = stage_gpu(spark, caption.gpu, "caption")
    profile = gpu.profile
    summary = pc.run(cfg, spark, store)
    again = pc.run(cfg, spark, store)
    caps = store.read("captions").select("item_id", "status", "task_gpus", "device").toPandas()
    plan = plan_kind(caption, "video")
    no_gpu = StageGpu(None, DeviceRule("caption", enabled=True, scheduled=False, on_missing_cuda="cpu"))
    no_profile = tc.caption_items(store.read("items"), plan, no_gpu).select("task_gpus").toPandas()
    strict = StageGpu(profile, replace(gpu.rule, on_missing_cuda="error"))  # the default: no silent CPU
    try:
        tc.caption_items(store.read("items").limit(1), plan, strict, partitions=1).collect()
        strict_error = None
    except Exception as exc:
        strict_error = str(exc)
    print(json.dumps({
        "master": spark.sparkContext.master,
        "profile_gpus": profile.taskResources["gpu"].amount if profile is not None else None,
        "summary": summary, "again": again,
        "captions": caps.to_dict("records"),
        "no_profile_gpus": no_profile["task_gpus"].tolist(),
        "rule": [gpu.rule.enabled, gpu.rule.scheduled],
        "strict_error": strict_error,
    }, default=str))
    spark.stop()
    """
)


@pytest.mark.slow  # ~100 s (a second JVM with two executors); the standalone-cluster tests cover it too
@pytest.mark.localcluster
def test_gpu_resource_profile_on_local_cluster(tmp_path, tiny_dir):
    discovery = tmp_path / "gpus.sh"
    discovery.write_text('#!/bin/sh\necho \'{"name": "gpu", "addresses": ["0", "1"]}\'\n')
    discovery.chmod(0o755)
    script = tmp_path / "run_localcluster.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(discovery), str(tiny_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["master"] == "local-cluster[2,1,1024]"
    assert out["profile_gpus"] == 1.0
    caps = out["captions"]
    assert sorted(c["item_id"] for c in caps) == ["c0", "c1", "c2", "c3"]
    assert all(c["status"] == "ok" for c in caps)
    # every task got a GPU address from the profile; without CUDA the worker runs on the CPU
    assert all(c["task_gpus"] in ("0", "1") for c in caps)
    assert {c["device"] for c in caps} == {"cpu"}
    assert out["summary"]["kinds"]["video"]["inserted"] == 4
    assert out["again"]["kinds"]["video"]["pending"] == 0  # the re-run adds nothing
    # the same stage without the profile: no GPU is assigned to its tasks
    assert out["no_profile_gpus"] == [None] * 4
    assert out["rule"] == [True, True]  # the profile schedules GPUs: a task without one would be an error
    # a GPU assigned while CUDA is unavailable is an error naming the setting, unless on_missing_cuda=cpu
    assert out["strict_error"] and "caption.gpu.on_missing_cuda=cpu" in out["strict_error"]
