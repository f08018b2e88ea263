"""Caption kinds as plug-ins (`captionrec.captioning.kinds`): the registry covers the contract's kinds, every kind
follows the one rule for an absent or empty soundtrack, and a kind added from outside (a module + one `register`
line: here this test module) runs through the caption stage on local Spark into the captions table."""

from __future__ import annotations

import importlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from captionrec import contracts as C
from captionrec.captioning.common import (
    CaptionKind,
    CaptionPlan,
    Decoded,
    Setup,
    decode_item,
    single_model_batch,
)
from captionrec.captioning.core import caption_rows, load_models
from captionrec.captioning.kinds import KINDS, get_kind, missing_kinds, register, unregister
from captionrec.captioning.plan import check_kinds, plan_kind
from captionrec.config.caption import (
    AudioCaptionConfig,
    AvCaptionConfig,
    CaptionConfig,
    SegmentsConfig,
    VideoCaptionConfig,
)
from captionrec.inference.models import Models
from stage_fixtures import items_df

BUILT_IN = tuple(KINDS)  # collected before any test registers a kind

# The soundtrack rule (captioning.common.soundtrack): no track -> no_audio_stream, a track with nothing in it ->
# silent. Kinds that hear the soundtrack follow it; kinds that only look at frames caption every case.
# case -> reason per kind (None: captioned). `silence` is a digital-silence track: below the audio kind's
# threshold; the av kind has none (the model hears the silence). A new kind must say here what it does.
SOUND_RULE = {
    "video": {"no_track": None, "has_audio_false": None, "empty_track": None, "silence": None},
    "video_full": {"no_track": None, "has_audio_false": None, "empty_track": None, "silence": None},
    "audio": {
        "no_track": C.NO_AUDIO_STREAM,
        "has_audio_false": C.NO_AUDIO_STREAM,
        "empty_track": C.SILENT,
        "silence": C.SILENT,
    },
    "av": {
        "no_track": C.NO_AUDIO_STREAM,
        "has_audio_false": C.NO_AUDIO_STREAM,
        "empty_track": C.SILENT,
        "silence": None,
    },
}


def _cfg(tiny_dir: Path, **kw: Any) -> CaptionConfig:
    small = dict(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4)
    base = CaptionConfig(
        tiny_models_dir=str(tiny_dir),
        video=VideoCaptionConfig(**small, segments=SegmentsConfig(window_s=2.0, stride_s=2.0, max_windows=2)),
        audio=AudioCaptionConfig(batch_size=4),
        av=AvCaptionConfig(**small),
        partitions=2,
        items_per_batch=8,
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, str]:
    from captionrec.testing.media_fixtures import make_clip, run_ffmpeg

    d = tmp_path_factory.mktemp("kinds")
    empty = d / "empty_track.mkv"  # an audio track that holds no sample
    run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=25:duration=2",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=16000:cl=mono,atrim=end_sample=0",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "pcm_s16le",
            str(empty),
        ]
    )
    return {
        "tone": str(make_clip(d / "tone.mp4", duration_s=2.0)),
        "no_track": str(make_clip(d / "no_audio.mp4", duration_s=2.0, audio=None)),
        "empty_track": str(empty),
        "silence": str(make_clip(d / "silence.mp4", duration_s=2.0, audio="silence")),
    }


def _sound_items(clips: dict[str, str]) -> list[dict[str, Any]]:
    paths = {
        "no_track": clips["no_track"],
        "has_audio_false": clips["tone"],
        "empty_track": clips["empty_track"],
        "silence": clips["silence"],
    }
    return [
        {
            "item_id": k,
            "video_path": p,
            "has_audio": False if k == "has_audio_false" else None,
            "media_fingerprint": "fp",
        }
        for k, p in paths.items()
    ]


def test_registry_covers_the_contract_and_every_kind_module_has_the_same_shape():
    assert missing_kinds() == [] and BUILT_IN == C.CAPTION_KINDS
    for name in C.CAPTION_KINDS:
        module = importlib.import_module(f"captionrec.captioning.kinds.{name}")
        assert module.NAME == name and module.KIND is KINDS[name] is get_kind(name)
        for part in ("setup", "settings", "decode", "caption", "batch_size"):
            assert getattr(module.KIND, part) is getattr(module, part), (name, part)
        assert callable(module.KIND.load)
    assert set(SOUND_RULE) == set(C.CAPTION_KINDS)  # every kind states its soundtrack rule below
    with pytest.raises(ValueError, match="unknown caption kind 'nope'; known: video, audio, av, video_full"):
        plan_kind(CaptionConfig(), "nope")
    with pytest.raises(ValueError, match="built in"):
        register(replace(KINDS["video"], batch_size=lambda cfg: 99))
    with pytest.raises(ValueError, match="built in"):
        unregister("audio")


@pytest.mark.parametrize("kind", BUILT_IN)
def test_every_kind_follows_the_one_soundtrack_rule(kind, clips, tiny_dir):
    plan = plan_kind(_cfg(tiny_dir), kind)
    rows = {
        r["item_id"]: r
        for out in caption_rows(_sound_items(clips), plan, load_models(plan), prefetch=False)
        for r in out
    }
    for case, reason in SOUND_RULE[kind].items():
        row = rows[case]
        assert row["reason"] == reason, (kind, case, row["error"])
        assert row["status"] == (C.SKIPPED if reason else C.OK), (kind, case)
        if reason is None:
            assert row["text"], (kind, case)
    if kind == "audio":  # the message says which part of the rule applied
        assert "items.has_audio is false" in rows["has_audio_false"]["error"]
        assert "no samples" in rows["empty_track"]["error"] and "dBFS" in rows["silence"]["error"]


