"""Ingest: MicroLens layout -> Delta tables `items`, `interactions`, `quarantine`.

Source layout (as MicroLens-100K ships it):
    videos/<item>.mp4
    <name>_pairs.csv       header `user,item,timestamp` (Unix ms)
    <name>_title_en.csv    `id,title`, no header

Bad input never stops the job: malformed rows, unknown items, duplicate interactions and missing /
zero-byte / corrupt / non-video files each land in `quarantine` (source, key, reason, detail). An item
whose video is bad stays in `items` (its title and interactions are still usable) with
`probe_status` = the reason; later stages caption only `probe_status = 'ok'`.

Incremental and idempotent: only new or changed video files (size / mtime) are probed; all writes are
driver-side MERGEs on the table keys, and an empty change writes no commit.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Optional

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from captionrec import contracts as C
from captionrec.config import Config
from captionrec.paths import join, to_local_path
from captionrec.spark.udf import map_rows

log = logging.getLogger(__name__)

ITEM_KEYS = list(C.KEYS[C.ITEMS])
INTERACTION_KEYS = list(C.KEYS[C.INTERACTIONS])
QUARANTINE_KEYS = list(C.KEYS[C.QUARANTINE])
ITEM_COLUMNS = list(C.columns(C.ITEMS))


# ----------------------------------------------------------------------------- sources -> DataFrames


def read_titles(spark: SparkSession, path: str) -> DataFrame:
    """`id,title` CSV without header -> (id, title, _corrupt, _file). Malformed lines keep their raw text."""
    schema = "id STRING, title STRING, _corrupt STRING"
    return (
        spark.read.option("header", "false")
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt")
        .option("multiLine", "false")
        .option("escape", '"')
        .schema(schema)
        .csv(path)
        .withColumn("_file", F.col("_metadata.file_name"))
    )


def read_pairs(spark: SparkSession, path: str) -> DataFrame:
    """`user,item,timestamp` CSV with header -> raw string columns + _corrupt + _file."""
    schema = "user STRING, item STRING, timestamp STRING, _corrupt STRING"
    return (
        spark.read.option("header", "true")
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt")
        .schema(schema)
        .csv(path)
        .withColumn("_file", F.col("_metadata.file_name"))
    )


def _hadoop_fs(spark: SparkSession, path: str):
    """(Hadoop FileSystem, Path) for `path`; classic sessions only (Spark Connect has no JVM handle)."""
    hpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath


def _list_files_hadoop(spark: SparkSession, folder: str, suffix: str) -> list[tuple[str, int, int]]:
    """List through Hadoop's FileSystem (any scheme the cluster can read: s3a, abfss, dbfs, file)."""
    fs, path = _hadoop_fs(spark, folder)
    if not fs.exists(path):
        return []
    out = []
    for st in fs.listStatus(path):
        name = st.getPath().getName()
        if st.isFile() and name.endswith(suffix):
            out.append((st.getPath().toString(), int(st.getLen()), int(st.getModificationTime())))
    return out


def _list_files_local(folder: str, suffix: str) -> list[tuple[str, int, int]]:
    local = to_local_path(folder)
    if not os.path.isdir(local):
        return []
    out = []
    with os.scandir(local) as it:
        for e in it:
            if e.is_file() and e.name.endswith(suffix):
                st = e.stat()
                out.append((Path(e.path).resolve().as_uri(), st.st_size, int(st.st_mtime * 1000)))
    return out


def path_exists(spark: SparkSession, path: str) -> bool:
    try:
        fs, hp = _hadoop_fs(spark, path)
        return bool(fs.exists(hp))
    except Exception:
        return os.path.exists(to_local_path(path))


class SourceError(FileNotFoundError):
    """The source folder is not in MicroLens layout (a whole file is missing); nothing was written."""


