"""Train stage config (owned with the train job)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainConfig:
    model: str = "sasrec"
    features: str = "id"
