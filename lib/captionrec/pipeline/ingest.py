"""Ingest: a source folder -> Delta tables `items`, `interactions`, `quarantine`.

Sources (`data.format`, see `captionrec.ingest.sources`):
    microlens  videos/<item>.<ext>, <name>_pairs.csv (`user,item,timestamp`), a titles CSV (`id,title`)
    recbole    RecBole atomic files <name>.inter and <name>.item (MovieLens-100K ...), no videos

The recipe: open the source (every path checked and the videos listed before anything is written: a
missing file is a `SourceError`, a path that can't be checked a `ListingError`), find each interactions
file's time unit, clean the rows, probe new or changed videos, then MERGE `items`, `interactions` and
`quarantine` on their keys and return the summary.

Bad input never stops the job: malformed rows, implausible timestamps, unknown items, duplicates and
missing / zero-byte / corrupt / non-video files each land in `quarantine` (source, key, reason, detail).
An item whose video is bad stays in `items` (its title and interactions are still usable) with
`probe_status` = the reason; later stages caption only `probe_status = 'ok'`. Items of an interaction-only
dataset (no videos) have probe_status `no_video_expected` and no quarantine row.

The summary's `cost` (`tracking.cost.StageClock`): wall and CPU seconds (this process and, where /proc shows it,
the driver JVM, which runs the executors in local mode) and peak RSS.

Incremental and idempotent: only new or changed video files (path / size / mtime) are probed; an empty
change writes no commit.
"""

from __future__ import annotations

import logging
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from captionrec import contracts as C
from captionrec.config import Config
from captionrec.ingest import timestamps
from captionrec.ingest.listing import ListingError, path_exists
from captionrec.ingest.probing import probe_rows, probe_videos
from captionrec.ingest.sources import Source, SourceError, check_no_downgrade, open_source
from captionrec.transforms import ingest as T
from captionrec.transforms.ingest import clean_pairs, clean_titles

__all__ = ["ListingError", "SourceError", "clean_pairs", "clean_titles", "path_exists", "probe_rows", "run"]

log = logging.getLogger(__name__)

ITEM_KEYS = list(C.KEYS[C.ITEMS])
INTERACTION_KEYS = list(C.KEYS[C.INTERACTIONS])
QUARANTINE_KEYS = list(C.KEYS[C.QUARANTINE])


def videos_frame(spark: SparkSession, src: Source) -> DataFrame:
    """The chosen video file of each item -> (item_id, video_path, size_bytes, video_mtime)."""
    rows = [(v.item_id, v.file.uri, v.file.size_bytes, v.file.mtime_ms) for v in src.videos]
    df = spark.createDataFrame(rows, "item_id STRING, video_path STRING, size_bytes BIGINT, mtime_ms BIGINT")
    return df.select("item_id", "video_path", "size_bytes", F.timestamp_millis("mtime_ms").alias("video_mtime"))


def duplicate_video_quarantine(spark: SparkSession, src: Source) -> DataFrame:
    """Items with more than one video file -> quarantine rows naming the file used and the ones left out."""
    rows = [
        (
            v.item_id,
            f"{len(v.others) + 1} files for item {v.item_id}: using {v.file.name}, ignoring "
            + ", ".join(o.name for o in v.others),
        )
        for v in src.videos
        if v.others
    ]
    df = spark.createDataFrame(rows, "item_id STRING, detail STRING")
    return T.quarantine_rows(df, "videos", F.col("item_id"), C.DUPLICATE_VIDEO, F.col("detail"))


def missing_video_detail(cfg: Config, src: Source) -> str:
    exts = ", ".join(cfg.data.video_extensions)
    return f"title listed but {src.videos_dir} holds no file {{id}}.<ext> for any of data.video_extensions ({exts})"


