"""Launching the per-rank training function: in this process (1 CPU process, tests) or with TorchDistributor.

`TorchDistributor(num_processes=N, local_mode=True, use_gpu=False)` starts N processes on the driver
with gloo (the embedded default, ~6 s overhead). With `use_gpu=True` every process gets exactly one GPU
and the process group uses NCCL; nothing is guessed:
- local_mode=True: TorchDistributor picks N of the driver's GPUs (`spark.driver.resource.gpu.amount`
  must be >= N) and sets CUDA_VISIBLE_DEVICES to them; process LOCAL_RANK i uses cuda:i.
- local_mode=False: barrier tasks on the executors, one GPU per task (`spark.task.resource.gpu.amount=1`);
  the task's GPU is its only visible device and the process (LOCAL_RANK 0) uses cuda:0.
A GPU run where CUDA is not available, or where a process has no GPU of its own, is an error naming
`train.use_gpu` (never a silent CPU run, never two processes on one GPU).

What the ranks log reaches the driver's console as it happens (`training.progress`), which takes two things:
- each rank process gets a logging handler (`rank_logging`, called by `setup`): a torchrun child starts with
  none, so its INFO lines went nowhere (Python's last-resort handler shows warnings only);
- every process between a rank and the console writes unbuffered. Local mode: TorchDistributor runs
  `torch_run_process_wrapper` -> torchrun -> the ranks with their output on pipes, and the wrapper re-prints
  the ranks' lines with `print` into a pipe, which Python block-buffers (8 KiB) when stdout is not a terminal:
  the lines arrived together at the end. `unbuffered_output` puts PYTHONUNBUFFERED=1 into the environment
  those processes inherit and line-buffers the driver's own stdout, where TorchDistributor echoes the lines,
  while they run. Barrier mode needs nothing more: Spark starts its Python workers (which run the wrapper)
  with PYTHONUNBUFFERED=YES, and TorchDistributor streams each line to the driver's log server, which writes
  it to the driver's stderr and flushes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


def rank_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def gpu_device(local_rank: int) -> torch.device:
    """This process's own GPU: cuda:<local_rank>, which must be visible. Errors name the settings."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not torch.cuda.is_available():
        raise RuntimeError(
            f"train.use_gpu=true but CUDA is not available in this training process (torch {torch.__version__}, "
            f"CUDA_VISIBLE_DEVICES={visible!r}): run on GPU executors (spark.task.resource.gpu.amount=1) or set "
            f"train.use_gpu=false"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise RuntimeError(
            f"train.use_gpu=true: process LOCAL_RANK={local_rank} needs its own GPU but only {count} are visible "
            f"(CUDA_VISIBLE_DEVICES={visible!r}); lower train.num_processes or give each task one GPU "
            f"(spark.task.resource.gpu.amount=1, spark.driver.resource.gpu.amount >= train.num_processes in local mode)"
        )
    return torch.device("cuda", local_rank)


RANK_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [rank {rank}]: %(message)s"


def rank_logging(rank: int, level: int = logging.INFO) -> bool:
    """Give this process's root logger a stderr handler when it has none (a torchrun child; a process started by
    the CLI already has one, left as it is). Returns whether it added one."""
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(RANK_LOG_FORMAT.format(rank=rank)))
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "urllib3", "filelock", "httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return True


@contextlib.contextmanager
def unbuffered_output() -> Iterator[None]:
    """While TorchDistributor runs in local mode: the processes it starts write unbuffered, and the driver's stdout
    (where it echoes their lines) is line-buffered. Both are restored afterwards."""
    key, saved = "PYTHONUNBUFFERED", os.environ.get("PYTHONUNBUFFERED")
    os.environ[key] = "1"
    stdout = sys.stdout
    relax = getattr(stdout, "line_buffering", None) is False and hasattr(stdout, "reconfigure")
    if relax:
        stdout.reconfigure(line_buffering=True)
    try:
        yield
    finally:
        if relax:
            stdout.reconfigure(line_buffering=False)
        if saved is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved


