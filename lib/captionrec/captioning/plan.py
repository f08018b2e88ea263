"""A captioner per kind, resolved on the driver: its settings, version, prompt and model references.

Captioner version: `<kind>-<12 hex>`, a short hash of everything that changes a caption of that kind (model ids,
prompt version and text, frame sampling, window, pixel budget, generation length, fusion, ASR language and
confidence threshold, ...): the kind module's `settings` (`captioning.kinds`). Batch sizes, dtype and attention
kernels are left out: they change speed, not the captioner. No Spark, no tables.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from captionrec.captioning.common import CaptionPlan, load_prompt
from captionrec.captioning.kinds import KINDS, get_kind
from captionrec.config.caption import CaptionConfig
from captionrec.inference.refs import resolve_model

__all__ = ["CaptionPlan", "captioner_settings", "captioner_version", "check_kinds", "load_prompt", "plan_kind"]


def captioner_settings(cfg: CaptionConfig, kind: str, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    """The settings that define a captioner of `kind` (what its version hashes)."""
    return get_kind(kind).settings(cfg, prompt, summary_prompt)


def captioner_version(settings: dict[str, Any]) -> str:
    """`<kind>-<12 hex>`: stable across runs and machines for the same settings."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return f"{settings['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """`kinds` (e.g. `caption.run_kinds`), each a kind registered in `captioning.kinds.KINDS`: checked before any
    kind runs, so a misspelt name stops the stage before it captions anything. The error lists the registered
    kinds (built-in and plug-in)."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"caption.kinds: unknown kind(s) {unknown}; registered: {', '.join(KINDS)}")
    return kinds


def plan_kind(cfg: CaptionConfig, kind: str) -> CaptionPlan:
    """Resolve one kind's captioner on the driver: prompt, version, model references (each must resolve here:
    a missing tiny model or package is an error before any task starts)."""
    spec = get_kind(kind)
    tiny_dir = str(Path(cfg.tiny_models_dir).resolve())
    setup = spec.setup(cfg)
    synthetic = tuple(role for role, ref in setup.roles if resolve_model(ref, tiny_dir).synthetic)
    settings = spec.settings(cfg, setup.prompt, setup.summary_prompt)
    return CaptionPlan(
        kind=kind,
        version=captioner_version(settings),
        settings_json=json.dumps(settings, sort_keys=True),
        prompt=setup.prompt,
        prompt_version=setup.prompt_version,
        model_ids=tuple(setup.roles),
        cfg=cfg,
        tiny_dir=tiny_dir,
        synthetic_roles=synthetic,
        summary_prompt=setup.summary_prompt,
        spec=spec,
    )
