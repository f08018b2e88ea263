"""The `av` caption kind: one Qwen2.5-Omni pass over a clip's frames and soundtrack (tiny random model, real MP4s).

Spark-free core first (decode -> batch -> model -> rows, failures per item), then the caption stage on a real local
Spark + Delta (delta-rs) tables (idempotent re-runs, a prompt change re-captions av only), then the embed stage
turning av captions into `mllm_omni` vectors."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.captioning.core import caption_rows, load_models
from captionrec.captioning.plan import captioner_settings, captioner_version, check_kinds, plan_kind
from captionrec.config.caption import AvCaptionConfig, CaptionConfig, VideoCaptionConfig
from captionrec.testing import media_fixtures as mf

OMNI = "tiny:qwen2_5_omni"
ITEMS_SCHEMA = (
    "item_id string, title string, video_path string, has_audio boolean, size_bytes long, "
    "video_mtime timestamp, probe_status string"
)

# case -> (status, reason) under the default `without_audio: skip`
EXPECTED = {
    "tone": ("ok", None),
    "tone_long": ("ok", None),
    "silence": ("ok", None),  # a silent track is still a track: the model hears the silence
    "no_audio": ("skipped", "no_audio_stream"),
    "audio_only": ("skipped", "no_video_stream"),
    "truncated": ("skipped", "corrupt"),
    "zero_byte": ("skipped", "empty_file"),
    "missing": ("skipped", "missing_file"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("omni_media")
    tone = mf.make_clip(d / "tone.mp4", duration_s=2.0)
    out = {
        "tone": tone,
        "tone_long": mf.make_clip(d / "tone_long.mp4", duration_s=4.0, size=(96, 160), tone_hz=880.0),  # portrait
        "silence": mf.make_clip(d / "silence.mp4", duration_s=2.0, audio="silence"),
        "no_audio": mf.make_clip(d / "no_audio.mp4", duration_s=2.0, audio=None),
        "audio_only": mf.make_clip(d / "audio_only.m4a", duration_s=2.0, video=False),
        "truncated": mf.make_truncated(tone, d / "truncated.mp4", keep_fraction=0.3),
        "zero_byte": mf.make_zero_byte(d / "zero.mp4"),
    }
    return {**{k: str(v) for k, v in out.items()}, "missing": str(d / "never_arrived.mp4")}


def _cfg(tiny_dir: Path, **av) -> CaptionConfig:
    return CaptionConfig(
        kinds=("av",),
        tiny_models_dir=str(tiny_dir),
        partitions=1,
        items_per_batch=8,
        video=VideoCaptionConfig(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4, batch_size=4),
        av=AvCaptionConfig(**{"num_frames": 3, "max_pixels": 4 * 28 * 28, "max_new_tokens": 6, "batch_size": 4, **av}),
    )


def _rows(clips: dict[str, str], names) -> list[dict]:
    return [{"item_id": k, "video_path": clips[k], "has_audio": None, "media_fingerprint": "fp"} for k in names]


@pytest.fixture(scope="module")
def av(tiny_dir):
    plan = plan_kind(_cfg(tiny_dir), "av")
    return plan, load_models(plan)


# ------------------------------------------------------------------------------------------ Spark-free core


def test_core_one_row_per_item_with_reasons(av, clips):
    plan, models = av
    out = [r for batch in caption_rows(_rows(clips, EXPECTED), plan, models) for r in batch]
    assert [r["item_id"] for r in out] == list(EXPECTED)  # one row per item, in order
    for r in out:
        assert set(r) == set(C.columns(C.CAPTIONS))  # the captions table's columns (task_gpus: the stage's)
        assert (r["status"], r["reason"]) == EXPECTED[r["item_id"]], (r["item_id"], r["error"])
        assert r["kind"] == "av" and r["captioner_version"] == plan.version and r["captioner_version"].startswith("av-")
        assert r["model_ids"] == {"omni": OMNI} and r["prompt_version"] == "av_v1"
        assert r["synthetic"] is True and r["device"] == "cpu" and r["media_fingerprint"] == "fp"
        if r["status"] == "ok":
            assert isinstance(r["text"], str) and r["text"].strip() and r["error"] is None
            assert r["frames_used"] == 3 and len(r["frame_times_s"]) == 3 and max(r["frame_times_s"]) < 4.0
            assert r["model_s"] > 0 and r["decode_errors"] == 0
        else:
            assert r["text"] is None and r["error"]  # a reason and its message, never an empty caption as real
    assert "items.has_audio" not in {r["error"] for r in out}  # has_audio unknown here: the file said so


def test_one_pass_reads_frames_and_audio_together(av, clips):
    """The processor puts every frame and the audio clip into one prompt; the thinker's next-token logits change
    when only the audio changes and when only the frames change (both modalities reach the LLM in the one pass)."""
    import torch

    from captionrec.captioning.kinds.av import decode as decode_av

    plan, models = av
    omni = models.model
    a, b = (
        decode_av(plan, {"item_id": k, "video_path": clips[k], "has_audio": True}).data for k in ("tone", "tone_long")
    )
    inputs = omni.inputs([a.frames.frames, b.frames.frames], [a.audio, None], plan.prompt)
    assert inputs["image_grid_thw"].shape == (6, 3)  # 3 frames per clip, as images
    assert inputs["input_features"].shape[:2] == (1, 128)  # one audio clip (the second has none), 128 mel bins
    assert a.audio.size == pytest.approx(2.0 * 16000, rel=0.05)  # the 2 s soundtrack at 16 kHz
    assert inputs["input_features"].shape[2] == a.audio.size // 160  # its length (100 mel frames/s), not 300 s
    ids = inputs["input_ids"]
    audio_id, image_id = omni.processor.audio_token_id, omni.processor.image_token_id
    assert (ids[0] == audio_id).sum() > 0 and (ids[1] == audio_id).sum() == 0
    assert (ids[0] == image_id).sum() > 0 and (ids[1] == image_id).sum() > 0

    def last_logits(frames, audio):
        with torch.inference_mode():
            return omni.model(**omni.inputs([frames], [audio], plan.prompt)).logits[0, -1]

    base = last_logits(a.frames.frames, a.audio)
    other_audio = np.roll(b.audio if b.audio is not None else a.audio[::-1], 4000)[: a.audio.size].copy()
    assert not torch.allclose(base, last_logits(a.frames.frames, other_audio))
    assert not torch.allclose(base, last_logits(a.frames.frames[::-1].copy(), a.audio))
    assert torch.allclose(base, last_logits(a.frames.frames, a.audio))  # deterministic


def test_without_audio_frames_captions_the_picture_alone(tiny_dir, clips):
    plan = plan_kind(_cfg(tiny_dir, without_audio="frames"), "av")
    assert plan.version != plan_kind(_cfg(tiny_dir), "av").version  # a different captioner
    rows = _rows(clips, ["no_audio", "tone"])
    out = {r["item_id"]: r for b in caption_rows(rows, plan, load_models(plan)) for r in b}
    assert out["no_audio"]["status"] == "ok" and out["no_audio"]["text"]
    assert out["tone"]["status"] == "ok"


def test_tiny_omni_has_the_real_checkpoints_layout_and_resolves_as_noise(tiny_dir, av):
    """tiny:qwen2_5_omni is a full Qwen2.5-Omni folder (thinker weights only), reached through the one resolver."""
    import json

    from captionrec.inference.refs import resolve_model

    ref = resolve_model(OMNI, tiny_dir)
    assert ref.synthetic and ref.model_id == OMNI and Path(ref.location) == (tiny_dir / "qwen2_5_omni").resolve()
    folder = Path(ref.location)
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni" and config["enable_audio_output"] is False
    assert config["thinker_config"]["audio_config"]["num_mel_bins"] == 128
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    assert pre["image_processor_type"] == "Qwen2VLImageProcessor"
    assert pre["feature_extractor_type"] == "WhisperFeatureExtractor"  # both in one file, as the real checkpoint
    assert (folder / "spk_dict.pt").is_file()
    omni = av[1].model
    assert type(omni.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration" and omni.synthetic
    assert not hasattr(omni.model, "talker") and omni.model.config.text_config.hidden_size == 64


def test_processor_takes_the_checkpoints_chat_template_wherever_it_is(tiny_dir, tmp_path):
    """The tokenizer's template, else the processor-level chat_template.json; neither is an error, never a guess."""
    import json
    import shutil

    from captionrec.captioning.omni import load_omni_processor

    folder = tmp_path / "omni"
    shutil.copytree(tiny_dir / "qwen2_5_omni", folder)
    template = (folder / "chat_template.jinja").read_text()
    assert load_omni_processor(str(folder), local_files_only=True).chat_template == template
    (folder / "chat_template.jinja").unlink()
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    proc = load_omni_processor(str(folder), local_files_only=True)
    assert proc.chat_template == template and proc.video_processor is None
    (folder / "chat_template.json").unlink()
    with pytest.raises(ValueError, match="no chat template"):
        load_omni_processor(str(folder), local_files_only=True)


