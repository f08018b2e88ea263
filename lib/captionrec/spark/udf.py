"""UDF plumbing shared by the GPU stages (caption, embed).

- `cached_model`: one model instance per Python worker process and key; Spark reuses Python workers
  (`spark.python.worker.reuse`, on by default), so a worker loads a model once and streams every
  batch of every task it runs through it.
- `task_device`: the GPU Spark assigned to the running task (`TaskContext.resources()["gpu"]`).
- `gpu_resource_profile` / `map_in_pandas`: stage-level scheduling where the master supports it.
- `map_rows`: `mapInArrow` with a row-level function and a declared Arrow output schema, so a batch of
  any mix of rows (all failed, empty) comes out with the declared types.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Optional, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
T = TypeVar("T")

_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def cached_model(key: str, factory: Callable[[], T]) -> T:
    """Return the worker-process singleton for `key`, building it with `factory` on first use."""
    model = _MODELS.get(key)
    if model is None:
        with _LOCK:
            model = _MODELS.get(key)
            if model is None:
                model = factory()
                _MODELS[key] = model
    return model


def clear_model_cache() -> None:
    with _LOCK:
        _MODELS.clear()


def cached_model_keys() -> list[str]:
    return list(_MODELS)


def task_gpu_addresses() -> list[str]:
    """GPU addresses Spark assigned to the current task ([] outside a task or without GPU scheduling)."""
    try:
        from pyspark import TaskContext
    except ImportError:  # model code can run without Spark
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    gpu = ctx.resources().get("gpu")
    return list(gpu.addresses) if gpu is not None else []


def task_device() -> str:
    """torch device string for this task: the assigned GPU, any visible GPU, or the CPU.

    Spark's addresses are physical ids; where CUDA_VISIBLE_DEVICES already narrows the visible set
    (YARN/K8s isolation), the address is mapped to its index inside that set.
    """
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    addresses = task_gpu_addresses()
    if not addresses:
        return "cuda"
    addr = addresses[0]
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if visible:
        index = visible.index(addr) if addr in visible else 0
    else:
        index = int(addr)
    if index >= torch.cuda.device_count():
        log.warning("GPU address %s not visible (%d devices); using cuda:0", addr, torch.cuda.device_count())
        index = 0
    return f"cuda:{index}"


def limit_torch_threads(n: int) -> None:
    """Cap intra-op threads in a worker (several Python workers share an executor's cores)."""
    import torch

    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)


def supports_stage_scheduling(spark) -> bool:
    """ResourceProfiles run on standalone / YARN / Kubernetes (incl. local-cluster), not on local[*]."""
    master = spark.sparkContext.master
    return not (master == "local" or master.startswith("local["))


def gpu_resource_profile(
    task_gpus: float,
    task_cpus: int = 1,
    executor_gpus: Optional[int] = None,
    executor_cores: Optional[int] = None,
    executor_memory: Optional[str] = None,
):
    """A ResourceProfile asking `task_gpus` GPUs per task (fractions share a GPU).

    Executor requests are added only when given: with dynamic allocation off (the usual GPU-cluster
    setting) Spark accepts task-only profiles that reuse the default executors.
    """
    from pyspark.resource import ExecutorResourceRequests, ResourceProfileBuilder, TaskResourceRequests

    builder = ResourceProfileBuilder()
    treqs = TaskResourceRequests().cpus(task_cpus)
    if task_gpus > 0:
        treqs = treqs.resource("gpu", task_gpus)
    builder.require(treqs)
    if executor_gpus or executor_cores or executor_memory:
        ereqs = ExecutorResourceRequests()
        if executor_cores:
            ereqs = ereqs.cores(executor_cores)
        if executor_memory:
            ereqs = ereqs.memory(executor_memory)
        if executor_gpus:
            ereqs = ereqs.resource("gpu", executor_gpus)
        builder.require(ereqs)
    return builder.build


def profile_for(spark, enabled: bool, task_gpus: float, task_cpus: int = 1, executor_gpus: Optional[int] = None):
    """The GPU profile when enabled and the master supports stage-level scheduling, else None (logged)."""
    if not enabled:
        return None
    if not supports_stage_scheduling(spark):
        log.info("master %s has no stage-level scheduling; running without a GPU ResourceProfile",
                 spark.sparkContext.master)
        return None
    return gpu_resource_profile(task_gpus, task_cpus=task_cpus, executor_gpus=executor_gpus)


def map_in_pandas(df, fn: Callable[[Iterator[Any]], Iterator[Any]], schema, profile=None):
    """df.mapInPandas with an optional ResourceProfile."""
    if profile is None:
        return df.mapInPandas(fn, schema)
    return df.mapInPandas(fn, schema, profile=profile)


def arrow_batch(rows: list[dict[str, Any]], schema: "pa.Schema") -> "pa.RecordBatch":
    """Rows (dicts) -> a RecordBatch of exactly `schema`, whatever the mix of rows.

    Columns are typed by the declared schema, never inferred from values: a batch whose rows all
    failed (every string column null) or an empty batch keeps its declared types. A missing key is
    null; a key the schema does not declare is an error (a typo would otherwise drop data silently).
    """
    import pyarrow as pa

    names = set(schema.names)
    for row in rows:
        extra = set(row) - names
        if extra:
            raise KeyError(f"row has column(s) {sorted(extra)} that the output schema does not declare ({schema.names})")
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def map_rows(
    df: "DataFrame",
    fn: Callable[[Iterator[dict[str, Any]]], Iterator[list[dict[str, Any]]]],
    schema: "pa.Schema",
    profile: Any = None,
) -> "DataFrame":
    """`df.mapInArrow` with a row-level function and a declared Arrow output schema.

    `fn` gets an iterator over the partition's rows (dicts, nulls as None) and yields lists of output rows
    (dicts keyed by `schema`'s names); each list becomes one Arrow batch typed by `schema`
    (`arrow_batch`), so all-failed and empty batches keep their declared types. `profile`: an optional
    ResourceProfile (stage-level scheduling, e.g. a GPU per task).
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    spark_schema = from_arrow_schema(schema)

    def run(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        def rows() -> Iterator[dict[str, Any]]:
            for batch in batches:
                yield from batch.to_pylist()

        for out in fn(rows()):
            if out:
                yield arrow_batch(list(out), schema)

    if profile is None:
        return df.mapInArrow(run, spark_schema)
    return df.mapInArrow(run, spark_schema, profile=profile)
