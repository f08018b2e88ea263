"""Full-ranking metrics against hand-computed cases, and the batched ranking against a per-user sort."""

from __future__ import annotations

import math

import pytest
import torch

from captionrec.training.metrics import (
    MetricAccumulator,
    full_ranking,
    mask_scores,
    mean_std,
    naive_ranking,
    rank_metrics,
    target_ranks,
)


def test_rank_and_metrics_hand_computed():
    # items 0 (padding) .. 4; target item 3 scores 0.7, only item 1 (0.9) is above it -> rank 2
    scores = torch.tensor([[5.0, 0.9, 0.5, 0.7, 0.1]])
    masked = mask_scores(scores)
    assert masked[0, 0] == float("-inf")  # padding is never ranked
    ranks = target_ranks(masked, torch.tensor([3]))
    assert ranks.tolist() == [2]
    m = rank_metrics(ranks, ks=(1, 2, 10))
    assert m["hr@1"].item() == 0.0
    assert m["hr@2"].item() == 1.0
    assert m["ndcg@2"].item() == pytest.approx(1 / math.log2(3))  # 0.6309
    assert m["ndcg@10"].item() == pytest.approx(0.6309297535714575)
    assert m["ndcg@1"].item() == 0.0
    assert m["mrr"].item() == pytest.approx(0.5)


def test_rank_beyond_cutoff_scores_zero_but_counts_in_mrr():
    scores = torch.tensor([[0.0, *[float(x) for x in range(20, 0, -1)]]])  # item i scores 21 - i
    ranks = target_ranks(mask_scores(scores), torch.tensor([15]))
    assert ranks.tolist() == [15]
    m = rank_metrics(ranks, ks=(10, 20))
    assert m["hr@10"].item() == 0.0 and m["ndcg@10"].item() == 0.0
    assert m["hr@20"].item() == 1.0 and m["ndcg@20"].item() == pytest.approx(1 / math.log2(16))
    assert m["mrr"].item() == pytest.approx(1 / 15)


def test_ties_count_against_the_target():
    # a constant scorer must not look perfect: 4 real items all tied -> the target ranks last
    scores = torch.zeros(1, 5)
    assert target_ranks(mask_scores(scores), torch.tensor([2])).tolist() == [4]


def test_seen_items_and_non_candidates_are_excluded():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.6]])
    # without exclusion item 3 ranks 3rd; excluding the seen item 1 -> 2nd; item 2 not a candidate -> 1st
    assert target_ranks(mask_scores(scores), torch.tensor([3])).tolist() == [3]
    seen = torch.tensor([[1, 0]])  # 0-padded list of seen items
    assert target_ranks(mask_scores(scores, seen), torch.tensor([3])).tolist() == [2]
    cand = torch.tensor([False, True, False, True, True])
    assert target_ranks(mask_scores(scores, seen, cand), torch.tensor([3])).tolist() == [1]


def test_accumulator_overall_cold_and_merge():
    acc = MetricAccumulator(ks=(10,))
    acc.add(torch.tensor([1, 2, 11]), cold=torch.tensor([True, False, True]))
    r = acc.result()
    assert r["n"] == 3 and r["n_cold"] == 2
    assert r["hr@10"] == pytest.approx(2 / 3)
    assert r["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3) + 0.0) / 3)
    assert r["cold_hr@10"] == pytest.approx(0.5)  # ranks 1 and 11
    assert r["cold_mrr"] == pytest.approx((1.0 + 1 / 11) / 2)
    # two ranks' sums add up (what the all-reduce does)
    other = MetricAccumulator(ks=(10,))
    other.add(torch.tensor([3]), cold=torch.tensor([False]))
    merged = MetricAccumulator(ks=(10,)).load_tensor(acc.as_tensor() + other.as_tensor())
    both = MetricAccumulator(ks=(10,))
    both.add(torch.tensor([1, 2, 11, 3]), cold=torch.tensor([True, False, True, False]))
    assert merged.result() == pytest.approx(both.result())


def test_empty_accumulator_gives_nan_not_an_error():
    r = MetricAccumulator(ks=(10,)).result()
    assert r["n"] == 0 and math.isnan(r["hr@10"]) and math.isnan(r["cold_hr@10"])


def test_batched_ranking_matches_per_user_sort():
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(64, 8, generator=g), torch.randn(301, 8, generator=g)
    targets = torch.randint(1, 301, (64,), generator=g)
    seen = torch.randint(0, 301, (64, 12), generator=g)
    seen[seen == targets.unsqueeze(1)] = 0  # the target is never among the excluded items
    cand = torch.rand(301, generator=g) > 0.2
    cand[targets] = True
    fast = full_ranking(users, items, targets, seen, cand)
    slow = naive_ranking(users, items, targets, seen, cand)
    assert torch.equal(fast, slow)
    # quantised scores create ties: both must still agree (target after its ties)
    items_q = (items * 2).round() / 2
    assert torch.equal(full_ranking(users.sign(), items_q, targets), naive_ranking(users.sign(), items_q, targets))


def test_mean_std():
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, math.sqrt(0.02)))
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([float("nan"), 1.0, 3.0])
    assert (m, s) == pytest.approx((2.0, math.sqrt(2.0)))
    assert all(math.isnan(x) for x in mean_std([]))
