"""The caption stage's per-item core, Spark-free: item rows in -> decode -> batch -> models -> caption rows out.

    models = load_models(plan, device)               # once per worker process and device (the model-map caches it)
    for rows in caption_rows(items, plan, models):   # items: dicts with item_id, video_path, has_audio,
        ...                                          # media_fingerprint; rows: dicts of contracts.CAPTIONS

The Spark model-map (`transforms.caption`) and the bare-loop benchmarks both run this; what a kind decodes and how
it captions a batch is its module's (`plan.spec`, from `captioning.kinds.KINDS`). Decoding of batch i+1 runs while
batch i is on the model (`batching.prefetch_batches`); every model call goes through a `BatchRunner` (a batch
that runs out of memory is halved, a failing item is recorded alone). An item that fails gets a row with its
reason; the status follows `contracts.status_of` (ok / skipped for a permanent reason / error for a transient one).
On CUDA each batch's model step is timed on the device (`inference.cost.model_call`, the stage's GPU-seconds).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from captionrec.captioning.common import NOISE_NOTE, CaptionPlan
from captionrec.captioning.kinds import get_kind
from captionrec.inference.batching import prefetch_batches
from captionrec.inference.cost import model_call
from captionrec.inference.models import Models

log = logging.getLogger(__name__)

__all__ = ["NOISE_NOTE", "caption_rows", "load_models"]


def _spec(plan: CaptionPlan) -> Any:
    return plan.spec if plan.spec is not None else get_kind(plan.kind)


def load_models(plan: CaptionPlan, device: str = "cpu") -> Models:
    """Load one kind's models on `device` (the model-map calls this once per worker process and device)."""
    models = _spec(plan).load(plan, device)
    noise = [m.model_id for m in models.parts() if getattr(m, "synthetic", False) is True]
    if noise:
        log.warning("%s: %s (%s on %s)", NOISE_NOTE, ", ".join(noise), plan.kind, device)
    return models


def caption_rows(
    rows: Iterable[dict[str, Any]],
    plan: CaptionPlan,
    models: Models,
    prefetch: bool | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Caption item rows (dicts with item_id, video_path, has_audio, media_fingerprint); yields the output rows of
    each model batch (contracts.CAPTIONS columns; `task_gpus` is left to the caller). Decoding of batch i+1 runs
    in a background thread while batch i is on the model (`prefetch`, default `plan.cfg.prefetch`)."""
    spec = _spec(plan)
    ahead = plan.cfg.prefetch if prefetch is None else prefetch
    decoded_batches = prefetch_batches(
        rows, spec.batch_size(plan.cfg), lambda item: spec.decode(plan, item), threads=1, ahead=ahead
    )
    for decoded in decoded_batches:
        with model_call(models.device):  # device time of the batch's model calls (cost accounting; CUDA only)
            out = spec.caption(plan, models, decoded)
        yield out
