"""bench/bench_recbole.py's paired comparison: two systems' per-case ranks joined by user, checked, bootstrapped."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_recbole.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_recbole", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _run(bench, system, seed, users, targets, ranks_all, ranks_seen):
    cases = bench.case_table(
        users,
        targets,
        {
            "all": [torch.tensor(ranks_all[:3]), torch.tensor(ranks_all[3:])],
            "seen_excluded": [torch.tensor(ranks_seen)],
        },
    )
    return {"system": system, "seed": seed, "test": {"cases": cases}}


def test_paired_joins_by_user_and_averages_seeds(bench):
    rng = np.random.default_rng(0)
    users = [str(u) for u in range(1, 201)]
    targets = [str(t) for t in rng.integers(1, 500, size=200)]
    a1, a2, b1 = (rng.integers(1, 30, size=200) for _ in range(3))
    order = rng.permutation(200)  # system b lists its cases in another order
    sa = {"runs": [_run(bench, "a", 1, users, targets, a1, a1), _run(bench, "a", 2, users, targets, a2, a2)]}
    sb = {"runs": [_run(bench, "b", 1, [users[i] for i in order], [targets[i] for i in order], b1[order], b1[order])]}
    out = bench.paired({"a": sa, "b": sb}, "a", "b", samples=500)
    hr_a = ((a1 <= 10).mean() + (a2 <= 10).mean()) / 2
    d = out["all_hr@10"]
    assert d["cases"] == 200
    assert d["a"] == pytest.approx(hr_a) and d["b"] == pytest.approx((b1 <= 10).mean())
    assert d["diff"] == pytest.approx(hr_a - (b1 <= 10).mean())
    assert d["lo"] <= d["diff"] <= d["hi"] and d["hi"] - d["lo"] > 0
    ndcg_b = np.where(b1 <= 10, 1 / np.log2(b1 + 1.0), 0).mean()
    assert out["seen_excluded_ndcg@10"]["b"] == pytest.approx(ndcg_b)


def test_paired_refuses_cases_that_do_not_match(bench):
    users, targets, r = ["1", "2", "3", "4"], ["10", "20", "30", "40"], np.array([1, 5, 20, 3])
    sa = {"runs": [_run(bench, "a", 1, users, targets, r, r)]}
    other_target = {"runs": [_run(bench, "b", 1, users, ["10", "20", "31", "40"], r, r)]}
    with pytest.raises(ValueError, match="different targets for 1 users"):
        bench.paired({"a": sa, "b": other_target}, "a", "b", samples=10)
    fewer_users = {"runs": [_run(bench, "b", 1, ["1", "2", "3", "5"], targets, r, r)]}
    with pytest.raises(ValueError, match="different users"):
        bench.paired({"a": sa, "b": fewer_users}, "a", "b", samples=10)
    no_cases = {"runs": [{"system": "b", "seed": 7, "test": {"all": {}}}]}
    assert bench.paired({"a": sa, "b": no_cases}, "a", "b")["why"].startswith("no per-case ranks in b seed 7")
