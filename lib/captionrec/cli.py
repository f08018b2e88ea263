"""The `captionrec` console script: one entry point for spark-submit, Databricks wheel tasks and local runs.

    captionrec <stage> [--profile local|cluster|databricks] [--conf extra.yaml ...] [key=value ...]

Stages: ingest, caption, embed, train, experiment (the grid of train runs), report, recommend, and all
(ingest -> caption -> embed -> experiment -> recommend -> report: recommend refits the grid's best configuration,
the report then shows the new items it serves), plus the helpers `sample` (generate a MicroLens-layout sample),
`tiny-models` (build tiny random models offline), `config` (print the effective config) and `served` (print what
recommend serves: a few rows of `recommendations` and `similar_items`, their row counts, the registered model).
Overrides are dotted keys; inside a stage a key of that stage's section may drop the prefix (`captionrec train
model=sasrec features=title`). Each stage ends with a one-screen summary (`--json`: the summary as JSON instead);
long Spark steps print a progress line.
The effective config is not printed before a run: it is written to `<report.out_dir>/configs/<command>-<UTC
time>.yaml` and logged as artifact `config/<stage>.yaml` of the MLflow run a stage logs to (train's run; the grid's
parent run for experiment and report), and one log line says where (`--show-config` prints it on screen as well).

Exit status: 0 when every stage succeeded; 2 for a config or usage error; 3 when a stage ran to the end but
its outcome fails the job (`captionrec.pipeline.StageFailed`, e.g. more failed experiment children than
`experiment.max_failed`; its summary is printed first); an uncaught error propagates (a traceback, status 1).
`main()` returns 0 on success and raises `SystemExit(code)` otherwise: Databricks' python_wheel_task calls the
entry point function directly and ignores a returned value, so a non-zero outcome must be raised to fail the task.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from captionrec.config import Config, ConfigError, load_config, to_plain
from captionrec.pipeline import StageFailed
from captionrec.tracking.cost import log_stage_run

log = logging.getLogger("captionrec")

STAGES = ("ingest", "caption", "embed", "train", "experiment", "report", "recommend")
PIPELINE = {"all": ("ingest", "caption", "embed", "experiment", "recommend", "report")}
PROGRESS_EVERY_S = 15.0


def _parser(prog: str = "captionrec") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=[*STAGES, "all", "config", "served", "sample", "tiny-models"])
    p.add_argument("--profile", default="local", help="conf/<profile>.yaml (default: local)")
    p.add_argument("--conf", action="append", default=[], metavar="FILE", help="extra YAML merged over the profile")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--json", action="store_true", help="print each stage's summary as JSON")
    p.add_argument(
        "--show-config",
        action="store_true",
        help="print the effective config before running (it is always written to a file)",
    )
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "urllib3", "filelock", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class SparkProgress:
    """While a stage runs: every `every_s` seconds, one line with the active Spark stages' finished / total
    tasks and the task rate (the stages' own per-item progress is theirs to log)."""

    def __init__(self, spark, stage: str, every_s: float = PROGRESS_EVERY_S):
        self.tracker, self.stage, self.every_s = spark.sparkContext.statusTracker(), stage, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="captionrec-progress", daemon=True)

    def line(self, elapsed: float) -> str | None:
        parts = []
        for sid in self.tracker.getActiveStageIds():
            info = self.tracker.getStageInfo(sid)
            if info is not None:
                rate = info.numCompletedTasks / elapsed if elapsed > 0 else 0.0
                parts.append(
                    f"spark stage {sid} {info.name.split(' at ')[0]}: {info.numCompletedTasks}/{info.numTasks} "
                    f"tasks ({info.numActiveTasks} running, {rate:.2f} tasks/s)"
                )
        return f"{self.stage}: {elapsed:.0f} s; " + "; ".join(parts) if parts else None

    def _loop(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.every_s):
            text = self.line(time.perf_counter() - t0)
            if text:
                log.info("%s", text)

    def __enter__(self) -> "SparkProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_stage(stage: str, cfg: Config, spark=None, store=None) -> dict[str, Any]:
    """Run one pipeline stage with a session/store (made from cfg when not given); returns its summary."""
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    spark = spark or get_spark(cfg.spark)
    store = store or open_store(spark, cfg.storage)
    module = importlib.import_module(f"captionrec.pipeline.{stage}")
    t0 = time.perf_counter()
    try:
        with SparkProgress(spark, stage):
            summary = module.run(cfg, spark, store)
    except StageFailed as exc:
        exc.summary.setdefault("stage", stage)
        exc.summary["seconds"] = round(time.perf_counter() - t0, 2)
        raise
    summary = dict(summary or {})
    summary.setdefault("stage", stage)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def format_summary(summary: dict[str, Any], max_lines: int = 40) -> str:
    """A stage's summary on one screen: its module's `format_summary` when it has one, else `key: value`
    lines (nested mappings one level deep, long lists shortened)."""
    stage = summary.get("stage")
    module = importlib.import_module(f"captionrec.pipeline.{stage}") if stage in STAGES else None
    if module is not None and hasattr(module, "format_summary"):
        return module.format_summary(summary)
    lines = [f"{stage or 'stage'} done in {summary.get('seconds', 0):.0f} s"]
    for key, value in summary.items():
        if key in ("stage", "seconds"):
            continue
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            lines.append(f"  {key}: {inner[:300] + ' ...' if len(inner) > 300 else inner}")
        else:
            lines.append(f"  {key}: {_short(value)}")
    return "\n".join(
        lines[:max_lines]
        + ([f"  ... ({len(lines) - max_lines} more lines; --json for all)"] if len(lines) > max_lines else [])
    )


