"""The one retry policy and the one prefetch helper for every model call (captions and feature vectors).

`BatchRunner.run(items, fn, on_error)` feeds `fn` batches of `batch_size` items:

- a batch that runs out of memory (torch.cuda.OutOfMemoryError, or any error whose message says
  "out of memory") is retried with half the batch; the smaller size sticks for later batches, since
  the next batch will likely not fit either. An item that runs out of memory alone is an error (reason "oom");
- any other error in a batch of several items is retried item by item, so one bad item costs only itself;
- an item that fails alone becomes `on_error(item, exc)` and the run goes on.

`prefetch_batches(items, size, decode, threads)` yields the decoded items in batches of `size`, decoding the next
batch (on `threads` threads; PyAV releases the GIL) while the caller runs the model on the current one.

No Spark, no tables: every model call of the caption and embed cores goes through these two.
"""

from __future__ import annotations

import gc
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
D = TypeVar("D")


def is_oom(exc: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (torch.cuda.OutOfMemoryError or an 'out of memory' message)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    if isinstance(exc, MemoryError):
        return True
    return "out of memory" in str(exc).lower()


def free_memory() -> None:
    """gc, then the CUDA allocator's cached blocks back to the driver: after an OOM (the retry starts from a clean
    slate) or after models were dropped. Never imports torch just for this (no model was built without it)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def error_reason(exc: BaseException) -> str:
    """A short reason code for a failed item: 'oom', the error's own `.reason` (MediaError), or 'error'."""
    if is_oom(exc):
        return "oom"
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else "error"


def error_text(exc: BaseException, limit: int = 500) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BatchRunner(Generic[T, R]):
    """Run a batch function with OOM halving and per-item fallback. Keeps the (possibly reduced) batch size."""

    def __init__(self, batch_size: int, min_batch_size: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.min_batch_size = max(1, min_batch_size)
        self.oom_retries = 0
        self.item_retries = 0

    def run(
        self,
        items: Sequence[T],
        fn: Callable[[list[T]], Sequence[R]],
        on_error: Callable[[T, BaseException], R],
    ) -> list[R]:
        """Results in the order of `items`; `fn` must return one result per input item."""
        results: list[R] = []
        i = 0
        while i < len(items):
            size = min(self.batch_size, len(items) - i)
            batch = list(items[i : i + size])
            try:
                out = list(fn(batch))
                if len(out) != len(batch):
                    raise RuntimeError(f"batch function returned {len(out)} results for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - every failure is recorded, the run goes on
                if is_oom(exc) and size > self.min_batch_size:
                    free_memory()
                    self.batch_size = max(self.min_batch_size, size // 2)
                    self.oom_retries += 1
                    log.warning("out of memory on a batch of %d; retrying with %d", size, self.batch_size)
                    continue  # same start index, smaller batch
                if is_oom(exc):
                    free_memory()
                if size > 1:
                    self.item_retries += 1
                    log.warning("batch of %d failed (%s); retrying item by item", size, error_text(exc, 200))
                    out = [self._one(item, fn, on_error) for item in batch]
                else:
                    log.warning("item failed: %s", error_text(exc, 200))
                    out = [on_error(batch[0], exc)]
            results.extend(out)
            i += size
        return results

    def _one(self, item: T, fn: Callable[[list[T]], Sequence[R]], on_error: Callable[[T, BaseException], R]) -> R:
        try:
            out = list(fn([item]))
            if len(out) != 1:
                raise RuntimeError(f"batch function returned {len(out)} results for 1 item")
            return out[0]
        except Exception as exc:  # noqa: BLE001
            if is_oom(exc):
                free_memory()
            log.warning("item failed: %s", error_text(exc, 200))
            return on_error(item, exc)


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def prefetch_batches(
    items: Iterable[T], size: int, decode: Callable[[T], D], threads: int = 1, ahead: bool = True
) -> Iterator[list[D]]:
    """`decode` every item, yielded in batches of `size` in input order.

    With `ahead`, the next batch is decoding on a pool of `threads` threads while the caller works on the
    current one (at most two batches in memory). `decode` should record per-item failures in what it returns:
    an exception it raises ends the iteration.
    """
    batches = chunked(items, size)
    if not ahead:
        for batch in batches:
            yield [decode(x) for x in batch]
        return
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode") as pool:

        def submit(batch: list[T] | None):
            return None if batch is None else [pool.submit(decode, x) for x in batch]

        pending = submit(next(batches, None))
        while pending is not None:
            current, pending = pending, submit(next(batches, None))
            yield [f.result() for f in current]
