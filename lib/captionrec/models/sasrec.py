"""SASRec (Kang & McAuley 2018): causal self-attention over the item sequence.

Two layouts (`norm`): "pre" (pre-LayerNorm blocks and a final LayerNorm, item vectors scaled by sqrt(dim), as
Kang & McAuley's code) and "post" (RecBole's, BERT's: LayerNorm on the summed item and position vectors,
post-LayerNorm blocks, no dropout inside the feed-forward, every linear layer drawn from N(0, 0.02)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from captionrec.models.base import Recommender
from captionrec.models.item_repr import ItemRepresentation

NORMS = ("pre", "post")


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, post_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.post_norm = post_norm
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        # Kang & McAuley drop inside the feed-forward too; RecBole (post) only after it
        inner = [] if post_norm else [nn.Dropout(dropout)]
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), *inner, nn.Linear(4 * dim, dim))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); allowed (B, 1, T, T) bool, True = may attend."""
        b, t, d = x.shape
        h = x if self.post_norm else self.norm1(x)
        q, k, v = self.qkv(h).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, Dh)
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=allowed, dropout_p=self.attn_dropout if self.training else 0.0
        )  # (B, H, T, Dh)
        att = self.dropout(self.out(att.transpose(1, 2).reshape(b, t, d)))
        if self.post_norm:
            x = self.norm1(x + att)
            return self.norm2(x + self.dropout(self.ff(x)))
        x = x + att
        return x + self.dropout(self.ff(self.norm2(x)))


class SASRec(Recommender):
    def __init__(
        self,
        item_repr: ItemRepresentation,
        max_seq_len: int,
        dim: int,
        layers: int = 2,
        heads: int = 2,
        dropout: float = 0.2,
        norm: str = "pre",
    ):
        super().__init__()
        if item_repr.dim != dim:
            raise ValueError(f"item representation dim {item_repr.dim} != model dim {dim}")
        if norm not in NORMS:
            raise ValueError(f"norm {norm!r} is not one of {NORMS}")
        self.item_repr = item_repr
        self.max_seq_len = max_seq_len
        self.dim = dim
        self.position = nn.Embedding(max_seq_len, dim)
        # Small, like the item vectors (std 0.02, scaled by sqrt(dim) in forward): nn.Embedding's default N(0, 1)
        # would drown the items' signal in the positions' at the start of training.
        nn.init.normal_(self.position.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)
        self.post_norm = norm == "post"
        self.blocks = nn.ModuleList(_Block(dim, heads, dropout, self.post_norm) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)  # pre: after the last block; post: on the input vectors
        if self.post_norm:
            for block in self.blocks:
                for layer in block.modules():
                    if isinstance(layer, nn.Linear):
                        nn.init.normal_(layer.weight, std=0.02)
                        nn.init.zeros_(layer.bias)

    def forward(self, seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        """seq (B, T) long, left-padded with 0, T <= max_seq_len -> user states (B, T, D).

        State t summarises seq[:, :t + 1]. Left padding keeps the latest item at position T - 1, whose
        position embedding is the last one: positions count back from the most recent item.
        """
        b, t = seq.shape
        if t > self.max_seq_len:
            raise ValueError(f"sequence length {t} > max_seq_len {self.max_seq_len}")
        real = seq != 0  # (B, T)
        pos = torch.arange(self.max_seq_len - t, self.max_seq_len, device=seq.device)  # (T,)
        if self.post_norm:
            x = self.norm(self.item_repr(seq) + self.position(pos))  # (B, T, D)
        else:
            x = self.item_repr(seq) * math.sqrt(self.dim) + self.position(pos)  # (B, T, D)
        x = self.dropout(x) * real.unsqueeze(-1)
        causal = torch.ones(t, t, dtype=torch.bool, device=seq.device).tril()  # (T, T)
        # Keys must be real items; every query may see itself, so a padding query never has all keys masked.
        eye = torch.eye(t, dtype=torch.bool, device=seq.device)
        allowed = (causal & real.unsqueeze(1)) | eye  # (B, T, T)
        allowed = allowed.unsqueeze(1)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, allowed) * real.unsqueeze(-1)
        return x if self.post_norm else self.norm(x)  # (B, T, D)
