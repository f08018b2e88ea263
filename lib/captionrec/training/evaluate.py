"""Evaluating a recommender on the cases of one window and role, beside training-free baselines on the same cases.

Per case: the target's rank (full ranking over the candidates by the model's scores, `user_states` .
`item_vectors`, which is what `score_all` computes), and, when the caller gives the counts before the phase's
cutoff, its rank under each baseline of `captionrec.evaluation.baselines` (popularity, recent popularity,
content kNN over the run's feature vectors, random, random among new items first), ranked with the model's
candidate mask and seen items. The cases of every rank are gathered, so every process holds all of them
(per-user means need a user's cases together; rank 0 logs them as the run's cases artifact); the random
baselines are drawn on the gathered cases from a generator seeded by the window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from captionrec.evaluation.baselines import BaselineScorer, random_new_ranks, random_ranks
from captionrec.evaluation.metrics import summarize_ranks
from captionrec.evaluation.ranking import Catalogue
from captionrec.training.distributed import all_gather_arrays

__all__ = ["CASE_KEYS", "evaluate_cases", "random_ranks", "rank_cases"]

CASE_KEYS = ("user_idx", "chunk", "target", "cold", "rank", "candidates")  # + each ranked baseline's rank_<name>
_RANDOM_NEW = ("new_offset", "new_group")  # per case, for the random_new draw after gathering


@torch.no_grad()
def rank_cases(
    model: Any,  # captionrec.models.Recommender
    rows: dict[str, np.ndarray],
    *,
    exclude_seen: bool,
    candidates: torch.Tensor | None,
    baselines: BaselineScorer | None,
    device: torch.device,
    batch_size: int = 512,
    progress: Any = None,  # captionrec.training.progress.Progress: a step per block, inside the caller's phase
) -> tuple[dict[str, np.ndarray], int]:
    """This process's cases -> (per-case arrays: CASE_KEYS, and with `baselines` rank_<name> per ranked
    baseline + new_offset / new_group; repeat cases dropped).

    With exclude_seen, a case's history items are not ranked, and a repeat target (already in the history)
    is not a next-item case: it is dropped and counted.
    """
    model.eval()
    n = len(rows["target"])
    keep = np.ones(n, dtype=bool)
    if exclude_seen:
        keep &= rows["repeat"] == 0
    idx = np.nonzero(keep)[0]
    out: dict[str, list] = {"rank": [], "candidates": []}
    if len(idx):
        catalogue = Catalogue.of(model.item_vectors(), candidates)  # once for all batches
        if progress is not None:
            progress.expect(-(-len(idx) // batch_size))
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            targets = torch.from_numpy(rows["target"][b]).to(device)  # (B,)
            users = torch.from_numpy(rows["user_idx"][b]).to(device)  # (B,)
            seen = torch.from_numpy(rows["seen"][b]).to(device) if exclude_seen else None  # (B, S)
            history = torch.from_numpy(rows["seq"][b, :-1]).to(device)  # (B, L)
            states = model.user_states(history, users)  # (B, D)
            ranks, n_cand = catalogue.rank(states, targets, seen)  # raises on NaN / inf
            out["rank"].append(ranks.cpu().numpy())
            out["candidates"].append(n_cand.cpu().numpy())
            if baselines is not None:
                for k, v in baselines.rank(catalogue, history, targets, seen).items():
                    out.setdefault(k, []).append(v.cpu().numpy())
            if progress is not None:
                progress.step(len(b))
    cases = {
        "user_idx": rows["user_idx"][idx],
        "chunk": rows["chunk"][idx],
        "target": rows["target"][idx],
        "cold": rows["cold"][idx],
    }
    for k, parts in out.items():
        cases[k] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if baselines is not None and not len(idx):  # every rank gathers the same keys
        for name in ("popularity", "recent_popularity", "knn"):
            if name in baselines.names:
                cases[f"rank_{name}"] = np.zeros(0, np.int64)
        cases.update({k: np.zeros(0, np.int64) for k in _RANDOM_NEW})
    return {k: np.asarray(v, dtype=np.int64) for k, v in cases.items()}, int(n - len(idx))


def evaluate_cases(
    model: Any,
    rows: dict[str, np.ndarray],
    *,
    ks,
    exclude_seen: bool,
    candidates: torch.Tensor | None,
    popularity: np.ndarray | None,
    device: torch.device,
    world: int,
    seed: int,
    batch_size: int = 512,
    recent: np.ndarray | None = None,
    features: np.ndarray | None = None,
    feature_mask: np.ndarray | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Rank this process's cases, gather every process's cases, and summarise.

    popularity: (N + 1,) interactions per item before the phase's cutoff; None ranks no baseline. With it:
    recent, (N + 1,) interactions in the RECENT_DAYS before the cutoff (None: no recent_popularity), and
    features / feature_mask, the run's item vectors (None: no knn).
    Returns {'metrics': model metrics (+ 'repeat_dropped'), 'baselines': {name: metrics} (when `popularity`
    is given: random, popularity, random_new, [recent_popularity], [knn]), 'cases': all cases sorted by
    (user_idx, chunk), with rank_<name> per baseline}. Every rank must call it. progress: rank 0's reporter (a
    step per block of `batch_size` cases of this rank's share), inside a phase the caller opened.
    """
    scorer = None
    if popularity is not None:
        scorer = BaselineScorer.prepare(
            popularity,
            recent=recent,
            features=features,
            feature_mask=feature_mask,
            candidates=candidates,
            device=device,
        )
    local, dropped = rank_cases(
        model,
        rows,
        exclude_seen=exclude_seen,
        candidates=candidates,
        baselines=scorer,
        device=device,
        batch_size=batch_size,
        progress=progress,
    )
    local["dropped"] = np.array([dropped], dtype=np.int64)
    cases = all_gather_arrays(local, world)
    dropped_total = int(cases.pop("dropped").sum())
    order = np.lexsort((cases["chunk"], cases["user_idx"]))
    cases = {k: v[order] for k, v in cases.items()}
    metrics = summarize_ranks(cases["rank"], ks, cases["user_idx"], cases["cold"])
    metrics["repeat_dropped"] = float(dropped_total)
    out: dict[str, Any] = {"metrics": metrics, "cases": cases}
    if scorer is not None:
        cases["rank_random"] = random_ranks(cases["candidates"], seed)
        cases["rank_random_new"] = random_new_ranks(cases.pop("new_offset"), cases.pop("new_group"), seed)
        out["baselines"] = {
            name: summarize_ranks(cases[f"rank_{name}"], ks, cases["user_idx"], cases["cold"]) for name in scorer.names
        }
    return out
