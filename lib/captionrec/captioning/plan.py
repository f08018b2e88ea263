"""A captioner per kind, resolved on the driver: its settings, version, prompt and model references.

Captioner version: `<kind>-<12 hex>`, a short hash of everything that changes a caption of that kind (model ids,
prompt version and text, frame sampling, window, pixel budget, generation length, fusion, ASR language and
confidence threshold, ...). Batch sizes, dtype and attention kernels are left out: they change speed, not the
captioner. No Spark, no tables.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captionrec.inference.refs import resolve_model
from captionrec.config.caption import CaptionConfig
from captionrec.contracts import CAPTION_KINDS


@dataclass(frozen=True)
class CaptionPlan:
    """Everything a worker needs for one kind (picklable; shipped to the workers inside the model-map)."""

    kind: str
    version: str
    settings_json: str  # the versioned settings, as stored in captions.settings
    prompt: str
    prompt_version: str
    model_ids: tuple[tuple[str, str], ...]  # (role, configured reference), e.g. ("vlm", "Qwen/Qwen2.5-VL-3B-Instruct")
    cfg: CaptionConfig
    tiny_dir: str  # absolute: workers may run in another working directory
    synthetic_roles: tuple[str, ...] = ()  # roles whose model has random weights (a tiny model): noise
    summary_prompt: str = ""  # video_full with combine=summary: the prompt over the window captions

    @property
    def synthetic(self) -> bool:
        """Some model of this kind has random weights: its captions are (partly) noise."""
        return bool(self.synthetic_roles)

    @property
    def synthetic_models(self) -> dict[str, str]:
        """Exactly the random models, role -> reference (a real packaged model such as tiny.en is not one)."""
        return {role: ref for role, ref in self.model_ids if role in self.synthetic_roles}

    @property
    def model_map(self) -> dict[str, str]:
        return dict(self.model_ids)

    @property
    def cache_key(self) -> str:
        """Identifies the loaded models (the model-map adds the device)."""
        return f"caption:{self.kind}:{self.version}:{self.tiny_dir}:{self.cfg.local_files_only}"


def load_prompt(prompt_file: str) -> str:
    """Prompt text from `prompt_file` (relative to the conf folder unless absolute)."""
    from captionrec.config import conf_dir

    path = Path(prompt_file)
    if not path.is_absolute():
        path = conf_dir() / path
    if not path.is_file():
        raise FileNotFoundError(f"caption prompt not found: {path}")
    return path.read_text().strip()


def captioner_settings(cfg: CaptionConfig, kind: str, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    """The settings that define a captioner of `kind` (what its version hashes)."""
    phash = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    if kind == "video":
        v = cfg.video
        return {
            "kind": "video", "model": v.model, "prompt_version": v.prompt_version, "prompt_sha": phash,
            "num_frames": None if v.fps else v.num_frames, "fps": v.fps, "max_frames": v.max_frames,
            "window_s": v.window_s, "max_pixels": v.max_pixels, "max_new_tokens": v.max_new_tokens,
            "frames_input": v.frames_input, "decoding": "greedy",
        }
    if kind == "video_full":
        from captionrec.captioning.segments import segments_settings

        return segments_settings(captioner_settings(cfg, "video", prompt), cfg.video.segments, summary_prompt)
    if kind == "audio":
        a = cfg.audio
        s = {
            "kind": "audio", "asr_model": a.asr_model, "asr_beam_size": a.asr_beam_size, "vad": a.vad,
            "language": a.language, "min_asr_confidence": a.min_asr_confidence, "tagger_model": a.tagger_model,
            "top_k": a.top_k, "fusion": a.fusion, "window_s": a.window_s, "silence_dbfs": a.silence_dbfs,
            "sample_rate": 16000,
        }
        if a.fusion == "llm":
            s.update(llm_model=a.llm_model, llm_max_new_tokens=a.llm_max_new_tokens,
                     prompt_version=a.prompt_version, prompt_sha=phash, decoding="greedy")
        return s
    if kind == "av":
        from captionrec.captioning.av import av_settings

        return av_settings(cfg, phash)
    raise ValueError(f"unknown caption kind {kind!r}")


def captioner_version(settings: dict[str, Any]) -> str:
    """`<kind>-<12 hex>`: stable across runs and machines for the same settings."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return f"{settings['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def plan_kind(cfg: CaptionConfig, kind: str) -> CaptionPlan:
    """Resolve one kind's captioner on the driver: prompt, version, model references (each must resolve here:
    a missing tiny model or package is an error before any task starts)."""
    if kind not in CAPTION_KINDS:
        raise ValueError(f"unknown caption kind {kind!r}")
    tiny_dir = str(Path(cfg.tiny_models_dir).resolve())
    summary_prompt = ""
    if kind in ("video", "video_full"):
        prompt_version, prompt = cfg.video.prompt_version, load_prompt(cfg.video.prompt_file)
        roles = [("vlm", cfg.video.model)]
        seg = cfg.video.segments
        if kind == "video_full" and seg.combine == "summary":
            summary_prompt = load_prompt(seg.summary_prompt_file)
    elif kind == "av":
        prompt_version, prompt = cfg.av.prompt_version, load_prompt(cfg.av.prompt_file)
        roles = [("omni", cfg.av.model)]
    else:
        a = cfg.audio
        prompt_version = a.prompt_version if a.fusion == "llm" else "template_v1"
        prompt = load_prompt(a.prompt_file) if a.fusion == "llm" else ""
        roles = [("asr", a.asr_model), ("tagger", a.tagger_model)]
        if a.fusion == "llm":
            roles.append(("llm", a.llm_model))
    synthetic = tuple(role for role, ref in roles if resolve_model(ref, tiny_dir).synthetic)
    settings = captioner_settings(cfg, kind, prompt, summary_prompt)
    return CaptionPlan(
        kind=kind, version=captioner_version(settings), settings_json=json.dumps(settings, sort_keys=True),
        prompt=prompt, prompt_version=prompt_version, model_ids=tuple(roles), cfg=cfg, tiny_dir=tiny_dir,
        synthetic_roles=synthetic, summary_prompt=summary_prompt,
    )
