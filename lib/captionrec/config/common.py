"""Config sections shared by several stages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class GpuConfig:
    """Stage-level GPU scheduling: a ResourceProfile asking for GPUs, applied only where the master supports
    it (standalone / YARN / Kubernetes / local-cluster, not local[*])."""

    enabled: bool = False
    task_amount: float = 1.0  # GPUs per task; fractions (0.5) put several tasks on one GPU
    executor_amount: int | None = None  # GPUs per executor in the profile (None: the cluster's executors)
    task_cpus: int = 1
    # A task that Spark gave a GPU address while CUDA is not available in the worker (fake GPUs in tests,
    # a broken driver): "error" (default) stops with a message naming this setting; "cpu" runs on the CPU.
    on_missing_cuda: Literal["error", "cpu"] = "error"
