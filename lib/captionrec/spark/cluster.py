"""Cluster launch helpers: Spark properties files, Delta's Maven coordinate, and the check that a task
resource request fits the executors.

Spark does not reject a ResourceProfile whose tasks ask for more CPUs (or GPUs) than any executor has:
the stage waits forever for a slot that can never exist. `check_task_fits` compares a request with the
executors the application actually has (or, before any registered, with `spark.executor.*`) and raises
`ClusterConfigError` naming the settings to change. Stages call it before they launch GPU work:

    check_task_fits(spark, task_cpus=g.task_cpus, task_gpus=g.task_amount,
                    what="caption GPU tasks", cpus_key="caption.gpu.task_cpus", gpus_key="caption.gpu.task_amount")
    check_profile_fits(spark, profile, what=..., cpus_key=..., gpus_key=...)   # a pyspark ResourceProfile
    check_task_fits(spark, ..., concurrent=num_processes)                       # barrier jobs need all slots at once

No Spark import at module level: the properties/coordinate helpers run without a JVM.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

SCALA_VERSION = "2.13"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


class ClusterConfigError(RuntimeError):
    """Spark/cluster settings that can never run the requested work (it would hang, not fail)."""


# -- properties files and coordinates ------------------------------------------------------------


def read_properties(path: str | Path) -> dict[str, str]:
    """A Spark properties file (`--properties-file`, Java .properties syntax as Spark reads it) -> dict.

    `key value`, `key=value` or `key: value` per line; `#`/`!` comments; values are stripped. Line
    continuations are not used in this project's files and are rejected rather than misread.
    """
    out: dict[str, str] = {}
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        if line.endswith("\\"):
            raise ValueError(f"{path}:{n}: line continuations are not supported here")
        m = re.match(r"^([^\s=:]+)\s*[=:\s]\s*(.*)$", line)
        if not m:
            out[line] = ""
            continue
        out[m.group(1)] = m.group(2).strip()
    return out


def delta_package(spark_version: str, delta_version: str, scala_version: str = SCALA_VERSION) -> str:
    """Delta's Maven coordinate for a Spark and a delta-spark version.

    delta-spark >= 4.1 publishes one artifact per Spark minor (`delta-spark_4.2_2.13`), the rule
    `delta.pip_utils.configure_spark_with_delta_pip` applies; Delta 4.0.x (Spark 4.0) has no suffix.
    """
    dmaj, dmin = (int(x) for x in delta_version.split(".")[:2])
    if (dmaj, dmin) >= (4, 1):
        minor = ".".join(spark_version.split(".")[:2])
        return f"io.delta:delta-spark_{minor}_{scala_version}:{delta_version}"
    return f"io.delta:delta-spark_{scala_version}:{delta_version}"


def pinned_versions(constraints: str | Path) -> dict[str, str]:
    """`name==version` pins of a constraints file, names normalised (lower case, `_` -> `-`)."""
    pins = {}
    for line in Path(constraints).read_text().splitlines():
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


# -- what the executors have -------------------------------------------------------------------


@dataclass(frozen=True)
class ExecutorSlots:
    """One executor's schedulable resources (from Spark's status store, or from the conf)."""

    id: str
    host: str
    cores: int
    gpus: int  # GPU addresses the executor holds
    profile_id: int = 0

    def slots(self, task_cpus: int, task_gpus: float) -> int:
        """Tasks of (task_cpus, task_gpus) this executor can run at once."""
        by_cpu = self.cores // max(1, task_cpus)
        if task_gpus <= 0:
            return by_cpu
        per_gpu = int(math.floor(1.0 / task_gpus + 1e-9)) if task_gpus < 1 else 0
        by_gpu = self.gpus * per_gpu if task_gpus < 1 else int(self.gpus // task_gpus)
        return min(by_cpu, by_gpu)


def conf_value(spark: "SparkSession", key: str) -> str | None:
    try:
        return spark.sparkContext.getConf().get(key, None)
    except Exception:  # noqa: BLE001 - managed sessions may hide keys
        return None


def is_local_master(master: str) -> bool:
    return master == "local" or master.startswith("local[")


def registered_executors(spark: "SparkSession") -> list[ExecutorSlots]:
    """Active executors (not the driver) as Spark's status store lists them (the REST API's source)."""
    try:
        lst = spark.sparkContext._jsc.sc().statusStore().executorList(True)
    except Exception as exc:  # noqa: BLE001 - Spark Connect sessions have no JVM handle
        log.debug("cannot list executors: %s", exc)
        return []
    out = []
    for i in range(lst.size()):
        e = lst.apply(i)
        if e.id() == "driver":
            continue
        gpu = e.resources().get("gpu")
        n_gpu = len(list(gpu.get().addresses())) if gpu.isDefined() else 0
        host = str(e.hostPort()).rsplit(":", 1)[0]
        out.append(ExecutorSlots(str(e.id()), host, int(e.totalCores()), n_gpu, int(e.resourceProfileId())))
    return out


def configured_executor(spark: "SparkSession") -> ExecutorSlots | None:
    """The executor shape the conf promises (`spark.executor.cores`, `spark.executor.resource.gpu.amount`,
    or `local-cluster[n,cores,mem]`), or None when the conf leaves the cores to the cluster manager."""
    master = spark.sparkContext.master
    cores = conf_value(spark, "spark.executor.cores")
    m = re.match(r"^local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,", master)
    if cores is None and m:
        cores = m.group(2)
    if cores is None:
        return None
    gpus = conf_value(spark, "spark.executor.resource.gpu.amount") or "0"
    return ExecutorSlots("conf", "", int(cores), int(float(gpus)))


def wait_for_executors(spark: "SparkSession", timeout_s: float = 60.0, poll_s: float = 0.5) -> list[ExecutorSlots]:
    """Executors of the default profile, waiting up to `timeout_s` for the first one to register.

    With dynamic allocation there may be none yet by design: then this returns [] at once.
    """
    dynamic = (conf_value(spark, "spark.dynamicAllocation.enabled") or "false").lower() == "true"
    deadline = time.monotonic() + (0 if dynamic else timeout_s)
    while True:
        execs = [e for e in registered_executors(spark) if e.profile_id == 0]
        if execs or time.monotonic() >= deadline:
            return execs
        time.sleep(poll_s)


# -- the checks ----------------------------------------------------------------------------------


def _fits_message(
    what: str,
    task_cpus: int,
    task_gpus: float,
    execs: list[ExecutorSlots],
    source: str,
    cpus_key: str,
    gpus_key: str,
) -> str | None:
    best_cores = max(e.cores for e in execs)
    best_gpus = max(e.gpus for e in execs)
    if task_cpus > best_cores:
        return (
            f"{what} ask {task_cpus} CPUs per task ({cpus_key}={task_cpus}) but the largest executor has "
            f"{best_cores} core(s) ({source}): no task could ever be scheduled and the stage would hang. "
            f"Set {cpus_key} <= {best_cores}, or give executors more cores (spark.executor.cores, and the "
            f"workers' cores)."
        )
    if task_gpus > 0 and best_gpus == 0:
        return (
            f"{what} ask {task_gpus:g} GPU per task ({gpus_key}={task_gpus:g}) but the executors have no GPU "
            f"({source}): set spark.executor.resource.gpu.amount and "
            f"spark.executor.resource.gpu.discoveryScript (workers: spark.worker.resource.gpu.*), or turn "
            f"the GPU profile off."
        )
    if task_gpus > best_gpus:
        return (
            f"{what} ask {task_gpus:g} GPUs per task ({gpus_key}={task_gpus:g}) but executors hold at most "
            f"{best_gpus} ({source}): set {gpus_key} <= {best_gpus} or spark.executor.resource.gpu.amount >= "
            f"{math.ceil(task_gpus)}."
        )
    return None


def check_task_fits(
    spark: "SparkSession",
    task_cpus: int,
    task_gpus: float = 0.0,
    *,
    what: str = "tasks",
    cpus_key: str = "spark.task.cpus",
    gpus_key: str = "spark.task.resource.gpu.amount",
    concurrent: int = 1,
    executor_cores: int | None = None,
    executor_gpus: int | None = None,
    wait_s: float = 60.0,
    warn_unknown: bool = True,
) -> list[ExecutorSlots]:
    """Raise `ClusterConfigError` when tasks asking `task_cpus` CPUs and `task_gpus` GPUs can never run
    (or, with `concurrent` > 1, can never run that many at once, as a barrier job needs).

    `executor_cores` / `executor_gpus`: the profile's own executor request (new executors are started for
    it), checked instead of the running executors. Returns the executors the check used ([] when the
    master runs no executors of its own (local[*]) or nothing is known yet; that is logged).
    """
    master = spark.sparkContext.master
    if is_local_master(master):
        return []
    if executor_cores is not None:
        execs = [ExecutorSlots("profile", "", int(executor_cores), int(executor_gpus or 0))]
        source = f"the profile's executors: {executor_cores} cores, {executor_gpus or 0} GPUs"
    else:
        execs = wait_for_executors(spark, wait_s)
        source = ", ".join(f"executor {e.id} on {e.host}: {e.cores} cores, {e.gpus} GPUs" for e in execs)
        if not execs:
            conf_exec = configured_executor(spark)
            if conf_exec is None:
                say = log.warning if warn_unknown else log.debug
                say(
                    "no executor registered within %.0f s and spark.executor.cores is unset: cannot check that %s "
                    "(%d CPUs, %g GPUs per task) fit",
                    wait_s,
                    what,
                    task_cpus,
                    task_gpus,
                )
                return []
            execs = [conf_exec]
            source = f"spark.executor.cores={conf_exec.cores}, spark.executor.resource.gpu.amount={conf_exec.gpus}"
    problem = _fits_message(what, task_cpus, task_gpus, execs, source, cpus_key, gpus_key)
    if problem:
        raise ClusterConfigError(problem)
    slots = sum(e.slots(task_cpus, task_gpus) for e in execs)
    if concurrent > 1 and executor_cores is None and slots < concurrent:
        raise ClusterConfigError(
            f"{what} need {concurrent} tasks running at once (a barrier job) but the executors have "
            f"{slots} slot(s) for tasks of {task_cpus} CPUs and {task_gpus:g} GPUs ({source}): lower the "
            f"process count or add executors/GPUs."
        )
    return execs


def check_profile_fits(spark: "SparkSession", profile: Any, **kwargs: Any) -> list[ExecutorSlots]:
    """`check_task_fits` for a pyspark `ResourceProfile` (its task CPUs/GPUs and executor requests)."""
    if profile is None:
        return []
    tasks = profile.taskResources
    execs = profile.executorResources
    task_cpus = int(tasks["cpus"].amount) if "cpus" in tasks else int(conf_value(spark, "spark.task.cpus") or 1)
    task_gpus = float(tasks["gpu"].amount) if "gpu" in tasks else 0.0
    if "cores" in execs:
        kwargs.setdefault("executor_cores", int(execs["cores"].amount))
        kwargs.setdefault("executor_gpus", int(execs["gpu"].amount) if "gpu" in execs else 0)
    return check_task_fits(spark, task_cpus, task_gpus, **kwargs)


def check_session(spark: "SparkSession", wait_s: float = 0.0) -> list[ExecutorSlots]:
    """The session's default task request (`spark.task.cpus`, `spark.task.resource.gpu.amount`) against
    its executors. Called by `get_spark` for cluster masters; cheap (no wait by default)."""
    cpus = int(conf_value(spark, "spark.task.cpus") or 1)
    gpus = float(conf_value(spark, "spark.task.resource.gpu.amount") or 0)
    return check_task_fits(spark, cpus, gpus, what="the session's default tasks", wait_s=wait_s, warn_unknown=False)
