"""Full-ranking metrics against hand-computed cases, the batched ranking against a per-user sort, metric
safety (NaN / inf scores are errors, a large k gets a warning), per-case and per-user means, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from captionrec.evaluation.metrics import KShareWarning, mean_std, rank_metrics, summarize_ranks, warn_k_share
from captionrec.evaluation.ranking import full_ranking, mask_scores, naive_ranking, target_ranks


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


def test_summary_overall_cold_and_merge():
    r = summarize_ranks(np.array([1, 2, 11]), ks=(10,), users=np.array([1, 2, 3]), cold=np.array([True, False, True]))
    assert r["cases"] == 3 and r["cold_cases"] == 2
    assert r["hr@10"] == pytest.approx(2 / 3)
    assert r["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(3) + 0.0) / 3)
    assert r["cold_hr@10"] == pytest.approx(0.5)  # ranks 1 and 11
    assert r["cold_mrr"] == pytest.approx((1.0 + 1 / 11) / 2)
    # two ranks' cases together (what the gather does) give the one-shot result
    both = summarize_ranks(
        np.array([1, 2, 11, 3]), ks=(10,), users=np.array([1, 2, 3, 4]), cold=np.array([True, False, True, False])
    )
    merged = summarize_ranks(
        np.concatenate([[1, 2, 11], [3]]),
        ks=(10,),
        users=np.array([1, 2, 3, 4]),
        cold=np.array([True, False, True, False]),
    )
    assert merged == pytest.approx(both)


def test_per_case_and_per_user_means_are_both_named():
    """Issue 10.4: user 1 has 3 cases (2 hits), user 2 one miss: per case 2/4, per user (2/3 + 0) / 2."""
    r = summarize_ranks(np.array([1, 5, 50, 40]), ks=(10,), users=np.array([1, 1, 1, 2]))
    assert r["hr@10"] == pytest.approx(0.5)
    assert r["user_hr@10"] == pytest.approx((2 / 3 + 0.0) / 2)
    assert r["users"] == 2 and r["cases"] == 4
    assert r["user_mrr"] == pytest.approx(((1 + 1 / 5 + 1 / 50) / 3 + 1 / 40) / 2)


def test_empty_summary_gives_nan_not_an_error():
    r = summarize_ranks(np.zeros(0, np.int64), ks=(10,))
    assert r["cases"] == 0 and math.isnan(r["hr@10"]) and math.isnan(r["cold_hr@10"]) and math.isnan(r["user_hr@10"])


def test_nan_or_inf_scores_are_errors():
    """Issue 10.4: a NaN target score used to rank 0 and count as a hit with nDCG = inf."""
    scores = torch.tensor([[0.0, 0.9, float("nan"), 0.7, 0.1]])
    with pytest.raises(ValueError, match="non-finite"):
        target_ranks(mask_scores(scores), torch.tensor([2]))
    with pytest.raises(ValueError, match="non-finite"):
        mask_scores(torch.tensor([[0.0, float("inf"), 0.5]]))
    users = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match="non-finite"):
        full_ranking(users, torch.randn(6, 2), torch.tensor([3]))


def test_a_large_k_against_a_small_catalogue_warns():
    """Issue 8: HR@10 = 1.0 on a 12-item catalogue is not a result; say so."""
    with pytest.warns(KShareWarning, match="k=10 is 83% of the median 12 candidates"):
        msgs = warn_k_share(np.array([12, 12, 11, 13]), ks=(10,))
    assert len(msgs) == 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_k_share(np.array([500, 480]), ks=(10, 20)) == []


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
    # an excluded item listed twice is excluded once; exclusions outside the candidates change nothing
    dup = torch.cat([seen, seen[:, :3]], dim=1)
    assert torch.equal(full_ranking(users, items, targets, dup, cand), slow)
    # one score per item shared by every case (the popularity baseline): sort + binary search, same rule
    from captionrec.evaluation.ranking import Catalogue

    pop = torch.randint(0, 6, (301,)).to(torch.float64)  # many ties
    fixed = Catalogue.of(items, cand).rank_fixed(pop, targets, seen)
    assert torch.equal(
        fixed, naive_ranking(torch.ones(64, 1, dtype=torch.float64), pop.unsqueeze(1), targets, seen, cand)
    )


def test_ranking_in_chunks_matches_one_pass():
    """More cases than one rank pass holds (ranking.RANK_CHUNK): the chunked ranks and candidate counts are the
    per-user sort's, for every chunk including a short last one."""
    from captionrec.evaluation.ranking import RANK_CHUNK, Catalogue

    g = torch.Generator().manual_seed(1)
    n = 2 * RANK_CHUNK + 37
    users, items = torch.randn(n, 8, generator=g), torch.randn(501, 8, generator=g)
    targets = torch.randint(1, 501, (n,), generator=g)
    seen = torch.randint(0, 501, (n, 10), generator=g)
    seen[seen == targets.unsqueeze(1)] = 0
    ranks, n_cand = Catalogue.of(items).rank(users, targets, seen)
    assert torch.equal(ranks, naive_ranking(users, items, targets, seen))
    distinct_seen = torch.tensor([len(set(r.tolist()) - {0}) for r in seen])
    assert torch.equal(n_cand, 500 - distinct_seen)


