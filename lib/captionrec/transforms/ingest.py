"""Ingest transforms, DataFrame in / DataFrame out: raw source rows -> clean rows + quarantine rows, and
titles x video files x probe results -> `items` rows. Format-agnostic: every source produces the raw
columns these take (see `captionrec.ingest.sources`).
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from captionrec import contracts as C
from captionrec.ingest import timestamps as TS

ITEM_COLUMNS = list(C.columns(C.ITEMS))
PROBE_COLUMNS = (
    "duration_s",
    "width",
    "height",
    "fps",
    "has_audio",
    "video_codec",
    "audio_codec",
    "probe_status",
    "probe_detail",
)


def quarantine_rows(df: DataFrame, source: str, key: F.Column, reason: str | F.Column, detail: F.Column) -> DataFrame:
    return df.select(
        F.lit(source).alias("source"),
        key.alias("key"),
        (F.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        detail.alias("detail"),
        F.current_timestamp().alias("seen_at"),
    )


def _raw_line(cols: list[str]) -> F.Column:
    return F.coalesce(F.col("_corrupt"), F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in cols]))


def _malformed(rows: DataFrame, source: str) -> DataFrame:
    return quarantine_rows(
        rows,
        source,
        F.sha2(F.col("_line"), 256).substr(1, 16),
        C.MALFORMED_ROW,
        F.concat(F.lit("unparseable row in "), F.col("_file"), F.lit(": "), F.col("_line").substr(1, 200)),
    )


def clean_titles(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(id, title, _corrupt, _file) -> (titles(item_id, title), quarantine). Rows with a parse error or an
    empty id are malformed; a repeated id keeps its first title and quarantines the others as duplicate_item."""
    rows = (
        raw.withColumn("_line", _raw_line(["id", "title"]))
        .withColumn("item_id", F.trim("id"))
        .withColumn("_pos", F.monotonically_increasing_id())
    )
    bad_mask = F.col("_corrupt").isNotNull() | F.col("item_id").isNull() | (F.col("item_id") == "")
    bad = _malformed(rows.where(bad_mask), "titles")
    good = rows.where(~bad_mask).select("item_id", F.col("title"), "_file", "_pos")
    counted = good.groupBy("item_id").agg(
        F.min_by("title", "_pos").alias("title"), F.count(F.lit(1)).alias("_n"), F.first("_file").alias("_file")
    )
    dups = quarantine_rows(
        counted.where(F.col("_n") > 1),
        "titles",
        F.col("item_id"),
        C.DUPLICATE_ITEM,
        F.concat(F.lit("item id appears "), F.col("_n").cast("string"), F.lit(" times; first title kept")),
    )
    return counted.select("item_id", "title"), bad.unionByName(dups)


def clean_pairs(
    raw: DataFrame, units: dict[str, str | None] | None = None, bounds: TS.TimeBounds | None = None
) -> tuple[DataFrame, DataFrame]:
    """(user, item, timestamp, _corrupt, _file) -> (pairs(user_id, item_id, ts_ms, ts), quarantine).

    `units` maps each file to its timestamp unit (`timestamps.file_units`; detected here when None).
    Rows that don't parse are `malformed_row`; numeric timestamps outside `bounds` (or in a file of
    unknown unit) are `implausible_timestamp`; repeated rows are kept once (`duplicate_interaction`).
    """
    bounds = bounds or TS.bounds("2000-01-01", "microlens")
    units = TS.file_units(raw, "auto", bounds) if units is None else units
    value = TS.numeric("timestamp")
    rows = raw.select(
        F.trim("user").alias("user_id"),
        F.trim("item").alias("item_id"),
        F.trim("timestamp").alias("_raw_ts"),
        value.alias("_v"),
        "_corrupt",
        "_file",
        _raw_line(["user", "item", "timestamp"]).alias("_line"),
    ).withColumn("ts_ms", TS.to_ms(F.col("_v"), F.col("_file"), units))
    bad_mask = (
        F.col("_corrupt").isNotNull()
        | F.col("user_id").isNull()
        | (F.col("user_id") == "")
        | F.col("item_id").isNull()
        | (F.col("item_id") == "")
        | F.col("_v").isNull()
        | F.isnan("_v")
        | F.col("_v").isin(float("inf"), float("-inf"))
    )
    implausible_mask = ~bad_mask & (
        F.col("ts_ms").isNull() | (F.col("ts_ms") < bounds.earliest_ms) | (F.col("ts_ms") > bounds.latest_ms)
    )
    unit = (
        F.create_map(*[x for f, u in sorted(units.items()) for x in (F.lit(f), F.lit(u or "?"))])[F.col("_file")]
        if units
        else F.lit("?")
    )
    implausible = quarantine_rows(
        rows.where(implausible_mask),
        "pairs",
        F.concat_ws("|", "user_id", "item_id", "_raw_ts"),
        C.IMPLAUSIBLE_TIMESTAMP,
        TS.implausible_detail(F.col("_raw_ts"), F.col("ts_ms"), F.col("_file"), unit, bounds),
    )
    good = rows.where(~bad_mask & ~implausible_mask)
    counted = good.groupBy("user_id", "item_id", "ts_ms").agg(F.count(F.lit(1)).alias("_n"))
    dups = quarantine_rows(
        counted.where(F.col("_n") > 1),
        "pairs",
        F.concat_ws("|", "user_id", "item_id", F.col("ts_ms").cast("string")),
        C.DUPLICATE_INTERACTION,
        F.concat(F.lit("row repeated "), F.col("_n").cast("string"), F.lit(" times; kept once")),
    )
    pairs = counted.select("user_id", "item_id", "ts_ms", F.timestamp_millis("ts_ms").alias("ts"))
    return pairs, _malformed(rows.where(bad_mask), "pairs").unionByName(implausible).unionByName(dups)


