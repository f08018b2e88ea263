"""The `av` caption kind's per-item core, Spark-free: one omni-model pass over a clip's frames and soundtrack.

    settings = av_settings(cfg, prompt)            # what the captioner version hashes (captioning.plan)
    models = load_av_models(plan, device)          # the Qwen2.5-Omni thinker (captioning.omni), once per worker
    rows = caption_av_batch(plan, models, [decode_av(plan, item) for item in batch])

Decoding reads `num_frames` frames and the 16 kHz soundtrack of the same first `window_s` seconds. A clip without
an audio track is recorded as `no_audio_stream` (`without_audio: skip`) or captioned from its frames alone
(`without_audio: frames`); a silent track is still a track (the model hears the silence). Every model call goes
through the kind's `BatchRunner` (the one OOM-halving retry policy); an item the model fails on gets its own
error row. Rows are `contracts.CAPTIONS` rows built by `captioning.core.caption_row`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from captionrec import contracts as C
from captionrec.inference.batching import BatchRunner
from captionrec.captioning.core import SAMPLE_RATE, Decoded, _decode, caption_row, failure
from captionrec.captioning.plan import CaptionPlan
from captionrec.config.caption import CaptionConfig


def av_settings(cfg: CaptionConfig, prompt_sha: str) -> dict[str, Any]:
    """The settings that define the av captioner (batch size, dtype and attention kernels are speed only)."""
    v = cfg.av
    return {
        "kind": "av", "model": v.model, "prompt_version": v.prompt_version, "prompt_sha": prompt_sha,
        "num_frames": v.num_frames, "window_s": v.window_s, "max_pixels": v.max_pixels,
        "max_new_tokens": v.max_new_tokens, "without_audio": v.without_audio, "sample_rate": SAMPLE_RATE,
        "frames_input": "images", "decoding": "greedy",
    }


@dataclass
class AvModels:
    omni: Any  # captionrec.captioning.omni.OmniCaptioner
    device: str
    runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))

    @property
    def synthetic(self) -> bool:
        return bool(self.omni.synthetic)


def load_av_models(plan: CaptionPlan, device: str = "cpu") -> AvModels:
    from captionrec.captioning.omni import OmniCaptioner
    from captionrec.inference.refs import resolve_model

    v, ref = plan.cfg.av, plan.model_map["omni"]
    omni = OmniCaptioner(resolve_model(ref, plan.tiny_dir).location, device=device, dtype=v.dtype,
                         attn=v.attn_implementation, max_pixels=v.max_pixels,
                         local_files_only=plan.cfg.local_files_only, model_id=ref)
    return AvModels(omni=omni, device=device, runner=BatchRunner(v.batch_size))


@dataclass
class AvClip:
    frames: Any  # media.FrameSample
    audio: Any  # (S,) float32 at 16 kHz, or None (no track, without_audio: frames)


def decode_av(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """Frames and soundtrack of the first `window_s`; a missing track is the item's reason unless frames suffice."""
    from captionrec.media import MediaError, sample_frames
    from captionrec.media.audio import decode_audio

    v = plan.cfg.av

    def read(path: str) -> tuple[AvClip, int]:
        frames = sample_frames(path, num_frames=v.num_frames, window_s=v.window_s, max_pixels=v.max_pixels)
        if frames.num_frames == 0:
            raise MediaError(C.DECODE_ERROR, "no frame decoded", path)
        audio, errors = None, frames.decode_errors
        try:
            if item.get("has_audio") is not None and not bool(item["has_audio"]):
                raise MediaError(C.NO_AUDIO_STREAM, "items.has_audio is false", path)
            sound = decode_audio(path, sample_rate=SAMPLE_RATE, window_s=v.window_s)
            if sound.samples.size == 0:
                raise MediaError(C.NO_AUDIO_STREAM, "audio track has no samples", path)
            audio, errors = sound.samples, errors + sound.decode_errors
        except MediaError as exc:
            if exc.reason != C.NO_AUDIO_STREAM or v.without_audio == "skip":
                raise
        return AvClip(frames, audio), errors

    return _decode(item, read)


def caption_av_batch(plan: CaptionPlan, models: AvModels, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """One row per decoded item: a caption, the decode failure, or the model failure (each item alone)."""
    v = plan.cfg.av
    good = [d for d in decoded if d.failure is None]

    def media(d: Decoded, model_s: float = 0.0) -> dict[str, Any]:
        return {**d.base(model_s), "frames_used": int(d.data.frames.num_frames),
                "frame_times_s": [round(float(t), 4) for t in d.data.frames.times_s]}

    def run_batch(batch: list[Decoded]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = models.omni.caption([d.data.frames.frames for d in batch], [d.data.audio for d in batch],
                                      plan.prompt, max_new_tokens=v.max_new_tokens)
        model_s = (time.perf_counter() - t0) / len(batch)
        rows = []
        for d, res in zip(batch, results):
            text = {"text": res.text} if res.text else {"reason": C.EMPTY_OUTPUT, "error": "model generated no text"}
            rows.append(caption_row(plan, d.item, models, **media(d, model_s), model_s=model_s, **text))
        return rows

    def on_error(d: Decoded, exc: BaseException) -> dict[str, Any]:
        return caption_row(plan, d.item, models, **media(d), **failure(exc))

    done = {id(d): row for d, row in zip(good, models.runner.run(good, run_batch, on_error))}
    return [done[id(d)] if d.failure is None else caption_row(plan, d.item, models, **d.base(), **d.failure)
            for d in decoded]