def test_mean_std():
    assert mean_std([0.2, 0.4]) == pytest.approx((0.3, math.sqrt(0.02)))
    assert mean_std([0.5]) == (0.5, 0.0)
    m, s = mean_std([float("nan"), 1.0, 3.0])
    assert (m, s) == pytest.approx((2.0, math.sqrt(2.0)))
    assert all(math.isnan(x) for x in mean_std([]))


def test_baselines_rank_the_same_cases():
    """Issue 10.5: popularity ranks by counts (ties against the target), random ranks ~ U{1..C}."""
    from captionrec.models import ItemRepresentation, SASRec
    from captionrec.training.evaluate import evaluate_cases, random_ranks

    torch.manual_seed(0)
    n = 8
    model = SASRec(ItemRepresentation(n, 4, "id"), max_seq_len=3, dim=4, layers=1, heads=1, dropout=0.0)
    rows = {  # two cases of user 1: history (0, 1, 2) -> target 3; history (1, 2, 3) -> target 5
        "seq": np.array([[0, 1, 2, 3], [1, 2, 3, 5]]),
        "target": np.array([3, 5]),
        "user_idx": np.array([1, 1]),
        "chunk": np.array([0, 1]),
        "cold": np.array([0, 1]),
        "repeat": np.array([0, 0]),
        "seen": np.array([[1, 2, 0], [1, 2, 3]]),
    }
    pop = np.array([0, 9, 8, 5, 5, 0, 1, 2, 5])  # item 3 ties with 4 and 8; item 5 never seen
    res = evaluate_cases(
        model,
        rows,
        ks=(1, 10),
        exclude_seen=True,
        candidates=None,
        popularity=pop,
        device=torch.device("cpu"),
        world=1,
        seed=0,
    )
    cases = res["cases"]
    # case 1: candidates = items 3..8 (1, 2 seen): 3, 4, 8 tie at 5 -> rank 3; case 2: 4, 8 (5), 7, 6 above 5 (0) -> 5
    assert cases["rank_popularity"].tolist() == [3, 5]
    assert cases["candidates"].tolist() == [6, 5]
    assert res["baselines"]["popularity"]["hr@1"] == 0.0 and res["baselines"]["popularity"][
        "cold_mrr"
    ] == pytest.approx(0.2)
    assert ((cases["rank_random"] >= 1) & (cases["rank_random"] <= cases["candidates"])).all()
    # the random scorer's HR@k is k / C in expectation
    many = random_ranks(np.full(200_000, 50), seed=1)
    assert (many <= 10).mean() == pytest.approx(10 / 50, abs=0.005)
    assert np.array_equal(random_ranks(np.full(5, 50), seed=3), random_ranks(np.full(5, 50), seed=3))
