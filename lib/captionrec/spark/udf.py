"""UDF plumbing shared by the model stages (caption, embed) and the ingest probe.

- `cached_model`: one model instance per Python worker process, key and device; Spark reuses Python workers
  (`spark.python.worker.reuse`, on by default), so a worker loads a model once per device it serves and streams
  every batch of every task it runs through it. On a GPU, loading a model of an `evict` group first drops that
  group's other models on the same GPU (one kind's caption models at a time); other GPUs keep theirs.
  Models built for a pipeline stage (`stage`) are released when another stage's models are built or another
  stage asks (`release_other_stages`): a worker on a shared cluster never holds two stages' models.
- `DeviceRule` / `choose_device` / `task_device`: the device of a task, without guesses: the GPU Spark assigned
  (`TaskContext.resources()["gpu"]`), mapped through CUDA_VISIBLE_DEVICES; every inconsistency is an error that
  names the setting to change.
- `gpu_resource_profile` / `profile_for`: stage-level scheduling where the master supports it.
- `map_rows`: `mapInArrow` with a row-level function and a declared Arrow output schema, so a batch of
  any mix of rows (all failed, empty) comes out with the declared types. `captionrec.spark.modelmap` builds the
  one model-map on it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Entry:
    model: Any
    device: str
    group: str | None
    stage: str | None = None


_MODELS: dict[str, _Entry] = {}
_LOCK = threading.RLock()
_RELEASED: list[str] = []  # `<key>@<device>` of every model released in this process, in order (observability)


def cached_model(
    key: str, factory: Callable[[], T], device: str = "cpu", evict: str | None = None, stage: str | None = None
) -> T:
    """The worker-process singleton for (`key`, `device`), built with `factory` on first use.

    `evict`: a group name; before a new model of that group is loaded on a CUDA device, the group's other models
    on the same device are dropped (and the allocator cache freed). Models on other devices, or outside the
    group, stay: a worker keeps one copy per GPU it has served.
    `stage`: the pipeline stage the model belongs to; before it is built, every cached model of another stage
    is released (on every device, CPU included), so the process holds one stage's models at a time.
    """
    full = f"{key}@{device}"
    entry = _MODELS.get(full)
    if entry is None:
        with _LOCK:
            entry = _MODELS.get(full)
            if entry is None:
                if stage is not None:
                    release_other_stages(stage)
                if evict is not None and device.startswith("cuda"):
                    _evict(evict, device)
                entry = _Entry(factory(), device, evict, stage)
                _MODELS[full] = entry
    return entry.model


def _release(which: Callable[[_Entry], bool], why: str) -> list[str]:
    """Drop the cached models `which` selects, then collect garbage and free the CUDA allocator's cache."""
    with _LOCK:
        gone = [k for k, e in _MODELS.items() if which(e)]
        for k in gone:
            del _MODELS[k]
        _RELEASED.extend(gone)
    if gone:
        from captionrec.inference.batching import free_memory

        log.info("released %d model(s) %s: %s", len(gone), why, ", ".join(gone))
        free_memory()
    return gone


def release_other_stages(stage: str) -> list[str]:
    """Release every cached model that belongs to a stage other than `stage` (models without a stage stay)."""
    return _release(lambda e: e.stage is not None and e.stage != stage, f"of other stages than {stage}")


def release_stage_models(stage: str | None = None) -> list[str]:
    """Release the cached models of `stage` (None: every cached model); returns their `<key>@<device>`."""
    return _release(lambda e: stage is None or e.stage == stage, f"of stage {stage or 'any'}")


def model_cache_state() -> dict[str, Any]:
    """This process's cache: pid, `<key>@<device>` -> stage of every cached model, and every key released so far."""
    return {"pid": os.getpid(), "models": {k: e.stage for k, e in _MODELS.items()}, "released": list(_RELEASED)}


def _evict(group: str, device: str) -> None:
    _release(
        lambda e: e.group == group and e.device == device, f"of group {group} from {device} before loading another"
    )


def clear_model_cache() -> None:
    with _LOCK:
        _MODELS.clear()


def cached_model_keys() -> list[str]:
    """`<key>@<device>` of every cached model."""
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


class GpuBindingError(RuntimeError):
    """A task's GPU assignment does not fit the config or the machine; the message names what to set."""