def test_av_without_audio_frames_captions_every_clip_without_sound_from_its_frames(clips, tiny_dir):
    plan = plan_kind(
        _cfg(
            tiny_dir, av=AvCaptionConfig(num_frames=2, max_pixels=4 * 28 * 28, max_new_tokens=4, without_audio="frames")
        ),
        "av",
    )
    out = [r for b in caption_rows(_sound_items(clips), plan, load_models(plan), prefetch=False) for r in b]
    assert {(r["item_id"], r["status"]) for r in out} == {(k, C.OK) for k in SOUND_RULE["av"]}


# -- a toy kind from outside: captions from the file's container metadata, no model weights -------------------

TOY = "probe_meta"


class Describer:
    """The toy kind's "model": writes a sentence from a media.ProbeResult."""

    synthetic = False
    model_id = "describer"

    def describe(self, info: Any) -> str:
        sound = "with sound" if info.has_audio else "without sound"
        return f"a {info.width}x{info.height} clip of {info.duration_s:.1f} s {sound}"


def toy_setup(cfg: CaptionConfig) -> Setup:
    return Setup("probe_meta_v1", "", ())


def toy_settings(cfg: CaptionConfig, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    return {"kind": TOY, "template": "a WxH clip of D s with/without sound"}


def toy_load(plan: CaptionPlan, device: str) -> Models:
    return Models(Describer(), device)


def toy_decode(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    from captionrec.media import probe

    return decode_item(item, lambda path: (probe(path), 0))


def toy_caption(plan: CaptionPlan, models: Models, decoded: list[Decoded]) -> list[dict[str, Any]]:
    def call(batch: list[Decoded]) -> list[Any]:
        return [SimpleNamespace(text=models.model.describe(d.data)) for d in batch]

    return single_model_batch(plan, models, decoded, call, lambda d: {})


TOY_KIND = CaptionKind(TOY, toy_setup, toy_settings, toy_load, toy_decode, toy_caption, lambda cfg: 2)


def test_a_registered_kind_runs_through_the_caption_stage_into_the_captions_table(spark, clips, tmp_path):
    from captionrec.config import load_config
    from captionrec.config.schema import Config, StorageConfig
    from captionrec.pipeline import caption as stage
    from captionrec.tables import open_store

    paths = {"tone": clips["tone"], "no_track": clips["no_track"], "gone": str(tmp_path / "gone.mp4")}
    # the toy kind is named in the config, like a built-in one (`caption.kinds=[probe_meta]`)
    loaded = load_config("local", [f"caption.kinds=[{TOY}]"]).caption
    cfg = Config(
        storage=StorageConfig(backend="delta-rs", root=str(tmp_path / "lake")),
        caption=replace(loaded, partitions=2, items_per_batch=8),
    )
    assert cfg.caption.run_kinds == (TOY,)
    store = open_store(spark, cfg.storage)
    store.upsert(C.ITEMS, items_df(spark, paths), keys=["item_id"])
    with pytest.raises(ValueError, match=rf"unknown kind\(s\) \['{TOY}'\]; registered: video, audio, av, video_full$"):
        stage.run(cfg, spark, store)  # not registered yet: the stage stops before it captions anything
    assert not store.exists(C.CAPTIONS) or store.read(C.CAPTIONS).count() == 0
    register(TOY_KIND)
    try:
        assert TOY in KINDS
        version = plan_kind(cfg.caption, TOY).version
        summary = stage.run(cfg, spark, store)
        again = stage.run(cfg, spark, store)
    finally:
        unregister(TOY)
    assert TOY not in KINDS and tuple(KINDS) == BUILT_IN
    info = summary["kinds"][TOY]
    assert (info["pending"], info["inserted"], info["statuses"]) == (3, 3, {"ok": 2, "skipped": 1})
    assert again["kinds"][TOY]["pending"] == 0 and again["kinds"][TOY]["commits"] == 0
    caps = store.read(C.CAPTIONS).toPandas().set_index("item_id")
    assert set(caps["kind"]) == {TOY} and set(caps["captioner_version"]) == {version}
    assert version.startswith(f"{TOY}-") and set(caps["prompt_version"]) == {"probe_meta_v1"}
    assert caps.loc["tone", "text"] == "a 160x90 clip of 2.0 s with sound"
    assert caps.loc["no_track", "text"] == "a 160x90 clip of 2.0 s without sound"
    assert (caps.loc["gone", "status"], caps.loc["gone", "reason"]) == (C.SKIPPED, C.MISSING_FILE)
    assert not caps["synthetic"].any() and set(caps["device"]) == {"cpu"}


def test_the_config_names_any_kind_and_the_registry_decides():
    cfg = CaptionConfig(kinds=("video", "nope"))  # the config checks syntax only
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['nope'\]; registered: video, audio, av, video_full$"):
        check_kinds(cfg.run_kinds)
    register(TOY_KIND)
    try:
        assert check_kinds(CaptionConfig(kinds=("audio", TOY)).run_kinds) == ("audio", TOY)
    finally:
        unregister(TOY)
    with pytest.raises(ValueError, match="not kind names"):
        CaptionConfig(kinds=("video", ""))
    with pytest.raises(ValueError, match="segments.enabled switches it on"):
        CaptionConfig(kinds=("video", C.VIDEO_FULL))
