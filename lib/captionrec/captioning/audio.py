"""Audio branch wrappers: speech transcription, sound tagging, and the audio caption (LLM or template).

- `Transcriber`: faster-whisper (a size name, a Hub id, or a local CTranslate2 folder), VAD on by default.
- `SoundTagger`: a transformers audio classifier (AudioSet AST by default) -> top-k (label, score).
- `AudioCaptioner`: Qwen2-Audio writes the caption from the audio, the transcript and the tags.
- `template_caption`: the caption composed from transcript + tags without an LLM (cheap ablation/offline default).

A transcript whose confidence is below the caption config's threshold is left out of the caption (the prompt and
the template say the speech is unclear); the caption core records why.

Inputs are 16 kHz mono float32 arrays. No Spark, no tables.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from captionrec.captioning.common import SAMPLE_RATE
from captionrec.inference.hf_compat import audio_lm_class, load_pretrained
from captionrec.inference.refs import is_synthetic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoundTag:
    label: str
    score: float


@dataclass(frozen=True)
class Transcript:
    text: str
    language: str | None  # detected (language "auto", multilingual model) or stated; None: unknown
    language_probability: float | None
    speech_s: float  # seconds of audio left after VAD (the whole clip without VAD)
    confidence: float | None = None  # see `transcript_confidence`; None when nothing was transcribed
    language_known: bool = True  # False: an English-only model under "auto" (it cannot tell the language)


# Whisper's own decode checks: a segment over this compression ratio is repetitive (a decoding loop); one under
# this mean token log-probability is a guess (faster-whisper's defaults, where they trigger its temperature fallback).
COMPRESSION_RATIO_LIMIT = 2.4
LOG_PROB_LIMIT = -1.0


def transcript_confidence(segments: Sequence[Any]) -> float | None:
    """The mean probability of the transcript's words (faster-whisper `word_timestamps`), in [0, 1]; the words of
    a segment that failed Whisper's own checks (compression ratio over 2.4, mean log-probability under -1, or
    decoded by temperature fallback) or that it judges not to be speech (no_speech_prob > 0.6) count 0. None when
    nothing was transcribed.

    Measured with faster-whisper tiny.en on espeak-ng speech (raw and through AAC): English 0.72-0.78; Mandarin
    and German 0 as `Transcriber` decodes (temperature 0 only: the English-only model writes invented English
    for them and fails the checks); under faster-whisper's sampling fallback they reached 0.46-0.54 by chance.
    """
    probs: list[float] = []
    for s in segments:
        failed = (
            (s.temperature or 0) > 0
            or s.compression_ratio > COMPRESSION_RATIO_LIMIT
            or s.avg_logprob < LOG_PROB_LIMIT
            or s.no_speech_prob > 0.6
        )
        words = s.words or []
        probs += [0.0 if failed else float(w.probability) for w in words]
    return round(sum(probs) / len(probs), 4) if probs else None


def _split_device(device: str) -> tuple[str, int]:
    if device.startswith("cuda"):
        _, _, idx = device.partition(":")
        return "cuda", int(idx) if idx else 0
    return "cpu", 0


class Transcriber:
    """faster-whisper speech-to-text; `transcribe(audio)` -> Transcript (empty text when nothing is spoken).

    `language`: "auto" (None means the same) lets a multilingual model detect it; an English-only model (tiny.en)
    cannot, so its transcripts under "auto" have language=None and `language_known=False`. A language code is
    passed to the model as stated; an English-only model accepts only "en".

    Decoding is greedy or beam search at temperature 0 only: faster-whisper's default fallback re-decodes a failed
    segment by sampling at higher temperatures from CTranslate2's per-thread generator (not reseedable once used),
    and where a sampled segment ends moves where the next one starts, so a clip's transcript would depend on what
    the process transcribed before it. A failed segment keeps its temperature-0 text and counts 0 in
    `transcript_confidence` either way; no fallback also spares up to five extra decodes of each failed segment.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        compute_type: str = "auto",
        vad: bool = True,
        language: str | None = "auto",
        beam_size: int = 1,
        cpu_threads: int = 0,
        local_files_only: bool = False,
        model_id: str | None = None,
    ):
        from faster_whisper import WhisperModel

        t0 = time.perf_counter()
        dev, index = _split_device(device)
        self.model_id = model_id or model
        self.synthetic = is_synthetic(model)
        self.vad = vad
        self.language = None if language in (None, "auto") else language
        self.beam_size = beam_size
        self.model = WhisperModel(
            model,
            device=dev,
            device_index=index,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            local_files_only=local_files_only,
        )
        self.multilingual = bool(self.model.model.is_multilingual)
        if not self.multilingual and self.language not in (None, "en"):
            raise ValueError(
                f"speech model {self.model_id} is English-only; language {language!r} needs a multilingual model "
                "(e.g. caption.audio.asr_model=large-v3) or language 'auto' / 'en'"
            )
        self.load_s = time.perf_counter() - t0

    def transcribe(self, audio: np.ndarray) -> Transcript:
        audio = np.asarray(audio, dtype=np.float32)  # (samples,) 16 kHz mono
        segments, info = self.model.transcribe(
            audio,
            language=self.language if self.multilingual else None,
            beam_size=self.beam_size,
            vad_filter=self.vad,
            condition_on_previous_text=False,
            word_timestamps=True,  # word probabilities
            temperature=0.0,
            compression_ratio_threshold=COMPRESSION_RATIO_LIMIT,
            log_prob_threshold=LOG_PROB_LIMIT,
        )
        segments = [s for s in segments if s.text.strip()]
        text = " ".join(s.text.strip() for s in segments)
        speech_s = float(info.duration_after_vad if info.duration_after_vad is not None else info.duration)
        known = self.multilingual or self.language == "en"
        return Transcript(
            text=text,
            language=info.language if known else None,
            language_probability=info.language_probability if known else None,
            speech_s=speech_s,
            confidence=transcript_confidence(segments),
            language_known=known,
        )