def list_videos(spark: SparkSession, videos_dir: str) -> DataFrame:
    """Files videos/*.mp4 -> (item_id, video_path, size_bytes, video_mtime); contents are not read.

    Zero-byte files are listed too (Spark's file sources skip them, so `binaryFile` can't be used).
    """
    try:
        files = _list_files_hadoop(spark, videos_dir, ".mp4")
    except Exception as exc:  # Spark Connect / no JVM: local or FUSE paths
        log.info("Hadoop listing unavailable (%s); listing %s locally", type(exc).__name__, videos_dir)
        files = _list_files_local(videos_dir, ".mp4")
    rows = [(uri.rsplit("/", 1)[-1][: -len(".mp4")], uri, size, mtime) for uri, size, mtime in sorted(files)]
    schema = "item_id STRING, video_path STRING, size_bytes BIGINT, mtime_ms BIGINT"
    df = spark.createDataFrame(rows, schema)
    return df.select("item_id", "video_path", "size_bytes", F.timestamp_millis("mtime_ms").alias("video_mtime"))


# ----------------------------------------------------------------------------- transforms


def _raw_line(cols: list[str]) -> F.Column:
    return F.coalesce(F.col("_corrupt"), F.concat_ws(",", *[F.coalesce(F.col(c), F.lit("")) for c in cols]))


def _quarantine(df: DataFrame, source: F.Column, key: F.Column, reason: str | F.Column, detail: F.Column) -> DataFrame:
    return df.select(
        source.alias("source"),
        key.alias("key"),
        (F.lit(reason) if isinstance(reason, str) else reason).alias("reason"),
        detail.alias("detail"),
        F.current_timestamp().alias("seen_at"),
    )


