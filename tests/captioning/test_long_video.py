"""Whole-video captions (`caption.video.segments`, kind `video_full`, feature set `mllm_video_full`).

The window plan; windowed decoding of real MP4s (the same frames as a fresh `sample_frames` per window); the
Spark-free segment core with the tiny Qwen2.5-VL; the caption stage on a real local Spark + Delta (delta-rs)
with bad clips and a re-run; the embed stage turning the combined captions into `mllm_video_full` vectors."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from captionrec import contracts as C
from captionrec.captioning.core import caption_rows, load_models
from captionrec.captioning.plan import plan_kind
from captionrec.config.caption import CaptionConfig, SegmentsConfig, VideoCaptionConfig
from captionrec.media import MediaError, sample_frames
from captionrec.media.windows import MIN_TAIL_S, open_windows, plan_windows

LONG_S = 150.0  # a 2.5-minute clip: five 30 s windows


# ------------------------------------------------------------------------------------------------ plan


def _starts_lengths(plan):
    return [w.start_s for w in plan.windows], [w.length_s for w in plan.windows]


def test_plan_windows_length_stride_and_tail():
    p = plan_windows(100.0, window_s=30.0, stride_s=30.0, max_windows=10)
    assert _starts_lengths(p) == ([0.0, 30.0, 60.0, 90.0], [30.0, 30.0, 30.0, 10.0])
    assert [w.index for w in p.windows] == [0, 1, 2, 3]
    assert not p.truncated and p.covered_s == 100.0
    # overlapping windows: none starts once the previous one reaches the end
    p = plan_windows(70.0, window_s=30.0, stride_s=20.0, max_windows=10)
    assert _starts_lengths(p) == ([0.0, 20.0, 40.0], [30.0, 30.0, 30.0]) and not p.truncated
    # a duration-rounding remainder is no window of its own
    p = plan_windows(60.0 + MIN_TAIL_S / 2, window_s=30.0, stride_s=30.0, max_windows=10)
    assert _starts_lengths(p)[0] == [0.0, 30.0] and not p.truncated


def test_plan_windows_short_clip_is_one_window():
    p = plan_windows(12.5, window_s=30.0, stride_s=30.0, max_windows=4)
    assert _starts_lengths(p) == ([0.0], [12.5]) and not p.truncated and p.covered_s == 12.5


def test_plan_windows_long_clip_is_truncated_at_the_cap():
    p = plan_windows(600.0, window_s=30.0, stride_s=30.0, max_windows=4)
    assert len(p.windows) == 4 and p.truncated and p.covered_s == 120.0
    assert plan_windows(120.0, 30.0, 30.0, 4).truncated is False  # exactly covered


@pytest.mark.parametrize(
    "args",
    [
        (100.0, 30.0, 40.0, 4),
        (100.0, 0.0, 0.0, 4),
        (100.0, 30.0, 30.0, 0),
        (0.0, 30.0, 30.0, 4),
        (float("nan"), 30.0, 30.0, 4),
    ],
)
def test_plan_windows_rejects_bad_settings(args):
    with pytest.raises(ValueError):
        plan_windows(*args)


def test_segments_config_rejects_gaps():
    with pytest.raises(ValueError, match="stride_s"):
        SegmentsConfig(window_s=10.0, stride_s=20.0)
    assert CaptionConfig().run_kinds == ("video", "audio")  # off by default
    on = CaptionConfig(video=VideoCaptionConfig(segments=SegmentsConfig(enabled=True)))
    assert on.run_kinds == ("video", "audio", C.VIDEO_FULL)


def test_segments_config_from_overrides():
    from captionrec.config import ConfigError, load_config

    cfg = load_config(
        "local",
        ["video.segments.enabled=true", "video.segments.max_windows=6", "video.segments.combine=summary"],
        stage="caption",
    )
    seg = cfg.caption.video.segments
    assert (seg.enabled, seg.max_windows, seg.combine, seg.window_s) == (True, 6, "summary", 30.0)
    with pytest.raises(ConfigError, match="combine"):
        load_config("local", ["caption.video.segments.combine=average"])
    with pytest.raises(ConfigError, match="mllm_video_fulll"):
        load_config("local", ["embed.feature_sets=mllm_video_fulll"])
    assert load_config("local", ["embed.feature_sets=mllm_video_full"]).embed.feature_sets == ("mllm_video_full",)


# ------------------------------------------------------------------------------------------- media


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    from captionrec.testing.media_fixtures import make_clip, make_damaged, make_truncated

    d = tmp_path_factory.mktemp("long")
    long = make_clip(d / "long.mp4", duration_s=LONG_S, size=(160, 90), fps=10, keyint=20, audio=None)
    short = make_clip(d / "short.mp4", duration_s=12.0, size=(160, 90), fps=10, keyint=20, audio=None)
    ten = make_clip(d / "ten.mp4", duration_s=10.0, size=(160, 90), fps=25, keyint=25, audio=None)
    return {
        "long": str(long),
        "short": str(short),
        "corrupt": str(make_truncated(long, d / "corrupt.mp4", keep_fraction=0.4)),
        "damaged": str(make_damaged(ten, d / "damaged.mp4", upto=0.9)),
    }


def test_windowed_decoding_matches_a_fresh_decode_per_window(clips):
    with open_windows(clips["long"], window_s=30.0, stride_s=30.0, max_windows=10) as wv:
        assert len(wv.plan.windows) == 5 and not wv.plan.truncated
        got = list(wv.samples(num_frames=3, max_pixels=64 * 36))
    assert [w.index for w, _ in got] == [0, 1, 2, 3, 4]
    for w, sample in got:
        assert not isinstance(sample, MediaError)
        assert sample.frames.shape == (3, 36, 64, 3)
        assert np.all((sample.times_s >= w.start_s - 0.1) & (sample.times_s < w.end_s + 0.1))
        fresh = sample_frames(clips["long"], num_frames=3, window_s=w.length_s, start_s=w.start_s, max_pixels=64 * 36)
        np.testing.assert_array_equal(sample.times_s, fresh.times_s)
        np.testing.assert_array_equal(sample.frames, fresh.frames)  # seeking inside one open = a fresh decode


def test_windowed_decoding_without_a_container_index(clips, tmp_path):
    """MPEG-TS has no index to seek by: each window re-opens and reads through, same frames as a fresh decode."""
    from captionrec.testing.media_fixtures import run_ffmpeg

    ts = tmp_path / "long.ts"
    run_ffmpeg(["-i", clips["long"], "-c", "copy", "-t", "70", str(ts)])
    with open_windows(str(ts), window_s=30.0, stride_s=20.0, max_windows=10) as wv:
        assert [w.start_s for w in wv.plan.windows] == [0.0, 20.0, 40.0]  # overlapping windows
        got = list(wv.samples(num_frames=2, max_pixels=64 * 36))
    for w, sample in got:
        fresh = sample_frames(str(ts), num_frames=2, window_s=w.length_s, start_s=w.start_s, max_pixels=64 * 36)
        np.testing.assert_array_equal(sample.times_s, fresh.times_s)
        np.testing.assert_array_equal(sample.frames, fresh.frames)


def test_windowed_decoding_bad_files(clips, tmp_path):
    with pytest.raises(MediaError) as exc:
        with open_windows(clips["corrupt"], 30.0, 30.0, 4):
            pass
    assert exc.value.reason == C.CORRUPT
    with pytest.raises(MediaError) as exc:
        with open_windows(str(tmp_path / "nope.mp4"), 30.0, 30.0, 4):
            pass
    assert exc.value.reason == C.MISSING_FILE


# ------------------------------------------------------------------------------------- Spark-free core


def _cfg(tiny_dir: Path, **seg) -> CaptionConfig:
    segments = SegmentsConfig(enabled=True, window_s=30.0, stride_s=30.0, **seg)
    return CaptionConfig(
        tiny_models_dir=str(tiny_dir),
        kinds=(),
        partitions=1,
        items_per_batch=8,
        video=VideoCaptionConfig(
            num_frames=4, max_pixels=4 * 28 * 28, max_new_tokens=6, batch_size=4, segments=segments
        ),
    )


@pytest.fixture(scope="module")
def models(tiny_dir):
    plan = plan_kind(_cfg(tiny_dir), C.VIDEO_FULL)
    return load_models(plan, "cpu")


def _core(plan, models, items: dict[str, str]) -> dict[str, dict]:
    rows = [
        r
        for out in caption_rows(
            [{"item_id": k, "video_path": v, "has_audio": False, "media_fingerprint": "f"} for k, v in items.items()],
            plan,
            models,
            prefetch=False,
        )
        for r in out
    ]
    assert len(rows) == len(items) and all(set(r) == set(C.columns(C.CAPTIONS)) for r in rows)
    return {r["item_id"]: r for r in rows}


def test_core_one_caption_per_window_combined_in_order(tiny_dir, models, clips):
    plan = plan_kind(_cfg(tiny_dir, max_windows=10), C.VIDEO_FULL)
    assert plan.version.startswith("video_full-") and plan.model_map == {"vlm": "tiny:qwen2_5_vl"}
    rows = _core(
        plan,
        models,
        {"long": clips["long"], "short": clips["short"], "corrupt": clips["corrupt"], "damaged": clips["damaged"]},
    )
    long = rows["long"]
    assert long["status"] == C.OK and long["kind"] == C.VIDEO_FULL and long["captioner_version"] == plan.version
    segs = long["segments"]
    assert [s["index"] for s in segs] == [0, 1, 2, 3, 4]
    assert [(s["start_s"], s["end_s"]) for s in segs] == [
        (0.0, 30.0),
        (30.0, 60.0),
        (60.0, 90.0),
        (90.0, 120.0),
        (120.0, 150.0),
    ]
    assert all(s["reason"] is None and s["frames_used"] == 4 and s["text"] for s in segs)
    assert long["text"] == " ".join(s["text"] for s in segs)  # concat: time order
    assert long["windows_used"] == 5 and long["truncated"] is False and long["covered_s"] == LONG_S
    assert long["frames_used"] == 20 and len(long["frame_times_s"]) == 20
    assert long["frame_times_s"] == sorted(long["frame_times_s"]) and long["frame_times_s"][-1] > 120.0
    short = rows["short"]
    assert short["status"] == C.OK and short["windows_used"] == 1 and len(short["segments"]) == 1
    assert (
        short["segments"][0]["end_s"] == pytest.approx(12.0, abs=0.2) and short["text"] == short["segments"][0]["text"]
    )
    assert (rows["corrupt"]["status"], rows["corrupt"]["reason"]) == (C.SKIPPED, C.CORRUPT)
    assert rows["corrupt"]["text"] is None and rows["corrupt"]["error"]
    dam = rows["damaged"]  # packet errors lost the window: a transient error row with the window's reason
    assert (dam["status"], dam["reason"]) == (C.ERROR, C.DECODE_ERROR) and "window 0" in dam["error"]
    assert dam["segments"][0]["reason"] == C.DECODE_ERROR


def test_core_truncates_at_the_cap_and_summary_pass(tiny_dir, models, clips):
    plan = plan_kind(_cfg(tiny_dir, max_windows=3, combine="summary", summary_max_new_tokens=8), C.VIDEO_FULL)
    assert plan.summary_prompt and "{segments}" in plan.summary_prompt
    other = plan_kind(_cfg(tiny_dir, max_windows=3), C.VIDEO_FULL)
    assert other.version != plan.version  # combine is part of the captioner version
    row = _core(plan, models, {"long": clips["long"]})["long"]
    assert row["windows_used"] == 3 and row["truncated"] is True and row["covered_s"] == 90.0
    assert [s["index"] for s in row["segments"]] == [0, 1, 2]
    assert row["status"] in (C.OK, C.SKIPPED)  # a random model may write nothing: then it says so
    if row["status"] == C.OK:
        joined = " ".join(s["text"] for s in row["segments"])
        assert row["text"] and row["text"] != joined  # the summary pass wrote its own text
    else:
        assert row["reason"] == C.EMPTY_OUTPUT


# -------------------------------------------------------------------------------- stage + embed (Spark)

ITEMS_SCHEMA = (
    "item_id string, title string, video_path string, has_audio boolean, size_bytes long, "
    "video_mtime timestamp, probe_status string, probe_detail string"
)


@pytest.fixture(scope="module")
def stage(spark, tmp_path_factory, tiny_dir, clips):
    from captionrec.config.schema import Config, StorageConfig
    from captionrec.pipeline import caption as pc
    from captionrec.tables import open_store

    root = tmp_path_factory.mktemp("lake")
    paths = {k: clips[k] for k in ("long", "short", "corrupt", "damaged")}
    paths["missing"] = str(root / "nowhere.mp4")
    rows = []
    for k, p in paths.items():
        st = Path(p).stat() if Path(p).exists() else None
        rows.append(
            (
                k,
                f"title {k}",
                p,
                False,
                st.st_size if st else None,
                dt.datetime.fromtimestamp(st.st_mtime, dt.UTC) if st else None,
                "ok",
                None,
            )
        )
    cfg = Config(storage=StorageConfig(backend="delta-rs", root=str(root)), caption=_cfg(tiny_dir, max_windows=4))
    store = open_store(spark, cfg.storage)
    store.upsert(C.ITEMS, spark.createDataFrame(rows, ITEMS_SCHEMA), keys=["item_id"])
    first = pc.run(cfg, spark, store)
    v1 = store.version(C.CAPTIONS)
    second = pc.run(cfg, spark, store)
    return {"cfg": cfg, "store": store, "first": first, "second": second, "v1": v1, "root": root}


def test_stage_writes_window_and_combined_captions_and_reruns_write_nothing(stage):
    store, first, second = stage["store"], stage["first"], stage["second"]
    assert list(first["kinds"]) == [C.VIDEO_FULL]  # caption.kinds=() : only the whole-video captions
    info = first["kinds"][C.VIDEO_FULL]
    assert info["pending"] == 5 and info["inserted"] == 5 and info["truncated"] == 1
    assert info["statuses"] == {C.OK: 2, C.SKIPPED: 2, C.ERROR: 1}
    caps = store.read(C.CAPTIONS).toPandas().set_index("item_id")
    assert len(caps) == 5 and set(caps["kind"]) == {C.VIDEO_FULL}
    long = caps.loc["long"]
    assert long["truncated"] and long["windows_used"] == 4 and long["covered_s"] == 120.0
    assert [s["index"] for s in long["segments"]] == [0, 1, 2, 3]
    assert long["text"] == " ".join(s["text"] for s in long["segments"])
    assert not caps.loc["short"]["truncated"] and caps.loc["short"]["windows_used"] == 1
    assert (caps.loc["corrupt"]["status"], caps.loc["corrupt"]["reason"]) == (C.SKIPPED, C.CORRUPT)
    assert (caps.loc["missing"]["status"], caps.loc["missing"]["reason"]) == (C.SKIPPED, C.MISSING_FILE)
    assert (caps.loc["damaged"]["status"], caps.loc["damaged"]["reason"]) == (C.ERROR, C.DECODE_ERROR)
    # re-run: the transient error is retried, fails the same way and is not rewritten; nothing else is pending
    again = second["kinds"][C.VIDEO_FULL]
    assert again["pending"] == 1 and again["retried"] == 1 and again["inserted"] == again["updated"] == 0
    assert again["commits"] == 0 and store.version(C.CAPTIONS) == stage["v1"]
    assert len(store.read(C.CAPTIONS).toPandas()) == 5


def test_embed_turns_combined_captions_into_mllm_video_full(stage, spark, tiny_dir):
    from captionrec.config.embed import EmbedConfig, TextEmbedConfig
    from captionrec.pipeline import embed

    assert "mllm_video_full" not in EmbedConfig().feature_sets  # opt-in: no caption exists unless segments are on
    ecfg = EmbedConfig(
        feature_sets=("mllm_video_full",),
        text=TextEmbedConfig(model="tiny:text", batch_size=8),
        tiny_models_dir=str(tiny_dir),
        partitions=1,
        torch_threads=1,
        decode_threads=1,
    )
    store = stage["store"]
    summary = embed.run(replace(stage["cfg"], embed=ecfg), spark, store)
    assert summary is not None
    feats = store.read(C.ITEM_FEATURES).toPandas().set_index("item_id")
    assert set(feats.index) == {"long", "short"} and set(feats["feature_set"]) == {"mllm_video_full"}
    vecs = np.stack(feats["vector"].to_numpy())
    assert vecs.shape[0] == 2 and np.all(np.isfinite(vecs)) and np.all(np.abs(vecs).sum(axis=1) > 0)
    caps = store.read(C.CAPTIONS).toPandas().set_index("item_id")
    assert feats.loc["long"]["source_version"].startswith(caps.loc["long"]["captioner_version"] + ":")
    errors = store.read(C.FEATURE_ERRORS).toPandas().set_index("item_id")["reason"].to_dict()
    assert errors == {
        "corrupt": "caption_corrupt",
        "missing": "caption_missing_file",
        "damaged": "caption_decode_error",
    }
