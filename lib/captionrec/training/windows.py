"""Evaluation windows of the split protocols (pure Python; the Spark side is `captionrec.transforms.splits`).

Rolling window (the paper's protocol), window k with start t_k:
    fit         ts <  t_k - window_days        (epoch selection trains on these)
    validation  t_k - window_days <= ts < t_k   ("the last 7 days before t_k": choose the epoch count)
    refit       ts <  t_k                       (train.retrain: the test-phase model trains on all of it)
    test        t_k <= ts < t_k + window_days
Interactions at or after t_k + window_days are not part of window k. Windows follow each other:
t_{k+1} = t_k + window_days.

Leave-one-out (MicroLens / RecBole): per user, in time order, the last interaction is test, the one before
it validation, the rest fit (refit: all but the last); users with fewer than 3 interactions only
contribute training rows. One window (0) without time bounds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from captionrec.contracts import ROLE_FIT as FIT
from captionrec.contracts import ROLE_NAMES
from captionrec.contracts import ROLE_REFIT as REFIT
from captionrec.contracts import ROLE_TEST as TEST
from captionrec.contracts import ROLE_VALID as VALID

__all__ = ["DAY_MS", "FIT", "LOO_END", "REFIT", "ROLE_NAMES", "TEST", "VALID", "Window", "rolling_windows"]

DAY_MS = 86_400_000
LOO_END = 2**62  # leave-one-out's single window has no time bounds


@dataclass(frozen=True)
class Window:
    """One evaluation window; all bounds in epoch milliseconds (UTC), `[start, end)`."""

    index: int
    valid_start_ms: int  # = t_k - window_days
    test_start_ms: int  # = t_k
    test_end_ms: int  # = t_k + window_days

    @property
    def is_loo(self) -> bool:
        return self.test_end_ms >= LOO_END

    def as_dict(self) -> dict:
        if self.is_loo:
            return {"window": self.index, "protocol": "loo"}
        iso = lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()  # noqa: E731
        return {
            "window": self.index,
            "valid_start": iso(self.valid_start_ms),
            "test_start": iso(self.test_start_ms),
            "test_end": iso(self.test_end_ms),
        }


def loo_window() -> Window:
    return Window(0, 0, 0, LOO_END)


def _to_ms(value: str) -> int:
    t = dt.datetime.fromisoformat(value)
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def rolling_windows(
    min_ts_ms: int,
    max_ts_ms: int,
    num_windows: int,
    window_days: int = 7,
    start: str | None = None,
) -> list[Window]:
    """The windows of the rolling protocol.

    start None: t_0 is chosen so that the last test window ends just after the newest interaction
    (`max_ts_ms + 1`). Raises ValueError when the first window would leave no fit data (its validation
    start must be after the oldest interaction) or when a given start lies outside the data.
    """
    w = window_days * DAY_MS
    if start is None:
        t0 = max_ts_ms + 1 - num_windows * w
    else:
        t0 = _to_ms(start)
    windows = [Window(k, t0 + k * w - w, t0 + k * w, t0 + (k + 1) * w) for k in range(num_windows)]
    if windows[0].valid_start_ms <= min_ts_ms:
        span = (max_ts_ms - min_ts_ms) / DAY_MS
        raise ValueError(
            f"{num_windows} window(s) of {window_days} days need more history: the first validation week would "
            f"start before the oldest interaction (data span {span:.1f} days); lower split.num_windows or move split.start"
        )
    # A test week starting 1 ms after the newest interaction (so empty) is allowed: the recommend stage's
    # production refit, whose retrain phase then trains on every interaction (validation: the last week).
    if windows[-1].test_start_ms > max_ts_ms + 1:
        raise ValueError(f"split.start={start!r}: the last window starts after the newest interaction")
    return windows
