"""Captioning: model wrappers and the caption stage's Spark-free per-item core. No Spark, no tables.

- `refs`: the one model-reference resolver (`resolve_model`: hub id | local folder | `tiny:<name>` |
  `pkg:<module>/<path>` | the packaged MiniLM) and the one dtype rule (`torch_dtype`), for every wrapper
  (the feature encoders in `captionrec.features` use them too).
- `video.VideoCaptioner`: Qwen2.5-VL (or any AutoModelForImageTextToText with a Qwen-VL style processor).
- `audio.Transcriber` (faster-whisper), `audio.SoundTagger` (AST), `audio.AudioCaptioner` (Qwen2-Audio),
  `audio.template_caption` (no LLM).
- `omni.OmniCaptioner`: Qwen2.5-Omni's thinker, frames + audio in one pass (the `av` kind; `av`: its core).
- `batching`: `BatchRunner` (OOM halving + per-item error capture) and `prefetch_batches` (decode the next batch
  while the model runs): the one retry policy and the one prefetch helper for every model call.
- `plan`: a captioner per kind (settings, version, prompt, model references), resolved on the driver.
- `core`: decode -> batch -> model -> caption rows (`caption_rows`), shared by the Spark model-map and the
  bare-loop benchmark.
- `segments`: whole-video captions (kind `video_full`): the video captioner over consecutive windows, combined.
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
