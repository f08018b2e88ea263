"""Caption kind `video`: Qwen2.5-VL (`captioning.video.VideoCaptioner`) over frames of a clip's first `window_s`.

    setup(cfg) / settings(cfg, prompt)          # driver: prompt + model reference, what the version hashes
    models = load(plan, device)                 # worker: the VLM, once per worker process and device
    rows = caption(plan, models, [decode(plan, item) for item in batch])

Frames: `num_frames` evenly spaced (or `fps`) over the first `window_s`, at most `max_frames`; the clip's audio
plays no part (a clip without a soundtrack is captioned like any other).
"""

from __future__ import annotations

from typing import Any

from captionrec.captioning.common import (
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
)
from captionrec.config.caption import CaptionConfig
from captionrec.inference.models import Models

NAME = "video"


def setup(cfg: CaptionConfig) -> Setup:
    return one_model_setup(cfg.video, "vlm")


def settings(cfg: CaptionConfig, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    """The settings that define the video captioner (what its version hashes)."""
    v = cfg.video
    return one_model_settings(
        NAME,
        v,
        prompt,
        num_frames=None if v.fps else v.num_frames,
        fps=v.fps,
        max_frames=v.max_frames,
        window_s=v.window_s,
        max_pixels=v.max_pixels,
        max_new_tokens=v.max_new_tokens,
        frames_input=v.frames_input,
    )


def load(plan: CaptionPlan, device: str = "cpu") -> Models:
    """The video captioner on `device` (also the `video_full` kind's)."""
    from captionrec.captioning.video import VideoCaptioner

    v = plan.cfg.video
    return load_one_model(plan, device, "vlm", v, VideoCaptioner, frames_input=v.frames_input, max_pixels=v.max_pixels)


def decode(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """The kind's frames: `num_frames` (or `fps`) over the first `window_s`, at most `max_frames`."""
    v = plan.cfg.video

    def read(path: str) -> tuple[Any, int]:
        sample = decode_frames(path, v.num_frames, v.window_s, v.max_pixels, fps=v.fps, max_frames=v.max_frames)
        return sample, sample.decode_errors

    return decode_item(item, read)


def caption(plan: CaptionPlan, models: Models, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """One row per decoded item: a caption, the decode failure, or the model failure (each item alone)."""
    v = plan.cfg.video

    def fps_of(sample: Any) -> float:
        span = min(v.window_s, sample.duration_s) if sample.duration_s else v.window_s
        return sample.num_frames / span if span and span > 0 else 2.0

    def call(batch: list[Decoded]) -> list[Any]:
        return models.model.caption(
            [d.data.frames for d in batch],
            plan.prompt,
            max_new_tokens=v.max_new_tokens,
            fps=[fps_of(d.data) for d in batch],
        )

    return single_model_batch(plan, models, decoded, call, lambda d: frame_columns(d.data))


def batch_size(cfg: CaptionConfig) -> int:
    return cfg.video.batch_size


KIND = CaptionKind(NAME, setup, settings, load, decode, caption, batch_size)
