"""The transformers versions captionrec runs under, and their differences in one place.

Two lines matter: transformers 5.x (the embedded default's environment) and 4.5x (the Databricks ML runtime the
bundle targets: 17.3 LTS ML ships 4.51.3, see constraints/dbr-17.3-ml.txt; `.ci/runtime.sh` runs the pipeline
under it). What differs for us:

- the Auto class of audio-language models (Qwen2-Audio): 5.x has `AutoModelForMultimodalLM`; 4.x has no such
  class and maps `qwen2_audio` -> `Qwen2AudioForConditionalGeneration` in `AutoModelForSeq2SeqLM`
  (`audio_lm_class`);
- the loading dtype argument: `dtype` from 4.56 on (the only one 5.x documents), `torch_dtype` before; an
  unknown `dtype=` under 4.51 is stored on the config and the weights load as float32 (`dtype_kwargs`);
- configs and processors of the tiny builders (captionrec.testing): 5.x nests the Qwen2.5-VL text settings in
  `text_config` with `rope_parameters`, 4.x keeps them flat with `rope_scaling` (`is_v5`).

No fallback picks a different model: a class is taken only from an Auto mapping that holds the checkpoint's
`model_type`, and none matching is an error naming the version and what was tried.
"""

from __future__ import annotations

import importlib
from typing import Any

# Tried in order; the first one whose mapping holds the checkpoint's model_type gives its class.
AUDIO_LM_AUTO_CLASSES = ("AutoModelForMultimodalLM", "AutoModelForSeq2SeqLM")


def transformers_version(version: str | None = None) -> tuple[int, int]:
    """(major, minor) of `version` (default: the installed transformers)."""
    if version is None:
        import transformers

        version = transformers.__version__
    from packaging.version import Version

    release = Version(version).release
    return release[0], release[1] if len(release) > 1 else 0


def is_v5(version: str | None = None) -> bool:
    return transformers_version(version) >= (5, 0)


def dtype_kwargs(dtype: Any, version: str | None = None) -> dict[str, Any]:
    """`from_pretrained`'s dtype keyword for the installed transformers: {"dtype": d} (>= 4.56) or
    {"torch_dtype": d} (older: there `dtype` is no loading argument and the weights would stay float32)."""
    return {("dtype" if transformers_version(version) >= (4, 56) else "torch_dtype"): dtype}


def audio_lm_class(config: Any, transformers_module: Any = None) -> type:
    """The model class that loads an audio-language checkpoint (Qwen2-Audio) with config `config` under the
    installed transformers: the class that the first of `AUDIO_LM_AUTO_CLASSES` present in this version maps the
    config's type to. ValueError when none maps it (the message names the model type, the transformers version
    and each Auto class tried)."""
    tf = transformers_module if transformers_module is not None else importlib.import_module("transformers")
    tried = []
    for name in AUDIO_LM_AUTO_CLASSES:
        auto = getattr(tf, name, None)
        if auto is None:
            tried.append(f"{name}: not in this transformers")
            continue
        mapping = auto._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
        tried.append(f"{name}: no {getattr(config, 'model_type', type(config).__name__)!r} in its mapping")
    raise ValueError(
        f"no audio-language model class for model_type {getattr(config, 'model_type', None)!r} under transformers "
        f"{getattr(tf, '__version__', '?')} ({'; '.join(tried)}). caption.audio.llm_model must be an audio-language "
        "checkpoint such as Qwen2-Audio (transformers >= 4.45), or set caption.audio.fusion=template"
    )


# Qwen2.5-Omni (the `av` caption kind) arrived in transformers 4.52; Databricks 17.3 LTS ML ships 4.51.3.
OMNI_MIN_TRANSFORMERS = (4, 52)


def has_omni(transformers_module: Any = None) -> bool:
    tf = transformers_module if transformers_module is not None else importlib.import_module("transformers")
    return hasattr(tf, "Qwen2_5OmniThinkerForConditionalGeneration")


def require_omni(transformers_module: Any = None) -> None:
    """ImportError naming the fix when this transformers has no Qwen2.5-Omni (the `av` caption kind)."""
    tf = transformers_module if transformers_module is not None else importlib.import_module("transformers")
    if not has_omni(tf):
        need = ".".join(map(str, OMNI_MIN_TRANSFORMERS))
        raise ImportError(
            f"the av caption kind (Qwen2.5-Omni) needs transformers >= {need}; this environment has "
            f"{getattr(tf, '__version__', '?')} (Databricks Runtime 17.3 LTS ML ships 4.51.3): install "
            f"transformers>={need} on the cluster (a job library) or leave av out of caption.kinds"
        )


def load_pretrained(
    model_cls: Any, model: str, device: str, dtype: str = "auto", attn: str = "auto", local_files_only: bool = False
) -> Any:
    """`model_cls.from_pretrained(model)` on `device` in eval mode, with the configured dtype (`refs.torch_dtype`,
    passed under this transformers' argument name) and attention kernel (`refs.attn_implementation`): the one way
    the generation models (Qwen2.5-VL, Qwen2-Audio, Qwen2.5-Omni) load."""
    from captionrec.inference.refs import attn_implementation, torch_dtype

    return (
        model_cls.from_pretrained(
            model,
            **dtype_kwargs(torch_dtype(dtype, device)),
            attn_implementation=attn_implementation(attn, device),
            local_files_only=local_files_only,
        )
        .to(device)
        .eval()
    )


__all__ = [
    "AUDIO_LM_AUTO_CLASSES",
    "OMNI_MIN_TRANSFORMERS",
    "audio_lm_class",
    "dtype_kwargs",
    "has_omni",
    "is_v5",
    "load_pretrained",
    "require_omni",
    "transformers_version",
]
