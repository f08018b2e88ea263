"""The embed stage: `items` + `captions` -> `item_features` (item_id, feature_set, model_id) + `feature_errors`.

Feature sets (public names, `contracts.FEATURE_SETS`):
    title        the item title                               text encoder (sentence-transformers)
    mllm_video   the video caption                            text encoder
    mllm_audio   the audio caption                            text encoder
    mllm_av      both captions in one text (`text.av_template`) text encoder
    mllm_video_full  the whole-video caption (kind video_full; opt-in)  text encoder
    videomae     16 frames of the first 30 s -> VideoMAE, mean of the last hidden state
    audio_raw    the first 30 s of audio -> AST, pooled per ~10 s chunk, chunks averaged

Read top to bottom in `run`:
    sources   `transforms.embed`: one row per (item, feature set) with a source version, and the input to
              embed (a text or a media path) or the reason there is none (see that module for the versions)
    plan      `plan_sources`: missing (a reason) / done (a vector for this source version) / failed (this source
              version failed for a permanent reason; `embed.retry_failed` retries those too) / todo. Transient
              failures (oom, decode_error, embed_error) are retried by every run, as in the caption stage.
    embed     per encoder family, the one model-map (`spark.modelmap`) over `features.core.embed_rows`
    cost      `cost` (wall / CPU / GPU seconds, per 1,000 items, peak memory: `tracking.cost`) for the stage and
              `cost_per_feature_set`; the workers' share measured in the model-map's tasks (`CostMeter`)
    write     one MERGE into item_features per commit chunk (every `commit_every` items, about every
              `commit_seconds`), then the failures: new (key, source_version, reason) rows of feature_errors; a
              key's error row is removed once the key has a vector
A re-run with nothing new embeds and writes nothing. Failures never become vectors (never a zero vector); before
writing, every (feature_set, model_id) is checked to hold a single vector dim, old rows included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.features.core import EncoderSpec, embed_rows, family_of, load_encoder
from captionrec.inference.refs import resolve_model
from captionrec.transforms.embed import (
    VERSION_KEYS,
    FeatureDimError,
    check_dims,
    family_settings,
    media_sources,
    permanent_failures,
    plan_sources,
    text_sources,
    to_feature_errors,
    to_item_features,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config import Config
    from captionrec.config.embed import EmbedConfig
    from captionrec.spark.modelmap import CostMeter, StageGpu

log = logging.getLogger(__name__)

__all__ = ["FeatureDimError", "MissingInputError", "encoder_specs", "run"]


class MissingInputError(LookupError):
    """A table the embed stage reads does not exist."""


def encoder_specs(cfg: "EmbedConfig") -> dict[str, EncoderSpec]:
    """Encoder family -> its spec, for the families `cfg.feature_sets` needs (models resolved on the driver)."""
    families = dict.fromkeys(family_of(f) for f in cfg.feature_sets)
    return {f: EncoderSpec.of(f, resolve_model(getattr(cfg, f).model, cfg.tiny_models_dir), cfg) for f in families}


def sources(
    items: "DataFrame", captions: "DataFrame" | None, specs: dict[str, EncoderSpec], cfg: "EmbedConfig"
) -> "DataFrame":
    """Every (item, feature set) with its source version and payload (a text or a path) or reason."""
    parts = []
    if "text" in specs:
        parts.append(
            text_sources(items, captions, cfg.feature_sets, specs["text"].resolved.model_id, cfg).withColumnRenamed(
                "text", "payload"
            )
        )
    for fs in C.MEDIA_FEATURE_SETS:
        if fs in specs:
            parts.append(
                media_sources(items, fs, specs[fs].resolved.model_id, family_settings(cfg, fs)).withColumnRenamed(
                    "path", "payload"
                )
            )
    out = parts[0]
    for p in parts[1:]:
        out = out.unionByName(p)
    return out


def _row_feature_set(row: dict[str, Any]) -> str:
    return row["feature_set"]


def embed_todo(
    todo: "DataFrame",
    specs: dict[str, EncoderSpec],
    counts: dict[str, int],
    gpu: "StageGpu",
    cfg: "EmbedConfig",
    meter: "CostMeter" | None = None,
) -> "DataFrame" | None:
    """Rows to embed -> EMBED_ROWS: one model-map per encoder family, spread over `cfg.partitions` tasks.
    `meter`: the workers add their cost to it, per feature set (a batch's time shared by its rows)."""
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import model_map

    outputs = []
    for family, spec in specs.items():
        sets = [fs for fs in counts if family_of(fs) == family]
        n = sum(counts[fs] for fs in sets)
        if not n:
            continue
        rows = todo.where(F.col("feature_set").isin(*sets)).select(*VERSION_KEYS, "payload")
        rows = rows.repartition(max(1, min(cfg.partitions, -(-n // spec.section.batch_size))))
        transform = model_map(
            lambda device, s=spec: load_encoder(s, device),
            lambda models, it, s=spec: embed_rows(it, s, models),
            C.schema(C.EMBED_ROWS),
            key=spec.cache_key,
            gpu=gpu,
            torch_threads=cfg.torch_threads,
            meter=meter,
            group=_row_feature_set,
        )
        outputs.append(transform(rows))
    if not outputs:
        return None
    out = outputs[0]
    for o in outputs[1:]:
        out = out.unionByName(o)
    return out


def write_errors(
    spark: "SparkSession", store: Any, errors: "DataFrame", old: "DataFrame" | None, embedded: "DataFrame" | None
) -> tuple[int, int]:
    """Record new (key, source_version, reason) failures; drop the error rows of keys that now have a vector.
    Returns (recorded, resolved)."""
    import pandas as pd

    schema = C.spark_schema(C.FEATURE_ERRORS)
    keys = list(C.KEYS[C.FEATURE_ERRORS])
    if old is not None:
        errors = errors.join(old.select(*VERSION_KEYS, "reason"), [*VERSION_KEYS, "reason"], "left_anti")
    new_pdf = errors.select(*schema.names).toPandas()  # small: one row per failure
    new = spark.createDataFrame(new_pdf, schema)
    resolved = 0
    if old is not None and embedded is not None:
        resolved = old.join(embedded, keys, "left_semi").count()
        if resolved:  # keys that now have a vector lose their error row: rewrite the (small) table
            keep = old.join(embedded, keys, "left_anti").join(new.select(*keys), keys, "left_anti")
            rows = pd.concat([keep.select(*schema.names).toPandas(), new_pdf])
            store.overwrite(C.FEATURE_ERRORS, spark.createDataFrame(rows, schema))
    if not resolved and len(new_pdf):
        store.upsert(C.FEATURE_ERRORS, new, keys)
    return len(new_pdf), resolved


def _plan_summary(planned: "DataFrame", specs: dict[str, EncoderSpec]) -> tuple[dict[str, Any], dict[str, int]]:
    states = planned.groupBy("feature_set", "state", "reason").count().collect()
    counts: dict[str, int] = {}
    for r in states:
        if r["state"] == "todo":
            counts[r["feature_set"]] = counts.get(r["feature_set"], 0) + r["count"]
    summary = {
        "models": {k: s.resolved.model_id for k, s in specs.items()},
        "to_embed": dict(sorted(counts.items())),
        "up_to_date": sum(r["count"] for r in states if r["state"] == "done"),
        "skipped_failed": sum(r["count"] for r in states if r["state"] == "failed"),
        "not_applicable": {r["feature_set"]: r["count"] for r in states if r["state"] == "not_applicable"},
        "missing_inputs": {
            f"{r['feature_set']}:{r['reason']}": r["count"]
            for r in sorted(states, key=lambda r: (r["feature_set"], r["reason"] or ""))
            if r["state"] == "missing"
        },
    }
    return summary, counts


def _chunks(todo: "DataFrame", n_rows: int, cfg: "EmbedConfig") -> Iterator["DataFrame"]:
    """The rows to embed, in commit chunks of whole items (`CommitPacer`); one chunk when they fit in one."""
    from pyspark.sql import functions as F

    from captionrec.spark.commits import CommitPacer

    if not n_rows:
        return
    if not cfg.commit_every or n_rows <= cfg.commit_every:
        yield todo
        return
    ids = [r["item_id"] for r in todo.select("item_id").distinct().orderBy(F.xxhash64("item_id"), "item_id").collect()]
    for chunk in CommitPacer(cfg.commit_every, cfg.commit_seconds).chunks(ids):
        yield todo.where(F.col("item_id").isin(chunk))


def run(cfg: "Config", spark: "SparkSession", store: Any) -> dict[str, Any]:
    """Embed what changed; MERGE vectors into item_features and failures into feature_errors."""
    from pyspark.sql import functions as F

    from captionrec.spark.modelmap import CostMeter, release_models, stage_gpu
    from captionrec.tracking.cost import StageClock

    clock = StageClock(spark)
    ecfg = cfg.embed
    if not store.exists(C.ITEMS):
        raise MissingInputError(f"table 'items' not found at {store.location(C.ITEMS)}: run `captionrec ingest` first")
    items = store.read(C.ITEMS)
    read = {t: store.read(t) if store.exists(t) else None for t in (C.CAPTIONS, C.ITEM_FEATURES, C.FEATURE_ERRORS)}
    if read[C.CAPTIONS] is None and any(f in C.CAPTION_SOURCES for f in ecfg.feature_sets):
        log.warning(
            "table 'captions' not found: mllm_* feature sets get reason 'no_caption' (run `captionrec caption`)"
        )
    specs = encoder_specs(ecfg)
    log.info("embed models: %s", {k: f"{s.resolved.model_id} ({s.resolved.location})" for k, s in specs.items()})
    failed = None if ecfg.retry_failed else permanent_failures(read[C.FEATURE_ERRORS])
    planned = plan_sources(sources(items, read[C.CAPTIONS], specs, ecfg), read[C.ITEM_FEATURES], failed)
    planned = planned.localCheckpoint(eager=True)
    summary, counts = _plan_summary(planned, specs)
    log.info("embed plan: %s", summary)

    gpu = stage_gpu(spark, ecfg.gpu, "embed")
    todo = planned.where(F.col("state") == "todo")
    totals = {"inserted": 0, "updated": 0, "commits": 0}
    meter = CostMeter(spark)
    embedded, worker_errors, outcome = [], [], {}
    for part in _chunks(todo, sum(counts.values()), ecfg):
        results = embed_todo(part, specs, counts, gpu, ecfg, meter).localCheckpoint(eager=True)  # the models run here
        chunk_outcome = {
            (r["feature_set"], r["reason"]): r["count"]
            for r in results.groupBy("feature_set", "reason").count().collect()
        }
        for key, n in chunk_outcome.items():
            outcome[key] = outcome.get(key, 0) + n
        worker_errors.append(to_feature_errors(results))
        if not any(reason is None for _, reason in chunk_outcome):
            continue
        new = to_item_features(results)
        dims = check_dims(new, read[C.ITEM_FEATURES])
        summary.setdefault("dims", {}).update({f"{fs}/{mid}": d for (fs, mid), d in dims.items()})
        res = store.upsert(C.ITEM_FEATURES, new, list(C.KEYS[C.ITEM_FEATURES]))
        totals["inserted"] += res.inserted
        totals["updated"] += res.updated
        totals["commits"] += 1
        summary["item_features_version"] = res.version
        embedded.append(new.select(*C.KEYS[C.ITEM_FEATURES]))
    # the stage's models leave the Python workers (a shared job cluster runs the next stage's work next)
    summary["models_released"] = sum(len(keys) for keys in release_models(spark, gpu).values())
    if outcome:
        summary["embedded"] = {fs: n for (fs, reason), n in sorted(outcome.items(), key=str) if reason is None}
        summary["failed"] = {f"{fs}:{reason}": n for (fs, reason), n in outcome.items() if reason is not None}

    errors = to_feature_errors(planned.where(F.col("state") == "missing"))
    for w in worker_errors:
        errors = errors.unionByName(w)
    ok_keys = None
    for e in embedded:
        ok_keys = e if ok_keys is None else ok_keys.unionByName(e)
    recorded, resolved = write_errors(spark, store, errors, read[C.FEATURE_ERRORS], ok_keys)
    summary.update(totals, errors_recorded=recorded, errors_resolved=resolved)
    summary.update(cost_summary(clock.stop(), meter.value))
    return summary


def cost_summary(driver: dict[str, Any], workers: dict[str, dict[str, float]]) -> dict[str, Any]:
    """`cost` (the stage) and `cost_per_feature_set`: each feature set's workers plus its share (by items) of the
    driver's wall and CPU (the families run in one Spark job per commit chunk)."""
    from captionrec.tracking.cost import group_cost, stage_cost

    items = sum(w.get("items", 0.0) for w in workers.values())
    per_set = {fs: group_cost(w, driver, w["items"] / items) for fs, w in sorted(workers.items()) if w.get("items")}
    return {"cost": stage_cost(driver, workers), "cost_per_feature_set": per_set}


def format_summary(s: dict[str, Any]) -> str:
    """The console's one screen: what was embedded and failed, per feature set its cost per 1,000 items, then
    the stage's cost."""
    from captionrec.tracking.cost import per_1k_line, total_line

    lines = [f"embed done in {s.get('seconds', 0):.0f} s: models {s['models']}"]
    lines.append(
        f"  to embed: {s['to_embed'] or 'nothing'}; up to date: {s['up_to_date']}; skipped (failed before): "
        f"{s['skipped_failed']}"
    )
    for key in ("embedded", "failed", "missing_inputs", "not_applicable", "dims"):
        if s.get(key):
            lines.append(f"  {key}: {s[key]}")
    lines.append(
        f"  item_features: {s['inserted']} inserted, {s['updated']} updated, {s['commits']} commit(s); "
        f"feature_errors: {s['errors_recorded']} recorded, {s['errors_resolved']} resolved"
    )
    for fs, cost in (s.get("cost_per_feature_set") or {}).items():
        lines.append(f"  {fs}: {per_1k_line(cost)}")
    if "cost" in s:
        lines.append(f"  {total_line(s['cost'])}")
    return "\n".join(lines)
