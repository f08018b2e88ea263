"""The training-free baselines (captionrec.evaluation.baselines) on hand-built cases whose right answer is known:
content kNN ranks the item nearest the history mean first, recent popularity counts only the 7 days before t_k
(real Spark through the train stage's item_counts), random-new puts the new items first with the expected HR."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from captionrec.evaluation.baselines import BaselineScorer, history_means, random_new_ranks
from captionrec.evaluation.ranking import Catalogue
from captionrec.training.evaluate import evaluate_cases


def _model(n_items: int):
    from captionrec.models import ItemRepresentation, SASRec

    torch.manual_seed(0)
    return SASRec(ItemRepresentation(n_items, 4, "id"), max_seq_len=3, dim=4, layers=1, heads=1, dropout=0.0)


def _rows(histories: list[list[int]], targets: list[int], cold: list[int] | None = None) -> dict[str, np.ndarray]:
    """One case per history (user i + 1): seq = 0-padded history (length 3) + target; seen = the history."""
    n = len(targets)
    seq = np.zeros((n, 4), np.int64)
    seen = np.zeros((n, 3), np.int64)
    for i, h in enumerate(histories):
        seq[i, 3 - len(h) : 3] = h
        seen[i, : len(h)] = h
    seq[:, 3] = targets
    return {
        "seq": seq,
        "seen": seen,
        "target": np.asarray(targets, np.int64),
        "user_idx": np.arange(1, n + 1),
        "chunk": np.zeros(n, np.int64),
        "cold": np.asarray(cold if cold is not None else [0] * n, np.int64),
        "repeat": np.zeros(n, np.int64),
    }


def _evaluate(rows, n_items, popularity, candidates=None, **kw):
    return evaluate_cases(
        _model(n_items),
        rows,
        ks=(1, 10),
        exclude_seen=True,
        candidates=candidates,
        popularity=popularity,
        device=torch.device("cpu"),
        world=1,
        seed=0,
        **kw,
    )


# items 1..6 in 2-d: 1 and 2 are the history; 3 points exactly along their mean, 4 less so, 5 opposite, 6 has no vector
VECTORS = np.array([[0, 0], [1, 0], [0, 1], [2, 2], [1, -0.2], [-1, -1], [7, 7]], np.float32)
HAS_VECTOR = np.array([False, True, True, True, True, True, False])


def test_knn_ranks_the_item_nearest_the_history_mean_first():
    pop = np.ones(7, np.int64)
    rows = _rows([[1, 2], [1, 2], [6]], [3, 5, 3])
    res = _evaluate(rows, 6, pop, features=VECTORS, feature_mask=HAS_VECTOR)
    cases = res["cases"]
    # case 1: 3 (cosine 1) first; case 2: 3, 4 (0.55), 6 (no vector: 0) above 5 (-1); case 3: the history has no
    # vector, every candidate scores 0 and the target goes after its ties: rank = 5 unseen candidates
    assert cases["rank_knn"].tolist() == [1, 4, 5]
    assert res["baselines"]["knn"]["hr@1"] == pytest.approx(1 / 3)
    # the model's candidate mask applies to the baseline too: without item 3, item 4 is the nearest
    cand = torch.ones(7, dtype=torch.bool)
    cand[3] = False
    only = _evaluate(_rows([[1, 2]], [4]), 6, pop, candidates=cand, features=VECTORS, feature_mask=HAS_VECTOR)
    assert only["cases"]["rank_knn"].tolist() == [1] and only["cases"]["candidates"].tolist() == [3]
    # an ID-only run (no vectors) ranks no kNN
    assert "knn" not in _evaluate(rows, 6, pop)["baselines"] and "rank_knn" not in _evaluate(rows, 6, pop)["cases"]


def test_knn_history_mean_and_scores_are_the_cosine():
    """history_means averages the history's vectors (padding and vector-less items left out); the batched rank
    equals ranking by the explicit cosine to that mean."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(41, 5, generator=g)
    x[0] = 0
    has = torch.ones(41, dtype=torch.bool)
    has[0] = has[7] = False
    seq = torch.randint(0, 41, (64, 6), generator=g)
    seq[:, :2] = 0  # padding
    means = history_means(x, has, seq)
    for b in range(3):
        items = [i for i in seq[b].tolist() if has[i]]
        assert torch.allclose(means[b], x[items].mean(0) if items else torch.zeros(5), atol=1e-6)
    scorer = BaselineScorer.prepare(np.ones(41), features=x.numpy(), feature_mask=has.numpy())
    targets = torch.randint(1, 41, (64,), generator=g)
    cat = Catalogue.of(x)  # the model's catalogue: every item
    ranks = scorer.rank(cat, seq, targets, None)["rank_knn"]
    unit = torch.nn.functional.normalize(x, dim=1) * has.unsqueeze(1)
    cos = unit @ torch.nn.functional.normalize(means, dim=1).T  # (41, B)
    cos[0] = -torch.inf
    expected = (cos >= cos[targets, torch.arange(64)] - 1e-6).sum(0)
    assert torch.equal(ranks, expected)


