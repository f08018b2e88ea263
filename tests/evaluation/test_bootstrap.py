"""The user-level (cluster) bootstrap: coverage of a known difference on simulated user-correlated cases (where the
case-level bootstrap fails), seeds in the interval, Holm's correction against a hand-computed case, and the
pairing check on targets."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest

from captionrec.evaluation.bootstrap import (
    PairingError,
    case_bootstrap,
    cluster_bootstrap,
    holm,
    paired_cases,
    paired_runs,
)

TRUE_DIFF = 0.05  # E[tau_u] for tau_u ~ U(-0.1, 0.2)


def simulate(rng: np.random.Generator, users: int = 200, windows: int = 3) -> tuple[np.ndarray, ...]:
    """Hits of two models on the same cases. Each user has a hit propensity p_u and an effect tau_u of A over B,
    both shared by all of the user's cases in every window (user-correlated cases); each case has a difficulty
    v shared by A and B (paired): B hits when v < p_u, A when v < p_u + tau_u. E[A - B] = E[tau_u] = TRUE_DIFF
    exactly (p_u + tau_u stays in [0, 1]); cases per user and window ~ 1 + Poisson(3)."""
    p = rng.uniform(0.1, 0.6, users)
    tau = rng.uniform(-0.1, 0.2, users)
    counts = 1 + rng.poisson(3.0, (users, windows))
    user = np.repeat(np.repeat(np.arange(users), windows), counts.ravel())
    window = np.repeat(np.tile(np.arange(windows), users), counts.ravel())
    v = rng.random(len(user))
    b = (v < p[user]).astype(float)
    a = (v < p[user] + tau[user]).astype(float)
    return a, b, window, user


def test_user_level_interval_covers_the_truth_and_case_level_does_not():
    """Issue 20.1: over 200 simulated datasets the 95% interval of the new bootstrap covers the true difference
    in >= 93%; the case-level bootstrap on the SAME datasets covers it in < 93% (too narrow: it treats a user's
    cases as independent)."""
    rng = np.random.default_rng(2020)
    start = time.process_time()  # CPU seconds: the shared test machine's wall clock says more about its load
    cover_user, cover_case, widths = 0, 0, []
    for _ in range(200):
        a, b, window, user = simulate(rng)
        seed = int(rng.integers(1 << 31))
        u = cluster_bootstrap(a, b, window, user, samples=500, seed=seed)
        c = case_bootstrap(a, b, window, samples=500, seed=seed)
        cover_user += u["diff_lo"] <= TRUE_DIFF <= u["diff_hi"]
        cover_case += c["diff_lo"] <= TRUE_DIFF <= c["diff_hi"]
        widths.append((u["diff_hi"] - u["diff_lo"]) / (c["diff_hi"] - c["diff_lo"]))
        assert u["diff"] == pytest.approx(c["diff"])  # the same statistic, only the resampling differs
    assert cover_user / 200 >= 0.93, cover_user
    assert cover_case / 200 < 0.93, cover_case
    assert np.median(widths) > 1.2  # the user-level interval is wider on user-correlated cases
    assert time.process_time() - start < 60


def test_one_case_per_user_matches_the_case_level_bootstrap():
    """With one case per user the two resample the same thing: their intervals agree closely."""
    rng = np.random.default_rng(3)
    n = 3000
    b = (rng.random(n) < 0.2).astype(float)
    a = np.where(rng.random(n) < 0.1, 1.0 - b, b)
    window = np.zeros(n, int)
    u = cluster_bootstrap(a, b, window, np.arange(n), samples=2000, seed=1)
    c = case_bootstrap(a, b, window, samples=2000, seed=1)
    assert u["diff"] == pytest.approx(c["diff"])
    assert u["diff_hi"] - u["diff_lo"] == pytest.approx(c["diff_hi"] - c["diff_lo"], rel=0.1)
    se = (a - b).std(ddof=1) / math.sqrt(n)
    assert u["diff_se"] == pytest.approx(se, rel=0.1)
    same = cluster_bootstrap(b, b, window, np.arange(n), samples=200)
    assert same["diff_lo"] == same["diff_hi"] == same["diff_se"] == 0.0
    with pytest.raises(ValueError, match="no cases"):
        cluster_bootstrap([], [], [], [])


def test_statistic_is_the_tables_mean_over_windows_and_seeds():
    """Per seed the mean over windows of each window's case mean, then the mean over seeds; users missing from a
    window (or from a subset) are fine."""
    window = np.array([0, 0, 0, 1, 1])
    user = np.array([1, 1, 2, 2, 3])
    a = np.array([[1, 0], [1, 1], [0, 0], [1, 1], [0, 1.0]])  # two seeds
    b = np.array([0, 0, 1, 0, 0.0])
    out = cluster_bootstrap(a, b, window, user, samples=200)
    seed0, seed1 = np.mean([2 / 3, 1 / 2]), np.mean([1 / 3, 1.0])
    assert out["a"] == pytest.approx((seed0 + seed1) / 2) and out["b"] == pytest.approx(np.mean([1 / 3, 0.0]))
    assert out["seeds_a"] == 2 and out["seeds_b"] == 1 and out["users"] == 3
    assert out["a_seed_std"] == pytest.approx(np.std([seed0, seed1], ddof=1)) and math.isnan(out["b_seed_std"])


def test_seed_variance_enters_the_interval():
    """Seeds that disagree by a run-level shift: resampling them widens the interval beyond what resampling users
    of the seed-averaged cases gives; seeds that agree exactly change nothing."""
    rng = np.random.default_rng(7)
    n_users = 400
    user = np.repeat(np.arange(n_users), 3)
    window = np.tile(np.arange(3), n_users)
    base = rng.normal(0.3, 0.1, len(user))
    shifts = np.array([-0.02, 0.0, 0.03])
    a = base[:, None] + 0.01 + shifts[None, :]
    b = base + rng.normal(0, 0.01, len(user))
    seeded = cluster_bootstrap(a, b, window, user, samples=1000, seed=2)
    averaged = cluster_bootstrap(a.mean(axis=1), b, window, user, samples=1000, seed=2)
    assert seeded["diff"] == pytest.approx(averaged["diff"])
    assert seeded["diff_se"] > 3 * averaged["diff_se"]
    same_seeds = cluster_bootstrap(np.repeat(a.mean(axis=1)[:, None], 3, 1), b, window, user, samples=1000, seed=2)
    assert same_seeds["diff_se"] == pytest.approx(averaged["diff_se"], rel=0.15)


def test_fast_at_scale():
    """100k users x 5 windows (~1M cases), 3 seeds a side, 1000 draws: well under a minute on one core (the
    measured time is in the report of issue 20; the case-level bootstrap took ~10x as long)."""
    rng = np.random.default_rng(0)
    n_users, n_windows = 100_000, 5
    per = rng.poisson(2, (n_users, n_windows))
    user = np.repeat(np.repeat(np.arange(n_users), n_windows), per.ravel())
    window = np.repeat(np.tile(np.arange(n_windows), n_users), per.ravel())
    a = (rng.random((len(user), 3)) < 0.2).astype(float)
    b = (rng.random((len(user), 3)) < 0.18).astype(float)
    start = time.process_time()
    out = cluster_bootstrap(a, b, window, user, samples=1000)
    assert time.process_time() - start < 45
    assert out["diff_lo"] < out["diff"] < out["diff_hi"] and out["users"] == len(np.unique(user))


def test_holm_matches_a_hand_computed_case():
    """p-values 2(1 - Phi(|d| / se)); Holm's adjusted p and the step levels by hand (m = 4, alpha = 0.05)."""
    diff = np.array([0.0100, 0.0020, 0.0, -0.0300])
    se = np.array([0.003, 0.002, 0.001, 0.010])
    h = holm(diff, se, 0.05)
    p = np.array([math.erfc(abs(d) / s / math.sqrt(2)) for d, s in zip(diff, se)])
    assert h.p == pytest.approx(p)
    # sorted: p0 (0.00086) < p3 (0.0027) < p1 (0.317) < p2 (1.0)
    assert h.p_adjusted == pytest.approx([4 * p[0], max(4 * p[0], 3 * p[3], 2 * p[1]), 1.0, max(4 * p[0], 3 * p[3])])
    assert h.reject.tolist() == [True, False, False, True]
    assert h.level == pytest.approx([0.05 / 4, 0.05 / 2, 0.05 / 2, 0.05 / 3])  # retained ones: the first retain's level
    excludes_zero = (h.lo > 0) | (h.hi < 0)
    assert excludes_zero.tolist() == h.reject.tolist()  # intervals and verdicts agree
    assert h.lo[0] == pytest.approx(0.01 - 2.4977054 * 0.003, rel=1e-6)  # z(1 - 0.0125 / 2)
    # uncorrected at 5% the second would be shown too (p = 0.32 -> no); the fourth at 1.96: also yes
    assert holm([], []).reject.size == 0
    with pytest.raises(ValueError, match="finite"):
        holm([0.1], [math.nan])


