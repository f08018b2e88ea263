"""The console script's pipeline: `captionrec all`'s stage order and what the stages after the experiment follow."""

from __future__ import annotations

import pytest

from captionrec.config import load_config


def test_all_runs_recommend_between_the_grid_and_its_report():
    from captionrec import cli

    stages = cli.PIPELINE["all"]
    assert stages == ("ingest", "caption", "embed", "experiment", "recommend", "report")
    assert set(stages) <= set(cli.STAGES)
    # recommend refits the grid's best configuration (after experiment); the report reads its table (after it)
    assert stages.index("experiment") < stages.index("recommend") < stages.index("report")
    assert cli._parser().parse_intermixed_args(["served", "--log-level", "WARNING"]).command == "served"


def test_recommend_and_report_follow_the_grid_the_experiment_ran():
    from captionrec import cli

    cfg = load_config("local")
    grid = {"parent_run_id": "g1"}
    assert cfg.recommend.from_grid == "latest" and cli._follow("recommend", cfg, grid).recommend.from_grid == "g1"
    assert cli._follow("report", cfg, grid).report.parent_run_id == "g1"
    assert cli._follow("recommend", cfg, {}) is cfg  # no grid ran (e.g. `captionrec recommend` alone)
    # a configured model or grid wins
    pinned = load_config("local", ["recommend.run_id=r7"])
    assert cli._follow("recommend", pinned, grid) is pinned
    other = load_config("local", ["recommend.from_grid=g0"])
    assert cli._follow("recommend", other, grid).recommend.from_grid == "g0"
    assert cli._follow("embed", cfg, grid) is cfg


@pytest.mark.parametrize("command", ["recommend", "served"])
def test_recommend_commands_load_the_local_profile(command):
    from captionrec import cli

    args = cli._parser().parse_intermixed_args([command, "recommend.k=5"])
    cfg = load_config(args.profile, args.overrides, stage=command if command in cli.STAGES else None)
    assert cfg.recommend.k == 5 and cfg.recommend.registered_model == "captionrec_recommender"
