"""Protocol pieces that had no test that fails when they break (issue 20.4/20.5), pure torch / numpy, no Spark:
the logQ correction of sampled negatives (uniform term included), the random baseline's expected HR@10, the
popularity baseline's ranking from the counts it is given, and EpochSelector's `patience` / best-epoch choice.

The popularity baseline's *pre-t_k* wiring (its counts never include the test week) is checked on real Spark by
tests/transforms/test_splits.py (item_counts) and end to end by tests/training/test_candidates.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from captionrec.config.train import TrainConfig
from captionrec.models.losses import NextItemObjective
from captionrec.training.evaluate import evaluate_cases
from captionrec.training.loop import Context, EpochSelector, TrainJob, candidate_mask
from captionrec.training.windows import Window


class Table(nn.Module):
    """Item vectors as one parameter (row 0 = padding): the item representation the objective calls."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(vectors.clone())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.weight[idx]

    def all_items(self) -> torch.Tensor:
        return self.weight


class FixedScorer(nn.Module):
    """A recommender whose score of item j is `score[j]` for every user (user state = [1], item vector = [s_j])."""

    def __init__(self, scores: np.ndarray):
        super().__init__()
        self.score = nn.Parameter(torch.as_tensor(scores, dtype=torch.float32).unsqueeze(1))

    def item_vectors(self) -> torch.Tensor:
        return self.score

    def user_states(self, seq: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        return torch.ones(seq.shape[0], 1)


def _objective_setup():
    torch.manual_seed(0)
    n = 8
    known = torch.tensor([False, True, True, True, True, True, True, False, False])  # items 7, 8 never trained
    counts = torch.tensor([0, 5, 1, 3, 2, 8, 1, 0, 0])
    vecs = torch.randn(n + 1, 4)
    hidden = torch.randn(3, 4)
    targets = torch.tensor([1, 3, 5])
    return known, counts, Table(vecs), hidden, targets


def _expected_sampled_loss(hidden, targets, vecs, known, counts, neg, mode, temperature):
    """The sampled softmax with logQ written out in numpy: logit_j = h.v_j / T - log c_j, c_j = M p_j (in-batch,
    p = training frequency) + K / |known| (K uniform draws); the true item and equal items are not negatives."""
    h, v = hidden.double().numpy(), vecs.detach().double().numpy()
    kn = known.numpy()
    p = np.where(kn, np.maximum(counts.double().numpy(), 1.0), 0.0)
    p = p / p.sum()
    m, k = len(targets), len(neg)
    t = targets.numpy()

    def c(j):
        out = 0.0
        if mode in ("in_batch", "both"):
            out += m * p[j]
        if mode in ("uniform", "both"):
            out += k / kn.sum()
        return out

    losses = []
    for i in range(m):
        cols = [t[i]]
        if mode in ("in_batch", "both"):
            cols += [j for j in t if j != t[i]]
        if mode in ("uniform", "both"):
            cols += [j for j in neg.numpy() if j != t[i]]
        z = np.array([h[i] @ v[j] / temperature - math.log(c(j)) for j in cols])
        losses.append(-z[0] + np.log(np.exp(z - z.max()).sum()) + z.max())
    return float(np.mean(losses))


@pytest.mark.parametrize("mode", ["both", "in_batch"])
def test_the_logq_correction_is_what_the_docstring_says(mode):
    """c_j = M p_j + K / |known|: the uniform term counts the known items only (not N) and is added for both
    sources; a changed proposal probability changes the loss and fails this."""
    known, counts, table, hidden, targets = _objective_setup()
    obj = NextItemObjective(known, counts, mode=mode, num_uniform=5, temperature=0.7, logq=True, mask_user_items=False)
    gen = torch.Generator().manual_seed(123)
    got = obj(hidden, targets, torch.arange(3), None, table, gen)
    pick = torch.randint(0, int(known.sum()), (5,), generator=torch.Generator().manual_seed(123))
    neg = torch.nonzero(known).squeeze(1)[pick] if mode == "both" else torch.zeros(0, dtype=torch.long)
    want = _expected_sampled_loss(hidden, targets, table.weight, known, counts, neg, mode, 0.7)
    assert float(got.detach()) == pytest.approx(want, rel=1e-4)
    plain = NextItemObjective(known, counts, mode=mode, num_uniform=5, temperature=0.7, logq=False)
    assert (
        abs(float(plain(hidden, targets, torch.arange(3), None, table, torch.Generator().manual_seed(123))) - want)
        > 1e-3
    )


def test_uniform_negatives_logq_is_one_constant_for_every_column():
    """With uniform negatives only, every column (the true item's too) is corrected by log(K / |known|): the
    softmax is unchanged. A correction applied to the negatives only (or per item) would change the loss."""
    known, counts, table, hidden, targets = _objective_setup()

    def loss(logq):
        obj = NextItemObjective(known, counts, mode="uniform", num_uniform=6, logq=logq, mask_user_items=False)
        return float(obj(hidden, targets, torch.arange(3), None, table, torch.Generator().manual_seed(7)))

    assert loss(True) == pytest.approx(loss(False), rel=1e-6)
    pick = torch.randint(0, int(known.sum()), (6,), generator=torch.Generator().manual_seed(7))
    neg = torch.nonzero(known).squeeze(1)[pick]
    assert bool(known[neg].all())  # uniform negatives come from the training items only
    assert loss(True) == pytest.approx(
        _expected_sampled_loss(hidden, targets, table.weight, known, counts, neg, "uniform", 1.0), rel=1e-5
    )


def _eval_rows(n_cases: int, targets: np.ndarray, seen_item: int, max_len: int = 4) -> dict[str, np.ndarray]:
    seq = np.zeros((n_cases, max_len + 1), dtype=np.int64)
    seq[:, -2] = seen_item
    seq[:, -1] = targets
    return {
        "user_idx": np.arange(1, n_cases + 1, dtype=np.int64),
        "chunk": np.zeros(n_cases, dtype=np.int64),
        "seq": seq,
        "target": targets.astype(np.int64),
        "cold": np.zeros(n_cases, dtype=np.int64),
        "repeat": np.zeros(n_cases, dtype=np.int64),
        "seen": np.full((n_cases, 1), seen_item, dtype=np.int64),
    }


def _evaluate(rows, n_items, popularity, candidates=None, seed=5):
    return evaluate_cases(
        FixedScorer(np.arange(n_items + 1, dtype=np.float32)),
        rows,
        ks=(10,),
        exclude_seen=True,
        candidates=candidates,
        popularity=popularity,
        device=torch.device("cpu"),
        world=1,
        seed=seed,
        batch_size=4096,
    )


def test_the_random_baseline_scores_10_over_c():
    """Mean HR@10 of the random ranking over C candidates = 10 / C within sampling error (4 standard errors):
    an off-by-one rank (11 / C) or a ranking over the wrong candidate count fails."""
    n_items, n_cases = 41, 20000
    rng = np.random.default_rng(0)
    rows = _eval_rows(n_cases, rng.integers(2, n_items, n_cases), seen_item=1)  # item 41 is not a candidate
    cand = candidate_mask(np.where(np.arange(n_items + 1) == n_items, 10**12, 0), 10**6)
    res = _evaluate(rows, n_items, np.zeros(n_items + 1), candidates=cand)
    c = n_items - 2  # 41 items, minus the seen one, minus the one that is not a candidate
    assert (res["cases"]["candidates"] == c).all()
    ranks = res["cases"]["rank_random"]
    assert ranks.min() >= 1 and ranks.max() <= c
    hr, p = res["baselines"]["random"]["hr@10"], 10 / c
    assert abs(hr - p) < 4 * math.sqrt(p * (1 - p) / n_cases), (hr, p)
    again = _evaluate(rows, n_items, np.zeros(n_items + 1), candidates=cand)
    assert (again["cases"]["rank_random"] == ranks).all()  # the same cases and seed: the same random ranks


def test_the_popularity_baseline_ranks_by_the_counts_it_is_given():
    """rank = 1 + candidates with more interactions (ties count against the target); the seen item is excluded."""
    n_items = 6
    counts = np.array([0, 50, 9, 7, 7, 0, 3])  # item 1 is the seen one
    rows = _eval_rows(4, np.array([2, 3, 5, 6]), seen_item=1)
    res = _evaluate(rows, n_items, counts)
    assert res["cases"]["rank_popularity"].tolist() == [1, 3, 5, 4]
    assert res["baselines"]["popularity"]["hr@10"] == 1.0


class _Logger:
    """RunLogger's log_metrics, kept in memory (what the selector reports per epoch)."""

    def __init__(self):
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, dict(metrics)))