class SoundTagger:
    """AudioSet-style tagger (AST by default); `tag(audios)` -> top-k SoundTags per clip.

    Scores are sigmoids for multi-label heads (AudioSet: `problem_type` multi_label or >= 500 classes), else softmax.
    """

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        top_k: int = 5,
        local_files_only: bool = False,
        model_id: str | None = None,
    ):
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        t0 = time.perf_counter()
        self.model_id = model_id or model
        self.synthetic = is_synthetic(model)
        self.device = device
        self.top_k = top_k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # mel filter bank warning for 128 bins at 16 kHz
            self.feature_extractor = AutoFeatureExtractor.from_pretrained(model, local_files_only=local_files_only)
        self.model = (
            AutoModelForAudioClassification.from_pretrained(model, local_files_only=local_files_only).to(device).eval()
        )
        cfg = self.model.config
        self.multi_label = cfg.problem_type == "multi_label_classification" or cfg.num_labels >= 500
        self.load_s = time.perf_counter() - t0

    def tag(self, audios: Sequence[np.ndarray]) -> list[list[SoundTag]]:
        import torch

        if not audios:
            return []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # mel filter bank warning for 128 bins at 16 kHz
            inputs = self.feature_extractor(
                [np.asarray(a, dtype=np.float32) for a in audios], sampling_rate=SAMPLE_RATE, return_tensors="pt"
            )
        inputs = inputs.to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()  # (B, num_labels)
        probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
        k = min(self.top_k, probs.shape[-1])
        scores, idx = probs.topk(k, dim=-1)  # (B, k)
        labels = self.model.config.id2label
        return [
            [SoundTag(label=str(labels[int(i)]), score=round(float(s), 4)) for s, i in zip(srow, irow)]
            for srow, irow in zip(scores.cpu(), idx.cpu())
        ]


def format_tags(tags: Sequence[SoundTag]) -> str:
    return ", ".join(f"{t.label} ({t.score:.2f})" for t in tags) if tags else "none"


UNCLEAR_SPEECH = "(unclear speech, not transcribed)"


def render_audio_prompt(template: str, transcript: str, tags: Sequence[SoundTag], speech_unclear: bool = False) -> str:
    """Fill `{transcript}` and `{tags}` in an audio prompt template (other braces are left alone).

    `speech_unclear`: the transcript was left out (low confidence); the prompt says so instead of "(no speech)".
    """
    said = UNCLEAR_SPEECH if speech_unclear else (transcript.strip() or "(no speech)")
    return template.replace("{transcript}", said).replace("{tags}", format_tags(tags))


def template_caption(
    transcript: str, tags: Sequence[SoundTag], max_transcript_chars: int = 2000, speech_unclear: bool = False
) -> str:
    """A caption without an LLM: the sound labels, then what is said (or that nothing is, or that it is unclear)."""
    parts = []
    if tags:
        parts.append("Sounds: " + ", ".join(t.label for t in tags) + ".")
    speech = "" if speech_unclear else " ".join(transcript.split())
    if len(speech) > max_transcript_chars:
        speech = speech[: max_transcript_chars - 3].rstrip() + "..."
    if speech_unclear:
        parts.append("Speech: unclear.")
    else:
        parts.append(f'Speech: "{speech}"' if speech else "No speech.")
    return " ".join(parts)


class AudioCaptioner:
    """Qwen2-Audio caption writer: `caption(audios, prompts)` -> one caption per clip (greedy)."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "auto",
        attn: str = "auto",
        local_files_only: bool = False,
        model_id: str | None = None,
    ):
        from transformers import AutoConfig, AutoProcessor

        t0 = time.perf_counter()
        self.model_id = model_id or model
        self.synthetic = is_synthetic(model)
        self.device = device
        kwargs: dict[str, Any] = {"local_files_only": local_files_only}
        self.processor = AutoProcessor.from_pretrained(model, **kwargs)
        self.processor.tokenizer.padding_side = "left"
        # transformers 5.x: AutoModelForMultimodalLM; 4.5x (Databricks ML runtimes): AutoModelForSeq2SeqLM's mapping.
        model_cls = audio_lm_class(AutoConfig.from_pretrained(model, **kwargs))
        self.model = load_pretrained(model_cls, model, device, dtype, attn, local_files_only)
        self.sampling_rate = int(getattr(self.processor.feature_extractor, "sampling_rate", SAMPLE_RATE))
        self.load_s = time.perf_counter() - t0

    def caption(self, audios: Sequence[np.ndarray], prompts: Sequence[str], max_new_tokens: int = 128) -> list[str]:
        import torch

        if not audios:
            return []
        if len(audios) != len(prompts):
            raise ValueError(f"{len(audios)} audios but {len(prompts)} prompts")
        texts = [
            self.processor.apply_chat_template(
                [{"role": "user", "content": [{"type": "audio", "audio": "clip"}, {"type": "text", "text": p}]}],
                add_generation_prompt=True,
                tokenize=False,
            )
            for p in prompts
        ]
        inputs = self.processor(
            text=texts,
            audio=[np.asarray(a, dtype=np.float32) for a in audios],
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        if "input_features" in inputs:
            inputs["input_features"] = inputs["input_features"].to(self.model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)  # (B, L + new)
        texts_out = self.processor.batch_decode(
            out[:, prompt_len:], skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return [t.strip() for t in texts_out]
