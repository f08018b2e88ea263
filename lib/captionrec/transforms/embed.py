"""The embed stage's DataFrame transforms: tables in -> rows to embed (with a source version) -> output rows.

    select_captions(captions)                   per (item, kind) the caption an mllm_* feature set reads
    text_sources(items, captions, sets, ...)    one row per (item, text feature set): the text, or why there is none
    media_sources(items, set, ...)              one row per item for videomae / audio_raw: the file, or why not
    plan_sources(src, existing, failed)         state: missing / done / failed / todo
    check_dims, to_item_features, to_feature_errors    what the model-map returned -> table rows

Source versions (a row whose (key, source_version) already has a vector is up to date):
    title        "t:<sha(title)>@<settings>"
    mllm_*       "<captioner_version(s)>:<sha(text)>@<settings>"     (versions of the kinds it reads, '+'-joined)
    videomae /
    audio_raw    "<size_bytes>:<mtime ms>@<sampling settings>"      (the media fingerprint)
where <settings> is a short hash of the encoder settings that change vectors. Spark only; no models.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.config.embed import EmbedConfig
from captionrec.spark.columns import blank, media_fingerprint, probe_status, sha16

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

VERSION_KEYS = [*C.KEYS[C.ITEM_FEATURES], "source_version"]
SOURCE_COLUMNS = [*VERSION_KEYS, "payload", "reason", "detail"]
_DETAIL_MAX = 500


class FeatureDimError(ValueError):
    """Vectors of one (feature_set, model_id) with more than one dim (or a vector whose length != dim)."""


def settings_tag(settings: dict[str, Any]) -> str:
    """8 hex chars identifying encoder settings that change vectors (part of source_version)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def family_settings(cfg: EmbedConfig, family: str) -> dict[str, Any]:
    """The settings of an encoder family that change its vectors (`settings_tag` hashes them)."""
    if family == "text":
        t = cfg.text
        return {"normalize": t.normalize, "max_seq_length": t.max_seq_length, "instruction": t.passage_instruction}
    if family == "videomae":
        v = cfg.videomae
        return {"num_frames": v.num_frames, "window_s": v.window_s, "max_pixels": v.max_pixels}
    a = cfg.audio_raw
    return {"window_s": a.window_s, "chunk_s": a.chunk_s, "min_chunk_s": a.min_chunk_s, "pooling": a.pooling}


def _first_present(df: "DataFrame", names: Sequence[str]) -> str | None:
    cols = {c.lower(): c for c in df.columns}
    return next((cols[n] for n in names if n in cols), None)


