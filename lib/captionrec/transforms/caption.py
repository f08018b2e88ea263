"""The caption stage's DataFrame transforms: items in -> what is pending -> caption rows out (Spark, no tables).

    items, n_na = applicable_items(items)        items with a video (+ media_fingerprint); how many have none by design
    pending = pending_items(items, captions, plan)   items lacking a done row for the plan's version and fingerprint
    rows = caption_items(pending, plan, gpu)     the one model-map (`spark.modelmap`) over `captioning.core`
    previous = previous_rows(captions, pending, plan); drop_unchanged(rows, previous)   no rewrite of a same failure
    outcome_counts(rows, plan.spec.counts)       rows per status (+ the kind's flag columns) for the summary

`caption_items` is the construct / transform pair: `captioning.core.load_models` builds the kind's models once
per worker process and device, `captioning.core.caption_rows` streams the partition's items through them; each
yielded list of rows becomes one Arrow batch of `contracts.CAPTIONS` (mapInArrow).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.captioning.common import CaptionPlan
from captionrec.captioning.core import caption_rows, load_models

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from captionrec.spark.modelmap import CostMeter, StageGpu

ITEM_COLUMNS = ("item_id", "video_path", "has_audio", "media_fingerprint")  # what a worker reads of an item


def with_fingerprint(items: "DataFrame") -> "DataFrame":
    from captionrec.spark.columns import media_fingerprint

    return items.withColumn("media_fingerprint", media_fingerprint(items))


def applicable_items(items: "DataFrame") -> tuple["DataFrame", int]:
    """Items that have a video to caption (with `media_fingerprint`), and how many have none by design
    (`contracts.NOT_APPLICABLE_STATUSES`: an interaction-only dataset). Those get no caption row at all: not
    skipped, not an error."""
    from captionrec.spark.columns import probe_status

    na = probe_status(items).isin(*sorted(C.NOT_APPLICABLE_STATUSES))
    return with_fingerprint(items.where(~na)), items.where(na).count()


def pending_items(items: "DataFrame", captions: "DataFrame" | None, plan: CaptionPlan) -> "DataFrame":
    """Items (with `media_fingerprint`) lacking a done row for `plan.version`: done = ok or skipped (or any status
    when not retrying errors) for the item's current fingerprint (rows written before fingerprints were
    recorded have none and count as done)."""
    from pyspark.sql import functions as F

    if captions is None:
        return items
    done = captions.where((F.col("kind") == plan.kind) & (F.col("captioner_version") == plan.version))
    if plan.cfg.retry_errors:
        done = done.where(F.col("status") != C.ERROR)
    done = done.select("item_id", F.col("media_fingerprint").alias("_done_fp"), F.lit(True).alias("_done"))
    stale = F.col("_done_fp").isNotNull() & (F.col("_done_fp") != F.col("media_fingerprint"))
    return items.join(done, "item_id", "left").where(F.col("_done").isNull() | stale).drop("_done", "_done_fp")


def _apply(plan: CaptionPlan, models: Any, rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The model-map's apply: the Spark-free core, plus the GPUs Spark gave the task."""
    from captionrec.spark.udf import task_gpu_addresses

    gpus = ",".join(task_gpu_addresses()) or None
    for out in caption_rows(rows, plan, models):
        for row in out:
            row["task_gpus"] = gpus
        yield out


def _row_kind(row: dict[str, Any]) -> str:
    return row["kind"]


def caption_items(
    items: "DataFrame",
    plan: CaptionPlan,
    gpu: "StageGpu",
    partitions: int | None = None,
    meter: "CostMeter" | None = None,
) -> "DataFrame":
    """items (item_id, video_path, has_audio, media_fingerprint) -> captions rows for `plan` (lazy).

    `partitions` (default `plan.cfg.partitions`; 0 keeps the input's) is how many tasks share the items.
    `meter`: the workers add their cost to it, per kind (`spark.modelmap.CostMeter`).
    """
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import model_map

    df = items if "media_fingerprint" in items.columns else with_fingerprint(items)
    df = df.select(*[F.col(c) if c in df.columns else F.lit(None).cast("boolean").alias(c) for c in ITEM_COLUMNS])
    n = plan.cfg.partitions if partitions is None else partitions
    if n > 0:
        df = df.repartition(n)
    transform = model_map(
        partial(load_models, plan),
        partial(_apply, plan),
        C.schema(C.CAPTIONS),
        key=plan.cache_key,
        gpu=gpu,
        torch_threads=plan.cfg.torch_threads,
        evict="caption",
        meter=meter,
        group=_row_kind,
    )
    return transform(df)


def previous_rows(captions: "DataFrame" | None, pending: "DataFrame", plan: CaptionPlan) -> "DataFrame" | None:
    """This version's existing rows of the pending items (errors being retried, stale rows): their
    (status, reason, fingerprint), to leave out results that would rewrite them unchanged. None when there are
    none (collected: one small row per retried item)."""
    from pyspark.sql import functions as F

    if captions is None:
        return None
    mine = captions.where((F.col("kind") == plan.kind) & (F.col("captioner_version") == plan.version))
    rows = (
        mine.join(pending.select("item_id"), "item_id", "left_semi")
        .select(
            "item_id", F.col("status").alias("_s"), F.col("reason").alias("_r"), F.col("media_fingerprint").alias("_f")
        )
        .collect()
    )
    if not rows:
        return None
    return pending.sparkSession.createDataFrame(rows, "item_id string, _s string, _r string, _f string")


def drop_unchanged(result: "DataFrame", previous: "DataFrame" | None) -> "DataFrame":
    """Leave out results equal in status, reason and fingerprint to the row they would replace (no commit)."""
    from pyspark.sql import functions as F

    if previous is None:
        return result
    same = (
        F.col("status").eqNullSafe(F.col("_s"))
        & F.col("reason").eqNullSafe(F.col("_r"))
        & F.col("media_fingerprint").eqNullSafe(F.col("_f"))
        & (F.col("status") != C.OK)
    )
    return result.join(F.broadcast(previous), "item_id", "left").where(~same).drop("_s", "_r", "_f")


def outcome_counts(result: "DataFrame", flags: tuple[str, ...] = ()) -> dict[str, int]:
    """Caption rows per status, and for each boolean column in `flags` the rows where it is true (a kind's
    `counts`, e.g. video_full's `truncated`)."""
    from pyspark.sql import functions as F

    out = {r["status"]: int(r["count"]) for r in result.groupBy("status").count().collect()}
    out.update({flag: result.where(F.col(flag)).count() for flag in flags})
    return out
