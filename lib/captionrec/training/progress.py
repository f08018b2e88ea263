"""Live progress of a training run, reported by rank 0 while it runs.

Each rank holds a `Progress`; only rank 0's is active. The loop opens a phase per piece of work (`fit`: the
epoch-selection training of a window, `refit`: the retraining, `eval`: ranking the validation or test cases)
and calls `step(samples)` after every optimiser step or evaluation block. At least every `train.progress_every_s`
seconds (checked after each step or block), rank 0 logs one line

    progress: window 1 fit epoch 2/3 step 40/90 (44%), 812 samples/s, ETA 31 s (phase 24 s)

and logs the same numbers as MLflow metrics (`contracts.PROGRESS_METRICS`, step = rank 0's global counter of
steps and blocks over the whole run, so the series is monotonic across windows and phases). A phase nested in
another (validation inside `fit`) reports for itself; its time counts toward the outer phase's ETA (validation is
part of the phase) but not toward its samples/s. samples/s is over all ranks: rank 0's rows times the world size
(every rank runs the same number of steps on equal shards). An evaluation phase counts blocks of
`train.eval_batch_size` cases of rank 0's shard.

The lines reach the driver's console as they happen because the rank processes run unbuffered and have a
logging handler of their own (`training.distributed.rank_logging`, `launch`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from captionrec.contracts import PROGRESS_PHASES

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """One phase in progress: `total` steps (or blocks), `per_epoch` of them per epoch (training phases)."""

    window: int
    name: str  # contracts.PROGRESS_PHASES
    total: int
    per_epoch: int
    detail: str
    started: float
    done: int = 0
    samples: int = 0
    nested_seconds: float = 0.0  # time spent in phases opened inside this one
    reported: bool = False  # a progress line was logged during it (then its end is logged too)

    def epoch(self) -> tuple[int, int]:
        """(the epoch of the last step done, 1-based; epochs of the phase); (0, 0) for a phase without epochs."""
        if self.per_epoch <= 0:
            return 0, 0
        epochs = max(1, math.ceil(self.total / self.per_epoch))
        return min(epochs, max(0, self.done - 1) // self.per_epoch + 1), epochs


class Progress:
    """Rank 0's progress reporter (inactive elsewhere: every call is a no-op)."""

    def __init__(
        self,
        logger: Any = None,
        every_s: float = 30.0,
        *,
        active: bool = True,
        world: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ):
        if every_s <= 0:
            raise ValueError(f"train.progress_every_s must be > 0, got {every_s}")
        self.logger, self.every_s, self.active, self.world, self.clock = logger, every_s, active, world, clock
        self.global_step = 0
        self.reports = 0
        self._stack: list[Phase] = []
        self._last = clock()

    @classmethod
    def off(cls) -> "Progress":
        """A reporter that reports nothing (ranks other than 0, direct calls of the loop's functions)."""
        return cls(active=False)

    @contextmanager
    def phase(self, window: int, name: str, total: int = 0, per_epoch: int = 0, detail: str = "") -> Iterator[None]:
        """Work of one phase: `total` steps (0: set it later with `expect`), `per_epoch` of them an epoch."""
        if name not in PROGRESS_PHASES:
            raise ValueError(f"progress phase {name!r} is not one of {PROGRESS_PHASES}")
        if not self.active:
            yield
            return
        ph = Phase(window, name, int(total), int(per_epoch), detail, self.clock())
        self._stack.append(ph)
        try:
            yield
        finally:
            self._stack.pop()
            spent = self.clock() - ph.started
            if self._stack:
                self._stack[-1].nested_seconds += spent
            if ph.reported:  # a phase short enough to need no progress line needs no closing line either
                log.info("progress: %s done: %d of %d in %.1f s", self._title(ph), ph.done, ph.total, spent)

    def expect(self, total: int) -> None:
        """The current phase's total steps (an evaluation knows its blocks only once it has its cases)."""
        if self.active and self._stack:
            self._stack[-1].total = int(total)

    def step(self, samples: int) -> None:
        """One optimiser step (or evaluation block) of `samples` rows on this rank done; report when it is time."""
        if not self.active or not self._stack:
            return
        ph = self._stack[-1]
        ph.done += 1
        ph.samples += int(samples)
        self.global_step += 1
        now = self.clock()
        if now - self._last >= self.every_s:
            self.report(now)

    def numbers(self, now: float | None = None) -> dict[str, float | None]:
        """The current phase's numbers, named as the MLflow metrics (contracts.PROGRESS_METRICS); the ETA is
        None until a step is done or while the total is unknown."""
        ph = self._stack[-1]
        now = self.clock() if now is None else now
        elapsed = max(1e-9, now - ph.started)
        busy = max(1e-9, elapsed - ph.nested_seconds)
        epoch, epochs = ph.epoch()
        remaining = max(0, ph.total - ph.done)
        eta = elapsed / ph.done * remaining if ph.done and ph.total else None
        return {
            "progress_window": ph.window,
            "progress_phase": PROGRESS_PHASES.index(ph.name),
            "progress_epoch": epoch,
            "progress_epochs": epochs,
            "progress_step": ph.done,
            "progress_steps": ph.total,
            "progress_samples_per_s": ph.samples * self.world / busy,
            "progress_eta_seconds": eta,
            "progress_elapsed_seconds": elapsed,
        }

    def report(self, now: float | None = None) -> str | None:
        """Log the current phase's line and metrics now; returns the line (None when inactive or idle)."""
        if not self.active or not self._stack:
            return None
        now = self.clock() if now is None else now
        self._last = now
        ph, m = self._stack[-1], self.numbers(now)
        total = f"/{ph.total}" if ph.total else ""
        share = f" ({100 * ph.done / ph.total:.0f}%)" if ph.total else ""
        eta = "unknown" if m["progress_eta_seconds"] is None else f"{m['progress_eta_seconds']:.0f} s"
        line = (
            f"progress: {self._title(ph)} {'block' if ph.name == 'eval' else 'step'} {ph.done}{total}{share}, "
            f"{m['progress_samples_per_s']:.0f} samples/s, ETA {eta} (phase {m['progress_elapsed_seconds']:.0f} s)"
        )
        log.info("%s", line)
        if self.logger is not None:
            self.logger.log_metrics(m, step=self.global_step)
        self.reports += 1
        ph.reported = True
        return line

    @staticmethod
    def _title(ph: Phase) -> str:
        epoch, epochs = ph.epoch()
        detail = f" ({ph.detail})" if ph.detail else ""
        return f"window {ph.window} {ph.name}{detail}" + (f" epoch {epoch}/{epochs}" if epochs else "")
