"""Caption kind `audio`: a clip's first `window_s` of sound -> speech (faster-whisper), sound tags (AST) -> a
caption written by Qwen2-Audio (`fusion: llm`) or by a template (`fusion: template`, no LLM).

    setup(cfg) / settings(cfg, prompt)          # driver: prompt + model references, what the version hashes
    models = load(plan, device)                 # worker: Models(AudioRoles(asr, tagger, llm), ...)
    rows = caption(plan, models, [decode(plan, item) for item in batch])

The soundtrack follows `common.soundtrack` with the kind's silence threshold: no track is `no_audio_stream`, an
empty track or one below `silence_dbfs` is `silent` (both permanent: nothing to caption from).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from captionrec import contracts as C
from captionrec.captioning.common import (
    SAMPLE_RATE,
    CaptionKind,
    CaptionPlan,
    Decoded,
    Setup,
    caption_row,
    decode_item,
    failure,
    load_prompt,
    prompt_sha,
    soundtrack,
    text_or_empty,
)
from captionrec.config.caption import CaptionConfig
from captionrec.inference.batching import BatchRunner
from captionrec.inference.models import Models

NAME = "audio"
TEMPLATE_PROMPT_VERSION = "template_v1"


class AudioRoles(NamedTuple):
    asr: Any  # captionrec.captioning.audio.Transcriber
    tagger: Any  # SoundTagger
    llm: Any | None  # AudioCaptioner (fusion: llm) | None (fusion: template)


def setup(cfg: CaptionConfig) -> Setup:
    a = cfg.audio
    llm = a.fusion == "llm"
    roles = (("asr", a.asr_model), ("tagger", a.tagger_model)) + ((("llm", a.llm_model),) if llm else ())
    return Setup(a.prompt_version if llm else TEMPLATE_PROMPT_VERSION, load_prompt(a.prompt_file) if llm else "", roles)


def settings(cfg: CaptionConfig, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    """The settings that define the audio captioner (batch sizes, dtype and attention kernels are speed only)."""
    a = cfg.audio
    s = {
        "kind": NAME,
        "asr_model": a.asr_model,
        "asr_beam_size": a.asr_beam_size,
        "vad": a.vad,
        "language": a.language,
        "min_asr_confidence": a.min_asr_confidence,
        "tagger_model": a.tagger_model,
        "top_k": a.top_k,
        "fusion": a.fusion,
        "window_s": a.window_s,
        "silence_dbfs": a.silence_dbfs,
        "sample_rate": SAMPLE_RATE,
    }
    if a.fusion == "llm":
        s.update(
            llm_model=a.llm_model,
            llm_max_new_tokens=a.llm_max_new_tokens,
            prompt_version=a.prompt_version,
            prompt_sha=prompt_sha(prompt),
            decoding="greedy",
        )
    return s


def load(plan: CaptionPlan, device: str = "cpu") -> Models:
    """ASR, tagger and (fusion: llm) the audio LLM on `device`; one runner per model step."""
    from captionrec.captioning.audio import AudioCaptioner, SoundTagger, Transcriber

    cfg, refs, a = plan.cfg, plan.model_map, plan.cfg.audio
    local = cfg.local_files_only
    asr = Transcriber(
        plan.model_path("asr"),
        device=device,
        compute_type=a.asr_compute_type,
        vad=a.vad,
        language=a.language,
        beam_size=a.asr_beam_size,
        cpu_threads=max(0, cfg.torch_threads),
        local_files_only=local,
        model_id=refs["asr"],
    )
    tagger = SoundTagger(
        plan.model_path("tagger"), device=device, top_k=a.top_k, local_files_only=local, model_id=refs["tagger"]
    )
    llm = None
    if a.fusion == "llm":
        llm = AudioCaptioner(
            plan.model_path("llm"),
            device=device,
            dtype=a.dtype,
            attn=a.attn_implementation,
            local_files_only=local,
            model_id=refs["llm"],
        )
    runners = {"asr": BatchRunner(1), "llm": BatchRunner(a.batch_size)}  # faster-whisper: one clip a call
    return Models(AudioRoles(asr, tagger, llm), device, BatchRunner(a.batch_size), runners)


def decode(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """The first `window_s` of the soundtrack at 16 kHz; no track or a silent one is the item's reason."""
    a = plan.cfg.audio

    def read(path: str) -> tuple[Any, int]:
        sound = soundtrack(item, path, a.window_s, a.silence_dbfs)
        return sound.samples, sound.decode_errors

    return decode_item(item, read)


