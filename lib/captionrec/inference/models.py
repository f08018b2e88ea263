"""`Models`: loaded models on one device and the `BatchRunner`(s) their calls go through: the one shape the caption
kinds (`captioning.kinds`) and the feature encoders (`features`) load into. No Spark, no tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from captionrec.inference.batching import BatchRunner


@dataclass
class Models:
    """Models loaded on one device (one kind's, or one feature encoder) and the `BatchRunner` their calls go
    through. `model`: one model, or a tuple of role models (a NamedTuple such as the audio kind's; None for an
    unused role); `runners`: per-step runners of a kind with several model steps (default: `runner`)."""

    model: Any
    device: str
    runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))
    runners: dict[str, BatchRunner] = field(default_factory=dict)

    def parts(self) -> list[Any]:
        """The loaded models (a role left out, None, is not one)."""
        models = list(self.model) if isinstance(self.model, tuple) else [self.model]
        return [m for m in models if m is not None]

    def step(self, name: str) -> BatchRunner:
        return self.runners.get(name, self.runner)

    @property
    def synthetic(self) -> bool:
        """Some model has random weights (a tiny model): its outputs are noise."""
        return any(getattr(m, "synthetic", False) is True for m in self.parts())
