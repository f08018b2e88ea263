"""The caption stage's per-item core, Spark-free: item rows in -> decode -> batch -> models -> caption rows out.

    models = load_models(plan, device)               # once per worker process and device (the model-map caches it)
    for rows in caption_rows(items, plan, models):   # items: dicts with item_id, video_path, has_audio,
        ...                                          # media_fingerprint; rows: dicts of contracts.CAPTIONS

The Spark model-map and the bare-loop benchmark both run this. Decoding of batch i+1 runs while batch i is on
the model (`batching.prefetch_batches`); every model call goes through a `BatchRunner` (a batch that runs out of
memory is halved, a failing item is recorded alone). An item that fails gets a row with its reason; the status
follows `contracts.status_of` (ok / skipped for a permanent reason / error for a transient one). The `av` kind's
decode and batch (one omni pass over frames + audio) live in `captioning.av`; `load_models` and `caption_rows`
route to them.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from captionrec import contracts as C
from captionrec.inference.batching import BatchRunner, error_reason, error_text, prefetch_batches
from captionrec.captioning.plan import CaptionPlan

log = logging.getLogger(__name__)

NOISE_NOTE = "captions are noise: tiny random model"
SAMPLE_RATE = 16000
COLUMNS = C.columns(C.CAPTIONS)


# ------------------------------------------------------------------------------------------------ models


@dataclass
class VideoModels:
    vlm: Any  # captionrec.captioning.video.VideoCaptioner
    device: str
    runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))

    @property
    def synthetic(self) -> bool:
        return bool(self.vlm.synthetic)


@dataclass
class AudioModels:
    asr: Any  # captionrec.captioning.audio.Transcriber
    tagger: Any  # SoundTagger
    llm: Any  # AudioCaptioner | None
    device: str
    asr_runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))  # faster-whisper: one clip a call
    tag_runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))
    llm_runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))

    @property
    def synthetic(self) -> bool:
        return any(bool(getattr(m, "synthetic", False)) for m in (self.asr, self.tagger, self.llm) if m is not None)


def load_models(plan: CaptionPlan, device: str = "cpu") -> Any:
    """Load one kind's models on `device` (the model-map calls this once per worker process and device)."""
    from captionrec.inference.refs import resolve_model

    cfg, refs = plan.cfg, plan.model_map
    local = cfg.local_files_only

    def path(role: str) -> str:
        return resolve_model(refs[role], plan.tiny_dir).location

    if plan.kind == "av":  # one omni pass over frames + audio (captioning.av)
        from captionrec.captioning.av import load_av_models

        models: Any = load_av_models(plan, device)
    elif plan.kind in ("video", C.VIDEO_FULL):
        from captionrec.captioning.video import VideoCaptioner

        v = cfg.video
        vlm = VideoCaptioner(path("vlm"), device=device, dtype=v.dtype, attn=v.attn_implementation,
                             frames_input=v.frames_input, max_pixels=v.max_pixels, local_files_only=local,
                             model_id=refs["vlm"])
        models = VideoModels(vlm=vlm, device=device, runner=BatchRunner(v.batch_size))
    else:
        from captionrec.captioning.audio import AudioCaptioner, SoundTagger, Transcriber

        a = cfg.audio
        asr = Transcriber(path("asr"), device=device, compute_type=a.asr_compute_type, vad=a.vad, language=a.language,
                          beam_size=a.asr_beam_size, cpu_threads=max(0, cfg.torch_threads), local_files_only=local,
                          model_id=refs["asr"])
        tagger = SoundTagger(path("tagger"), device=device, top_k=a.top_k, local_files_only=local,
                             model_id=refs["tagger"])
        llm = None
        if a.fusion == "llm":
            llm = AudioCaptioner(path("llm"), device=device, dtype=a.dtype, attn=a.attn_implementation,
                                 local_files_only=local, model_id=refs["llm"])
        models = AudioModels(asr=asr, tagger=tagger, llm=llm, device=device,
                             tag_runner=BatchRunner(a.batch_size), llm_runner=BatchRunner(a.batch_size))
    noise = [m.model_id for m in vars(models).values() if getattr(m, "synthetic", False) is True]
    if noise:
        log.warning("%s: %s (%s on %s)", NOISE_NOTE, ", ".join(noise), plan.kind, device)
    return models


# ------------------------------------------------------------------------------------------------- rows


def caption_row(plan: CaptionPlan, item: dict[str, Any], models: Any, **values: Any) -> dict[str, Any]:
    """One contracts.CAPTIONS row for `item`; the status follows the reason unless given."""
    row = dict.fromkeys(COLUMNS)
    row.update(
        item_id=item["item_id"], kind=plan.kind, captioner_version=plan.version,
        status=C.status_of(values.get("reason")), model_ids=dict(plan.model_ids), prompt_version=plan.prompt_version,
        synthetic=models.synthetic, device=models.device, settings=plan.settings_json,
        created_at=dt.datetime.now(dt.timezone.utc), media_fingerprint=item.get("media_fingerprint"),
    )
    row.update(values)
    return row


def failure(exc: BaseException) -> dict[str, Any]:
    return {"reason": error_reason(exc), "error": error_text(exc)}


@dataclass
class Decoded:
    item: dict[str, Any]
    data: Any = None  # FrameSample (video) / float32 audio (audio)
    failure: Optional[dict[str, Any]] = None
    decode_s: float = 0.0
    decode_errors: Optional[int] = None

    def base(self, model_s: float = 0.0) -> dict[str, Any]:
        """The decode and timing columns of this item's row."""
        return {"decode_s": self.decode_s, "total_s": self.decode_s + model_s, "decode_errors": self.decode_errors}


def _decode(item: dict[str, Any], read: Callable[[str], tuple[Any, int]]) -> Decoded:
    """Time `read(path)` -> (data, decode errors); any failure (a MediaError's reason) is the item's record."""
    from captionrec.media import MediaError

    t0 = time.perf_counter()
    try:
        path = item.get("video_path")
        if not path:
            raise MediaError(C.MISSING_FILE, "item has no video_path", None)
        data, errors = read(path)
        return Decoded(item, data, decode_s=time.perf_counter() - t0, decode_errors=int(errors))
    except Exception as exc:  # noqa: BLE001 - recorded per item
        return Decoded(item, failure=failure(exc), decode_s=time.perf_counter() - t0)


