"""The caption stage: `items` -> `captions` (item_id, kind, captioner_version).

Per kind (video, audio; video_full when `caption.video.segments.enabled`: `captioning.segments`), read top to
bottom in `run`:
    plan      `captioning.plan.plan_kind`: the kind's captioner (settings, version, prompt, model references)
    pending   `pending_items`: items without a caption row that counts as done for this version and the item's
              current media fingerprint (size:mtime:probe_status; a row for another fingerprint is stale)
    caption   `caption_items`: the one model-map (`spark.modelmap`) over `captioning.core.caption_rows`
    write     one MERGE on the key per commit chunk (`spark.commits.CommitPacer`: every `commit_every` items and
              about every `commit_seconds`), so a run killed mid-kind keeps its finished chunks
    summary   counts per status, inserted/updated rows, commits, seconds

Statuses (`contracts.status_of`): `ok` (text is a caption), `skipped` (a permanent reason such as missing_file,
corrupt, no_audio_stream, silent, empty_output: not retried until the item's fingerprint changes) and `error` (a
transient reason such as decode_error, oom, error: retried by the next run when `caption.retry_errors`). A
retried item that fails again the same way is not rewritten, so a re-run with nothing new commits nothing.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Iterator, Optional

from captionrec import contracts as C
from captionrec.captioning.core import NOISE_NOTE, caption_rows, load_models
from captionrec.captioning.plan import CaptionPlan, plan_kind

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config.schema import Config
    from captionrec.spark.modelmap import StageGpu
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)

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


def pending_items(items: "DataFrame", captions: Optional["DataFrame"], plan: CaptionPlan) -> "DataFrame":
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


def caption_items(
    items: "DataFrame", plan: CaptionPlan, gpu: "StageGpu", partitions: Optional[int] = None
) -> "DataFrame":
    """items (item_id, video_path, has_audio, media_fingerprint) -> captions rows for `plan` (lazy).

    `partitions` (default `plan.cfg.partitions`; 0 keeps the input's) is how many tasks share the items.
    """
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import model_map

    df = items if "media_fingerprint" in items.columns else with_fingerprint(items)
    df = df.select(*[F.col(c) if c in df.columns else F.lit(None).cast("boolean").alias(c) for c in ITEM_COLUMNS])
    n = plan.cfg.partitions if partitions is None else partitions
    if n > 0:
        df = df.repartition(n)
    transform = model_map(partial(load_models, plan), partial(_apply, plan), C.schema(C.CAPTIONS),
                          key=plan.cache_key, gpu=gpu, torch_threads=plan.cfg.torch_threads, evict="caption")
    return transform(df)


def previous_rows(captions: Optional["DataFrame"], pending: "DataFrame", plan: CaptionPlan) -> Optional["DataFrame"]:
    """This version's existing rows of the pending items (errors being retried, stale rows): their
    (status, reason, fingerprint), to leave out results that would rewrite them unchanged. None when there are
    none (collected: one small row per retried item)."""
    from pyspark.sql import functions as F

    if captions is None:
        return None
    mine = captions.where((F.col("kind") == plan.kind) & (F.col("captioner_version") == plan.version))
    rows = mine.join(pending.select("item_id"), "item_id", "left_semi").select(
        "item_id", F.col("status").alias("_s"), F.col("reason").alias("_r"), F.col("media_fingerprint").alias("_f")
    ).collect()
    if not rows:
        return None
    return pending.sparkSession.createDataFrame(rows, "item_id string, _s string, _r string, _f string")


def drop_unchanged(result: "DataFrame", previous: Optional["DataFrame"]) -> "DataFrame":
    """Leave out results equal in status, reason and fingerprint to the row they would replace (no commit)."""
    from pyspark.sql import functions as F

    if previous is None:
        return result
    same = (F.col("status").eqNullSafe(F.col("_s")) & F.col("reason").eqNullSafe(F.col("_r"))
            & F.col("media_fingerprint").eqNullSafe(F.col("_f")) & (F.col("status") != C.OK))
    return result.join(F.broadcast(previous), "item_id", "left").where(~same).drop("_s", "_r", "_f")


def upgrade_table(store: "TableStore", spark: "SparkSession") -> None:
    """Add the columns newer code writes to a `captions` table written before them (one overwrite, logged)."""
    from pyspark.sql import functions as F

    if not store.exists(C.CAPTIONS):
        return
    old = store.read(C.CAPTIONS)
    target = C.spark_schema(C.CAPTIONS)
    missing = [f for f in target.fields if f.name not in old.columns]
    if missing:
        log.warning("captions table lacks %s: adding them (null for existing rows)", [f.name for f in missing])
        upgraded = old.withColumns({f.name: F.lit(None).cast(f.dataType) for f in missing}).select(*target.names)
        store.overwrite(C.CAPTIONS, upgraded.localCheckpoint(eager=True))


@contextmanager
def arrow_batch_rows(spark: "SparkSession", n: int) -> Iterator[None]:
    """Rows per Arrow batch a worker receives (spark.sql.execution.arrow.maxRecordsPerBatch) while inside."""
    key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    try:
        old = spark.conf.get(key, None)
        spark.conf.set(key, str(n))
    except Exception as exc:  # noqa: BLE001 - some managed sessions refuse conf changes
        log.info("could not set %s: %s", key, exc)
        yield
        return
    try:
        yield
    finally:
        spark.conf.unset(key) if old is None else spark.conf.set(key, old)


def caption_kind(spark: "SparkSession", store: "TableStore", items: "DataFrame", plan: CaptionPlan,
                 gpu: "StageGpu") -> dict[str, Any]:
    """Caption one kind's pending items, one MERGE per commit chunk; the kind's summary."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from captionrec.spark.commits import CommitPacer

    cfg = plan.cfg
    captions = store.read(C.CAPTIONS) if store.exists(C.CAPTIONS) else None
    pending = pending_items(items, captions, plan).select(*ITEM_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
    ids = [r["item_id"] for r in pending.select("item_id").orderBy(F.xxhash64("item_id"), "item_id").collect()]
    previous = previous_rows(captions, pending, plan) if ids else None
    info: dict[str, Any] = {"captioner_version": plan.version, "pending": len(ids),
                            "retried": previous.count() if previous is not None else 0, "inserted": 0,
                            "updated": 0, "unchanged_errors": 0, "statuses": {}, "commits": 0}
    first = max(1, cfg.partitions) * cfg.items_per_batch
    for chunk in CommitPacer(cfg.commit_every, cfg.commit_seconds, first).chunks(ids):
        part = pending if len(chunk) == len(ids) else pending.where(F.col("item_id").isin(chunk))
        n_part = min(cfg.partitions, len(chunk)) if cfg.partitions > 0 else 0
        result = caption_items(part, plan, gpu, partitions=n_part).localCheckpoint(eager=True)  # models run here
        for r in result.groupBy("status").count().collect():
            info["statuses"][r["status"]] = info["statuses"].get(r["status"], 0) + int(r["count"])
        if plan.kind == C.VIDEO_FULL:  # whole-video captions: items whose windows stop before the video's end
            info["truncated"] = info.get("truncated", 0) + result.where(F.col("truncated")).count()
        to_write = drop_unchanged(result, previous)
        n_write = to_write.count() if previous is not None else len(chunk)
        info["unchanged_errors"] += len(chunk) - n_write
        if n_write:
            merged = store.upsert(C.CAPTIONS, to_write, keys=list(C.KEYS[C.CAPTIONS]))
            info["inserted"] += merged.inserted
            info["updated"] += merged.updated
            info["commits"] += 1
    pending.unpersist()
    return info


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """Caption every pending item of every configured kind; MERGE into `captions`; return a summary."""
    from captionrec.spark.modelmap import release_models, stage_gpu

    ccfg = cfg.caption
    t_start = time.perf_counter()
    upgrade_table(store, spark)
    items, not_applicable = applicable_items(store.read(C.ITEMS))
    gpu = stage_gpu(spark, ccfg.gpu, "caption")
    summary: dict[str, Any] = {"table": C.CAPTIONS, "kinds": {}, "not_applicable": not_applicable}
    synthetic: dict[str, dict[str, str]] = {}
    for kind in ccfg.run_kinds:
        t0 = time.perf_counter()
        plan = plan_kind(ccfg, kind)
        if plan.synthetic:
            synthetic[kind] = plan.synthetic_models
            log.warning("%s: %s uses tiny random model(s) %s", NOISE_NOTE, kind, plan.synthetic_models)
        with arrow_batch_rows(spark, ccfg.items_per_batch):
            info = caption_kind(spark, store, items, plan, gpu)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        summary["kinds"][kind] = info
        log.info("caption %s: %s", kind, info)
    # the stage's models leave the Python workers (a shared job cluster runs embed's models next)
    summary["models_released"] = sum(len(keys) for keys in release_models(spark, gpu).values())
    summary["table_version"] = store.version(C.CAPTIONS) if store.exists(C.CAPTIONS) else None
    summary["synthetic"] = bool(synthetic)
    if synthetic:
        summary["synthetic_models"] = synthetic
        named = "; ".join(f"{k}: " + ", ".join(f"{r}={m}" for r, m in roles.items()) for k, roles in synthetic.items())
        summary["note"] = (f"{NOISE_NOTE}(s) {named}; set caption.video.model / caption.audio.* / caption.av.model "
                           "to real models")
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary
