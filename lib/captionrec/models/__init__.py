"""Recommender models, pure torch (never pyspark): one declared interface (`base.Recommender`:
`calculate_loss(batch)`, `score_all(histories)`), a shared item representation, Two-Tower and SASRec,
and the next-item objective (full softmax, or sampled softmax with the logQ correction).

Both models map a left-padded item sequence `(B, T)` to user states `(B, T, D)` (one per position,
causal) and score items by a dot product with `item_vectors()` `(N + 1, D)` (row 0 = padding).
"""

from captionrec.models.base import HistoryScorer, Recommender
from captionrec.models.item_repr import ItemRepresentation
from captionrec.models.losses import NextItemObjective, user_item_members
from captionrec.models.sasrec import SASRec
from captionrec.models.two_tower import TwoTower

__all__ = [
    "HistoryScorer", "ItemRepresentation", "NextItemObjective", "Recommender", "SASRec", "TwoTower",
    "build_model", "user_item_members",
]


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
    sasrec_norm: str = "pre",
) -> Recommender:
    """`model` is `sasrec` or `two_tower`."""
    if model == "sasrec":
        return SASRec(item_repr, max_seq_len=max_seq_len, dim=dim, layers=layers, heads=heads, dropout=dropout,
                      norm=sasrec_norm)
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