def _short(value: Any) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{', '.join(map(_short, value[:4]))}, ... {len(value)} items]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def print_summary(summary: dict[str, Any], as_json: bool = False, file: Any = None) -> None:
    if as_json:
        print(json.dumps(summary, indent=2, sort_keys=False, default=str), file=file, flush=True)
    else:
        print(format_summary(summary), file=file, flush=True)


CONFIG_DIR = "configs"  # under report.out_dir: one effective config per invocation
RUN_OF_STAGE = {"train": "run_id", "experiment": "parent_run_id", "report": "parent_run_id"}  # summary keys


def save_config(cfg: Config, command: str, text: str) -> Path | None:
    """The effective config (YAML `text`) as `<report.out_dir>/configs/<command>-<UTC time>.yaml`, a new file per
    invocation (never overwritten); None, with a warning, where the folder cannot be written."""
    folder = Path(cfg.report.out_dir) / CONFIG_DIR
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():  # a second invocation in the same second gets -1, -2, ...
            path = folder / f"{command}-{stamp}{f'-{n}' if n else ''}.yaml"
            try:
                with path.open("x") as fh:
                    fh.write(text)
                return path
            except FileExistsError:
                continue
    except OSError as exc:
        log.warning("effective config not written to %s: %s", folder, exc)
    return None


def log_config_to_runs(cfg: Config, stage: str, summary: dict[str, Any], text: str) -> list[str]:
    """The effective config as artifact `config/<stage>.yaml` of the MLflow run the stage itself logged to, as its
    summary names it (RUN_OF_STAGE: train's run, the grid's parent run for experiment and report; recommend's
    `run_id` is the served model's run, not its own). Returns those run ids; a failure to log is a warning (the
    stage's own work is done)."""
    key = RUN_OF_STAGE.get(stage)
    run_ids = [summary[key]] if key and summary.get(key) else []
    if not run_ids or not cfg.tracking.tracking_uri:
        return []
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(cfg.tracking.tracking_uri)
        for run_id in run_ids:
            client.log_text(run_id, text, f"config/{stage}.yaml")
    except Exception as exc:  # noqa: BLE001 - an artifact store that refuses the file must not fail a finished stage
        log.warning("effective config not logged to MLflow run(s) %s: %s", ", ".join(run_ids), exc)
        return []
    log.info("%s: effective config logged to MLflow run(s) %s as config/%s.yaml", stage, ", ".join(run_ids), stage)
    return run_ids


