"""Losing less on a crash: the caption stage commits every N items (and about every T seconds), so a run killed
mid-kind keeps its finished chunks, and a re-run redoes only what was not committed, duplicating nothing."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from captionrec.config.caption import CaptionConfig, VideoCaptionConfig
from captionrec.config.schema import Config, StorageConfig
from captionrec.pipeline import caption as pc
from captionrec.spark.commits import CommitPacer

N_ITEMS, EVERY = 8, 2

SCRIPT = textwrap.dedent(
    """
    import sys
    from captionrec.config.schema import SparkConfig
    from captionrec.pipeline import caption as pc
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store
    sys.path.insert(0, sys.argv[3])
    from test_caption_commits import stage_config

    spark = get_spark(SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="1g"))
    cfg = stage_config(sys.argv[1], sys.argv[2])
    pc.run(cfg, spark, open_store(spark, cfg.storage))
    print("FINISHED", flush=True)
    """
)


def stage_config(lake: str, tiny_dir: str) -> Config:
    caption = CaptionConfig(
        kinds=("video",),
        tiny_models_dir=tiny_dir,
        partitions=1,
        items_per_batch=2,
        commit_every=EVERY,
        commit_seconds=0,
        video=VideoCaptionConfig(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4, batch_size=2),
    )
    return Config(storage=StorageConfig(backend="delta-rs", root=lake), caption=caption)


def _items(spark, clips: dict[str, Path]):
    now = dt.datetime.now(dt.UTC)
    rows = [
        dict(
            item_id=k,
            title=k,
            video_path=str(p),
            has_audio=True,
            size_bytes=p.stat().st_size,
            probe_status="ok",
            ingested_at=now,
        )
        for k, p in clips.items()
    ]
    return spark.createDataFrame(
        pd.DataFrame(rows),
        "item_id string, title string, video_path string, "
        "has_audio boolean, size_bytes long, probe_status string, ingested_at timestamp",
    )


@pytest.mark.slow  # a second JVM + Python workers + a SIGKILL: ~1 min on an idle 2-core machine, 4-5 min loaded
def test_killed_run_keeps_its_commits_and_the_rerun_redoes_only_the_rest(spark, tmp_path, tiny_dir):
    from captionrec.tables import open_store
    from captionrec.testing.media_fixtures import make_clip

    clips = {f"c{i:02d}": make_clip(tmp_path / "media" / f"c{i:02d}.mp4", duration_s=1.0) for i in range(N_ITEMS)}
    cfg = stage_config(str(tmp_path / "lake"), str(tiny_dir))
    store = open_store(spark, cfg.storage)
    store.upsert("items", _items(spark, clips), ["item_id"])
    script = tmp_path / "run_caption.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, str(script), cfg.storage.root, str(tiny_dir), str(Path(__file__).parent)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    first_commit = tmp_path / "lake" / "captions" / "_delta_log" / f"{0:020d}.json"
    try:
        deadline = time.monotonic() + 400
        while not first_commit.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first_commit.exists(), (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the run, its JVM and its Python workers: a hard crash
        proc.wait(timeout=60)
    assert "FINISHED" not in (tmp_path / "run.log").read_text(), "the run finished before it could be killed"

    committed = store.read("captions").toPandas()
    # whole chunks only: the MERGE of a chunk is one atomic commit, the chunk in flight is lost
    assert 0 < len(committed) < N_ITEMS and len(committed) % EVERY == 0
    rerun = replace(cfg, caption=replace(cfg.caption, commit_every=0, commit_seconds=0, partitions=2))  # one chunk
    again = pc.run(rerun, spark, store)["kinds"]["video"]
    # the re-run captions exactly what was not committed: nothing committed is redone
    assert again["pending"] == again["inserted"] == N_ITEMS - len(committed) and again["updated"] == 0
    final = store.read("captions").toPandas()
    assert len(final) == N_ITEMS and not final.duplicated(["item_id", "kind", "captioner_version"]).any()
    kept = final.set_index("item_id").loc[committed["item_id"], "created_at"]
    assert (kept.values == committed.set_index("item_id")["created_at"].values).all()  # untouched


def test_commit_pacer_bounds_items_and_seconds():
    pacer = CommitPacer(every=100, seconds=10)
    assert pacer.size(250) == 100  # before the pace is known: the count bound
    pacer.done(100, 50.0)  # 2 items/s -> 20 items in 10 s
    assert pacer.size(150) == 20 and pacer.size(5) == 5
    timed = CommitPacer(every=0, seconds=10, first=8)
    assert timed.size(1000) == 8  # no count bound: a first chunk measures the pace
    timed.done(8, 1.0)
    assert timed.size(1000) == 80
    assert CommitPacer(every=0, seconds=0).size(1000) == 1000  # both bounds off: one commit
    assert [len(c) for c in CommitPacer(every=4, seconds=0).chunks(list(range(10)))] == [4, 4, 2]
