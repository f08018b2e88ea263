"""Every model UDF (caption video / audio, embed text / videomae / audio_raw) goes through the one model-map and
returns its declared Arrow schema for any mix of rows: an all-failed batch and an empty batch keep the types of
`contracts`. Real Spark, real tiny models, real (missing) files."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest

from captionrec import contracts as C
from captionrec.captioning.plan import plan_kind
from captionrec.config.caption import CaptionConfig, VideoCaptionConfig
from captionrec.config.embed import EmbedConfig, TextEmbedConfig
from captionrec.pipeline import embed
from captionrec.spark.modelmap import StageGpu, model_map
from captionrec.spark.udf import DeviceRule
from captionrec.transforms import caption as tc

CPU = StageGpu(None, DeviceRule("test"))


def _same_schema(df, name: str) -> None:
    want = C.spark_schema(name)
    assert [(f.name, f.dataType) for f in df.schema.fields] == [(f.name, f.dataType) for f in want.fields]


@pytest.fixture(scope="module")
def bad_items(spark):
    """Items whose files are all missing (and one without a path): every row of every batch fails."""
    rows = [(f"m{i}", f"/nowhere/m{i}.mp4", None, "1:2:ok") for i in range(5)] + [("empty", None, True, "-:-:ok")]
    return spark.createDataFrame(rows, "item_id string, video_path string, has_audio boolean, media_fingerprint string")


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_caption_udfs_all_failed_and_empty_batches(spark, tiny_dir, bad_items, kind):
    cfg = CaptionConfig(
        kinds=(kind,),
        tiny_models_dir=str(tiny_dir),
        video=VideoCaptionConfig(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4),
    )
    plan = plan_kind(cfg, kind)
    failed = tc.caption_items(bad_items, plan, CPU, partitions=2)
    _same_schema(failed, C.CAPTIONS)
    rows = {r["item_id"]: r for r in failed.collect()}
    assert set(rows) == {"m0", "m1", "m2", "m3", "m4", "empty"}
    assert {r["status"] for r in rows.values()} == {"skipped"} and {r["reason"] for r in rows.values()} == {
        "missing_file"
    }
    assert all(r["text"] is None and r["frames_used"] is None and r["sound_tags"] is None for r in rows.values())
    assert rows["m0"]["media_fingerprint"] == "1:2:ok" and rows["m0"]["captioner_version"] == plan.version
    empty = tc.caption_items(bad_items.limit(0), plan, CPU, partitions=2)
    _same_schema(empty, C.CAPTIONS)
    assert empty.count() == 0


@pytest.mark.parametrize("family", ["text", "videomae", "audio_raw"])
def test_embed_udfs_all_failed_and_empty_batches(spark, tiny_dir, family):
    cfg = EmbedConfig(
        text=TextEmbedConfig(model="tiny:text"),
        tiny_models_dir=str(tiny_dir),
        partitions=2,
        torch_threads=1,
        decode_threads=1,
    )
    fs = "title" if family == "text" else family
    cfg = replace(cfg, feature_sets=(fs,))
    specs = embed.encoder_specs(cfg)
    # text: blank texts make the encoder refuse every row; media: files that do not exist
    payload = "   " if family == "text" else "/nowhere/{}.mp4"
    rows = [(f"i{i}", fs, specs[family].resolved.model_id, "v1", payload.format(i)) for i in range(5)]
    todo = spark.createDataFrame(
        rows, "item_id string, feature_set string, model_id string, source_version string, payload string"
    )
    failed = embed.embed_todo(todo, specs, {fs: len(rows)}, CPU, cfg)
    _same_schema(failed, C.EMBED_ROWS)
    out = failed.collect()
    assert len(out) == 5 and all(r["vector"] is None and r["dim"] is None for r in out)
    assert {r["reason"] for r in out} == ({"embed_error"} if family == "text" else {"missing_file"})
    empty = embed.embed_todo(todo.limit(0), specs, {fs: 1}, CPU, cfg)
    _same_schema(empty, C.EMBED_ROWS)
    assert empty.count() == 0


def _construct(device):
    return {"device": device}


def _apply(models, rows):
    for row in rows:
        yield [{"item_id": row["item_id"], "probe_status": models["device"]}]


def test_model_map_constructs_on_the_task_device(spark):
    """construct(device) runs in the worker on the task's device; apply streams the rows through its result;
    partitions without rows produce nothing."""
    df = spark.createDataFrame([("a",), ("b",)], "item_id string").repartition(4)  # some partitions are empty
    transform = model_map(_construct, _apply, C.schema(C.PROBE_ROWS), key="test-map", gpu=CPU, torch_threads=1)
    out = transform(df).collect()
    assert sorted((r["item_id"], r["probe_status"]) for r in out) == [("a", "cpu"), ("b", "cpu")]


# ------------------------------------------------- one stage's models at a time (issue 19, item 5)
CAPTION = StageGpu(None, DeviceRule("caption"))
EMBED = StageGpu(None, DeviceRule("embed"))


def _stage_model(name, device):
    return {"name": name, "device": device}


def _echo(models, rows):
    for row in rows:
        yield [{"item_id": row["item_id"], "probe_status": models["name"]}]


def _cache_state(rows):
    from captionrec.spark.udf import model_cache_state

    for _ in rows:
        pass
    state = model_cache_state()
    yield [
        {
            "pid": state["pid"],
            "models": sorted(f"{k}={v}" for k, v in state["models"].items()),
            "released": state["released"],
        }
    ]


def _workers(spark):
    """Each Python worker's cache as a real Spark job sees it: {pid: ({key@device: stage}, released keys)}."""
    import pyarrow as pa

    from captionrec.spark.udf import map_rows

    schema = pa.schema([("pid", pa.int64()), ("models", pa.list_(pa.string())), ("released", pa.list_(pa.string()))])
    out = {}
    for r in map_rows(spark.range(0, 8, numPartitions=8), _cache_state, schema).collect():
        out[r["pid"]] = (dict(m.split("=", 1) for m in r["models"]), list(r["released"]))
    return out


