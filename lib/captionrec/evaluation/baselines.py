"""Training-free baselines, ranked on the model's own test cases with the model's own candidate mask (torch,
batched through `captionrec.evaluation.ranking.Catalogue`; no per-user loop, memory bounded by the batch).

Per case, the target's rank (ties against the target; the case's seen items excluded, like the model's) under:

- `popularity`: interactions per item before the cutoff (t_k), most first;
- `recent_popularity`: interactions per item in the RECENT_DAYS days before the cutoff, most first (the counts
  come from the caller: `captionrec.transforms.sequences.item_counts`, key `recent`). A cold item has no
  interaction before the cutoff, so it scores 0 here as under `popularity`: neither can score cold items;
- `knn` (content, no training): cosine of the candidate's vector to the mean of the vectors of the history the
  model sees (the case's input sequence). Items without a vector score 0 (the cosine of an orthogonal vector)
  and are left out of the history mean; a history without any vector scores every candidate 0;
- `random`: a uniformly random order of the candidates: rank ~ U{1..C};
- `random_new`: a random order that puts the new (cold: no interaction before the cutoff) candidates first, what a
  "show something new" rule does: a cold target's rank ~ U{1..C_new}, a warm target's C_new + U{1..C_warm}. One
  ranking for every case, so its all / cold / warm numbers are those of one deployable rule (a random ranking
  restricted to cold candidates would have no warm or overall number); its cold HR@k is E[min(k, C_new) / C_new].

The random draws are made on the gathered cases from a generator seeded by the window (`random_ranks`,
`random_new_ranks`), so every run on the same cases gets the same random ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from captionrec.contracts import RECENT_POPULARITY_DAYS as RECENT_DAYS
from captionrec.evaluation.ranking import Catalogue, require_finite

__all__ = ["RECENT_DAYS", "BaselineScorer", "history_means", "random_new_ranks", "random_ranks", "unit_vectors"]


def history_means(vectors: torch.Tensor, has_vec: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """vectors (N + 1, F), has_vec (N + 1,) bool, seq (B, L) 0-padded -> (B, F): per row, the mean of the
    vectors of its items that have one (0 where none has)."""
    w = has_vec[seq].to(vectors.dtype)  # (B, L); padding (item 0) never has a vector
    total = torch.einsum("bl,blf->bf", w, vectors[seq])
    return total / w.sum(dim=1, keepdim=True).clamp(min=1.0)


def unit_vectors(features: np.ndarray, mask: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N + 1, F) vectors -> (the vectors as float32, their L2-normalised rows, has_vec (N + 1,) bool); rows of
    items without a vector (masked out, all zero, or item 0, padding) are 0 in both.
    """
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    require_finite(x, "content feature vectors")
    norm = x.norm(dim=1)
    has = norm > 0
    if mask is not None:
        has &= torch.as_tensor(np.asarray(mask, dtype=bool))
    has[0] = False
    x = torch.where(has.unsqueeze(1), x, torch.zeros_like(x))
    return x, x / norm.clamp(min=1e-12).unsqueeze(1), has


@dataclass
class BaselineScorer:
    """The baselines' inputs on the evaluation device, prepared once per evaluation like the model's Catalogue.

    popularity: (N + 1,) interactions before the cutoff (also what makes an item new: 0);
    recent: (N + 1,) interactions in the RECENT_DAYS before the cutoff (None: not ranked, e.g. leave-one-out);
    content: the run's item feature vectors' Catalogue (None: an ID-only run, no kNN)."""

    popularity: torch.Tensor  # (N + 1,) float64
    new: torch.Tensor  # (N + 1,) float64: 1 for an item without an interaction before the cutoff
    recent: torch.Tensor | None
    content: Catalogue | None
    vectors: torch.Tensor | None  # (N + 1, F) the run's vectors (0 rows: no vector), averaged over a history
    has_vec: torch.Tensor | None  # (N + 1,) bool

    @classmethod
    def prepare(
        cls,
        popularity: np.ndarray,
        *,
        recent: np.ndarray | None = None,
        features: np.ndarray | None = None,
        feature_mask: np.ndarray | None = None,
        candidates: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> BaselineScorer:
        pop = torch.as_tensor(np.asarray(popularity), dtype=torch.float64, device=device)
        if recent is not None and len(recent) != len(popularity):
            raise ValueError(f"recent counts cover {len(recent)} items, popularity {len(popularity)}")
        rec = None if recent is None else torch.as_tensor(np.asarray(recent), dtype=torch.float64, device=device)
        content = vectors = has = None
        if features is not None:
            if len(features) != len(popularity):
                raise ValueError(f"feature vectors cover {len(features)} items, popularity {len(popularity)}")
            vectors, unit, has = (t.to(device) for t in unit_vectors(features, feature_mask))
            content = Catalogue.of(unit, candidates)  # score = unit vector . history mean: the cosine's order
        return cls(pop, (pop == 0).to(torch.float64), rec, content, vectors, has)

    @property
    def names(self) -> tuple[str, ...]:
        """The baselines these inputs rank (random and random_new are drawn after gathering)."""
        names = ["random", "popularity", "random_new"]
        if self.recent is not None:
            names.append("recent_popularity")
        if self.content is not None:
            names.append("knn")
        return tuple(names)

    def rank(
        self, catalogue: Catalogue, seq: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """One batch of cases -> {rank_popularity, [rank_recent_popularity], [rank_knn], new_offset, new_group}
        (B,) each; `catalogue` is the model's (its candidates are the baselines' candidates)."""
        out = {"rank_popularity": catalogue.rank_fixed(self.popularity, targets, seen)}
        if self.recent is not None:
            out["rank_recent_popularity"] = catalogue.rank_fixed(self.recent, targets, seen)
        if self.content is not None:
            means = history_means(self.vectors, self.has_vec, seq)
            out["rank_knn"] = self.content.rank(means, targets, seen)[0]
        # random_new: how many unseen new candidates there are, and the size of the target's own group
        # (new or not), from two fixed-score ranks (ties against the target count the whole group)
        new_rank = catalogue.rank_fixed(self.new, targets, seen)  # new target: its group; else: all
        old_rank = catalogue.rank_fixed(1.0 - self.new, targets, seen)  # old target: its group; else: all
        is_new = self.new[targets] > 0
        out["new_group"] = torch.where(is_new, new_rank, old_rank)
        out["new_offset"] = torch.where(is_new, torch.zeros_like(new_rank), new_rank - old_rank)
        return out


def random_ranks(candidates: np.ndarray, seed: int) -> np.ndarray:
    """The target's rank under a uniformly random order of each case's C candidates: U{1..C}."""
    u = np.random.default_rng(seed).random(len(candidates))
    return 1 + np.floor(u * np.maximum(candidates, 1)).astype(np.int64)


def random_new_ranks(new_offset: np.ndarray, new_group: np.ndarray, seed: int) -> np.ndarray:
    """The target's rank under a random order with the new candidates first: offset + U{1..group} (offset: the
    new candidates ahead of an old target, 0 for a new one; group: the candidates of the target's kind)."""
    u = np.random.default_rng([seed, 1]).random(len(new_group))  # a stream apart from random_ranks'
    return np.asarray(new_offset, np.int64) + 1 + np.floor(u * np.maximum(new_group, 1)).astype(np.int64)
