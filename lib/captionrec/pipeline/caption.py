"""The caption stage: `items` -> `captions` (item_id, kind, captioner_version).

Per kind (video, audio, av; video_full when `caption.video.segments.enabled`; each a module of
`captioning.kinds`, found in its `KINDS` registry), read top to bottom in `run` and `caption_kind`:
    plan      `captioning.plan.plan_kind`: the kind's captioner (settings, version, prompt, model references)
    pending   `transforms.caption.pending_items`: items without a caption row that counts as done for this version
              and the item's current media fingerprint (size:mtime:probe_status; a row for another is stale)
    caption   `transforms.caption.caption_items`: the one model-map (`spark.modelmap`) over the kind's
              load / decode / caption (`captioning.core`)
    write     one MERGE on the key per commit chunk (`spark.commits.CommitPacer`: every `commit_every` items and
              about every `commit_seconds`), so a run killed mid-kind keeps its finished chunks
    summary   counts per status, inserted/updated rows, commits, seconds; `cost` per kind and for the stage
              (`tracking.cost`: wall / CPU / GPU seconds, per 1,000 items, peak memory; the workers' share
              measured in the model-map's tasks, `spark.modelmap.CostMeter`)

Statuses (`contracts.status_of`): `ok` (text is a caption), `skipped` (a permanent reason such as missing_file,
corrupt, no_audio_stream, silent, empty_output: not retried until the item's fingerprint changes) and `error` (a
transient reason such as decode_error, oom, error: retried by the next run when `caption.retry_errors`). A
retried item that fails again the same way is not rewritten, so a re-run with nothing new commits nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.captioning.common import NOISE_NOTE, CaptionPlan
from captionrec.captioning.plan import check_kinds, plan_kind
from captionrec.transforms.caption import (
    ITEM_COLUMNS,
    applicable_items,
    caption_items,
    drop_unchanged,
    outcome_counts,
    pending_items,
    previous_rows,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config.schema import Config
    from captionrec.spark.modelmap import CostMeter, StageGpu
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)


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


def caption_kind(
    spark: "SparkSession",
    store: "TableStore",
    items: "DataFrame",
    plan: CaptionPlan,
    gpu: "StageGpu",
    meter: "CostMeter" | None = None,
) -> dict[str, Any]:
    """Caption one kind's pending items, one MERGE per commit chunk; the kind's summary. `meter`: the model-map's
    workers add their cost to it."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from captionrec.spark.commits import CommitPacer

    cfg = plan.cfg
    captions = store.read(C.CAPTIONS) if store.exists(C.CAPTIONS) else None
    pending = pending_items(items, captions, plan).select(*ITEM_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
    ids = [r["item_id"] for r in pending.select("item_id").orderBy(F.xxhash64("item_id"), "item_id").collect()]
    previous = previous_rows(captions, pending, plan) if ids else None
    info: dict[str, Any] = {
        "captioner_version": plan.version,
        "pending": len(ids),
        "retried": previous.count() if previous is not None else 0,
        "inserted": 0,
        "updated": 0,
        "unchanged_errors": 0,
        "statuses": {},
        "commits": 0,
    }
    first = max(1, cfg.partitions) * cfg.items_per_batch
    for chunk in CommitPacer(cfg.commit_every, cfg.commit_seconds, first).chunks(ids):
        part = pending if len(chunk) == len(ids) else pending.where(F.col("item_id").isin(chunk))
        n_part = min(cfg.partitions, len(chunk)) if cfg.partitions > 0 else 0
        result = caption_items(part, plan, gpu, partitions=n_part, meter=meter)
        result = result.localCheckpoint(eager=True)  # the models run here
        counts = outcome_counts(result, plan.spec.counts)  # per status; a kind's flags (video_full: truncated)
        for key, n in counts.items():
            where = info if key in plan.spec.counts else info["statuses"]
            where[key] = where.get(key, 0) + n
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


def run(
    cfg: "Config", spark: "SparkSession", store: "TableStore", kinds: Sequence[str] | None = None
) -> dict[str, Any]:
    """Caption every pending item of every configured kind (`kinds`, default `caption.run_kinds`: any kind
    registered in `captioning.kinds.KINDS` may be named); MERGE into `captions`; return a summary."""
    from captionrec.inference.cost import merge
    from captionrec.spark.modelmap import CostMeter, release_models, stage_gpu
    from captionrec.tracking.cost import StageClock, group_cost, stage_cost

    ccfg = cfg.caption
    t_start = time.perf_counter()
    stage_clock, workers = StageClock(spark), {}
    upgrade_table(store, spark)
    items, not_applicable = applicable_items(store.read(C.ITEMS))
    gpu = stage_gpu(spark, ccfg.gpu, "caption")
    summary: dict[str, Any] = {"table": C.CAPTIONS, "kinds": {}, "not_applicable": not_applicable}
    synthetic: dict[str, dict[str, str]] = {}
    for kind in check_kinds(ccfg.run_kinds if kinds is None else kinds):
        clock, meter = StageClock(spark), CostMeter(spark)
        plan = plan_kind(ccfg, kind)
        if plan.synthetic:
            synthetic[kind] = plan.synthetic_models
            log.warning("%s: %s uses tiny random model(s) %s", NOISE_NOTE, kind, plan.synthetic_models)
        with arrow_batch_rows(spark, ccfg.items_per_batch):
            info = caption_kind(spark, store, items, plan, gpu, meter)
        spent = meter.value
        info["cost"] = group_cost(spent.get(kind), clock.stop())
        info["seconds"] = round(info["cost"]["wall_seconds"], 2)
        merge(workers, spent)
        summary["kinds"][kind] = info
        log.info("caption %s: %s", kind, info)
    # the stage's models leave the Python workers (a shared job cluster runs embed's models next)
    summary["models_released"] = sum(len(keys) for keys in release_models(spark, gpu).values())
    summary["table_version"] = store.version(C.CAPTIONS) if store.exists(C.CAPTIONS) else None
    summary["synthetic"] = bool(synthetic)
    if synthetic:
        summary["synthetic_models"] = synthetic
        named = "; ".join(f"{k}: " + ", ".join(f"{r}={m}" for r, m in roles.items()) for k, roles in synthetic.items())
        summary["note"] = (
            f"{NOISE_NOTE}(s) {named}; set caption.video.model / caption.audio.* / caption.av.model to real models"
        )
    summary["cost"] = stage_cost(stage_clock.stop(), workers)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary


_KIND_KEYS = {"captioner_version", "pending", "retried", "inserted", "updated", "unchanged_errors", "statuses"}
_KIND_KEYS |= {"commits", "seconds", "cost"}


def format_summary(s: dict[str, Any]) -> str:
    """The console's one screen: per kind its counts and cost per 1,000 items, then the stage's cost."""
    from captionrec.tracking.cost import per_1k_line, total_line

    lines = [f"caption done in {s.get('seconds', 0):.0f} s: table {s['table']} version {s.get('table_version')}"]
    for kind, k in s["kinds"].items():
        statuses = ", ".join(f"{st}={n}" for st, n in sorted(k["statuses"].items())) or "nothing run"
        flags = "".join(f", {f}={k[f]}" for f in k if f not in _KIND_KEYS)  # a kind's counts (video_full: truncated)
        lines.append(
            f"  {kind} ({k['captioner_version']}): {k['pending']} pending ({k['retried']} retried), {k['inserted']} "
            f"inserted, {k['updated']} updated, {k['unchanged_errors']} unchanged errors, {k['commits']} commit(s); "
            f"{statuses}{flags}"
        )
        if "cost" in k:
            lines.append(f"    {per_1k_line(k['cost'])}")
    lines.append(f"  not applicable: {s.get('not_applicable', 0)}; models released: {s.get('models_released', 0)}")
    if "cost" in s:
        lines.append(f"  {total_line(s['cost'])}")
    if s.get("note"):
        lines.append(f"  note: {s['note']}")
    return "\n".join(lines)