def clean_titles(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """-> (titles(item_id, title), quarantine). Rows with a parse error or an empty id are malformed;
    a repeated id keeps its first title and quarantines the others as duplicate_item."""
    line = _raw_line(["id", "title"])
    rows = (raw.withColumn("_line", line).withColumn("item_id", F.trim("id"))
            .withColumn("_pos", F.monotonically_increasing_id()))
    bad_mask = F.col("_corrupt").isNotNull() | F.col("item_id").isNull() | (F.col("item_id") == "")
    bad = _quarantine(
        rows.where(bad_mask),
        F.lit("titles"),
        F.sha2(F.col("_line"), 256).substr(1, 16),
        "malformed_row",
        F.concat(F.lit("unparseable row in "), F.col("_file"), F.lit(": "), F.col("_line").substr(1, 200)),
    )
    good = rows.where(~bad_mask).select("item_id", F.col("title"), "_file", "_pos")
    counted = good.groupBy("item_id").agg(F.min_by("title", "_pos").alias("title"),
                                          F.count(F.lit(1)).alias("_n"), F.first("_file").alias("_file"))
    dups = _quarantine(
        counted.where(F.col("_n") > 1),
        F.lit("titles"),
        F.col("item_id"),
        "duplicate_item",
        F.concat(F.lit("item id appears "), F.col("_n").cast("string"), F.lit(" times; first title kept")),
    )
    return counted.select("item_id", "title"), bad.unionByName(dups)


def clean_pairs(raw: DataFrame) -> tuple[DataFrame, DataFrame]:
    """-> (pairs(user_id, item_id, ts_ms, ts), quarantine of malformed rows and duplicate interactions)."""
    line = _raw_line(["user", "item", "timestamp"])
    rows = raw.select(
        F.trim("user").alias("user_id"),
        F.trim("item").alias("item_id"),
        F.expr("try_cast(trim(timestamp) AS BIGINT)").alias("ts_ms"),
        "_corrupt",
        "_file",
        line.alias("_line"),
    )
    bad_mask = (
        F.col("_corrupt").isNotNull()
        | F.col("user_id").isNull() | (F.col("user_id") == "")
        | F.col("item_id").isNull() | (F.col("item_id") == "")
        | F.col("ts_ms").isNull() | (F.col("ts_ms") <= 0)
    )
    bad = _quarantine(
        rows.where(bad_mask),
        F.lit("pairs"),
        F.sha2(F.col("_line"), 256).substr(1, 16),
        "malformed_row",
        F.concat(F.lit("unparseable row in "), F.col("_file"), F.lit(": "), F.col("_line").substr(1, 200)),
    )
    good = rows.where(~bad_mask)
    counted = good.groupBy("user_id", "item_id", "ts_ms").agg(F.count(F.lit(1)).alias("_n"), F.first("_file").alias("_file"))
    dups = _quarantine(
        counted.where(F.col("_n") > 1),
        F.lit("pairs"),
        F.concat_ws("|", "user_id", "item_id", F.col("ts_ms").cast("string")),
        "duplicate_interaction",
        F.concat(F.lit("row repeated "), F.col("_n").cast("string"), F.lit(" times; kept once")),
    )
    pairs = counted.select("user_id", "item_id", "ts_ms", F.timestamp_millis("ts_ms").alias("ts"))
    return pairs, bad.unionByName(dups)


def filter_known_items(pairs: DataFrame, item_ids: DataFrame) -> tuple[DataFrame, DataFrame]:
    """Interactions whose item exists -> kept; the rest -> quarantine `unknown_item`."""
    known = pairs.join(item_ids.select("item_id").distinct(), "item_id", "left_semi")
    unknown = pairs.join(item_ids.select("item_id").distinct(), "item_id", "left_anti")
    q = _quarantine(
        unknown,
        F.lit("pairs"),
        F.concat_ws("|", "user_id", "item_id", F.col("ts_ms").cast("string")),
        "unknown_item",
        F.concat(F.lit("item "), F.col("item_id"), F.lit(" has neither a title nor a video")),
    )
    return known.select("user_id", "item_id", "ts", "ts_ms"), q


def probe_rows(rows: Iterator[dict[str, Any]], batch_size: int = 16) -> Iterator[list[dict[str, Any]]]:
    """Probe each (item_id, video_path) row with PyAV; a bad file yields its reason, never an exception.

    Spark-free (the `map_rows` worker of `probe_videos`); yields lists of `contracts.PROBE_ROWS` rows.
    """
    from captionrec.media import MediaError, probe

    out: list[dict[str, Any]] = []
    for row in rows:
        item_id, path = row["item_id"], row["video_path"]
        rec: dict[str, Any] = {"item_id": item_id}
        try:
            p = probe(to_local_path(path))
            rec.update(
                duration_s=p.duration_s, width=p.display_width, height=p.display_height, fps=p.fps, has_audio=p.has_audio,
                video_codec=p.video_codec, audio_codec=p.audio_codec, probe_status=C.OK, probe_detail=None,
            )
        except MediaError as exc:
            rec.update(probe_status=exc.reason, probe_detail=str(exc)[:500])
        except Exception as exc:  # an unexpected decoder failure is still a per-item outcome
            rec.update(probe_status=C.PROBE_ERROR, probe_detail=f"{type(exc).__name__}: {exc}"[:500])
        out.append(rec)
        if len(out) >= batch_size:
            yield out
            out = []
    if out:
        yield out


def probe_videos(videos: DataFrame, partitions: int, batch_size: int = 16) -> DataFrame:
    """(item_id, video_path, ...) -> (item_id, probe columns) via PyAV in parallel Arrow batches."""
    return map_rows(videos.select("item_id", "video_path").repartition(partitions, "item_id"),
                    lambda rows: probe_rows(rows, batch_size), C.schema(C.PROBE_ROWS))


def changed_videos(videos: DataFrame, existing_items: Optional[DataFrame]) -> DataFrame:
    """Videos that are new, or whose size/mtime differ from what `items` recorded (so need probing)."""
    if existing_items is None:
        return videos
    seen = existing_items.where(F.col("video_path").isNotNull()).select("item_id", "size_bytes", "video_mtime")
    return videos.join(seen, ["item_id", "size_bytes", "video_mtime"], "left_anti")


def build_items(titles: DataFrame, videos: DataFrame, probes: DataFrame, existing: Optional[DataFrame]) -> DataFrame:
    """Titles x video files x probe results -> `items` rows to upsert (only new or changed ones).

    An item with a title but no file gets probe_status `missing_file`; a file without a title is kept
    with a null title. Unchanged items (same title, file size and mtime) are dropped from the upsert.
    """
    base = titles.join(videos, "item_id", "full_outer").join(probes, "item_id", "left")
    if existing is not None:
        prev = existing.select("item_id", *[F.col(c).alias(f"_prev_{c}") for c in
                                            ("duration_s", "width", "height", "fps", "has_audio", "video_codec",
                                             "audio_codec", "probe_status", "probe_detail")])
        base = base.join(prev, "item_id", "left")
        # Not re-probed this run (unchanged file): carry the earlier probe forward.
        for c in ("duration_s", "width", "height", "fps", "has_audio", "video_codec", "audio_codec",
                  "probe_status", "probe_detail"):
            base = base.withColumn(c, F.coalesce(F.col(c), F.col(f"_prev_{c}")))
    missing = F.col("video_path").isNull()
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
        F.when(missing, F.lit("missing_file")).otherwise(F.col("probe_status")).alias("probe_status"),
        F.when(missing, F.lit("title listed but videos/<id>.mp4 does not exist")).otherwise(F.col("probe_detail"))
        .alias("probe_detail"),
        F.current_timestamp().alias("ingested_at"),
    )
    if existing is None:
        return items
    compare = ["title", "video_path", "size_bytes", "video_mtime", "probe_status"]
    old = existing.select("item_id", F.lit(True).alias("_old_exists"), *[F.col(c).alias(f"_old_{c}") for c in compare])
    joined = items.join(old, "item_id", "left")
    differs = F.col("_old_exists").isNull()
    for c in compare:
        differs = differs | ~F.col(c).eqNullSafe(F.col(f"_old_{c}"))
    return joined.where(differs).select(*ITEM_COLUMNS)