@dataclass(frozen=True)
class DeviceRule:
    """How a stage's tasks pick their device (made on the driver, shipped to the workers).

    stage: the config section (`caption`, `embed`), for messages. enabled: `<stage>.gpu.enabled`.
    scheduled: Spark schedules GPUs for these tasks (a GPU ResourceProfile is attached, or the session asks
    `spark.task.resource.gpu.amount`), so every task must get an address. on_missing_cuda: what a task that
    was given a GPU does when CUDA is not available ("error", or "cpu" for fake-GPU tests).
    """

    stage: str
    enabled: bool = False
    scheduled: bool = False
    on_missing_cuda: Literal["error", "cpu"] = "error"


def choose_device(
    rule: DeviceRule,
    addresses: Sequence[str],
    cuda_available: bool,
    device_count: int,
    visible_devices: str | None,
) -> str:
    """The torch device of a task (pure: the caller passes what Spark, torch and the environment report).

    - GPUs disabled: "cpu".
    - Spark assigned addresses: the first one, mapped to its index inside CUDA_VISIBLE_DEVICES when that is set
      (YARN / Kubernetes isolation), else used as the CUDA index. An address that is not visible is an error;
      CUDA not available is an error unless `on_missing_cuda` is "cpu".
    - No address although Spark schedules GPUs for the stage: an error naming the settings.
    - No address on a master without GPU scheduling (local[*]): the machine's first visible GPU (`cuda:0`);
      no CUDA is an error unless `on_missing_cuda` is "cpu".
    """
    g = f"{rule.stage}.gpu"
    if not rule.enabled:
        return "cpu"
    if not addresses:
        if rule.scheduled:
            raise GpuBindingError(
                f"{g}.enabled is true and the stage runs with GPU scheduling, but Spark assigned this task no GPU: "
                f"give executors GPUs (spark.executor.resource.gpu.amount + discoveryScript) and tasks a share "
                f"(spark.task.resource.gpu.amount or {g}.task_amount > 0), or set {g}.enabled=false"
            )
        addresses = ["0"]  # local master: the machine's own (first visible) GPU
        visible_devices = None
    if not cuda_available:
        if rule.on_missing_cuda == "cpu":
            return "cpu"
        raise GpuBindingError(
            f"{g}.enabled is true and the task has GPU {addresses[0]}, but CUDA is not available in this Python "
            f"worker (torch without CUDA, no driver, or CUDA_VISIBLE_DEVICES={visible_devices!r}); fix the worker's "
            f"CUDA setup, or set {g}.on_missing_cuda=cpu to run on the CPU (fake GPUs in tests)"
        )
    if len(addresses) > 1:
        log.warning("task got GPUs %s; using only %s", list(addresses), addresses[0])
    addr = str(addresses[0]).strip()
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    if visible:
        if addr not in visible:
            raise GpuBindingError(
                f"Spark assigned GPU {addr} but CUDA_VISIBLE_DEVICES={visible_devices!r} does not list it: the "
                "discovery script and the GPU isolation disagree (make the discovery script report the visible ids)"
            )
        index = visible.index(addr)
    else:
        try:
            index = int(addr)
        except ValueError:
            raise GpuBindingError(f"Spark assigned GPU address {addr!r}, which is not a CUDA index") from None
    if index >= device_count:
        raise GpuBindingError(f"Spark assigned GPU {addr} but this worker sees {device_count} CUDA device(s)")
    return f"cuda:{index}"


def task_device(rule: DeviceRule | None = None) -> str:
    """The torch device for the running task under `rule` (no rule: GPUs disabled, "cpu")."""
    rule = rule or DeviceRule(stage="task")
    if not rule.enabled:
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    return choose_device(
        rule,
        task_gpu_addresses(),
        available,
        torch.cuda.device_count() if available else 0,
        os.environ.get("CUDA_VISIBLE_DEVICES"),
    )


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
    executor_gpus: int | None = None,
    executor_cores: int | None = None,
    executor_memory: str | None = None,
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


def profile_for(spark, enabled: bool, task_gpus: float, task_cpus: int = 1, executor_gpus: int | None = None):
    """The GPU profile when enabled and the master supports stage-level scheduling, else None (logged)."""
    if not enabled:
        return None
    if not supports_stage_scheduling(spark):
        log.info(
            "master %s has no stage-level scheduling; running without a GPU ResourceProfile", spark.sparkContext.master
        )
        return None
    return gpu_resource_profile(task_gpus, task_cpus=task_cpus, executor_gpus=executor_gpus)


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
            raise KeyError(
                f"row has column(s) {sorted(extra)} that the output schema does not declare ({schema.names})"
            )
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
