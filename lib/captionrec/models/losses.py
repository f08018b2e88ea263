"""The next-item training objective: a full softmax over the phase's training items, or a sampled softmax
with in-batch and/or uniform negatives and the logQ correction.

Rules (issue 10, items 1 and 3):
- Only items of the phase's training data (`known`) are ever negatives: an item first seen in the
  validation or test week is not in the softmax, so training never touches it.
- Sampled softmax: each negative source has its own sampling probability. In-batch negatives are the
  batch's targets, drawn in proportion to how often an item is a training target (`target_counts`);
  uniform negatives are drawn uniformly from the known items. Every logit of item j is corrected by
  -log c_j, c_j = the expected number of copies of j among the sampled items (M p_j for in-batch with M
  targets, + K / |known| for K uniform draws), so popular items are not over-penalised for being sampled
  more often (Yi et al. 2019, "Sampling-bias-corrected neural modeling").
- A user's own other items are never negatives for that user (`members`: the items of the user's rows
  in the batch); the row's own target is never its own negative.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

MODES = ("full", "in_batch", "uniform", "both")
NEG_INF = float("-inf")


def user_item_members(seq: torch.Tensor, user_idx: Optional[torch.Tensor], num_items: int) -> torch.Tensor:
    """(B, N + 1) bool: the items of each row's user in this batch (rows of the same user are merged).

    seq (B, L + 1) long, 0-padded; user_idx (B,) long or None (then each row is its own user; index 0
    means unknown user and is never merged with another row).
    """
    b = seq.shape[0]
    members = torch.zeros(b, num_items + 1, dtype=torch.bool, device=seq.device)
    members.scatter_(1, seq, True)
    members[:, 0] = False
    if user_idx is not None and b > 1:
        same = (user_idx.unsqueeze(1) == user_idx.unsqueeze(0)) & (user_idx != 0).unsqueeze(0)  # (B, B)
        same |= torch.eye(b, dtype=torch.bool, device=seq.device)
        members = (same.to(torch.float32) @ members.to(torch.float32)) > 0
    return members


class NextItemObjective(nn.Module):
    """Cross-entropy of the true next item against negatives drawn from the training items.

    known (N + 1,) bool: items with a training interaction in this phase (index 0 False).
    target_counts (N + 1,): how often each item occurs in the phase's training data (in-batch proposal).
    """

    def __init__(
        self,
        known: torch.Tensor,
        target_counts: Optional[torch.Tensor] = None,
        mode: str = "full",
        num_uniform: int = 128,
        temperature: float = 1.0,
        logq: bool = True,
        mask_user_items: bool = True,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"negatives mode {mode!r} is not one of {MODES}")
        known = known.clone().bool()
        known[0] = False
        if not bool(known.any()):
            raise ValueError("no training items: the objective needs at least one item with a training interaction")
        counts = torch.ones(known.shape[0]) if target_counts is None else target_counts.double().clone()
        counts = torch.where(known, counts.clamp(min=1.0), torch.zeros_like(counts))
        self.mode = mode
        self.num_uniform = int(num_uniform)
        self.temperature = float(temperature)
        self.logq = bool(logq)
        self.mask_user_items = bool(mask_user_items)
        self.register_buffer("known", known, persistent=False)  # (N + 1,)
        self.register_buffer("known_items", torch.nonzero(known).squeeze(1), persistent=False)  # (K,)
        self.register_buffer("target_prob", (counts / counts.sum()).to(torch.float32), persistent=False)  # (N + 1,)

    def forward(
        self,
        hidden: torch.Tensor,  # (M, D) states at positions that have a target
        targets: torch.Tensor,  # (M,) item index of the true next item
        rows: torch.Tensor,  # (M,) batch row of each target
        members: Optional[torch.Tensor],  # (B, N + 1) bool, see user_item_members
        item_repr: nn.Module,  # idx (...) -> (..., D); .all_items() -> (N + 1, D)
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        if hidden.shape[0] == 0:
            return hidden.sum() * 0.0
        if not bool(self.known[targets].all()):
            raise ValueError("a training target is not among the phase's training items (the split leaks)")
        if self.mode == "full":
            return self._full(hidden, targets, rows, members, item_repr)
        return self._sampled(hidden, targets, rows, members, item_repr, generator)

    def _full(self, hidden, targets, rows, members, item_repr) -> torch.Tensor:
        logits = hidden @ item_repr.all_items().T / self.temperature  # (M, N + 1)
        exclude = (~self.known).unsqueeze(0).expand_as(logits)  # (M, N + 1)
        if members is not None:
            others = members[rows].clone()  # (M, N + 1)
            others.scatter_(1, targets.unsqueeze(1), False)  # the row's own target stays
            exclude = exclude | others
        return F.cross_entropy(logits.masked_fill(exclude, NEG_INF), targets)

    def _expected_copies(self, idx: torch.Tensor, m: int) -> torch.Tensor:
        """c_j for items idx: expected copies among the sampled negatives of a batch with m targets."""
        c = torch.zeros(idx.shape, dtype=torch.float32, device=idx.device)
        if self.mode in ("in_batch", "both"):
            c = c + m * self.target_prob[idx]
        if self.mode in ("uniform", "both"):
            c = c + self.num_uniform / float(self.known_items.numel())
        return c.clamp(min=1e-12)

    def _sampled(self, hidden, targets, rows, members, item_repr, generator) -> torch.Tensor:
        m = targets.shape[0]
        pos_vec = item_repr(targets)  # (M, D)
        parts = [(hidden * pos_vec).sum(-1, keepdim=True)]  # (M, 1)
        cols = [targets.unsqueeze(1)]  # item of each logit column, for the correction
        if self.mode in ("in_batch", "both"):
            inb = hidden @ pos_vec.T  # (M, M)
            drop = targets.unsqueeze(1) == targets.unsqueeze(0)  # the true item is never a negative
            if members is not None:
                drop = drop | members[rows.unsqueeze(1), targets.unsqueeze(0)]
            parts.append(inb.masked_fill(drop, NEG_INF))
            cols.append(targets.unsqueeze(0).expand(m, m))
        if self.mode in ("uniform", "both"):
            pick = torch.randint(0, self.known_items.numel(), (self.num_uniform,), device=targets.device, generator=generator)
            neg = self.known_items[pick]  # (K,) training items only
            uni = hidden @ item_repr(neg).T  # (M, K)
            drop = targets.unsqueeze(1) == neg.unsqueeze(0)
            if members is not None:
                drop = drop | members[rows.unsqueeze(1), neg.unsqueeze(0)]
            parts.append(uni.masked_fill(drop, NEG_INF))
            cols.append(neg.unsqueeze(0).expand(m, -1))
        logits = torch.cat(parts, dim=1) / self.temperature  # (M, 1 + ...)
        if self.logq:
            logits = logits - torch.log(self._expected_copies(torch.cat(cols, dim=1), m))
        labels = torch.zeros(m, dtype=torch.long, device=logits.device)
        return F.cross_entropy(logits, labels)
