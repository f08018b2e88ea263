"""Evaluating a recommender on the cases of one window and role, beside two baselines on the same cases.

Per case: the target's rank under the model (full ranking over the candidates by the model's scores,
`user_states` . `item_vectors`, which is what `score_all` computes), under a
popularity scorer (interactions before the phase's cutoff: most popular first, ties against the target)
and under a random scorer (a uniformly random order of the same candidates: rank ~ U{1..C}, drawn from
a generator seeded by the window, so every run on the same cases gets the same random ranks). The cases
of every rank are gathered, so every process holds all of them (per-user means need a user's cases
together; rank 0 logs them as the run's cases artifact).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from captionrec.evaluation.metrics import summarize_ranks
from captionrec.evaluation.ranking import Catalogue
from captionrec.training.distributed import all_gather_arrays

BASELINES = ("random", "popularity")
CASE_KEYS = ("user_idx", "chunk", "target", "cold", "rank", "rank_popularity", "candidates")


@torch.no_grad()
def rank_cases(
    model: Any,  # captionrec.models.Recommender
    rows: dict[str, np.ndarray],
    *,
    exclude_seen: bool,
    candidates: torch.Tensor | None,
    popularity: np.ndarray | None,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[dict[str, np.ndarray], int]:
    """This process's cases -> (per-case arrays CASE_KEYS, repeat cases dropped).

    With exclude_seen, a case's history items are not ranked, and a repeat target (already in the history)
    is not a next-item case: it is dropped and counted.
    """
    model.eval()
    n = len(rows["target"])
    keep = np.ones(n, dtype=bool)
    if exclude_seen:
        keep &= rows["repeat"] == 0
    idx = np.nonzero(keep)[0]
    out: dict[str, list] = {k: [] for k in ("rank", "candidates", "rank_popularity")}
    if len(idx):
        catalogue = Catalogue.of(model.item_vectors(), candidates)  # once for all batches
        pop = None if popularity is None else torch.as_tensor(popularity, dtype=torch.float64, device=device)
        for i in range(0, len(idx), batch_size):
            b = idx[i : i + batch_size]
            targets = torch.from_numpy(rows["target"][b]).to(device)  # (B,)
            users = torch.from_numpy(rows["user_idx"][b]).to(device)  # (B,)
            seen = torch.from_numpy(rows["seen"][b]).to(device) if exclude_seen else None  # (B, S)
            states = model.user_states(torch.from_numpy(rows["seq"][b, :-1]).to(device), users)  # (B, D)
            ranks, n_cand = catalogue.rank(states, targets, seen)  # raises on NaN / inf
            out["rank"].append(ranks.cpu().numpy())
            out["candidates"].append(n_cand.cpu().numpy())
            if pop is not None:
                out["rank_popularity"].append(catalogue.rank_fixed(pop, targets, seen).cpu().numpy())
    cases = {
        "user_idx": rows["user_idx"][idx],
        "chunk": rows["chunk"][idx],
        "target": rows["target"][idx],
        "cold": rows["cold"][idx],
    }
    for k, parts in out.items():
        cases[k] = np.concatenate(parts) if parts else np.zeros(len(idx) if k != "rank_popularity" else 0, np.int64)
    if popularity is None:
        cases["rank_popularity"] = np.zeros(len(idx), np.int64)
    return {k: np.asarray(cases[k], dtype=np.int64) for k in CASE_KEYS}, int(n - len(idx))


def random_ranks(candidates: np.ndarray, seed: int) -> np.ndarray:
    """The target's rank under a uniformly random order of each case's C candidates: U{1..C}."""
    u = np.random.default_rng(seed).random(len(candidates))
    return 1 + np.floor(u * np.maximum(candidates, 1)).astype(np.int64)


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
) -> dict[str, Any]:
    """Rank this process's cases, gather every process's cases, and summarise.

    Returns {'metrics': model metrics (+ 'repeat_dropped'), 'baselines': {'random': ..., 'popularity': ...}
    (when `popularity` is given), 'cases': all cases sorted by (user_idx, chunk)}. Every rank must call it.
    """
    local, dropped = rank_cases(
        model,
        rows,
        exclude_seen=exclude_seen,
        candidates=candidates,
        popularity=popularity,
        device=device,
        batch_size=batch_size,
    )
    local["dropped"] = np.array([dropped], dtype=np.int64)
    cases = all_gather_arrays(local, world)
    dropped_total = int(cases.pop("dropped").sum())
    order = np.lexsort((cases["chunk"], cases["user_idx"]))
    cases = {k: v[order] for k, v in cases.items()}
    metrics = summarize_ranks(cases["rank"], ks, cases["user_idx"], cases["cold"])
    metrics["repeat_dropped"] = float(dropped_total)
    out: dict[str, Any] = {"metrics": metrics, "cases": cases}
    if popularity is not None:
        cases["rank_random"] = random_ranks(cases["candidates"], seed)
        out["baselines"] = {
            name: summarize_ranks(cases[f"rank_{name}"], ks, cases["user_idx"], cases["cold"]) for name in BASELINES
        }
    return out