class _AudioBatch:
    """One audio batch through its three model steps: speech (ASR), sound tags, the caption (LLM or template)."""

    def __init__(self, plan: CaptionPlan, models: Models, decoded: list[Decoded]):
        self.plan, self.models, self.roles, self.decoded, self.a = plan, models, models.model, decoded, plan.cfg.audio
        self.out: dict[int, dict[str, Any]] = {}
        self.state: dict[int, dict[str, Any]] = {}
        for i, d in enumerate(decoded):
            if d.failure is not None:
                self.out[i] = caption_row(plan, d.item, models, **d.base(), **d.failure)
            else:
                self.state[i] = {"model_s": 0.0}

    def rows(self) -> list[dict[str, Any]]:
        self.step(self.models.step("asr"), self.transcribe, "asr")
        self.step(
            self.models.step("tags"), lambda idx: self.roles.tagger.tag([self.decoded[i].data for i in idx]), "tags"
        )
        if self.a.fusion == "llm":
            self.step(self.models.step("llm"), self.write_llm, "text")
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
        return [self.roles.asr.transcribe(self.decoded[i].data) for i in idx]

    def unclear(self, s: dict[str, Any]) -> bool:
        conf = s["asr"].confidence
        return conf is not None and conf < self.a.min_asr_confidence

    def template(self, s: dict[str, Any]) -> str:
        from captionrec.captioning.audio import template_caption

        return template_caption(s["asr"].text, s["tags"], speech_unclear=self.unclear(s))

    def write_llm(self, idx: list[int]) -> list[str]:
        from captionrec.captioning.audio import render_audio_prompt

        prompts = [
            render_audio_prompt(
                self.plan.prompt,
                self.state[i]["asr"].text,
                self.state[i]["tags"],
                speech_unclear=self.unclear(self.state[i]),
            )
            for i in idx
        ]
        return self.roles.llm.caption(
            [self.decoded[i].data for i in idx], prompts, max_new_tokens=self.a.llm_max_new_tokens
        )

    def speech(self, s: dict[str, Any]) -> dict[str, Any]:
        tr = s.get("asr")
        if tr is None:
            return {}
        unclear = self.unclear(s)
        return {
            "transcript": tr.text,
            "language": tr.language,
            "asr_confidence": tr.confidence,
            "low_confidence": unclear or not tr.language_known,
            "transcript_reason": C.LOW_CONFIDENCE if unclear else None,
        }

    def fail(self, i: int, exc: BaseException) -> None:
        d, s = self.decoded[i], self.state.pop(i)
        self.out[i] = caption_row(
            self.plan, d.item, self.models, **d.base(s["model_s"]), **self.speech(s), **failure(exc)
        )

    def finish(self, i: int) -> None:
        d, s = self.decoded[i], self.state.pop(i)
        self.out[i] = caption_row(
            self.plan,
            d.item,
            self.models,
            **d.base(s["model_s"]),
            **self.speech(s),
            sound_tags=[{"label": t.label, "score": float(t.score)} for t in s["tags"]],
            model_s=s["model_s"],
            **text_or_empty(s["text"]),
        )


def caption(plan: CaptionPlan, models: Models, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """One row per decoded item: speech, tags and the caption, or the reason (decode, a model step, no text)."""
    return _AudioBatch(plan, models, decoded).rows()


def batch_size(cfg: CaptionConfig) -> int:
    return cfg.audio.batch_size


KIND = CaptionKind(NAME, setup, settings, load, decode, caption, batch_size)
