"""Cost accounting inside one process, Spark-free: CPU, GPU and memory of the model work a worker does.

    with model_call(models.device):      # around every model call (captioning.core, features.core)
        out = model(batch)               # on CUDA: synchronize-bracketed, the seconds added to gpu_seconds()

    meter = TaskMeter(group_of)          # the model-map (spark.modelmap) around one partition
    meter.loaded(seconds, cpu_seconds)   # the model load, when the partition's models were not cached
    for rows in batches:
        meter.batch(rows)                # the seconds since the previous batch, shared by the rows' groups
    meter.finish()                       # -> {group: {metric: value}}, summed over tasks with `merge`

Per group (a caption kind, a feature set): `items`, `batches`, `tasks`, `task_seconds` (wall time of the worker
producing the group's batches: summed over parallel tasks, so more than the stage's elapsed time when tasks run
side by side), `cpu_seconds` (time.process_time of the worker: every thread, decode and torch's intra-op threads
included), `gpu_seconds` (device time of the model calls, 0 without CUDA), `gpu_tasks` (tasks on a CUDA device),
`load_seconds` / `load_cpu_seconds` (model loads: a fixed cost, kept apart from the per-item cost),
`peak_rss_mb` (the worker's max RSS so far, getrusage) and `peak_gpu_mb` (torch.cuda.max_memory_allocated since
the task began). `merge` sums counters and takes the max of `peak_*`.
"""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_GPU_SECONDS = [0.0]  # device seconds of the model calls in this process (model_call adds to it)
PEAK_PREFIX = "peak_"


def gpu_seconds() -> float:
    """Device seconds of every `model_call` on a CUDA device in this process so far."""
    return _GPU_SECONDS[0]


def _is_cuda(device: str | None) -> bool:
    return bool(device) and str(device).startswith("cuda")


@contextmanager
def model_call(device: str | None) -> Iterator[None]:
    """Time a model call's device work: on CUDA, synchronize before and after and add the elapsed seconds to
    `gpu_seconds()` (the call's kernels, not the host's decode running beside it); on a CPU, nothing."""
    if not _is_cuda(device):
        yield
        return
    import torch

    torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    try:
        yield
    finally:
        torch.cuda.synchronize(device)
        _GPU_SECONDS[0] += time.perf_counter() - t0


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Max resident set size of this process (or of its largest waited-for child: RUSAGE_CHILDREN), MiB."""
    kb = resource.getrusage(who).ru_maxrss
    return round(kb / (1024 * 1024) if sys.platform == "darwin" else kb / 1024, 1)  # macOS: bytes, Linux: KiB


def _cuda_ready() -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask (a CPU worker may not need it)
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


def reset_gpu_peak(device: str | None) -> None:
    if _is_cuda(device) and _cuda_ready():
        sys.modules["torch"].cuda.reset_peak_memory_stats(device)


def peak_gpu_mb(device: str | None) -> float:
    """torch.cuda.max_memory_allocated on `device` since the last reset, MiB (0 on a CPU)."""
    if not (_is_cuda(device) and _cuda_ready()):
        return 0.0
    return round(sys.modules["torch"].cuda.max_memory_allocated(device) / 2**20, 1)


def merge(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per group: counters summed, `peak_*` the max (updates `a` in place and returns it)."""
    for group, values in b.items():
        into = a.setdefault(group, {})
        for k, v in values.items():
            into[k] = max(into.get(k, 0.0), v) if k.startswith(PEAK_PREFIX) else into.get(k, 0.0) + v
    return a


class TaskMeter:
    """One partition's cost per group of output rows (see the module docstring); `group_of(row)` names a row's
    group (None: every row is `default`)."""

    def __init__(self, device: str, default: str, group_of: Callable[[dict[str, Any]], str] | None = None):
        self.device, self.default, self.group_of = device, default, group_of
        self.out: dict[str, dict[str, float]] = {}
        self.load: tuple[float, float] = (0.0, 0.0)
        self.last_groups: dict[str, int] = {}
        reset_gpu_peak(device)
        self._mark()

    def _mark(self) -> None:
        self.t, self.cpu, self.gpu = time.perf_counter(), time.process_time(), gpu_seconds()

    def loaded(self, seconds: float, cpu_seconds: float) -> None:
        """The partition loaded its models (they were not cached in this worker): a fixed cost."""
        self.load = (seconds, cpu_seconds)
        self._mark()

    def _charge(self, groups: dict[str, int]) -> None:
        t, cpu, gpu = time.perf_counter(), time.process_time(), gpu_seconds()
        spent = {"task_seconds": t - self.t, "cpu_seconds": cpu - self.cpu, "gpu_seconds": gpu - self.gpu}
        self.t, self.cpu, self.gpu = t, cpu, gpu
        n = sum(groups.values())
        for group, k in groups.items():
            into = self.out.setdefault(group, {})
            for key, v in spent.items():
                into[key] = into.get(key, 0.0) + v * k / n

    def batch(self, rows: list[dict[str, Any]]) -> None:
        """A batch of output rows is ready: the time since the previous one is theirs, shared by row count."""
        if not rows:
            return
        groups: dict[str, int] = {}
        for row in rows:
            g = self.group_of(row) if self.group_of is not None else self.default
            groups[g] = groups.get(g, 0) + 1
        self._charge(groups)
        for g, k in groups.items():
            into = self.out[g]
            into["items"] = into.get("items", 0.0) + k
            into["batches"] = into.get("batches", 0.0) + 1
        self.last_groups = groups

    def finish(self) -> dict[str, dict[str, float]]:
        """The partition's cost per group; the time after the last batch (its hand-over to Spark) is that
        batch's, the load is shared by the groups the partition produced."""
        if self.last_groups:
            self._charge(self.last_groups)
        groups = list(self.out) or [self.default]
        rss, gpu_peak, cuda = peak_rss_mb(), peak_gpu_mb(self.device), float(_is_cuda(self.device))
        for g in groups:
            into = self.out.setdefault(g, {})
            into.update(
                tasks=into.get("tasks", 0.0) + 1,
                gpu_tasks=into.get("gpu_tasks", 0.0) + cuda,
                load_seconds=into.get("load_seconds", 0.0) + self.load[0] / len(groups),
                load_cpu_seconds=into.get("load_cpu_seconds", 0.0) + self.load[1] / len(groups),
                peak_rss_mb=rss,
                peak_gpu_mb=gpu_peak,
            )
        return self.out