def select_captions(captions: "DataFrame", caption_version: str | None = None) -> "DataFrame":
    """Per (item_id, kind) one caption row: the latest usable one (status ok, non-blank text), else the latest
    row of any status (its reason explains why there is no vector).

    -> (item_id, kind, captioner_version, text, ok, status, detail); for unusable rows `status` is the caption's
    `reason` (else its status, or `empty_text`) and `detail` its `error`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    need = {"item_id", "kind", "captioner_version", "text", "status"}
    missing = need - {c.lower() for c in captions.columns}
    if missing:
        raise ValueError(f"captions table lacks column(s) {sorted(missing)} (has {captions.columns})")
    if caption_version is not None:
        captions = captions.where(F.col("captioner_version") == caption_version)
    reason_col = _first_present(captions, ("reason",))
    detail_col = _first_present(captions, ("error", "detail"))
    ts_col = _first_present(captions, ("created_at", "captioned_at", "updated_at"))
    ok = (F.col("status") == C.OK) & ~blank(F.col("text"))
    order = [ok.desc()] + ([F.col(ts_col).desc_nulls_last()] if ts_col else []) + [F.col("captioner_version").desc()]
    status = F.when((F.col("status") == C.OK) & blank(F.col("text")), F.lit("empty_text")).otherwise(
        F.coalesce(F.col(reason_col), F.col("status")) if reason_col else F.col("status")
    )
    detail = F.col(detail_col).cast("string") if detail_col else F.lit(None).cast("string")
    return (
        captions.withColumn("_rank", F.row_number().over(Window.partitionBy("item_id", "kind").orderBy(*order)))
        .where(F.col("_rank") == 1)
        .select(
            "item_id",
            "kind",
            "captioner_version",
            F.trim(F.col("text")).alias("text"),
            ok.alias("ok"),
            status.alias("status"),
            detail.alias("detail"),
        )
    )


def _caption_state(items: "DataFrame", captions: "DataFrame" | None, cfg: EmbedConfig) -> "DataFrame":
    """Items with, per caption kind k, columns k_version, k_text (null unless usable), k_why (why there is no
    usable caption: `caption_<reason>`, the item's probe reason, no_audio_stream, no_caption; null when usable)
    and k_detail."""
    from pyspark.sql import functions as F

    spark = items.sparkSession
    if captions is None:
        captions = spark.createDataFrame(
            [], "item_id string, kind string, captioner_version string, text string, status string"
        )
    caps = select_captions(captions, cfg.caption_version)
    fields = ("captioner_version", "text", "ok", "status", "detail")
    by_kind = caps.groupBy("item_id").agg(
        *[
            F.first(F.when(F.col("kind") == k, F.struct(*fields)), ignorenulls=True).alias(f"_{k}")
            for k in C.CAPTION_KINDS
        ]
    )
    df = items.join(by_kind, "item_id", "left")
    probe = probe_status(items)
    has_audio = F.col("has_audio") if "has_audio" in items.columns else F.lit(None).cast("boolean")
    for k in C.CAPTION_KINDS:
        usable = F.coalesce(F.col(f"_{k}.ok"), F.lit(False))
        fallback = F.when(probe != C.OK, probe)
        if k == "audio":
            fallback = fallback.when(has_audio == F.lit(False), F.lit(C.NO_AUDIO_STREAM))
        why = (
            F.when(usable, F.lit(None).cast("string"))
            .when(F.col(f"_{k}.status").isNull(), fallback.otherwise(F.lit("no_caption")))
            .otherwise(F.concat(F.lit("caption_"), F.col(f"_{k}.status")))
        )
        df = df.withColumns(
            {
                f"{k}_version": F.col(f"_{k}.captioner_version"),
                f"{k}_why": why,
                f"{k}_text": F.when(usable, F.col(f"_{k}.text")),
                f"{k}_detail": F.col(f"_{k}.detail"),
            }
        )
    return df


def _caption_source(fs: str, kinds: Sequence[str], cfg: EmbedConfig) -> tuple["Column", "Column", "Column", "Column"]:
    """(version prefix, text, reason, detail) of an mllm_* feature set reading caption `kinds`."""
    from pyspark.sql import functions as F

    usable = [F.col(f"{k}_why").isNull() for k in kinds]
    if len(kinds) == 1:
        (k,) = kinds
        text, reason = F.col(f"{k}_text"), F.col(f"{k}_why")
        version = F.coalesce(F.col(f"{k}_version"), F.lit("none"))
    else:  # several captions in one text: cfg.text.av_template ({<kind>} placeholders), or the usable one alone
        fmt = cfg.text.av_template.replace("%", "%%")
        for i, k in enumerate(kinds, 1):
            fmt = fmt.replace("{" + k + "}", f"%{i}$s")
        all_ok = usable[0]
        for u in usable[1:]:
            all_ok = all_ok & u
        text = F.when(all_ok, F.format_string(fmt, *[F.col(f"{k}_text") for k in kinds])).otherwise(
            F.coalesce(*[F.col(f"{k}_text") for k in kinds])
        )
        whys = [F.col(f"{k}_why") for k in kinds]
        reason = F.coalesce(*whys) if cfg.text.av_require_both else F.when(text.isNull(), whys[0])
        version = F.concat_ws(
            "+", *[F.coalesce(F.when(u, F.col(f"{k}_version")), F.lit("-")) for k, u in zip(kinds, usable)]
        )
    detail = F.lit(None).cast("string")
    for k, u in reversed(list(zip(kinds, usable))):
        detail = F.when(~u, F.col(f"{k}_detail")).otherwise(detail)
    return (
        F.concat(version, F.lit(":"), F.coalesce(sha16(F.when(reason.isNull(), text)), F.lit("none"))),
        text,
        reason,
        detail,
    )


def text_sources(
    items: "DataFrame", captions: "DataFrame" | None, feature_sets: Sequence[str], model_id: str, cfg: EmbedConfig
) -> "DataFrame":
    """Items (+ captions) -> one row per (item, text feature set):
    (item_id, feature_set, model_id, source_version, text, reason, detail); `reason` null = embed `text`.

    Table-driven: `title` reads the item's title; each mllm_* set reads the caption kinds
    `contracts.CAPTION_SOURCES` names (items are joined with their chosen captions once).
    """
    from pyspark.sql import functions as F

    tag = "@" + settings_tag(family_settings(cfg, "text"))
    wanted = [f for f in feature_sets if f in C.TEXT_FEATURE_SETS]
    out_cols = ["item_id", "feature_set", "model_id", "source_version", "text", "reason", "detail"]
    if not wanted:
        return items.sparkSession.createDataFrame([], ", ".join(f"{c} string" for c in out_cols))
    df = items.withColumn("title", F.trim(F.col("title")))
    if any(f in C.CAPTION_SOURCES for f in wanted):
        df = _caption_state(df, captions, cfg)
    structs = []
    for fs in wanted:
        if fs == "title":
            version = F.concat(F.lit("t:"), F.coalesce(sha16(F.col("title")), F.lit("none")))
            text, reason, detail = F.col("title"), F.when(blank(F.col("title")), F.lit("no_title")), F.lit(None)
        else:
            version, text, reason, detail = _caption_source(fs, C.CAPTION_SOURCES[fs], cfg)
        structs.append(
            F.struct(
                F.lit(fs).alias("feature_set"),
                F.concat(version, F.lit(tag)).alias("source_version"),
                F.when(reason.isNull(), text).alias("text"),
                reason.alias("reason"),
                F.when(reason.isNotNull(), detail).cast("string").alias("detail"),
            )
        )
    return df.select("item_id", F.explode(F.array(*structs)).alias("s")).select(
        "item_id",
        "s.feature_set",
        F.lit(model_id).alias("model_id"),
        "s.source_version",
        "s.text",
        "s.reason",
        "s.detail",
    )


def media_sources(items: "DataFrame", feature_set: str, model_id: str, settings: dict[str, Any]) -> "DataFrame":
    """Items -> (item_id, feature_set, model_id, source_version, path, reason, detail) for a media set.

    Items whose probe failed carry that reason; `audio_raw` for an item without an audio track carries
    `no_audio_stream` (an audio-only file, probe `no_video_stream`, is embedded for `audio_raw`).
    """
    from pyspark.sql import functions as F

    if feature_set not in C.MEDIA_FEATURE_SETS:
        raise ValueError(f"{feature_set!r} is not a media feature set ({C.MEDIA_FEATURE_SETS})")
    cols = set(items.columns)
    probe = probe_status(items)
    probe_detail = F.col("probe_detail") if "probe_detail" in cols else F.lit(None).cast("string")
    na = sorted(C.NOT_APPLICABLE_STATUSES)  # no video by design: that, not missing_file
    reason = F.when(probe.isin(*na), probe).when(blank(F.col("video_path")), F.lit(C.MISSING_FILE))
    if feature_set == "audio_raw":  # an audio-only file (probe: no_video_stream) still has a soundtrack
        reason = reason.when(~probe.isin(C.OK, C.NO_VIDEO_STREAM), probe)
        if "has_audio" in cols:
            reason = reason.when(F.col("has_audio") == F.lit(False), F.lit(C.NO_AUDIO_STREAM))
    else:
        reason = reason.when(probe != C.OK, probe)
    fingerprint = media_fingerprint(items, C.MEDIA_FINGERPRINT_COLUMNS[:2])  # size:mtime
    return items.select(
        "item_id",
        F.lit(feature_set).alias("feature_set"),
        F.lit(model_id).alias("model_id"),
        F.concat(fingerprint, F.lit("@" + settings_tag(settings))).alias("source_version"),
        F.col("video_path").alias("path"),
        reason.alias("reason"),
        F.when(reason.isNotNull(), probe_detail).alias("detail"),
    )


def plan_sources(src: "DataFrame", existing: "DataFrame" | None, failed: "DataFrame" | None) -> "DataFrame":
    """Add `state` to source rows: "not_applicable" (the item has no video by design: an interaction-only
    dataset; no error row), "missing" (a reason, no input to embed), "done" (a vector for this source_version
    exists), "failed" (this source_version failed for a permanent reason; pass `failed=None` to retry) or
    "todo"."""
    from pyspark.sql import functions as F

    df = src
    state = F.when(F.col("reason").isin(*sorted(C.NOT_APPLICABLE_STATUSES)), F.lit("not_applicable")).when(
        F.col("reason").isNotNull(), F.lit("missing")
    )
    for name, table in (("_done", existing), ("_failed", failed)):
        if table is not None:
            df = df.join(table.select(*VERSION_KEYS).distinct().withColumn(name, F.lit(True)), VERSION_KEYS, "left")
            state = state.when(F.col(name).isNotNull(), F.lit(name[1:]))
    return df.withColumn("state", state.otherwise(F.lit("todo"))).drop("_done", "_failed")


def permanent_failures(errors: "DataFrame" | None) -> "DataFrame" | None:
    """The feature_errors rows a re-run skips: permanent reasons only (transient ones, such as oom, decode_error
    and embed_error, are retried by the next run), as in the caption stage."""
    from pyspark.sql import functions as F

    return None if errors is None else errors.where(F.col("reason").isin(*sorted(C.PERMANENT_REASONS)))


def check_dims(new: "DataFrame", existing: "DataFrame" | None = None) -> dict[tuple[str, str], int]:
    """One dim per (feature_set, model_id) over new and existing vectors, and len(vector) == dim for new ones.

    Reads only the `dim` column of `existing`. Returns {(feature_set, model_id): dim}; raises
    FeatureDimError naming the offending feature set and model.
    """
    from pyspark.sql import functions as F

    rows = new.select("feature_set", "model_id", "dim", (F.size("vector") != F.col("dim")).alias("_bad"))
    if existing is not None:
        keys = new.select("feature_set", "model_id").distinct()
        old = existing.select("feature_set", "model_id", "dim").join(keys, ["feature_set", "model_id"])
        rows = rows.unionByName(old.withColumn("_bad", F.lit(False)))
    stats = (
        rows.groupBy("feature_set", "model_id")
        .agg(F.sort_array(F.collect_set("dim")).alias("dims"), F.max(F.col("_bad").cast("int")).alias("bad"))
        .collect()
    )
    out: dict[tuple[str, str], int] = {}
    for r in sorted(stats, key=lambda r: (r["feature_set"], r["model_id"])):
        where = f"feature set {r['feature_set']!r} with model {r['model_id']!r}"
        if r["bad"]:
            raise FeatureDimError(f"{where}: a vector's length differs from its dim")
        if len(r["dims"]) != 1:
            raise FeatureDimError(
                f"{where} would hold vectors of dims {list(r['dims'])}; all vectors of one feature set and model "
                "must share one dim (did a model folder change under the same model id?)"
            )
        out[(r["feature_set"], r["model_id"])] = int(r["dims"][0])
    return out


def to_item_features(results: "DataFrame") -> "DataFrame":
    """Successful model-map rows -> the item_features schema."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    return results.where(F.col("reason").isNull() & F.col("vector").isNotNull()).select(
        *C.KEYS[C.ITEM_FEATURES],
        F.col("dim").cast("int").alias("dim"),
        F.col("vector").cast(T.ArrayType(T.FloatType())).alias("vector"),
        "source_version",
        F.current_timestamp().alias("created_at"),
    )


def to_feature_errors(rows: "DataFrame") -> "DataFrame":
    """Rows with a reason (sources or model-map results) -> the feature_errors schema."""
    from pyspark.sql import functions as F

    return rows.where(F.col("reason").isNotNull()).select(
        *VERSION_KEYS,
        "reason",
        F.substring(F.col("detail"), 1, _DETAIL_MAX).alias("detail"),
        F.current_timestamp().alias("seen_at"),
    )
