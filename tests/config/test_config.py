"""Config: profiles, overrides, errors that name the key, and the CLI's config command."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from captionrec.config import Config, ConfigError, flatten, load_config, to_plain
from captionrec.config.loader import parse_overrides


def test_local_profile_defaults():
    cfg = load_config("local")
    assert isinstance(cfg, Config)
    assert cfg.profile == "local"
    assert cfg.spark.master.startswith("local")
    assert cfg.storage.backend == "auto"
    assert cfg.tracking.tracking_uri.startswith("sqlite:")


@pytest.mark.parametrize("profile", ["cluster", "databricks"])
def test_cluster_profiles_use_active_session_and_delta_spark(profile):
    cfg = load_config(profile)
    assert cfg.spark.master == "active"
    assert cfg.storage.backend == "delta-spark"


def test_overrides_are_typed_and_nested():
    cfg = load_config("local", ["spark.shuffle_partitions=8", "storage.root=/tmp/x", "spark.conf={a.b: c}"])
    assert cfg.spark.shuffle_partitions == 8
    assert cfg.storage.root == "/tmp/x"
    assert dict(cfg.spark.conf) == {"a.b": "c"}


def test_stage_relative_override():
    cfg = load_config("local", ["model=two_tower"], stage="train")
    assert cfg.train.model == "two_tower"
    with pytest.raises(ConfigError, match="unknown config key 'model'"):
        load_config("local", ["model=two_tower"])  # no stage: 'model' is not a root key
    assert load_config("local", ["max_seq_len=50", "train_stride=10"], stage="train").train.train_stride == 10
    with pytest.raises(ConfigError, match="train_stride must be in 1..max_seq_len"):
        load_config("local", ["max_seq_len=50", "train_stride=51"], stage="train")


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config("local", ["spark.shufle_partitions=3"])
    assert "spark.shufle_partitions" in str(err.value)
    assert "spark.shuffle_partitions" in str(err.value)  # did you mean


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="spark.shuffle_partitions: expected an integer"):
        load_config("local", ["spark.shuffle_partitions=many"])
    with pytest.raises(ConfigError, match="storage.backend: 'sqlite' is not one of"):
        load_config("local", ["storage.backend=sqlite"])


def test_bad_override_syntax_and_profile():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["spark.master"])
    with pytest.raises(ConfigError, match="unknown profile 'nope'"):
        load_config("nope")


def test_extra_yaml_file_and_errors(tmp_path):
    extra = tmp_path / "extra.yaml"
    extra.write_text("ingest:\n  probe_partitions: 3\n")
    assert load_config("local", extra_files=[extra]).ingest.probe_partitions == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  probe_partitons: 3\n")
    with pytest.raises(ConfigError, match="ingest.probe_partitons"):
        load_config("local", extra_files=[bad])
    with pytest.raises(ConfigError, match="not found"):
        load_config("local", extra_files=[tmp_path / "missing.yaml"])


def test_config_is_frozen_and_flattens():
    cfg = load_config("local")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.spark.master = "x"  # type: ignore[misc]
    flat = flatten(cfg)
    assert flat["spark.master"] == cfg.spark.master
    assert "train.model" in flat
    assert to_plain(cfg)["storage"]["root"] == cfg.storage.root


def test_cli_config_command_prints_effective_config_and_rejects_bad_keys():
    ok = subprocess.run(
        [sys.executable, "-m", "captionrec.cli", "config", "spark.shuffle_partitions=7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "shuffle_partitions: 7" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "captionrec.cli", "ingest", "ingest.bogus=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "ingest.bogus" in bad.stderr


def test_config_error_raises_system_exit_2_through_main(capsys):
    """Databricks' python_wheel_task calls the entry point and ignores a returned value: main() raises SystemExit
    for a non-zero outcome (here before any Spark session starts) and returns 0 for success."""
    from captionrec import cli

    for bad in (["ingest", "ingest.bogus=1"], ["experiment", "max_failed=-1"], ["experiment", "max_failed=many"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(bad)
        assert exited.value.code == 2, bad
        assert "config error" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:  # usage error (argparse): 2 as well
        cli.main(["no-such-stage"])
    assert exited.value.code == 2
    assert cli.main(["config", "experiment.max_failed=3"]) == 0
    assert "max_failed: 3" in capsys.readouterr().out
    for profile in ("local", "cluster", "databricks"):  # every profile fails the job on any failed child
        assert load_config(profile).experiment.max_failed == 0


def test_cli_takes_options_after_the_stage_and_its_overrides():
    """Every job docstring launches `jobs/<stage>.py --profile cluster key=value ...`: options and overrides in
    any order (argparse's plain parse_args rejects an override that follows an option)."""
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "captionrec.cli",
            "config",
            "--profile",
            "local",
            "spark.shuffle_partitions=7",
            "--log-level",
            "WARNING",
            "spark.app_name=mixed",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "shuffle_partitions: 7" in ok.stdout and "app_name: mixed" in ok.stdout


def test_references_follow_the_key_they_name_through_every_layer(tmp_path):
    extra = tmp_path / "site.yaml"
    extra.write_text(
        "storage:\n  models_dir: /models/${storage.schema}\n  schema: s1\n"
        'embed:\n  text: {model: "${storage.models_dir}/bge"}\n'
        'caption:\n  video: {model: "$${not.a.ref}"}\n'
        "train:\n  patience: ${train.epochs}\n"
    )
    cfg = load_config("local", extra_files=[extra])
    assert cfg.embed.text.model == "/models/s1/bge"  # a chain: model -> models_dir -> schema
    assert cfg.caption.video.model == "${not.a.ref}"  # $${ is a literal
    assert cfg.train.patience == cfg.train.epochs and isinstance(
        cfg.train.patience, int
    )  # a whole reference keeps its type
    # an override of the referenced key reaches every string that names it, whichever layer set that string
    cfg = load_config("local", ["storage.schema=s2"], extra_files=[extra])
    assert cfg.embed.text.model == "/models/s2/bge"
    cfg = load_config("local", ["storage.models_dir=/elsewhere"], extra_files=[extra])
    assert cfg.embed.text.model == "/elsewhere/bge"
    # a key no layer sets resolves to its dataclass default
    assert load_config("local", ["storage.models_dir=${storage.root}/m"]).storage.models_dir == "lakehouse/m"


@pytest.mark.parametrize(
    "override, message",
    [
        ("storage.models_dir=${storage.nope}/m", "'${storage.nope}' refers to no config key"),
        ("storage.models_dir=${storage}/m", "'${storage}' is a section"),
        ("storage.models_dir=${storage.cache_dir}", "reference cycle"),
        ("storage.models_dir=/Volumes/${storage.catalog}/m", "'${storage.catalog}' is null here; set storage.catalog"),
    ],
)
def test_bad_references_are_errors_naming_the_key(override, message):
    overrides = [override, "storage.cache_dir=${storage.models_dir}"]
    with pytest.raises(ConfigError, match="storage.models_dir") as err:
        load_config("local", overrides)
    assert message in str(err.value)


# -- the console: the effective config goes to a file (and MLflow), not the screen ---------------------------------

RECBOLE_MINI = Path(__file__).resolve().parents[1] / "data" / "recbole_mini"


def test_a_stage_writes_its_config_to_a_file_and_prints_the_summary_not_the_config(spark, tmp_path, capsys, caplog):
    """`captionrec ingest` prints its summary and one line naming the config file, not ~340 lines of YAML; the
    file loads back to the same config; `--show-config` prints the YAML too (a re-run: nothing new to ingest)."""
    import logging

    from captionrec import cli

    args = [
        "ingest",
        f"data.source={RECBOLE_MINI}",
        "data.format=recbole",
        "data.name=mini",
        f"storage.root={tmp_path / 'lake'}",
        "storage.backend=delta-rs",
        f"report.out_dir={tmp_path / 'reports'}",
    ]
    with caplog.at_level(logging.INFO, logger="captionrec"):
        assert cli.main(args) == 0
    out = capsys.readouterr()
    assert "interactions" in out.out and "shuffle_partitions:" not in out.out + out.err
    (saved,) = (tmp_path / "reports" / cli.CONFIG_DIR).glob("ingest-*.yaml")
    assert any(str(saved) in r.getMessage() and "--show-config" in r.getMessage() for r in caplog.records)
    assert load_config("local", extra_files=[saved]) == load_config("local", args[1:])

    assert cli.main([*args, "--show-config"]) == 0
    shown = capsys.readouterr().out
    assert "shuffle_partitions:" in shown and "interactions" in shown
    assert shown.startswith(yaml.safe_dump(to_plain(load_config("local", args[1:])), sort_keys=False))
    assert len(list((tmp_path / "reports" / cli.CONFIG_DIR).glob("ingest-*.yaml"))) == 2  # one per invocation


def test_the_config_is_logged_to_the_runs_a_summary_names(tmp_path):
    """A stage that logs to an MLflow run (train: run_id; experiment, report: the grid's parent_run_id) gets the
    effective config as artifact config/<stage>.yaml of that run, in a real sqlite-backed store."""
    from mlflow.tracking import MlflowClient

    from captionrec import cli

    cfg = load_config(
        "local",
        [f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/artifacts"],
    )
    client = MlflowClient(cfg.tracking.tracking_uri)
    exp = client.create_experiment("cfg-test", artifact_location=(tmp_path / "artifacts").as_uri())
    run, parent = (client.create_run(exp).info.run_id for _ in range(2))
    text = yaml.safe_dump(to_plain(cfg), sort_keys=False)
    assert cli.log_config_to_runs(cfg, "train", {"run_id": run}, text) == [run]
    assert cli.log_config_to_runs(cfg, "report", {"parent_run_id": parent, "run_id": None}, text) == [parent]
    assert cli.log_config_to_runs(cfg, "ingest", {"items_upserted": 3}, text) == []
    assert cli.log_config_to_runs(cfg, "recommend", {"run_id": run}, text) == []  # the served model's run
    for run_id, stage in ((run, "train"), (parent, "report")):
        local = client.download_artifacts(run_id, f"config/{stage}.yaml", str(tmp_path / run_id))
        assert Path(local).read_text() == text