def _cases(targets: list[int], ranks: list[int], cold: list[int] | None = None) -> pd.DataFrame:
    n = len(targets)
    return pd.DataFrame(
        {
            "window": [0] * n,
            "user_idx": list(range(n)),
            "chunk": [0] * n,
            "target": targets,
            "cold": cold or [0] * n,
            "rank": ranks,
        }
    )


def test_pairing_checks_the_targets():
    """Issue 20.4: cases paired on (window, user_idx, chunk) must be the same test case: a target that differs is
    an error naming the column, the runs, how many cases and one example."""
    a = _cases([5, 6, 7, 8], [1, 20, 3, 4])
    b = _cases([5, 6, 7, 8], [2, 2, 30, 4])
    p = paired_runs([a, a], [b], "hr@10")
    assert len(p) == 4 and p.a.shape == (4, 2) and p.b.shape == (4, 1)
    assert p.a[:, 0].tolist() == [1, 0, 1, 1] and p.b[:, 0].tolist() == [1, 1, 0, 1]
    assert paired_cases([a], [b], "hr@10")["b"].tolist() == [1, 1, 0, 1]
    wrong = _cases([5, 9, 7, 3], [1, 1, 1, 1])
    with pytest.raises(PairingError, match=r"disagree on 'target' between base and other: 2 of 4 shared cases differ"):
        paired_runs([a], [wrong], "hr@10", ["base"], ["other"])
    with pytest.raises(PairingError, match=r"window 0, user_idx 1, chunk 0: target 6 vs 9"):
        paired_cases([a], [wrong], "hr@10")
    within = _cases([5, 6, 7, 9], [1, 1, 1, 1])  # two seeds of one side that disagree: also an error
    with pytest.raises(PairingError, match="1 of 4"):
        paired_runs([a, within], [b], "ndcg@10")
    cold = _cases([5, 6, 7, 8], [1, 1, 1, 1], cold=[1, 0, 0, 0])
    with pytest.raises(PairingError, match="'cold'"):
        paired_runs([a], [cold], "cold_hr@10")


