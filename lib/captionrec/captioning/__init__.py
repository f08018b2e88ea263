"""Captioning: the caption kinds and their model wrappers, Spark-free. No Spark, no tables.

- `common`: what every kind shares (a leaf): `CaptionKind` (the plug-in shape), `CaptionPlan`, `Decoded`,
  the row builder, the empty-text rule, `SAMPLE_RATE`, frame trimming and the soundtrack rule.
- `kinds`: one module per kind (`video`, `audio`, `av`, `video_full`), each with the same `KIND` (setup + settings
  -> version, load, decode, caption a batch), and the `KINDS` registry.
- `plan`: a kind's captioner (settings, version, prompt, model references), resolved on the driver.
- `core`: decode -> batch -> models -> caption rows (`load_models`, `caption_rows`) for any registered kind, shared
  by the Spark model-map (`transforms.caption`) and the bare-loop benchmarks.
- model wrappers: `video.VideoCaptioner` (Qwen2.5-VL), `audio.Transcriber` (faster-whisper), `audio.SoundTagger`
  (AST), `audio.AudioCaptioner` (Qwen2-Audio), `audio.template_caption` (no LLM), `omni.OmniCaptioner`
  (Qwen2.5-Omni's thinker).
- The model references resolve through `captionrec.inference.refs` (re-exported here); the loaded-models shape
  (`inference.models.Models`) and the transformers version shims (`inference.hf_compat`) live in `inference` too.
"""

from __future__ import annotations

from captionrec.inference.refs import (
    PKG_PREFIX,
    TINY_PREFIX,
    ModelNotFoundError,
    ResolvedModel,
    attn_implementation,
    is_synthetic,
    resolve_model,
    torch_dtype,
)

__all__ = [
    "PKG_PREFIX",
    "TINY_PREFIX",
    "ModelNotFoundError",
    "ResolvedModel",
    "attn_implementation",
    "is_synthetic",
    "resolve_model",
    "torch_dtype",
]
