"""Full-ranking metrics: HR@k, nDCG@k, MRR, overall and on cold items. Pure torch.

One test case = one target item. Its rank is 1 + the number of candidates scored strictly higher +
the number of *other* candidates tied with it (ties count against the target, so a constant scorer is
not rewarded). HR@k = [rank <= k], nDCG@k = 1 / log2(rank + 1) if rank <= k (one relevant item, so
IDCG = 1), MRR = 1 / rank (untruncated).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Optional

import torch

NEG_INF = float("-inf")


def mask_scores(
    scores: torch.Tensor,  # (B, N + 1)
    seen: Optional[torch.Tensor] = None,  # (B, S) long, 0-padded: items to exclude per row
    candidates: Optional[torch.Tensor] = None,  # (N + 1,) bool: items that may be ranked at all
) -> torch.Tensor:
    """-inf for padding (item 0), non-candidates and each row's seen items."""
    scores = scores.clone()
    scores[:, 0] = NEG_INF
    if candidates is not None:
        scores[:, ~candidates] = NEG_INF
    if seen is not None and seen.numel():
        scores.scatter_(1, seen, NEG_INF)  # index 0 (padding) is -inf already
    return scores


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores (B, N + 1), targets (B,) -> 1-based ranks (B,) long (pessimistic on ties)."""
    tgt = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
    higher = (scores > tgt).sum(dim=1)  # (B,)
    ties = (scores == tgt).sum(dim=1) - 1  # (B,) others equal to the target
    return 1 + higher + ties


def rank_metrics(ranks: torch.Tensor, ks: Sequence[int]) -> dict[str, torch.Tensor]:
    """ranks (B,) -> per-case values (B,) float64 for hr@k, ndcg@k, mrr."""
    r = ranks.to(torch.float64)
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.to(torch.float64)
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 1.0), torch.zeros_like(r))
    out["mrr"] = 1.0 / r
    return out


class MetricAccumulator:
    """Sums of per-case metrics, overall and for cold targets; mergeable across ranks as one tensor."""

    def __init__(self, ks: Sequence[int]):
        self.ks = tuple(ks)
        self.names = [n for k in self.ks for n in (f"hr@{k}", f"ndcg@{k}")] + ["mrr"]
        # layout: [n, sums..., n_cold, cold sums...]
        self.values = torch.zeros(2 * (1 + len(self.names)), dtype=torch.float64)

    def add(self, ranks: torch.Tensor, cold: Optional[torch.Tensor] = None) -> None:
        """ranks (B,), cold (B,) bool."""
        ranks = ranks.detach().cpu()
        per = rank_metrics(ranks, self.ks)
        m = len(self.names)
        self.values[0] += ranks.numel()
        for i, name in enumerate(self.names):
            self.values[1 + i] += per[name].sum()
        if cold is not None:
            c = cold.detach().cpu().bool()
            self.values[1 + m] += c.sum()
            for i, name in enumerate(self.names):
                self.values[2 + m + i] += per[name][c].sum()

    def as_tensor(self) -> torch.Tensor:
        return self.values

    def load_tensor(self, values: torch.Tensor) -> "MetricAccumulator":
        self.values = values.detach().cpu().to(torch.float64).clone()
        return self

    def result(self) -> dict[str, float]:
        """{'hr@10', 'ndcg@10', ..., 'mrr', 'n', 'cold_hr@10', ..., 'n_cold'}; means (NaN when no case)."""
        m = len(self.names)
        n, n_cold = float(self.values[0]), float(self.values[1 + m])
        out = {"n": n, "n_cold": n_cold}
        for i, name in enumerate(self.names):
            out[name] = float(self.values[1 + i]) / n if n else math.nan
            out[f"cold_{name}"] = float(self.values[2 + m + i]) / n_cold if n_cold else math.nan
        return out


def full_ranking(
    user_vecs: torch.Tensor,  # (B, D)
    item_vecs: torch.Tensor,  # (N + 1, D)
    targets: torch.Tensor,  # (B,)
    seen: Optional[torch.Tensor] = None,  # (B, S)
    candidates: Optional[torch.Tensor] = None,  # (N + 1,)
) -> torch.Tensor:
    """Batched full ranking: one matmul, masks, ranks (B,)."""
    scores = user_vecs @ item_vecs.T  # (B, N + 1)
    return target_ranks(mask_scores(scores, seen, candidates), targets)


def naive_ranking(
    user_vecs: torch.Tensor,
    item_vecs: torch.Tensor,
    targets: torch.Tensor,
    seen: Optional[torch.Tensor] = None,
    candidates: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Per-user reference (and the benchmark's baseline): score one user, sort all items, find the target.

    A different algorithm from `full_ranking` (a sort instead of counting), same rule: excluded items
    score -inf, and the target goes after the items it ties with.
    """
    import numpy as np

    ranks = []
    cand = None if candidates is None else candidates.cpu().numpy()
    for b in range(user_vecs.shape[0]):
        s = (item_vecs @ user_vecs[b]).cpu().numpy().astype(np.float64)  # (N + 1,)
        s[0] = -np.inf
        if cand is not None:
            s[~cand] = -np.inf
        if seen is not None:
            s[seen[b].cpu().numpy()] = -np.inf
        t = int(targets[b])
        is_target = np.zeros(s.shape[0], dtype=np.int8)
        is_target[t] = 1
        order = np.lexsort((is_target, -s))  # by score descending, the target last among ties
        ranks.append(int(np.nonzero(order == t)[0][0]) + 1)
    return torch.tensor(ranks, dtype=torch.long)


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) over windows, ignoring NaN."""
    v = [x for x in values if not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return math.nan, math.nan
    mean = sum(v) / len(v)
    if len(v) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))