def plan_items(
    cfg: Config, spark: SparkSession, src: Source, titles: DataFrame, existing: DataFrame | None
) -> tuple[DataFrame, DataFrame, int, list[DataFrame]]:
    """-> (`items` rows to upsert, video quarantine rows, videos probed, cached frames to release after the
    writes). Probes run once, here."""
    if src.videos_dir is None:
        detail = f"interaction-only dataset ({src.videos_note}): no video expected"
        items = T.items_without_videos(titles, existing, detail).cache()
        return items, duplicate_video_quarantine(spark, src), 0, [items]
    videos = videos_frame(spark, src)
    probes = probe_videos(
        T.changed_videos(videos, existing), cfg.ingest.probe_partitions, cfg.ingest.probe_batch_size
    ).cache()
    n_probed = probes.count()  # probe once; items and quarantine below reuse the cached result
    items = T.build_items(titles, videos, probes, existing, missing_video_detail(cfg, src)).cache()
    q_videos = T.video_quarantine(items).unionByName(duplicate_video_quarantine(spark, src))
    return items, q_videos, n_probed, [items, probes]


def run(cfg: Config, spark: SparkSession, store) -> dict[str, Any]:
    from captionrec.tracking.cost import StageClock, stage_cost

    clock = StageClock(spark)
    d = cfg.data
    src = open_source(spark, d)  # raises before any write when a path is missing or can't be checked
    log.info(
        "ingest %s source %s (titles %s, interactions %s, videos: %s)",
        src.format,
        d.source,
        src.titles_path,
        src.interactions_path,
        src.videos_note,
    )
    existing = store.read(C.ITEMS) if store.exists(C.ITEMS) else None
    check_no_downgrade(src, existing, d.videos)

    bounds = timestamps.bounds(d.earliest, d.format)
    units = timestamps.file_units(src.pairs, d.timestamp_unit, bounds)
    log.info("timestamp units per file: %s (plausible range %s)", units, bounds.describe())
    titles, q_titles = clean_titles(src.titles)
    pairs, q_pairs = clean_pairs(src.pairs, units, bounds)

    item_rows, q_videos, n_probed, cached = plan_items(cfg, spark, src, titles, existing)
    items_result = store.upsert(C.ITEMS, item_rows, ITEM_KEYS)  # an empty change commits nothing

    interactions, q_unknown = T.filter_known_items(pairs, store.read(C.ITEMS))
    inter_result = store.insert_missing(C.INTERACTIONS, interactions, INTERACTION_KEYS)

    quarantine = (
        q_titles.unionByName(q_pairs).unionByName(q_unknown).unionByName(q_videos).dropDuplicates(QUARANTINE_KEYS)
    )
    q_result = store.insert_missing(C.QUARANTINE, quarantine, QUARANTINE_KEYS)

    summary = {
        "source": d.source,
        **src.describe(),
        "timestamp_units": dict(sorted((f, u or "unknown") for f, u in units.items())),
        "headers_skipped": {r["file"]: r["line"] for r in src.headers.collect()},
        "videos_found": len(src.videos),
        "videos_probed": n_probed,
        "items_upserted": items_result.inserted + items_result.updated,
        "interactions_inserted": inter_result.inserted,
        "quarantine_inserted": q_result.inserted,
        **table_stats(store),
    }
    for df in cached:
        df.unpersist()
    summary["cost"] = stage_cost(clock.stop())  # wall / driver CPU (+ JVM where readable) / peak RSS
    return summary


def table_stats(store) -> dict[str, Any]:
    """Totals over the tables as they are after this run."""
    reasons = {
        r["reason"]: r["n"]
        for r in store.read(C.QUARANTINE).groupBy("reason").agg(F.count(F.lit(1)).alias("n")).collect()
    }
    items = (
        store.read(C.ITEMS)
        .agg(F.count(F.lit(1)).alias("total"), F.count(F.when(F.col("probe_status") == C.OK, 1)).alias("ok"))
        .first()
    )
    return {
        "items_total": items["total"],
        "items_video_ok": items["ok"],
        "interactions_total": store.count(C.INTERACTIONS),
        "quarantine_total": sum(reasons.values()),
        "quarantine_by_reason": dict(sorted(reasons.items())),
        "table_versions": {t: store.version(t) for t in (C.ITEMS, C.INTERACTIONS, C.QUARANTINE)},
    }