def setup(use_gpu: bool, threads: int = 0) -> tuple[int, int, torch.device]:
    """Join the process group when there is more than one rank; pick this rank's device (and CPU threads).
    A rank process without logging gets a handler (`rank_logging`)."""
    import torch.distributed as dist

    rank, world, local_rank = rank_env()
    rank_logging(rank)
    if use_gpu:
        dev = gpu_device(local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
        # Share the machine's cores between local ranks instead of oversubscribing.
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.set_num_threads(threads if threads > 0 else max(1, (os.cpu_count() or 1) // local))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_gpu else "gloo")
    return rank, world, dev


def teardown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor, world: int, device: torch.device) -> torch.Tensor:
    """Sum a small tensor over ranks (a no-op with one rank); returns it on the CPU."""
    if world == 1:
        return t
    import torch.distributed as dist

    buf = t.to(device=device, dtype=torch.float64)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def all_gather_arrays(local: dict[str, np.ndarray], world: int) -> dict[str, np.ndarray]:
    """Every rank's arrays, concatenated per key in rank order (a no-op with one rank)."""
    if world == 1:
        return dict(local)
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, local)
    return {k: np.concatenate([p[k] for p in parts]) for k in local}


def _run_and_keep_rank0(fn: Callable[..., Any], out_path: str, *args: Any) -> Any:
    """Per-rank wrapper: rank 0 also pickles its result to `out_path`.

    TorchDistributor's local mode has every rank write its return value to one shared output file, so
    the value it hands back is whichever rank finished last, not rank 0's.
    """
    import pickle

    result = fn(*args)
    if rank_env()[0] == 0:
        tmp = f"{out_path}.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(result, fh)
        os.replace(tmp, out_path)
    return result


def check_gpu_settings(spark: Any, num_processes: int, local_mode: bool) -> None:
    """The Spark settings a GPU run needs, checked before any process starts (errors say what to set)."""

    def conf(key: str) -> str:
        try:
            return spark.conf.get(key) or ""
        except Exception:  # unset key
            return ""

    if local_mode:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "train.use_gpu=true with train.local_mode=true but the driver has no CUDA; "
                "set train.use_gpu=false or run on a GPU driver"
            )
        have = conf("spark.driver.resource.gpu.amount")
        if not have or int(float(have)) < num_processes:
            raise RuntimeError(
                f"train.use_gpu=true, local_mode=true, num_processes={num_processes}: set "
                f"spark.driver.resource.gpu.amount >= {num_processes} (got {have or 'unset'}) and its "
                f"discoveryScript, one GPU per process"
            )
        return
    amount = conf("spark.task.resource.gpu.amount")
    if not amount or float(amount) < 1 or float(amount) != int(float(amount)):
        raise RuntimeError(
            f"train.use_gpu=true with train.local_mode=false needs one whole GPU per training task: "
            f"set spark.task.resource.gpu.amount=1 (got {amount or 'unset'}) and "
            f"spark.executor.resource.gpu.amount / its discoveryScript"
        )


def check_barrier_fits(spark: Any, num_processes: int, use_gpu: bool) -> None:
    """A barrier job starts all `num_processes` tasks at once or never: when the executors cannot hold that
    many tasks of this size, say so now (`spark.cluster.ClusterConfigError`) instead of waiting forever."""
    from captionrec.spark.cluster import check_task_fits, conf_value

    cpus = int(conf_value(spark, "spark.task.cpus") or 1)
    gpus = float(conf_value(spark, "spark.task.resource.gpu.amount") or 0)
    gpus = max(1.0, gpus) if use_gpu else 0.0  # a GPU rank holds one whole GPU
    check_task_fits(
        spark,
        cpus,
        gpus,
        what="the training tasks (TorchDistributor barrier)",
        cpus_key="spark.task.cpus",
        concurrent=num_processes,
    )


def launch(
    fn: Callable[..., Any], *args: Any, num_processes: int = 1, local_mode: bool = True, use_gpu: bool = False
) -> Any:
    """Run `fn(*args)` on every rank; return rank 0's result.

    num_processes == 1 (and CPU): in this process, no distributor, no process group.
    """
    if num_processes == 1 and not use_gpu:
        return fn(*args)
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if use_gpu:
        if spark is None:
            raise RuntimeError("train.use_gpu=true launches TorchDistributor, which needs an active SparkSession")
        check_gpu_settings(spark, num_processes, local_mode)
    if not local_mode and spark is not None:
        check_barrier_fits(spark, num_processes, use_gpu)
    log.info("TorchDistributor(num_processes=%d, local_mode=%s, use_gpu=%s)", num_processes, local_mode, use_gpu)
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    if not local_mode:
        # Barrier mode returns the output of the task with partition id 0, which is rank 0.
        return distributor.run(fn, *args)
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory(prefix="captionrec-ddp-") as tmp, unbuffered_output():
        out_path = os.path.join(tmp, "rank0.pickle")
        distributor.run(_run_and_keep_rank0, fn, out_path, *args)
        if not os.path.exists(out_path):
            raise RuntimeError("TorchDistributor finished but rank 0 left no result; see the rank logs above")
        with open(out_path, "rb") as fh:
            return pickle.load(fh)
