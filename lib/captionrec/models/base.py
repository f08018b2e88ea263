"""The recommender interface, declared once (the shape of RecBole's `SequentialRecommender`).

Every recommender here is an `nn.Module` over left-padded item-index sequences (item 0 = padding,
real items 1..N) that implements:

    forward(seq (B, T), user_idx (B,) | None) -> user states (B, T, D)   causal: state t sees seq[:, :t + 1]
    item_vectors() -> (N + 1, D)                                          row 0 = padding (zeros)
    calculate_loss(batch) -> (loss, n_targets)                            training (next-item prediction)
    score_all(histories (B, T), user_idx=None) -> (B, N + 1)              full-catalogue scores, column 0 = -inf

`calculate_loss` and `score_all` are defined here once, on top of `forward` and `item_vectors`, so a
model only says how it turns a history into states; the objective (full softmax or sampled softmax with
the logQ correction, see `losses.py`) is a part the trainer hands to the model for one training phase.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from captionrec.models.item_repr import ItemRepresentation
from captionrec.models.losses import NextItemObjective, user_item_members


class Recommender(nn.Module):
    """Abstract base: subclasses set `self.item_repr` and implement `forward`."""

    item_repr: ItemRepresentation

    def __init__(self) -> None:
        super().__init__()
        self.objective: Optional[NextItemObjective] = None

    # -- what a model implements -------------------------------------------------------------
    def forward(self, seq: torch.Tensor, user_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    def item_vectors(self) -> torch.Tensor:
        """(N + 1, D): every item's vector, row 0 zeros."""
        return self.item_repr.all_items()

    # -- the declared interface --------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return self.item_repr.num_items

    def set_objective(self, objective: NextItemObjective) -> "Recommender":
        """The training objective of this phase (its negatives come from that phase's training items)."""
        self.objective = objective.to(next(self.parameters()).device)
        return self

    def calculate_loss(
        self, batch: dict[str, torch.Tensor], generator: Optional[torch.Generator] = None
    ) -> tuple[torch.Tensor, int]:
        """batch: 'seq' (B, L + 1) long, left-padded training rows; 'user_idx' (B,) long (optional);
        'new_targets' (B,) long (optional): train only each row's newest new_targets targets (overlapping
        rows, see transforms.sequences; absent: all of them).

        Inputs seq[:, :-1] predict next items seq[:, 1:] at every position that has a real history and a
        real target (all prefixes of the row at once). Returns (mean loss, number of targets).
        """
        if self.objective is None:
            raise RuntimeError("calculate_loss needs an objective: call set_objective(...) for the training phase")
        seq = batch["seq"]
        users = batch.get("user_idx")
        inp, tgt = seq[:, :-1], seq[:, 1:]  # (B, L), (B, L)
        states = self(inp, users)  # (B, L, D)
        valid = (inp != 0) & (tgt != 0)  # (B, L)
        if "new_targets" in batch:  # targets left of the row's newest new_targets belong to an older row
            first = inp.shape[1] - batch["new_targets"].unsqueeze(1)  # (B, 1)
            valid &= torch.arange(inp.shape[1], device=seq.device).unsqueeze(0) >= first
        rows = torch.arange(seq.shape[0], device=seq.device).unsqueeze(1).expand_as(inp)[valid]  # (M,)
        members = user_item_members(seq, users, self.num_items) if self.objective.mask_user_items else None
        loss = self.objective(states[valid], tgt[valid], rows, members, self.item_repr, generator=generator)
        return loss, int(valid.sum())

    def user_states(self, histories: torch.Tensor, user_idx: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, T) histories -> (B, D): the state after the newest item."""
        return self(histories, user_idx)[:, -1]

    def score_all(
        self,
        histories: torch.Tensor,
        user_idx: Optional[torch.Tensor] = None,
        item_vectors: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """(B, T) left-padded histories -> (B, N + 1) scores over the whole catalogue; column 0 is -inf.

        `item_vectors` lets an evaluation loop compute the catalogue's vectors once for many batches.
        """
        items = self.item_vectors() if item_vectors is None else item_vectors
        scores = self.user_states(histories, user_idx) @ items.T  # (B, N + 1)
        scores[:, 0] = float("-inf")
        return scores


class HistoryScorer(nn.Module):
    """What gets logged to MLflow: histories (B, L) long, left-padded -> scores (B, N + 1).

    A plain module (no export): `mlflow.pytorch.load_model` gives it back, `.eval()` works and it scores a
    batch. Column i scores item_idx i (item_index.json next to it maps indices to item ids); column 0 is
    -inf. A user-id tower part, if any, is left out (serving requests carry only the history).
    """

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, histories: torch.Tensor) -> torch.Tensor:
        return self.model.score_all(histories.long())