def test_model_failure_is_one_items_error_row_and_oom_halves_the_batch(av, clips):
    import torch

    plan, models = av
    real = models.model.caption

    def flaky(frames, audios, prompt, max_new_tokens=128):
        if any(f.shape[1] > f.shape[2] for f in frames):  # portrait frames: this "model" fails
            raise RuntimeError("kernel failure on portrait input")
        return real(frames, audios, prompt, max_new_tokens=max_new_tokens)

    models.model.caption = flaky
    try:
        names = ["tone", "tone_long", "silence", "no_audio"]
        out = {r["item_id"]: r for b in caption_rows(_rows(clips, names), plan, models) for r in b}
        assert (out["tone_long"]["status"], out["tone_long"]["reason"]) == ("error", "error")  # transient: retried
        assert "portrait" in out["tone_long"]["error"] and out["tone_long"]["frames_used"] == 3
        assert out["tone"]["status"] == out["silence"]["status"] == "ok"
        assert out["no_audio"]["reason"] == "no_audio_stream"

        def small_gpu(frames, audios, prompt, max_new_tokens=128):
            if len(frames) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return real(frames, audios, prompt, max_new_tokens=max_new_tokens)

        models.model.caption = small_gpu
        names = ["tone", "tone_long", "silence", "tone"]
        out2 = [r for b in caption_rows(_rows(clips, names), plan, models, prefetch=False) for r in b]
        assert [r["status"] for r in out2] == ["ok"] * 4
        assert models.runner.batch_size == 1 and models.runner.oom_retries == 2  # 4 -> 2 -> 1
    finally:
        models.model.caption = real
        models.runner.batch_size = plan.cfg.av.batch_size