def _follow(stage: str, cfg: Config, previous: dict[str, Any]) -> Config:
    """In `all`, the stages after the experiment read the grid it just ran (`previous["parent_run_id"]`), not the
    newest grid run of the experiment (a re-run of an older grid reuses its older parent run): the report (unless
    the config names runs) and recommend (from_grid=latest becomes that grid; a configured run_id or grid id wins)."""
    import dataclasses

    grid = previous.get("parent_run_id")
    rc, rec = cfg.report, cfg.recommend
    if stage == "report" and grid and not (rc.parent_run_id or rc.filter):
        return dataclasses.replace(cfg, report=dataclasses.replace(rc, parent_run_id=grid))
    if stage == "recommend" and grid and rec.from_grid == "latest" and not rec.run_id:
        return dataclasses.replace(cfg, recommend=dataclasses.replace(rec, from_grid=grid))
    return cfg


def _done(code: int) -> int:
    """0, or raise SystemExit(code): a returned non-zero code is lost where the caller ignores it."""
    if code:
        raise SystemExit(code)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script and the Databricks wheel entry point: returns 0, or raises SystemExit (see the module
    docstring for the codes)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sample", "tiny-models"):  # helpers with their own options
        configure_logging("INFO")
        if argv[0] == "sample":
            from captionrec.sample.generate import main as sample_main

            return _done(sample_main(argv[1:]) or 0)
        from captionrec.testing.tiny import main as tiny_main

        return _done(tiny_main(argv[1:]) or 0)
    args = _parser().parse_intermixed_args(argv)  # options may follow the stage and its overrides
    configure_logging(args.log_level)

    stage = args.command if args.command in STAGES else None
    try:
        cfg = load_config(args.profile, args.overrides, extra_files=args.conf, stage=stage)
    except ConfigError as exc:
        print(f"captionrec: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    effective = yaml.safe_dump(to_plain(cfg), sort_keys=False)
    if args.command == "config":
        print(effective)
        return 0
    if args.command == "served":  # reads only: no config file, no MLflow logging
        return _served(cfg)
    if args.show_config:  # with --json, stdout carries the summaries only
        print(effective, file=sys.stderr if args.json else sys.stdout, flush=True)
    saved = save_config(cfg, args.command, effective)
    log.info(
        "effective config (profile %s): %s",
        args.profile,
        f"{saved} (--show-config prints it)" if saved else "not written (see the warning)",
    )

    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    spark = get_spark(cfg.spark)
    store = open_store(spark, cfg.storage)
    log.info("tables: backend=%s root=%s catalog=%s", store.backend, cfg.storage.root, cfg.storage.catalog)
    summary: dict[str, Any] = {}
    grid: dict[str, Any] = {}  # the grid the experiment stage ran (parent_run_id), for the stages after it
    out = sys.stdout
    for name in PIPELINE.get(args.command, (args.command,)):
        # With --json, stdout carries the summaries only: what a stage prints (TorchDistributor echoes its
        # training processes' output to sys.stdout) goes to stderr, so `captionrec train --json | jq` works.
        try:
            with contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext():
                summary = run_stage(name, _follow(name, cfg, grid), spark, store)
        except StageFailed as exc:  # recorded, summarised, and the job fails (later stages of `all` don't run)
            print_summary(exc.summary, as_json=args.json, file=out)
            log_config_to_runs(cfg, name, exc.summary, effective)
            stages = PIPELINE.get(args.command, (name,))
            rest = stages[stages.index(name) + 1 :]
            stopped = f" (`{args.command}` stops here; not run: {', '.join(rest)})" if rest else ""
            print(f"captionrec {name} failed{stopped}: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(exc.exit_code) from None
        print_summary(summary, as_json=args.json, file=out)
        log_config_to_runs(cfg, name, summary, effective)
        if name in ("ingest", "caption", "embed"):  # their cost as an MLflow stage run (train logs on its own run)
            log_stage_run(cfg, name, summary)
        if name == "experiment" and summary.get("parent_run_id"):
            grid = {"parent_run_id": summary["parent_run_id"]}
    return 0


def _served(cfg: Config) -> int:
    """`captionrec served`: what the recommend stage serves now (captionrec.report.served.show)."""
    from captionrec.report.served import show
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    spark = get_spark(cfg.spark)
    print(show(cfg, open_store(spark, cfg.storage)), flush=True)
    return 0


def stage_main(stage: str, argv: Sequence[str] | None = None) -> int:
    """Entry for jobs/<stage>.py: `python jobs/ingest.py [options] [key=value ...]`. Returns 0 or raises
    SystemExit like `main` (so `sys.exit(stage_main(...))` exits with the stage's code under spark-submit)."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