def _day(t0: int, d: float) -> int:
    return t0 + int(d * 86_400_000)


def test_recent_popularity_counts_only_the_7_days_before_t_k(spark):
    """Interactions older than 7 days before t_k and any at or after t_k do not count; popularity (all before
    t_k) still counts the old ones."""
    import pandas as pd

    from captionrec.transforms.sequences import build_item_index, item_counts
    from captionrec.transforms.splits import split_interactions

    t0 = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)
    rows = [
        ("u0", "early", _day(t0, 0)),  # the data start: the first validation week needs history before it
        ("u1", "old", _day(t0, 5)),
        ("u2", "old", _day(t0, 12.99)),  # 7.01 days before t_k: too old
        ("u3", "edge", _day(t0, 13)),  # exactly 7 days before t_k: counts
        ("u4", "hot", _day(t0, 15)),
        ("u5", "hot", _day(t0, 19.999)),
        ("u6", "future", _day(t0, 20)),  # at t_k: test week
        ("u7", "future", _day(t0, 21)),
        ("u8", "future", _day(t0, 22)),
    ]
    inter = spark.createDataFrame(pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms"]))
    split, windows = split_interactions(inter, "rolling", 1, 7, "2024-01-21T00:00:00")
    assert windows[0].test_start_ms == _day(t0, 20)
    index = build_item_index(inter)
    idx = {r["item_id"]: r["item_idx"] for r in index.collect()}
    counts = item_counts(split, index, [0], len(idx), {0: windows[0].test_start_ms})[0]
    recent = {i: int(counts["recent"][j]) for i, j in idx.items()}
    assert recent == {"early": 0, "old": 0, "edge": 1, "hot": 2, "future": 0}
    assert counts["prior"][idx["old"]] == 2 and counts["prior"][idx["future"]] == 0
    assert "recent" not in item_counts(split, index, [0], len(idx))[0]  # asked for no window: none counted
    # ranked on cases (history: early, so the candidates are edge, future, hot, old): recent popularity puts hot
    # first and old behind everything (it ties with future at 0); popularity ties hot and old at 2 (both rank 2)
    cases = _rows([[idx["early"]], [idx["early"]]], [idx["hot"], idx["old"]])
    res = _evaluate(cases, len(idx), counts["prior"], recent=counts["recent"])["cases"]
    assert res["rank_recent_popularity"].tolist() == [1, 4]
    assert res["rank_popularity"].tolist() == [2, 2]


def test_random_new_puts_new_candidates_first():
    """New = no interaction before the cutoff (popularity 0). A warm target ranks after every unseen new
    candidate, a new one among them; offsets and group sizes exclude the case's seen items."""
    pop = np.array([0, 5, 5, 5, 0, 0, 3, 0, 0], np.float64)  # new: 4, 5, 7, 8
    scorer = BaselineScorer.prepare(pop)
    cat = Catalogue.of(torch.zeros(9, 2))
    seen = torch.tensor([[2, 0], [4, 0], [4, 7]])
    out = scorer.rank(cat, torch.zeros(3, 3, dtype=torch.long), torch.tensor([1, 5, 6]), seen)
    # case 1: warm target 1, new unseen 4 / 5 / 7 / 8, warm unseen 1, 3, 6; case 2: new target 5, new unseen
    # 5, 7, 8; case 3: warm target 6, new unseen 5, 8, warm 1, 2, 3, 6
    assert out["new_offset"].tolist() == [4, 0, 2]
    assert out["new_group"].tolist() == [3, 3, 4]
    rows = _rows([[2], [4], [4, 7]], [1, 5, 6], cold=[0, 1, 0])
    for seed in range(20):
        r = evaluate_cases(
            _model(8),
            rows,
            ks=(10,),
            exclude_seen=True,
            candidates=None,
            popularity=pop,
            device=torch.device("cpu"),
            world=1,
            seed=seed,
        )["cases"]["rank_random_new"]
        assert 5 <= r[0] <= 7 and 1 <= r[1] <= 3 and 3 <= r[2] <= 6


def test_random_new_expected_hit_rate():
    """A new target among G new candidates hits the top k with probability min(k, G) / G; an old target behind
    C_new new candidates with probability max(0, k - C_new) / C_old."""
    n = 200_000
    cold = random_new_ranks(np.zeros(n), np.full(n, 40), seed=1)
    assert (cold <= 10).mean() == pytest.approx(10 / 40, abs=0.005)
    assert cold.min() == 1 and cold.max() == 40
    few = random_new_ranks(np.zeros(n), np.full(n, 4), seed=1)
    assert (few <= 10).all()  # fewer new candidates than k: always a hit
    warm = random_new_ranks(np.full(n, 10), np.full(n, 40), seed=2)
    assert (warm <= 10).sum() == 0 and (warm <= 20).mean() == pytest.approx(10 / 40, abs=0.005)
    assert np.array_equal(
        random_new_ranks(np.zeros(5), np.full(5, 9), 3), random_new_ranks(np.zeros(5), np.full(5, 9), 3)
    )
