"""Two-Tower: a user tower over the user's recent items (+ optional user id), an item tower = the shared
item representation, dot-product retrieval."""

from __future__ import annotations

import torch
from torch import nn

from captionrec.models.base import Recommender
from captionrec.models.item_repr import ItemRepresentation


class TwoTower(Recommender):
    def __init__(
        self,
        item_repr: ItemRepresentation,
        num_users: int,
        dim: int,
        layers: int = 2,
        dropout: float = 0.2,
        user_id_in_tower: bool = False,
    ):
        super().__init__()
        if item_repr.dim != dim:
            raise ValueError(f"item representation dim {item_repr.dim} != model dim {dim}")
        self.item_repr = item_repr
        self.dim = dim
        self.user_embedding = nn.Embedding(num_users + 1, dim, padding_idx=0) if user_id_in_tower else None
        if self.user_embedding is not None:
            nn.init.normal_(self.user_embedding.weight, std=0.02)
        mlp: list[nn.Module] = []
        for _ in range(layers):
            mlp += [nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout)]
        self.tower = nn.Sequential(*mlp, nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        """seq (B, T) long, left-padded -> user states (B, T, D); state t pools the real items of seq[:, :t + 1]."""
        real = (seq != 0).unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        e = self.item_repr(seq)  # (B, T, D)
        total = e.cumsum(dim=1)  # (B, T, D)
        count = real.cumsum(dim=1).clamp(min=1.0)  # (B, T, 1)
        pooled = self.norm(total / count)  # (B, T, D) causal mean of the history
        if self.user_embedding is not None:
            if user_idx is None:
                user_idx = torch.zeros(seq.shape[0], dtype=torch.long, device=seq.device)
            pooled = pooled + self.user_embedding(user_idx).unsqueeze(1)  # (B, T, D)
        return pooled + self.tower(pooled)  # (B, T, D)