def decode_video(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """The kind's frames: `num_frames` (or `fps`) over the first `window_s`, at most `max_frames`."""
    from captionrec.media import MediaError, sample_frames

    v = plan.cfg.video

    def read(path: str) -> tuple[Any, int]:
        sample = sample_frames(path, num_frames=v.num_frames, window_s=v.window_s, fps=v.fps, max_pixels=v.max_pixels)
        if sample.num_frames == 0:
            raise MediaError(C.DECODE_ERROR, "no frame decoded", path)
        if sample.num_frames > v.max_frames:  # fps sampling over a long window: keep max_frames evenly spaced
            keep = np.linspace(0, sample.num_frames - 1, v.max_frames).round().astype(int)
            sample.frames, sample.times_s = sample.frames[keep], sample.times_s[keep]
        return sample, sample.decode_errors

    return _decode(item, read)


def decode_audio(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """The first `window_s` of the soundtrack at 16 kHz; no track or a silent one is the item's reason."""
    from captionrec.media import MediaError, is_silent
    from captionrec.media.audio import decode_audio as decode

    a = plan.cfg.audio

    def read(path: str) -> tuple[Any, int]:
        if item.get("has_audio") is False or (isinstance(item.get("has_audio"), np.bool_) and not item["has_audio"]):
            raise MediaError(C.NO_AUDIO_STREAM, "items.has_audio is false", path)
        sample = decode(path, sample_rate=SAMPLE_RATE, window_s=a.window_s)  # samples: (S,) float32 mono
        if sample.samples.size == 0:
            raise MediaError(C.SILENT, "audio track has no samples", path)
        if is_silent(sample.samples, a.silence_dbfs):
            raise MediaError(C.SILENT, f"audio below {a.silence_dbfs} dBFS", path)
        return sample.samples, sample.decode_errors

    return _decode(item, read)


# ----------------------------------------------------------------------------------------------- batches


def caption_video_batch(plan: CaptionPlan, models: VideoModels, decoded: list[Decoded]) -> list[dict[str, Any]]:
    v = plan.cfg.video
    good = [d for d in decoded if d.failure is None]

    def fps_of(sample: Any) -> float:
        span = min(v.window_s, sample.duration_s) if sample.duration_s else v.window_s
        return sample.num_frames / span if span and span > 0 else 2.0

    def frames_of(d: Decoded, model_s: float = 0.0) -> dict[str, Any]:
        return {**d.base(model_s), "frames_used": int(d.data.num_frames)}

    def run_batch(batch: list[Decoded]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = models.vlm.caption([d.data.frames for d in batch], plan.prompt, max_new_tokens=v.max_new_tokens,
                                     fps=[fps_of(d.data) for d in batch])
        model_s = (time.perf_counter() - t0) / len(batch)
        rows = []
        for d, res in zip(batch, results):
            text = {"text": res.text} if res.text else {"reason": C.EMPTY_OUTPUT, "error": "model generated no text"}
            rows.append(caption_row(
                plan, d.item, models, **frames_of(d, model_s), frame_times_s=[round(float(t), 4) for t in d.data.times_s],
                model_s=model_s, **text,
            ))
        return rows

    def on_error(d: Decoded, exc: BaseException) -> dict[str, Any]:
        return caption_row(plan, d.item, models, **frames_of(d), **failure(exc))

    done = {id(d): row for d, row in zip(good, models.runner.run(good, run_batch, on_error))}
    return [done[id(d)] if d.failure is None else caption_row(plan, d.item, models, **d.base(), **d.failure)
            for d in decoded]


class _AudioBatch:
    """One audio batch through its three model steps: speech (ASR), sound tags, the caption (LLM or template)."""

    def __init__(self, plan: CaptionPlan, models: AudioModels, decoded: list[Decoded]):
        self.plan, self.models, self.decoded, self.a = plan, models, decoded, plan.cfg.audio
        self.out: dict[int, dict[str, Any]] = {}
        self.state: dict[int, dict[str, Any]] = {}
        for i, d in enumerate(decoded):
            if d.failure is not None:
                self.out[i] = caption_row(plan, d.item, models, **d.base(), **d.failure)
            else:
                self.state[i] = {"model_s": 0.0}

    def rows(self) -> list[dict[str, Any]]:
        self.step(self.models.asr_runner, self.transcribe, "asr")
        self.step(self.models.tag_runner, lambda idx: self.models.tagger.tag([self.decoded[i].data for i in idx]), "tags")
        if self.a.fusion == "llm":
            self.step(self.models.llm_runner, self.write_llm, "text")
        else:
            for s in self.state.values():
                s["text"] = self.template(s)
        for i in list(self.state):
            self.finish(i)
        return [self.out[i] for i in range(len(self.decoded))]

    def step(self, runner: BatchRunner, fn: Callable[[list[int]], list[Any]], key: str) -> None:
        """Run `fn` over the live items in batches; each result lands in state[i][key], a failure ends the item."""

        def timed(idx: list[int]) -> list[Any]:
            t0 = time.perf_counter()
            results = fn(idx)
            per = (time.perf_counter() - t0) / len(idx)
            for i in idx:
                self.state[i]["model_s"] += per
            return results

        ids = list(self.state)
        for i, res in zip(ids, runner.run(ids, timed, lambda i, exc: exc)):
            if isinstance(res, BaseException):
                self.fail(i, res)
            else:
                self.state[i][key] = res

    def transcribe(self, idx: list[int]) -> list[Any]:
        return [self.models.asr.transcribe(self.decoded[i].data) for i in idx]

    def unclear(self, s: dict[str, Any]) -> bool:
        conf = s["asr"].confidence
        return conf is not None and conf < self.a.min_asr_confidence

    def template(self, s: dict[str, Any]) -> str:
        from captionrec.captioning.audio import template_caption

        return template_caption(s["asr"].text, s["tags"], speech_unclear=self.unclear(s))

    def write_llm(self, idx: list[int]) -> list[str]:
        from captionrec.captioning.audio import render_audio_prompt

        prompts = [render_audio_prompt(self.plan.prompt, self.state[i]["asr"].text, self.state[i]["tags"],
                                       speech_unclear=self.unclear(self.state[i])) for i in idx]
        return self.models.llm.caption([self.decoded[i].data for i in idx], prompts,
                                       max_new_tokens=self.a.llm_max_new_tokens)

    def speech(self, s: dict[str, Any]) -> dict[str, Any]:
        tr = s.get("asr")
        if tr is None:
            return {}
        unclear = self.unclear(s)
        return {"transcript": tr.text, "language": tr.language, "asr_confidence": tr.confidence,
                "low_confidence": unclear or not tr.language_known,
                "transcript_reason": C.LOW_CONFIDENCE if unclear else None}

    def fail(self, i: int, exc: BaseException) -> None:
        d, s = self.decoded[i], self.state.pop(i)
        self.out[i] = caption_row(self.plan, d.item, self.models, **d.base(s["model_s"]), **self.speech(s),
                                  **failure(exc))

    def finish(self, i: int) -> None:
        d, s = self.decoded[i], self.state.pop(i)
        text = {"text": s["text"]} if s["text"] else {"reason": C.EMPTY_OUTPUT, "error": "model generated no text"}
        self.out[i] = caption_row(
            self.plan, d.item, self.models, **d.base(s["model_s"]), **self.speech(s),
            sound_tags=[{"label": t.label, "score": float(t.score)} for t in s["tags"]], model_s=s["model_s"], **text,
        )


def caption_audio_batch(plan: CaptionPlan, models: AudioModels, decoded: list[Decoded]) -> list[dict[str, Any]]:
    return _AudioBatch(plan, models, decoded).rows()


def caption_rows(
    rows: Iterable[dict[str, Any]], plan: CaptionPlan, models: Any,
    prefetch: Optional[bool] = None,
) -> Iterator[list[dict[str, Any]]]:
    """Caption item rows (dicts with item_id, video_path, has_audio, media_fingerprint); yields the output rows of
    each model batch (contracts.CAPTIONS columns; `task_gpus` is left to the caller). Decoding of batch i+1 runs
    in a background thread while batch i is on the model (`prefetch`, default `plan.cfg.prefetch`)."""
    if plan.kind == C.VIDEO_FULL:  # whole-video captions: one item at a time, window by window
        from captionrec.captioning.segments import segment_rows

        yield from segment_rows(rows, plan, models)
        return
    video = plan.kind == "video"
    decode = decode_video if video else decode_audio
    caption: Callable[[CaptionPlan, Any, list[Decoded]], list[dict[str, Any]]] = (
        caption_video_batch if video else caption_audio_batch
    )
    size = plan.cfg.video.batch_size if video else plan.cfg.audio.batch_size
    if plan.kind == "av":
        from captionrec.captioning.av import caption_av_batch, decode_av

        decode, caption, size = decode_av, caption_av_batch, plan.cfg.av.batch_size
    ahead = plan.cfg.prefetch if prefetch is None else prefetch
    for decoded in prefetch_batches(rows, size, lambda item: decode(plan, item), threads=1, ahead=ahead):
        yield caption(plan, models, decoded)