def test_av_version_follows_its_own_settings_only(tiny_dir, tmp_path):
    cfg = _cfg(tiny_dir)
    v = plan_kind(cfg, "av").version
    assert v == plan_kind(_cfg(tiny_dir), "av").version  # stable
    speed = replace(cfg, partitions=5, av=replace(cfg.av, batch_size=1, dtype="float32", attn_implementation="eager"))
    assert plan_kind(speed, "av").version == v
    assert plan_kind(replace(cfg, video=replace(cfg.video, num_frames=7)), "av").version == v  # not the video kind's
    for changed in (
        replace(cfg.av, num_frames=4),
        replace(cfg.av, max_new_tokens=9),
        replace(cfg.av, window_s=10.0),
        replace(cfg.av, model="Qwen/Qwen2.5-Omni-7B"),
    ):
        assert captioner_version(captioner_settings(replace(cfg, av=changed), "av", "p")) != captioner_version(
            captioner_settings(cfg, "av", "p")
        )
    prompt = tmp_path / "av_other.txt"
    prompt.write_text("Describe what you see and hear.")
    assert plan_kind(replace(cfg, av=replace(cfg.av, prompt_file=str(prompt))), "av").version != v


def test_config_accepts_av_and_rejects_unknown_kinds():
    from captionrec.config import ConfigError, load_config

    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['omni'\]; registered: video, audio, av"):
        check_kinds(CaptionConfig(kinds=("video", "omni")).run_kinds)
    with pytest.raises(ValueError, match="unknown kind"):
        check_kinds(load_config("local", ["caption.kinds=[video,smell]"]).caption.run_kinds)
    with pytest.raises(ConfigError, match="without_audio"):
        load_config("local", ["caption.av.without_audio=zeros"])
    local = load_config(
        "local",
        ["caption.kinds=[video,audio,av]", "embed.feature_sets=[mllm_av,mllm_omni]", "train.features=id+mllm_omni"],
    )
    assert local.caption.kinds == ("video", "audio", "av") and local.caption.av.model == OMNI
    assert local.embed.feature_sets == ("mllm_av", "mllm_omni") and local.train.features == "id+mllm_omni"
    assert "mllm_omni" not in load_config("local").embed.feature_sets  # av captions are opt-in
    assert C.CAPTION_SOURCES["mllm_omni"] == ("av",) and "mllm_omni" in C.TRAIN_FEATURE_SETS
    assert load_config("cluster").caption.av.model == "Qwen/Qwen2.5-Omni-3B"
    assert load_config("databricks").caption.av.model.endswith("/Qwen2.5-Omni-3B")


# ---------------------------------------------------------------------------- the stage on Spark + Delta


def _items(spark, clips: dict[str, str], names):
    rows = []
    for k in names:
        p = Path(clips[k])
        st = p.stat() if p.exists() else None
        rows.append(
            (
                k,
                k,
                str(p),
                None,
                st.st_size if st else None,
                dt.datetime.fromtimestamp(st.st_mtime, dt.UTC) if st else None,
                "ok" if st else "missing_file",
            )
        )
    return spark.createDataFrame(rows, ITEMS_SCHEMA)


