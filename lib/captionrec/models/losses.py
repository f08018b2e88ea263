"""Sampled softmax with in-batch and/or uniform negatives."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F


def sampled_softmax_loss(
    hidden: torch.Tensor,  # (M, D) user states at the positions that have a target
    targets: torch.Tensor,  # (M,) long, item index of the true next item (>= 1)
    item_fn: Callable[[torch.Tensor], torch.Tensor],  # idx (K,) -> (K, D)
    num_items: int,
    mode: str = "both",
    num_uniform: int = 128,
    temperature: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Cross-entropy of the true item against negatives.

    Logits per row: [positive | the other rows' targets (in_batch) | `num_uniform` items drawn uniformly
    from 1..num_items, shared by the batch (uniform)]. A negative equal to the row's own target (a
    duplicate target in the batch, or a uniform draw hitting it) is masked out, so the true item is never
    also a negative.
    """
    if mode not in ("in_batch", "uniform", "both"):
        raise ValueError(f"negatives mode {mode!r} is not in_batch | uniform | both")
    if hidden.shape[0] == 0:
        return hidden.sum() * 0.0
    pos_vec = item_fn(targets)  # (M, D)
    pos = (hidden * pos_vec).sum(-1, keepdim=True)  # (M, 1)
    parts = [pos]
    if mode in ("in_batch", "both"):
        inb = hidden @ pos_vec.T  # (M, M)
        same = targets.unsqueeze(1) == targets.unsqueeze(0)  # (M, M), diagonal included
        parts.append(inb.masked_fill(same, float("-inf")))
    if mode in ("uniform", "both"):
        neg = torch.randint(1, num_items + 1, (num_uniform,), device=targets.device, generator=generator)  # (K,)
        uni = hidden @ item_fn(neg).T  # (M, K)
        hit = targets.unsqueeze(1) == neg.unsqueeze(0)  # (M, K)
        parts.append(uni.masked_fill(hit, float("-inf")))
    logits = torch.cat(parts, dim=1) / temperature  # (M, 1 + ...)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)
