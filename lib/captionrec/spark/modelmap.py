"""The one generic model-map: DataFrame -> DataFrame through models loaded once per worker process and device.

    gpu = stage_gpu(spark, cfg.caption.gpu, "caption")          # driver: the ResourceProfile + the device rule
    transform = model_map(construct, apply, contracts.schema(contracts.CAPTIONS), key=plan.cache_key, gpu=gpu)
    rows = transform(items)                                      # lazy, like any DataFrame transform

`construct(device)` loads the models (picklable: a module-level function or a `functools.partial`); it runs in
the worker on the first row of a partition (an empty partition loads nothing), on the device the task was
assigned (`spark.udf.task_device` under `gpu.rule`), and its result is cached per worker process and device
(`spark.udf.cached_model`). `apply(models, rows)` takes an iterator over the partition's rows (dicts) and
yields lists of output rows; each list becomes one Arrow batch of exactly `schema` (`spark.udf.map_rows`), so
all-failed and empty batches keep their declared types. The GPU ResourceProfile (when the master supports
stage-level scheduling) is attached to the transform.

The pattern is the one NVIDIA spark-rapids-ml's `core.py` uses for its `_transform_udf`: set the task's GPU,
construct the model object on the executor, stream the partition's batches through it.

One stage's models at a time (a shared job cluster runs caption, then embed, in the same Python workers): the
cache is keyed by stage (`gpu.rule.stage`: caption, embed). A task of a stage first releases every cached model
of another stage in its worker (references dropped, gc, `torch.cuda.empty_cache()` where CUDA is present), even
when its partition is empty; and after a stage's write the driver runs `release_models`, a small job under the
stage's profile that releases the stage's models in the workers it reaches. A worker that neither job reaches
keeps its models until the next model-map task it runs or Spark's idle-worker cleanup ends it (about a minute).

Cost (`CostMeter`, optional): each task measures its model load and, per group of output rows (a caption kind, a
feature set), its wall, CPU and GPU seconds, items and peak memory (`inference.cost.TaskMeter`), and adds them to
a Spark accumulator the driver reads after the action (`meter.value`). Accumulator updates made in a transform are
applied once per successful task attempt: the stages compute each model-map once (localCheckpoint), but a task
that Spark retries is counted again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING, Any

from captionrec.inference.cost import TaskMeter, merge
from captionrec.spark.udf import (
    DeviceRule,
    cached_model,
    limit_torch_threads,
    map_rows,
    model_cache_state,
    profile_for,
    release_other_stages,
    release_stage_models,
    task_device,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config.common import GpuConfig

log = logging.getLogger(__name__)

Rows = Iterator[dict[str, Any]]
Construct = Callable[[str], Any]
Apply = Callable[[Any, Rows], Iterator[list[dict[str, Any]]]]


@dataclass(frozen=True)
class StageGpu:
    """A stage's GPU placement, decided on the driver: the profile to attach and the rule its tasks follow."""

    profile: Any  # pyspark ResourceProfile or None
    rule: DeviceRule


class _CostParam:
    """Accumulator param of `CostMeter`: {group: {metric: value}} merged with `inference.cost.merge`."""

    def zero(self, value: Any) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 - pyspark's AccumulatorParam name
        return merge(a, b)


class CostMeter:
    """Driver side: the accumulator a model-map's tasks add their cost to (`model_map(..., meter=...)`);
    `value` after the action: {group: {metric: value}} (see `captionrec.inference.cost`)."""

    def __init__(self, spark: "SparkSession"):
        self.acc = spark.sparkContext.accumulator({}, _CostParam())

    @property
    def value(self) -> dict[str, dict[str, float]]:
        return {g: dict(v) for g, v in self.acc.value.items()}


def session_schedules_gpus(spark: "SparkSession") -> bool:
    """True when the session's default profile asks GPUs per task (`spark.task.resource.gpu.amount` > 0)."""
    try:
        amount = spark.sparkContext.getConf().get("spark.task.resource.gpu.amount", "0")
        return float(amount or 0) > 0
    except (ValueError, TypeError):
        return False


