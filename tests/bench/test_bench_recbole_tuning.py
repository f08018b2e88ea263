"""bench/bench_recbole.py's equal tuning without RecBole: the same budget for every system, the choice by
validation only (a run's test step is never read), the chosen trial's runs collected, RecBole's evaluator
checked against ours."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_recbole.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_recbole_tuning", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class NoTest(dict):
    """A run whose test step must not be looked at."""

    def __getitem__(self, key):
        if key == "test":
            raise AssertionError("the selection read a test number")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "test":
            raise AssertionError("the selection read a test number")
        return super().get(key, default)


def _run(system, seed, valid, test_hr, trial=0):
    curve = [{"epoch": e, "valid_ndcg@10": v} for e, v in enumerate(valid)]
    best = max(range(len(valid)), key=lambda e: valid[e])
    test = {v: {"hr@10": test_hr, "ndcg@10": test_hr / 2} for v in ("all", "seen_excluded")}
    return {
        "system": system,
        "seed": seed,
        "trial": trial,
        "curve": curve,
        "best_epoch": best,
        "test": test,
        "stopped": "patience",
    }


def test_every_system_gets_the_same_budget_from_its_documented_space(bench):
    rb = bench.trial_points(bench.RECBOLE, 4, 0)
    ours = bench.trial_points("sasrec", 4, 0)
    assert len(rb) == len(ours) == 4
    assert rb[0] == bench.RECBOLE_BASE and ours[0] == bench.OURS_BASE  # trial 0: the fixed configuration
    for p in rb[1:]:
        assert all(p[k] in bench.RECBOLE_SPACE[k] for k in bench.RECBOLE_SPACE)
    assert len({json.dumps(p, sort_keys=True) for p in rb}) == 4
    assert bench.trial_points(bench.RECBOLE, 4, 0) == rb and bench.trial_points(bench.RECBOLE, 4, 1) != rb
    assert bench.run_name("sasrec", 0, 2020) == "sasrec_s2020" and bench.run_name("sasrec", 2, 7) == "sasrec_t2_s7"


def test_the_choice_follows_validation_not_test(bench):
    # trial 0 has the best test HR, trial 2 the best validation NDCG@10 (at its best epoch)
    trials = [
        {"trial": 0, "values": {"lr": 0.001}, "run": NoTest(_run("sasrec", 2020, [0.05, 0.06], 0.30))},
        {"trial": 1, "values": {"lr": 0.01}, "run": NoTest(_run("sasrec", 2020, [0.07, 0.02], 0.20))},
        {"trial": 2, "values": {"lr": 0.0005}, "run": NoTest(_run("sasrec", 2020, [0.01, 0.09, 0.08], 0.10))},
    ]
    choice = bench.choose_trial(trials)
    assert (choice["trial"], choice["values"], choice["budget"]) == (2, {"lr": 0.0005}, 3)
    assert choice["valid_ndcg@10"] == pytest.approx(0.09) and choice["scores"][0] == pytest.approx(0.06)


def test_collect_reads_the_chosen_trial_and_ours_is_chosen_by_validation(bench, tmp_path):
    for system, trial, valid, hr in (
        ("sasrec", 0, [0.05], 0.9),
        ("sasrec", 1, [0.08], 0.1),
        ("sasrec_recbole_layout", 0, [0.07], 0.5),
    ):
        for seed in (1, 2):
            d = tmp_path / bench.run_name(system, trial, seed)
            d.mkdir()
            run = _run(system, seed, valid, hr, trial)
            run.update(threads=1, train_s=1.0, budget={"max_epochs": 1, "patience": 1, "threads": 1})
            run["curve"][0].update(elapsed_s=1.0, elapsed_cpu_s=1.0)
            (d / "result.json").write_text(json.dumps(run))
    (tmp_path / "tuning.json").write_text(json.dumps({"sasrec": {"trial": 1, "values": {"lr": 0.01}}}))
    systems = bench.collect(tmp_path, [1, 2])
    assert [r["trial"] for r in systems["sasrec"]["runs"]] == [1, 1]  # the chosen trial's seeds
    assert systems["sasrec"]["all_hr@10"] == pytest.approx(0.1)
    assert [r["trial"] for r in systems["sasrec_recbole_layout"]["runs"]] == [0, 0]  # no tuning.json entry: trial 0
    assert bench.ours_choice(systems) == "sasrec"  # validation .08 > .07, although its test HR is the lowest


def test_recbole_evaluator_must_agree_with_ours(bench):
    run = _run(bench.RECBOLE, 2020, [0.1], 0.2)
    run["test"]["recbole_evaluator"] = {"hit@10": 0.20004, "ndcg@10": 0.1}
    out = bench.check_evaluator(run)
    assert out["hr@10"] == {"recbole": 0.20004, "ours": 0.2}
    run["test"]["recbole_evaluator"]["ndcg@10"] = 0.1002
    with pytest.raises(ValueError, match="disagree"):
        bench.check_evaluator(run)
