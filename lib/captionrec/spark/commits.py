"""Commit pacing for long model stages: a commit every N items and, once the pace is known, about every T seconds.

    pacer = CommitPacer(every=1000, seconds=600)
    for chunk in pacer.chunks(ids):        # lists of keys, in the given order
        ...                                # model work on `chunk`, then one MERGE (timed: the pace so far
                                           # sizes the next chunk)

A run killed mid-way loses at most the chunk in flight; finished chunks are committed. Spark-free.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import TypeVar

K = TypeVar("K")


class CommitPacer:
    """Chunk sizes: at most `every` items (0: no count bound) and, once a chunk has measured the pace, at most the
    items that pace gets through in `seconds` (0: no time bound). Before the pace is known, a time bound without a
    count bound starts with a chunk of `first` items."""

    def __init__(self, every: int, seconds: float, first: int = 32):
        if every < 0 or seconds < 0 or first < 1:
            raise ValueError("commit bounds must be >= 0 (0: no bound) and the first chunk >= 1")
        self.every, self.seconds, self.first = every, seconds, first
        self.rate: float | None = None  # items per second over the chunks so far
        self._items, self._elapsed = 0, 0.0

    def size(self, remaining: int) -> int:
        n = remaining
        if self.every:
            n = min(n, self.every)
        if self.seconds and self.rate:
            n = min(n, max(1, math.floor(self.rate * self.seconds)))
        elif self.seconds and not self.every:
            n = min(n, self.first)
        return max(1, n) if remaining else 0

    def done(self, items: int, elapsed_s: float) -> None:
        self._items += items
        self._elapsed += max(elapsed_s, 1e-6)
        self.rate = self._items / self._elapsed

    def chunks(self, keys: Sequence[K]) -> Iterator[list[K]]:
        """Consecutive chunks of `keys`, each sized when it is asked for; the time the caller spends on a chunk
        (between two steps of this iterator) is its pace."""
        start = 0
        while start < len(keys):
            n = self.size(len(keys) - start)
            t0 = time.perf_counter()
            yield list(keys[start : start + n])
            self.done(n, time.perf_counter() - t0)
            start += n
