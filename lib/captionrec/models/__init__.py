"""Recommender models, pure torch (never pyspark): a shared item representation, Two-Tower and SASRec.

Both models map a left-padded item sequence `(B, T)` to user states `(B, T, D)` (one per position,
causal) and score items by a dot product with `item_vectors()` `(N + 1, D)` (row 0 = padding).
"""

from captionrec.models.item_repr import ItemRepresentation
from captionrec.models.losses import sampled_softmax_loss
from captionrec.models.sasrec import SASRec
from captionrec.models.two_tower import TwoTower

__all__ = ["ItemRepresentation", "SASRec", "TwoTower", "build_model", "sampled_softmax_loss"]


def build_model(
    model: str,
    item_repr: ItemRepresentation,
    *,
    num_users: int,
    max_seq_len: int,
    dim: int,
    layers: int = 2,
    heads: int = 2,
    dropout: float = 0.2,
    user_id_in_tower: bool = False,
):
    """`model` is `sasrec` or `two_tower`."""
    if model == "sasrec":
        return SASRec(item_repr, max_seq_len=max_seq_len, dim=dim, layers=layers, heads=heads, dropout=dropout)
    if model == "two_tower":
        return TwoTower(
            item_repr,
            num_users=num_users,
            dim=dim,
            layers=layers,
            dropout=dropout,
            user_id_in_tower=user_id_in_tower,
        )
    raise ValueError(f"unknown model {model!r} (sasrec | two_tower)")