def _selector(patience: int, select_best: bool = True):
    n_items = 12
    cfg = TrainConfig(patience=patience, select_best_epoch=select_best, ks=(10,), epochs=20)
    job = TrainJob(
        cfg=cfg,
        num_items=n_items,
        num_users=1,
        windows=[],
        source=None,
        steps={},
        item_available_ms=np.zeros(n_items + 1, dtype=np.int64),
        counts={0: {"fit": np.ones(n_items + 1, np.int64), "prior": np.ones(n_items + 1, np.int64)}},
    )
    window = Window(index=0, valid_start_ms=0, test_start_ms=10, test_end_ms=20)
    ctx = Context(rank=0, world=1, device=torch.device("cpu"), logger=_Logger())
    return EpochSelector(job, window, _eval_rows(1, np.array([5]), seen_item=1), ctx), n_items


def _run_epochs(selector, n_items, target_ranks):
    """Feed the selector a model whose target (item 5) has the given rank each epoch; return the epochs run."""
    model = FixedScorer(np.zeros(n_items + 1, dtype=np.float32))
    ran = []
    for epoch, r in enumerate(target_ranks):
        scores = np.arange(n_items + 1, dtype=np.float32)  # items 2..12 (1 is seen) score 2..12: rank by score
        scores[5] = n_items + 0.5 - (r - 1) - 0.25  # exactly r - 1 candidates above the target
        with torch.no_grad():
            model.score.copy_(torch.as_tensor(scores).unsqueeze(1))
        ran.append(epoch)
        if not selector(epoch, model):
            break
    return ran


def test_patience_stops_after_that_many_epochs_without_improvement_and_keeps_the_best():
    sel, n = _selector(patience=2)
    ran = _run_epochs(sel, n, [6, 2, 3, 4, 1, 1])  # best at epoch 1; epochs 2, 3 no better -> stop after 3
    assert ran == [0, 1, 2, 3]
    assert sel.best_epoch == 1 and sel.best == pytest.approx(1 / math.log2(3))
    assert float(sel.best_state["score"][5, 0]) == pytest.approx(n + 0.5 - 1 - 0.25)  # epoch 1's weights
    assert [step for step, _ in sel.ctx.logger.logged] == ran


def test_without_patience_every_epoch_runs_and_a_later_best_wins():
    sel, n = _selector(patience=0)
    assert _run_epochs(sel, n, [6, 2, 3, 4, 1, 5]) == [0, 1, 2, 3, 4, 5]
    assert sel.best_epoch == 4 and sel.best == pytest.approx(1.0)
    latest, n = _selector(patience=0, select_best=False)
    _run_epochs(latest, n, [1, 6, 7])
    assert latest.best_epoch == 2  # select_best_epoch=false keeps the last epoch