def video_quarantine(items: DataFrame) -> DataFrame:
    """Items whose video is missing or unusable -> quarantine rows (source `videos`, key item_id)."""
    return _quarantine(
        items.where(F.col("probe_status") != "ok"),
        F.lit("videos"),
        F.col("item_id"),
        F.col("probe_status"),
        F.coalesce(F.col("probe_detail"), F.col("probe_status")),
    )


# ----------------------------------------------------------------------------- the stage


def run(cfg: Config, spark: SparkSession, store) -> dict[str, Any]:
    src = cfg.data.source
    name = cfg.data.name
    titles_path = join(src, f"{name}_title_en.csv")
    pairs_path = join(src, f"{name}_pairs.csv")
    videos_dir = join(src, "videos")
    log.info("ingest from %s (titles %s, pairs %s, videos %s)", src, titles_path, pairs_path, videos_dir)
    missing = [p for p in (titles_path, pairs_path, videos_dir) if not path_exists(spark, p)]
    if missing:
        raise SourceError(
            f"source {src} is not in MicroLens layout for data.name={name!r}: missing {', '.join(missing)} "
            f"(expected videos/, {name}_pairs.csv, {name}_title_en.csv)"
        )

    existing = store.read("items") if store.exists("items") else None
    titles, q_titles = clean_titles(read_titles(spark, titles_path))
    pairs, q_pairs = clean_pairs(read_pairs(spark, pairs_path))
    videos = list_videos(spark, videos_dir).cache()

    probes = probe_videos(changed_videos(videos, existing), cfg.ingest.probe_partitions,
                          cfg.ingest.probe_batch_size).cache()
    n_probed = probes.count()  # probe once; items and quarantine below reuse the cached result
    item_rows = build_items(titles, videos, probes, existing).cache()
    items_result = store.upsert("items", item_rows, ITEM_KEYS)  # an empty change commits nothing

    interactions, q_unknown = filter_known_items(pairs, store.read("items"))
    inter_result = store.insert_missing("interactions", interactions, INTERACTION_KEYS)

    quarantine = (
        q_titles.unionByName(q_pairs)
        .unionByName(q_unknown)
        .unionByName(video_quarantine(item_rows))
        .dropDuplicates(QUARANTINE_KEYS)
    )
    q_result = store.insert_missing("quarantine", quarantine, QUARANTINE_KEYS)

    reasons = {r["reason"]: r["n"] for r in
               store.read("quarantine").groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()}
    item_stats = store.read("items").agg(
        F.count(F.lit(1)).alias("total"), F.count(F.when(F.col("probe_status") == "ok", 1)).alias("ok")
    ).first()
    summary = {
        "source": src,
        "videos_found": videos.count(),
        "videos_probed": n_probed,
        "items_upserted": items_result.inserted + items_result.updated,
        "items_total": item_stats["total"],
        "items_video_ok": item_stats["ok"],
        "interactions_inserted": inter_result.inserted,
        "interactions_total": store.count("interactions"),
        "quarantine_inserted": q_result.inserted,
        "quarantine_total": sum(reasons.values()),
        "quarantine_by_reason": dict(sorted(reasons.items())),
        "table_versions": {t: store.version(t) for t in ("items", "interactions", "quarantine")},
    }
    for df in (videos, probes, item_rows):
        df.unpersist()
    return summary