def test_a_stage_releases_the_previous_stages_models_in_its_workers(spark):
    """caption's model-map, then embed's, in the same Python workers (local Spark reuses them): a worker that runs
    an embed task first releases caption's models, so no worker ever holds both; after embed's write the driver's
    release job drops embed's models too."""
    from captionrec.spark.modelmap import release_models

    df = spark.createDataFrame([(f"i{i}",) for i in range(16)], "item_id string").repartition(8)
    caption = model_map(
        partial(_stage_model, "qwen-vl"), _echo, C.schema(C.PROBE_ROWS), key="mm-caption", gpu=CAPTION, torch_threads=1
    )
    assert {r["probe_status"] for r in caption(df).collect()} == {"qwen-vl"}
    after_caption = _workers(spark)
    holding = [m for m, _ in after_caption.values() if m]
    assert holding and all(m == {"mm-caption@cpu": "caption"} for m in holding), after_caption

    embed = model_map(
        partial(_stage_model, "bge"), _echo, C.schema(C.PROBE_ROWS), key="mm-embed", gpu=EMBED, torch_threads=1
    )
    assert {r["probe_status"] for r in embed(df).collect()} == {"bge"}
    after_embed = _workers(spark)
    for pid, (models, _released) in after_embed.items():
        assert set(models.values()) <= {"embed"}, (pid, models)  # never two stages' models in one worker
    embedders = {pid: rel for pid, (models, rel) in after_embed.items() if "mm-embed@cpu" in models}
    # a worker that held caption's model and ran embed released it first
    assert embedders and all(
        "mm-caption@cpu" in rel for pid, rel in embedders.items() if after_caption.get(pid, ({},))[0]
    )
    assert any("mm-caption@cpu" in rel for rel in embedders.values())

    released = release_models(spark, EMBED)  # the driver, after the stage's write
    assert released and all(keys == ["mm-embed@cpu"] for keys in released.values())
    assert all(not models for models, _ in _workers(spark).values())
