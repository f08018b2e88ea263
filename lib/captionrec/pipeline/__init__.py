"""Pipeline stages: one module per stage with `run(cfg, spark, store) -> dict`; table I/O lives only here."""

from __future__ import annotations

from typing import Any


class StageFailed(RuntimeError):
    """A stage that ran to the end and recorded its work, but whose outcome fails the job (e.g. more failed
    experiment children than `experiment.max_failed`). `summary` is the stage's summary (printed by the CLI
    before it exits with `exit_code`)."""

    exit_code = 3

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary
