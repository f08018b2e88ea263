"""The `captionrec` console script: one entry point for spark-submit, Databricks wheel tasks and local runs.

    captionrec <stage> [--profile local|cluster|databricks] [--conf extra.yaml ...] [key=value ...]

Stages: ingest, caption, embed, train, all (ingest -> caption -> embed -> train), plus the helpers
`sample` (generate a MicroLens-layout sample), `tiny-models` (build tiny random models offline) and
`config` (print the effective config). Overrides are dotted keys; inside a stage a key of that stage's
section may drop the prefix (`captionrec train model=sasrec features=title`).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

import yaml

from captionrec.config import Config, ConfigError, load_config, to_plain

log = logging.getLogger("captionrec")

STAGES = ("ingest", "caption", "embed", "train")
PIPELINE = {"all": STAGES}


def _parser(prog: str = "captionrec") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=[*STAGES, "all", "config", "sample", "tiny-models"])
    p.add_argument("--profile", default="local", help="conf/<profile>.yaml (default: local)")
    p.add_argument("--conf", action="append", default=[], metavar="FILE", help="extra YAML merged over the profile")
    p.add_argument("--log-level", default="INFO")
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


def run_stage(stage: str, cfg: Config, spark=None, store=None) -> dict[str, Any]:
    """Run one pipeline stage with a session/store (made from cfg when not given); returns its summary."""
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    spark = spark or get_spark(cfg.spark)
    store = store or open_store(spark, cfg.storage)
    module = importlib.import_module(f"captionrec.pipeline.{stage}")
    t0 = time.perf_counter()
    summary = module.run(cfg, spark, store)
    summary = dict(summary or {})
    summary.setdefault("stage", stage)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2, sort_keys=False, default=str))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("sample", "tiny-models"):  # helpers with their own options
        configure_logging("INFO")
        if argv[0] == "sample":
            from captionrec.sample.generate import main as sample_main

            return sample_main(argv[1:]) or 0
        from captionrec.testing.tiny import main as tiny_main

        return tiny_main(argv[1:]) or 0
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)

    stage = args.command if args.command in STAGES else None
    try:
        cfg = load_config(args.profile, args.overrides, extra_files=args.conf, stage=stage)
    except ConfigError as exc:
        print(f"captionrec: config error: {exc}", file=sys.stderr)
        return 2

    effective = yaml.safe_dump(to_plain(cfg), sort_keys=False)
    if args.command == "config":
        print(effective)
        return 0
    log.info("effective config (profile %s):\n%s", args.profile, effective)

    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    spark = get_spark(cfg.spark)
    store = open_store(spark, cfg.storage)
    log.info("tables: backend=%s root=%s catalog=%s", store.backend, cfg.storage.root, cfg.storage.catalog)
    for name in PIPELINE.get(args.command, (args.command,)):
        summary = run_stage(name, cfg, spark, store)
        print_summary(summary)
    return 0


def stage_main(stage: str, argv: Optional[Sequence[str]] = None) -> int:
    """Entry for jobs/<stage>.py: `python jobs/ingest.py [options] [key=value ...]`."""
    return main([stage, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
