"""The item representation both models share: learned id embedding, frozen feature vectors -> MLP, or both.

Id part. Only items with a training interaction in the phase (`known`) get their own trainable id row;
every other item (first seen in the validation or test week) shares one "unknown" vector, so nothing in
the model is specific to an item the training data never showed. The unknown vector starts at zero and
only learns through id dropout (`id_dropout`: in training, an item's own id row is replaced by the
unknown vector with that probability, so fusion models learn to lean on features). In `id+feature`
mode an unknown item is therefore scored from its features (plus the shared unknown vector).

Feature part. Items without a feature vector (a failed caption, a missing embedding) have
`feature_mask == False`: they get one learned "missing-feature" vector (shared by all such items)
instead of the MLP output. Index 0 is padding and always maps to zeros.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

MODES = ("id", "feature", "id+feature")


class ItemRepresentation(nn.Module):
    def __init__(
        self,
        num_items: int,
        dim: int,
        mode: str = "id",
        features: Optional[torch.Tensor] = None,  # (N + 1, F) float, row 0 = padding
        feature_mask: Optional[torch.Tensor] = None,  # (N + 1,) bool: item has a vector
        hidden: int = 256,
        dropout: float = 0.1,
        known: Optional[torch.Tensor] = None,  # (N + 1,) bool: item has a training interaction (None: all)
        id_dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"item representation mode {mode!r} is not one of {MODES}")
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout}")
        self.mode = mode
        self.num_items = num_items  # real items are 1..num_items
        self.dim = dim
        self.use_id = mode in ("id", "id+feature")
        self.use_feature = mode in ("feature", "id+feature")
        self.id_dropout = float(id_dropout)

        if self.use_id:
            if known is None:
                known = torch.ones(num_items + 1, dtype=torch.bool)
            if known.shape != (num_items + 1,):
                raise ValueError(f"known must be ({num_items + 1},), got {tuple(known.shape)}")
            known = known.clone().bool()
            known[0] = False
            self.register_buffer("known", known, persistent=True)  # (N + 1,)
            self.id_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
            nn.init.normal_(self.id_embedding.weight, std=0.02)
            with torch.no_grad():
                self.id_embedding.weight[0].zero_()
            self.unknown = nn.Parameter(torch.zeros(dim))

        if self.use_feature:
            if features is None:
                raise ValueError(f"mode {mode!r} needs a feature matrix")
            if features.dim() != 2 or features.shape[0] != num_items + 1:
                raise ValueError(f"features must be (num_items + 1, F) = ({num_items + 1}, F), got {tuple(features.shape)}")
            if feature_mask is None:
                feature_mask = features.abs().sum(dim=1) > 0
            feature_mask = feature_mask.clone().bool()
            feature_mask[0] = False
            # Frozen: buffers move with .to(device) and are saved, but get no gradient.
            self.register_buffer("features", features.float().clone(), persistent=True)  # (N + 1, F)
            self.register_buffer("feature_mask", feature_mask, persistent=True)  # (N + 1,)
            self.projection = nn.Sequential(
                nn.Linear(features.shape[1], hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, dim),
            )
            self.missing = nn.Parameter(torch.zeros(dim))
            nn.init.normal_(self.missing, std=0.02)

    def _id_part(self, idx: torch.Tensor) -> torch.Tensor:
        own = self.known[idx]  # (...) bool
        if self.training and self.id_dropout > 0:
            own = own & (torch.rand(idx.shape, device=idx.device) >= self.id_dropout)
        emb = self.id_embedding(torch.where(own, idx, torch.zeros_like(idx)))  # (..., D), zeros where not own
        return emb + (~own).unsqueeze(-1).to(emb.dtype) * self.unknown  # (..., D)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (...) long -> (..., D); padding (0) -> zeros."""
        out = None
        if self.use_id:
            out = self._id_part(idx)
        if self.use_feature:
            has = self.feature_mask[idx].unsqueeze(-1).to(self.missing.dtype)  # (..., 1)
            proj = self.projection(self.features[idx])  # (..., D)
            feat = proj * has + self.missing * (1.0 - has)  # (..., D)
            out = feat if out is None else out + feat
        pad = (idx != 0).unsqueeze(-1).to(out.dtype)  # (..., 1)
        return out * pad

    def vectors_for(self, idx: torch.Tensor, features: Optional[torch.Tensor] = None,
                    feature_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Vectors of items given by their model index and (feature modes) their own feature rows, for serving
        items the model never indexed: idx (M,) long (0: no row in this model, the shared unknown id vector),
        features (M, F) standardised like the training matrix, feature_mask (M,) bool -> (M, D). Unlike
        `forward`, index 0 is not padding here."""
        out = None
        if self.use_id:
            out = self._id_part(idx)
        if self.use_feature:
            if features is None or feature_mask is None:
                raise ValueError(f"mode {self.mode!r} needs features and feature_mask for vectors_for")
            has = feature_mask.unsqueeze(-1).to(self.missing.dtype)
            feat = self.projection(features.to(self.missing.dtype)) * has + self.missing * (1.0 - has)
            out = feat if out is None else out + feat
        return out

    def all_items(self) -> torch.Tensor:
        """(N + 1, D) for every item index, row 0 zeros."""
        idx = torch.arange(self.num_items + 1, device=self._device())
        return self.forward(idx)

    def _device(self) -> torch.device:
        return next(self.parameters()).device