def filter_known_items(pairs: DataFrame, item_ids: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Interactions whose item exists -> kept; the rest -> quarantine `unknown_item`."""
    ids = item_ids.select("item_id").distinct()
    known = pairs.join(ids, "item_id", "left_semi")
    q = quarantine_rows(
        pairs.join(ids, "item_id", "left_anti"),
        "pairs",
        F.concat_ws("|", "user_id", "item_id", F.col("ts_ms").cast("string")),
        C.UNKNOWN_ITEM,
        F.concat(F.lit("item "), F.col("item_id"), F.lit(" has neither a title nor a video")),
    )
    return known.select("user_id", "item_id", "ts", "ts_ms"), q


def changed_videos(videos: DataFrame, existing_items: DataFrame | None) -> DataFrame:
    """Videos to probe: new ones, ones whose path/size/mtime differ from what `items` recorded, and ones
    whose last probe failed for a transient reason (`contracts.TRANSIENT_REASONS`)."""
    if existing_items is None:
        return videos
    done = F.col("video_path").isNotNull() & ~F.coalesce(F.col("probe_status").isin(*C.TRANSIENT_REASONS), F.lit(False))
    seen = existing_items.where(done).select("item_id", "video_path", "size_bytes", "video_mtime")
    return videos.join(seen, ["item_id", "video_path", "size_bytes", "video_mtime"], "left_anti")


def build_items(
    titles: DataFrame, videos: DataFrame, probes: DataFrame, existing: DataFrame | None, missing_detail: str
) -> DataFrame:
    """Titles x video files x probe results -> `items` rows to upsert (only new or changed ones).

    An item with a title but no file gets probe_status `missing_file` (detail: `missing_detail`, where
    `{id}` is replaced by the item id); a file without a title is kept with a null title. Items not
    re-probed this run (unchanged file) carry their earlier probe forward.
    """
    base = titles.join(videos, "item_id", "full_outer").join(probes, "item_id", "left")
    if existing is not None:
        prev = existing.where(F.col("video_path").isNotNull()).select(
            "item_id", "video_path", *[F.col(c).alias(f"_prev_{c}") for c in PROBE_COLUMNS]
        )
        base = base.join(prev, ["item_id", "video_path"], "left")
        for c in PROBE_COLUMNS:
            base = base.withColumn(c, F.coalesce(F.col(c), F.col(f"_prev_{c}")))
    missing = F.col("video_path").isNull()
    detail = F.regexp_replace(F.lit(missing_detail), F.lit(r"\{id\}"), F.col("item_id"))
    items = base.select(
        "item_id",
        "title",
        "video_path",
        "duration_s",
        "width",
        "height",
        "fps",
        "has_audio",
        "video_codec",
        "audio_codec",
        "size_bytes",
        "video_mtime",
        F.when(missing, F.lit(C.MISSING_FILE)).otherwise(F.col("probe_status")).alias("probe_status"),
        F.when(missing, detail).otherwise(F.col("probe_detail")).alias("probe_detail"),
        F.current_timestamp().alias("ingested_at"),
    )
    return only_changed(items, existing)


def items_without_videos(titles: DataFrame, existing: DataFrame | None, detail: str) -> DataFrame:
    """Titles of an interaction-only dataset -> `items` rows (probe_status `no_video_expected`)."""
    typed = {f.name: f.dataType for f in C.spark_schema(C.ITEMS).fields}
    null_cols = [F.lit(None).cast(typed[c]).alias(c) for c in ITEM_COLUMNS[2:12]]
    items = titles.select(
        "item_id",
        "title",
        *null_cols,
        F.lit(C.NO_VIDEO_EXPECTED).alias("probe_status"),
        F.lit(detail).alias("probe_detail"),
        F.current_timestamp().alias("ingested_at"),
    )
    return only_changed(items, existing)


def only_changed(items: DataFrame, existing: DataFrame | None) -> DataFrame:
    """Drop rows whose title, file (path, size, mtime) and probe status are what `items` already holds."""
    if existing is None:
        return items.select(*ITEM_COLUMNS)
    compare = ["title", "video_path", "size_bytes", "video_mtime", "probe_status"]
    old = existing.select("item_id", F.lit(True).alias("_old_exists"), *[F.col(c).alias(f"_old_{c}") for c in compare])
    joined = items.join(old, "item_id", "left")
    differs = F.col("_old_exists").isNull()
    for c in compare:
        differs = differs | ~F.col(c).eqNullSafe(F.col(f"_old_{c}"))
    return joined.where(differs).select(*ITEM_COLUMNS)


def video_quarantine(items: DataFrame) -> DataFrame:
    """Items whose video is missing or unusable -> quarantine rows (source `videos`, key item_id).
    Items of an interaction-only dataset (`no_video_expected`) never expected a video: no row."""
    unusable = (F.col("probe_status") != C.OK) & ~F.col("probe_status").isin(*C.NOT_APPLICABLE_STATUSES)
    return quarantine_rows(
        items.where(unusable),
        "videos",
        F.col("item_id"),
        F.col("probe_status"),
        F.coalesce(F.col("probe_detail"), F.col("probe_status")),
    )