def stage_gpu(spark: "SparkSession", gpu: "GpuConfig", stage: str) -> StageGpu:
    """The ResourceProfile (enabled and supported by the master) and the device rule for `stage`'s tasks.
    Raises `spark.cluster.ClusterConfigError` when the profile's tasks can never be scheduled."""
    from captionrec.spark.cluster import check_profile_fits

    profile = profile_for(
        spark, gpu.enabled, gpu.task_amount, task_cpus=gpu.task_cpus, executor_gpus=gpu.executor_amount
    )
    # a profile no executor can hold would leave the stage waiting forever: an error that names the settings
    check_profile_fits(
        spark,
        profile,
        what=f"{stage} GPU tasks",
        cpus_key=f"{stage}.gpu.task_cpus",
        gpus_key=f"{stage}.gpu.task_amount",
    )
    scheduled = gpu.enabled and ((profile is not None and gpu.task_amount > 0) or session_schedules_gpus(spark))
    if gpu.enabled and not scheduled:
        log.info(
            "%s.gpu.enabled on master %s without GPU scheduling: tasks use this machine's first GPU",
            stage,
            spark.sparkContext.master,
        )
    return StageGpu(profile, DeviceRule(stage, gpu.enabled, scheduled, gpu.on_missing_cuda))


def _torch_threads(n: int | None) -> int:
    """n > 0: n; 0: leave torch's default; None: the task's CPU count (spark.task.cpus)."""
    if n is not None:
        return n
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.cpus()) if ctx is not None else 1


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def model_map(
    construct: Construct,
    apply: Apply,
    schema: "pa.Schema",
    *,
    key: str,
    gpu: StageGpu,
    torch_threads: int | None = None,
    evict: str | None = None,
    stage: str | None = None,
    meter: CostMeter | None = None,
    group: Callable[[dict[str, Any]], str] | None = None,
) -> Callable[["DataFrame"], "DataFrame"]:
    """The DataFrame -> DataFrame transform that runs `apply(construct(device), rows)` in every partition.

    `key` identifies what `construct` loads (the cache adds the device); `evict` (a group name): on a GPU, drop
    the group's other models before loading these (one caption kind at a time in GPU memory).
    `torch_threads`: intra-op threads per worker (None: the task's CPUs; 0: torch's default).
    `stage` (default: the stage of `gpu.rule`): the models' stage; every task first releases other stages' models.
    `meter`: add each task's cost to it, per `group(output row)` (default: every row in group `key`).
    """
    rule = gpu.rule
    owner = stage or rule.stage
    acc = meter.acc if meter is not None else None

    def partition(rows: Rows) -> Iterator[list[dict[str, Any]]]:
        release_other_stages(owner)  # the previous stage's models leave this worker, rows or not
        first = next(rows, None)
        if first is None:
            return
        limit_torch_threads(_torch_threads(torch_threads))
        _quiet_transformers()
        device = task_device(rule)
        if acc is None:
            models = cached_model(key, lambda: construct(device), device=device, evict=evict, stage=owner)
            yield from apply(models, chain([first], rows))
            return
        task, load = TaskMeter(device, key, group), []

        def timed_construct() -> Any:
            t0, c0 = time.perf_counter(), time.process_time()
            built = construct(device)
            load.append((time.perf_counter() - t0, time.process_time() - c0))
            return built

        models = cached_model(key, timed_construct, device=device, evict=evict, stage=owner)
        if load:
            task.loaded(*load[0])
        for out in apply(models, chain([first], rows)):
            task.batch(out)
            yield out
        acc.add(task.finish())

    def transform(df: "DataFrame") -> "DataFrame":
        return map_rows(df, partition, schema, profile=gpu.profile)

    return transform


def _release_rows(stage: str | None) -> Callable[[Rows], Iterator[list[dict[str, Any]]]]:
    def partition(rows: Rows) -> Iterator[list[dict[str, Any]]]:
        for _ in rows:
            pass
        released = release_stage_models(stage)
        yield [{"pid": model_cache_state()["pid"], "released": released}]

    return partition


def release_models(
    spark: "SparkSession", gpu: StageGpu, stage: str | None = None, tasks: int | None = None
) -> dict[int, list[str]]:
    """Driver side, after a stage's write: release `stage`'s models (default: the stage of `gpu.rule`) in the
    Python workers a small job reaches. The job runs under the stage's ResourceProfile (its tasks share the
    stage's Python worker pool) with `tasks` tasks (default: twice the default parallelism). Returns
    {worker pid: the `<key>@<device>` it released} for the workers that released something."""
    import pyarrow as pa

    owner = stage or gpu.rule.stage
    n = tasks or max(2, 2 * spark.sparkContext.defaultParallelism)
    schema = pa.schema([("pid", pa.int64()), ("released", pa.list_(pa.string()))])
    df = spark.range(0, n, numPartitions=n)
    out: dict[int, list[str]] = {}
    for row in map_rows(df, _release_rows(owner), schema, profile=gpu.profile).collect():
        if row["released"]:
            out.setdefault(int(row["pid"]), []).extend(row["released"])
    if out:
        log.info("released %s models in %d worker(s): %s", owner, len(out), out)
    return out
