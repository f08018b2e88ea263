"""Launching the per-rank training function: in this process (1 process, tests) or with TorchDistributor.

`TorchDistributor(num_processes=N, local_mode=True, use_gpu=False)` starts N processes on the driver
with gloo (the embedded default, ~6 s overhead); on a GPU cluster, `local_mode=False, use_gpu=True`
runs them as barrier tasks on the executors with NCCL. The same function runs either way; it reads its
rank from the environment torchrun sets.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)


def rank_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def setup(use_gpu: bool, threads: int = 0) -> tuple[int, int, torch.device]:
    """Join the process group when there is more than one rank; pick this rank's device (and CPU threads)."""
    import torch.distributed as dist

    rank, world, local_rank = rank_env()
    cuda = use_gpu and torch.cuda.is_available()
    if cuda:
        # TorchDistributor sets CUDA_VISIBLE_DEVICES per process on clusters; locally use local_rank.
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
        # Share the machine's cores between local ranks instead of oversubscribing.
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.set_num_threads(threads if threads > 0 else max(1, (os.cpu_count() or 1) // local))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
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


def launch(fn: Callable[..., Any], *args: Any, num_processes: int = 1, local_mode: bool = True, use_gpu: bool = False) -> Any:
    """Run `fn(*args)` on every rank; return rank 0's result.

    num_processes == 1 (and CPU): in this process, no distributor, no process group.
    """
    if num_processes == 1 and not use_gpu:
        return fn(*args)
    from pyspark.ml.torch.distributor import TorchDistributor

    log.info("TorchDistributor(num_processes=%d, local_mode=%s, use_gpu=%s)", num_processes, local_mode, use_gpu)
    distributor = TorchDistributor(num_processes=num_processes, local_mode=local_mode, use_gpu=use_gpu)
    if not local_mode:
        # Barrier mode returns the output of the task with partition id 0, which is rank 0.
        return distributor.run(fn, *args)
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory(prefix="captionrec-ddp-") as tmp:
        out_path = os.path.join(tmp, "rank0.pickle")
        distributor.run(_run_and_keep_rank0, fn, out_path, *args)
        if not os.path.exists(out_path):
            raise RuntimeError("TorchDistributor finished but rank 0 left no result; see the rank logs above")
        with open(out_path, "rb") as fh:
            return pickle.load(fh)