def test_pairing_by_join_when_runs_list_cases_differently():
    """Runs whose cases come in another order, or where one run lacks a case: joined on the keys (only the cases
    every run has), with the same checks and the same values as the row-by-row path."""
    a = _cases([5, 6, 7, 8], [1, 20, 3, 4])
    b = _cases([5, 6, 7, 8], [2, 2, 30, 4])
    aligned = paired_runs([a], [b], "hr@10")
    shuffled = paired_runs([a], [b.iloc[[2, 0, 3, 1]]], "hr@10")
    assert shuffled.keys.equals(aligned.keys) and (shuffled.a == aligned.a).all() and (shuffled.b == aligned.b).all()
    fewer = paired_runs([a], [b.iloc[[0, 1, 3]]], "hr@10")
    assert fewer.keys["user_idx"].tolist() == [0, 1, 3] and fewer.b[:, 0].tolist() == [1, 1, 1]
    wrong = _cases([5, 9, 7, 3], [1, 1, 1, 1]).iloc[::-1]
    with pytest.raises(PairingError, match=r"'target' between A run 1 and B run 1: 2 of 4 shared cases differ"):
        paired_runs([a], [wrong], "hr@10")
    cold = _cases([5, 6, 7, 8], [1, 1, 1, 1], cold=[0, 1, 0, 0]).iloc[[0, 1, 3]]
    with pytest.raises(PairingError, match=r"'cold' .*1 of 3 shared cases"):
        paired_runs([a], [cold], "cold_hr@10")
