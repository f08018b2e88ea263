"""Caption kind `av`: one Qwen2.5-Omni pass (`captioning.omni.OmniCaptioner`) over a clip's frames and soundtrack.

    setup(cfg) / settings(cfg, prompt)          # driver: prompt + model reference, what the version hashes
    models = load(plan, device)                 # worker: the omni thinker, once per worker process and device
    rows = caption(plan, models, [decode(plan, item) for item in batch])

Decoding reads `num_frames` frames and the 16 kHz soundtrack of the same first `window_s` seconds, the soundtrack
by `common.soundtrack`'s rule: no track is `no_audio_stream`, a track with no samples `silent`. Either is the
item's reason (`without_audio: skip`), or the clip is captioned from its frames alone (`without_audio: frames`).
A quiet track is still a track (no threshold here: the model hears the silence).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from captionrec import contracts as C
from captionrec.captioning.common import (
    SAMPLE_RATE,
    CaptionKind,
    CaptionPlan,
    Decoded,
    Setup,
    decode_frames,
    decode_item,
    frame_columns,
    load_one_model,
    one_model_settings,
    one_model_setup,
    single_model_batch,
    soundtrack,
)
from captionrec.config.caption import CaptionConfig
from captionrec.inference.models import Models

NAME = "av"
NOTHING_TO_HEAR = frozenset({C.NO_AUDIO_STREAM, C.SILENT})  # what `without_audio: frames` captions from frames alone


def setup(cfg: CaptionConfig) -> Setup:
    return one_model_setup(cfg.av, "omni")


def settings(cfg: CaptionConfig, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    """The settings that define the av captioner (what its version hashes)."""
    v = cfg.av
    return one_model_settings(
        NAME,
        v,
        prompt,
        num_frames=v.num_frames,
        window_s=v.window_s,
        max_pixels=v.max_pixels,
        max_new_tokens=v.max_new_tokens,
        without_audio=v.without_audio,
        sample_rate=SAMPLE_RATE,
        frames_input="images",
    )


def load(plan: CaptionPlan, device: str = "cpu") -> Models:
    from captionrec.captioning.omni import OmniCaptioner

    return load_one_model(plan, device, "omni", plan.cfg.av, OmniCaptioner, max_pixels=plan.cfg.av.max_pixels)


@dataclass
class AvClip:
    frames: Any  # media.FrameSample
    audio: Any  # (S,) float32 at 16 kHz, or None (nothing to hear, without_audio: frames)


def decode(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """Frames and soundtrack of the first `window_s`; no sound is the item's reason unless frames suffice."""
    from captionrec.media import MediaError

    v = plan.cfg.av

    def read(path: str) -> tuple[AvClip, int]:
        frames = decode_frames(path, v.num_frames, v.window_s, v.max_pixels)
        audio, errors = None, frames.decode_errors
        try:
            sound = soundtrack(item, path, v.window_s)
            audio, errors = sound.samples, errors + sound.decode_errors
        except MediaError as exc:
            if exc.reason not in NOTHING_TO_HEAR or v.without_audio == "skip":
                raise
        return AvClip(frames, audio), errors

    return decode_item(item, read)


def caption(plan: CaptionPlan, models: Models, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """One row per decoded item: a caption, the decode failure, or the model failure (each item alone)."""
    v = plan.cfg.av

    def call(batch: list[Decoded]) -> list[Any]:
        return models.model.caption(
            [d.data.frames.frames for d in batch],
            [d.data.audio for d in batch],
            plan.prompt,
            max_new_tokens=v.max_new_tokens,
        )

    return single_model_batch(plan, models, decoded, call, lambda d: frame_columns(d.data.frames))


def batch_size(cfg: CaptionConfig) -> int:
    return cfg.av.batch_size


KIND = CaptionKind(NAME, setup, settings, load, decode, caption, batch_size)