def test_caption_stage_av_rows_idempotent_and_prompt_change_recaptions_av_only(spark, tmp_path, tiny_dir, clips):
    from captionrec.config.embed import EmbedConfig, TextEmbedConfig
    from captionrec.config.schema import Config, StorageConfig
    from captionrec.pipeline import caption as stage
    from captionrec.pipeline import embed
    from captionrec.tables import open_store

    damaged = mf.make_damaged(
        mf.make_clip(tmp_path / "ten_s.mp4", duration_s=10.0, keyint=25), tmp_path / "damaged.mp4", upto=0.9
    )  # a flaky read: a transient decode_error
    clips = {**clips, "damaged": str(damaged)}
    names = ["tone", "no_audio", "truncated", "damaged"]
    base = _cfg(tiny_dir)
    ccfg = replace(base, kinds=("video", "av"), video=replace(base.video, num_frames=1, max_new_tokens=2))
    cfg = Config(storage=StorageConfig(backend="delta-rs", root=str(tmp_path / "lake")), caption=ccfg)
    store = open_store(spark, cfg.storage)
    store.upsert("items", _items(spark, clips, names), ["item_id"])

    first = stage.run(cfg, spark, store)
    caps = store.read(C.CAPTIONS).toPandas()
    av = caps[caps["kind"] == "av"].set_index("item_id")
    assert len(av) == 4 and first["kinds"]["av"]["inserted"] == 4 and first["kinds"]["av"]["commits"] == 1
    assert (av.loc["tone", "status"], av.loc["no_audio", "reason"], av.loc["truncated", "reason"]) == (
        "ok",
        "no_audio_stream",
        "corrupt",
    )
    assert (av.loc["damaged", "status"], av.loc["damaged", "reason"]) == ("error", "decode_error")
    assert first["synthetic_models"]["av"] == {"omni": OMNI}
    assert not caps.duplicated(["item_id", "kind", "captioner_version"]).any()

    version = store.version(C.CAPTIONS)
    again = stage.run(cfg, spark, store)  # only the transient error is retried; it fails the same way: no rewrite
    info = again["kinds"]["av"]
    assert (info["pending"], info["retried"], info["unchanged_errors"], info["commits"]) == (1, 1, 1, 0)
    assert store.version(C.CAPTIONS) == version  # nothing new, no commit

    Path(clips["damaged"]).write_bytes(Path(clips["tone"]).read_bytes())  # the flaky read works this time
    fixed = stage.run(cfg, spark, store)
    info = fixed["kinds"]["av"]
    assert (info["pending"], info["updated"], info["inserted"]) == (1, 1, 0)  # replaced in place, not added
    av = store.read(C.CAPTIONS).toPandas().query("kind == 'av'").set_index("item_id")
    assert len(av) == 4 and av.loc["damaged", "status"] == "ok"

    prompt = tmp_path / "av_v2.txt"
    prompt.write_text("Describe what you see and what you hear in this clip.")
    cfg2 = replace(cfg, caption=replace(ccfg, av=replace(ccfg.av, prompt_file=str(prompt), prompt_version="av_v2")))
    third = stage.run(cfg2, spark, store)
    assert third["kinds"]["video"]["pending"] == 0 and third["kinds"]["video"]["commits"] == 0
    assert third["kinds"]["av"]["pending"] == 4 and third["kinds"]["av"]["inserted"] == 4
    caps = store.read(C.CAPTIONS).toPandas()
    assert caps[caps["kind"] == "av"]["captioner_version"].nunique() == 2
    assert caps[caps["kind"] == "video"]["captioner_version"].nunique() == 1 and len(caps) == 3 * 4

    # embed: the latest ok av caption becomes an mllm_omni text vector, like the other caption feature sets
    ecfg = EmbedConfig(
        feature_sets=("mllm_omni",),
        text=TextEmbedConfig(model="tiny:text", batch_size=8),
        tiny_models_dir=str(tiny_dir),
        partitions=1,
        torch_threads=1,
    )
    summary = embed.run(replace(cfg2, embed=ecfg), spark, store)
    feats = pd.DataFrame([r.asDict() for r in store.read(C.ITEM_FEATURES).collect()])
    assert sorted(feats["item_id"]) == ["damaged", "tone"] and set(feats["feature_set"]) == {"mllm_omni"}
    newest = caps[(caps["kind"] == "av") & (caps["prompt_version"] == "av_v2")]["captioner_version"].iloc[0]
    assert all(v.startswith(newest + ":") for v in feats["source_version"]) and set(feats["dim"]) == {32}
    assert all(np.isfinite(np.asarray(v)).all() for v in feats["vector"])
    assert summary["dims"] == {"mllm_omni/tiny:text": 32}
    errors = {r["item_id"]: r["reason"] for r in store.read(C.FEATURE_ERRORS).collect()}
    assert errors == {"no_audio": "caption_no_audio_stream", "truncated": "caption_corrupt"}  # why, per item
