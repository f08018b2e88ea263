"""Ingest sources: a source folder -> raw DataFrames in one shape, whatever the format.

    microlens  videos/<item>.<ext>, <name>_pairs.csv (`user,item,timestamp`, header optional),
               a titles file `id,title` (<name>_title_en.csv without a header, or <name>_titles.csv,
               whose real MicroLens-50k copy starts with the header `item,title`)
    recbole    RecBole atomic files: <name>.inter (tab-separated, typed header `user_id:token
               item_id:token rating:float timestamp:float`) and <name>.item (`item_id:token
               movie_title:token_seq ...`); no videos (MovieLens, Amazon, ... in RecBole's format)

Every source yields titles as (id, title, _corrupt, _file), interactions as (user, item, timestamp,
_corrupt, _file) and the header lines it skipped as (file, line); `transforms` cleans them. Opening a
source checks every path and lists the videos before anything is read or written: a missing file is a
`SourceError`, a path that can't be checked a `ListingError` (see `listing`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from captionrec.config.schema import DataConfig
from captionrec.ingest.listing import VideoChoice, choose_videos, list_files, path_exists
from captionrec.paths import join, resolve

log = logging.getLogger(__name__)

# Header words (lower case) that mark a header line of a titles or pairs CSV.
ID_HEADERS = ("item", "item_id", "itemid", "id", "iid", "video", "video_id", "videoid", "movie_id")
USER_HEADERS = ("user", "user_id", "userid", "uid")
# Title fields of RecBole .item files, in order of preference.
TITLE_FIELDS = ("title", "movie_title", "item_title", "name", "item_name")
_BOM = "\ufeff"


class SourceError(FileNotFoundError):
    """The source folder does not hold the files its format needs (or would lose data); nothing was written."""


@dataclass
class Source:
    format: str
    titles_path: str
    interactions_path: str
    titles: DataFrame  # id, title, _corrupt, _file
    pairs: DataFrame  # user, item, timestamp, _corrupt, _file
    headers: DataFrame  # file, line: header lines skipped
    videos_dir: str | None  # None: an interaction-only dataset
    videos_note: str  # how videos were handled, for the log and the summary
    videos: list[VideoChoice] = field(default_factory=list)
    other_files: int = 0  # files in videos_dir whose extension is not a video's

    def describe(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "titles_file": self.titles_path,
            "interactions_file": self.interactions_path,
            "videos": self.videos_note,
        }


# ---------------------------------------------------------------------------------------------- opening


def open_source(spark: SparkSession, cfg: DataConfig) -> Source:
    """Check the paths of `cfg`'s source, read its files (lazily) and list its videos (eagerly)."""
    if cfg.format == "recbole":
        titles_path = resolve(cfg.source, cfg.titles_file or f"{cfg.name}.item")
        inter_path = resolve(cfg.source, cfg.interactions_file or f"{cfg.name}.inter")
        expected = f"{cfg.name}.inter and {cfg.name}.item"
    else:
        titles_path = _microlens_titles_path(spark, cfg)
        inter_path = resolve(cfg.source, cfg.interactions_file or f"{cfg.name}_pairs.csv")
        expected = f"videos/, {cfg.name}_pairs.csv and {cfg.name}_title_en.csv or {cfg.name}_titles.csv"
    videos_dir = resolve(cfg.source, cfg.videos_dir)
    missing = [p for p in (titles_path, inter_path) if not path_exists(spark, p)]
    has_videos = cfg.videos != "none" and path_exists(spark, videos_dir)
    if cfg.videos == "required" and not has_videos:
        missing.append(videos_dir)
    if missing:
        raise SourceError(
            f"source {cfg.source} is not in {cfg.format} layout for data.name={cfg.name!r}: missing "
            f"{', '.join(missing)} (expected {expected}); nothing was written"
        )
    if cfg.format == "recbole":
        titles, pairs, headers = read_recbole(spark, titles_path, inter_path)
    else:
        titles, pairs, headers = read_microlens(spark, titles_path, inter_path)
    src = Source(cfg.format, titles_path, inter_path, titles, pairs, headers, None, "")
    if not has_videos:
        src.videos_note = (
            "none: data.videos=none"
            if cfg.videos == "none"
            else f"none: data.videos=auto and {videos_dir} does not exist"
        )
        log.info("interaction-only dataset (%s): items get probe_status no_video_expected", src.videos_note)
        return src
    src.videos_dir = videos_dir
    src.videos, src.other_files = choose_videos(list_files(spark, videos_dir), cfg.video_extensions)
    src.videos_note = f"listed {videos_dir}"
    return src


def _microlens_titles_path(spark: SparkSession, cfg: DataConfig) -> str:
    if cfg.titles_file:
        return resolve(cfg.source, cfg.titles_file)
    candidates = [join(cfg.source, f"{cfg.name}{suffix}") for suffix in ("_title_en.csv", "_titles.csv")]
    found = [p for p in candidates if path_exists(spark, p)]
    if len(found) > 1:
        raise SourceError(f"two titles files in {cfg.source}: {', '.join(found)}; choose one with data.titles_file")
    return found[0] if found else candidates[0]


def check_no_downgrade(src: Source, existing_items: DataFrame | None, mode: str) -> None:
    """`data.videos=auto` found no videos folder, but `items` holds videos from earlier runs: refuse to mark
    them `no_video_expected` (an unmounted folder must not look like an interaction-only dataset)."""
    if src.videos_dir is not None or mode != "auto" or existing_items is None:
        return
    n = existing_items.where(F.col("video_path").isNotNull()).count()
    if n:
        raise SourceError(
            f"{src.videos_note}, but {n} items in `items` have video files from earlier runs; nothing was "
            "written. Mount the videos folder, or set data.videos=none to make the dataset interaction-only."
        )


# ---------------------------------------------------------------------------------------------- MicroLens


def _unquote(col: F.Column) -> F.Column:
    """A fully quoted CSV field loses its quotes (doubled quotes inside become one); anything else stays."""
    return F.when(
        col.rlike('^"([^"]|"")*"$'), F.regexp_replace(F.regexp_extract(col, '^"(.*)"$', 1), '""', '"')
    ).otherwise(col)


def _lower_clean(col: str) -> F.Column:
    return F.lower(F.trim(F.regexp_replace(F.col(col), _BOM, "")))


def read_microlens(spark: SparkSession, titles_path: str, pairs_path: str) -> tuple[DataFrame, DataFrame, DataFrame]:
    titles, title_headers = read_titles(spark, titles_path)
    pairs, pair_headers = read_pairs(spark, pairs_path)
    return titles, pairs, title_headers.unionByName(pair_headers)


def read_titles(spark: SparkSession, path: str) -> tuple[DataFrame, DataFrame]:
    """`id,title` lines -> (raw titles, header lines). The id is the first field and the title the rest of
    the line, so an unquoted comma stays in the title; a fully quoted field is unquoted CSV-style. A line
    with no comma, or an id with a stray quote, is `_corrupt`; blank lines are skipped."""
    text = F.regexp_replace(F.regexp_replace(F.col("value"), "\r$", ""), "^" + _BOM, "")
    lines = (
        spark.read.text(path)
        .select(text.alias("_text"), F.col("_metadata.file_name").alias("_file"))
        .where(F.trim("_text") != "")
    )
    comma = F.instr("_text", ",")
    item_id = _unquote(
        F.trim(F.when(comma > 0, F.expr("substr(_text, 1, instr(_text, ',') - 1)")).otherwise(F.col("_text")))
    )
    title = _unquote(F.trim(F.when(comma > 0, F.expr("substr(_text, instr(_text, ',') + 1)"))))
    parsed = lines.select(
        item_id.alias("id"),
        F.when(title != "", title).alias("title"),
        F.when((comma == 0) | item_id.contains('"'), F.col("_text")).alias("_corrupt"),
        "_file",
        "_text",
    )
    is_header = (
        F.col("_corrupt").isNull()
        & F.lower("id").isin(*ID_HEADERS)
        & F.coalesce(F.col("title").rlike("^[A-Za-z_][A-Za-z_ ]*$"), F.lit(False))
    )
    headers = parsed.where(is_header).select(F.col("_file").alias("file"), F.col("_text").alias("line"))
    return parsed.where(~is_header).drop("_text"), headers


def read_pairs(spark: SparkSession, path: str) -> tuple[DataFrame, DataFrame]:
    """`user,item,timestamp` CSV -> (raw columns + _corrupt + _file, header lines); the header is optional."""
    raw = (
        spark.read.option("header", "false")
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt")
        .schema("user STRING, item STRING, timestamp STRING, _corrupt STRING")
        .csv(path)
        .withColumn("user", F.regexp_replace("user", "^" + _BOM, ""))
        .withColumn("_file", F.col("_metadata.file_name"))
    )
    is_header = (
        _lower_clean("user").isin(*USER_HEADERS)
        & _lower_clean("item").isin(*ID_HEADERS)
        & F.expr("try_cast(trim(timestamp) AS DOUBLE)").isNull()
    )
    is_header = F.coalesce(is_header, F.lit(False))
    headers = raw.where(is_header).select(
        F.col("_file").alias("file"), F.concat_ws(",", "user", "item", "timestamp").alias("line")
    )
    return raw.where(~is_header), headers


# ---------------------------------------------------------------------------------------------- RecBole


def atomic_header(spark: SparkSession, path: str) -> list[tuple[str, str]]:
    """[(field, type)] from a RecBole atomic file's first line (`user_id:token<TAB>...`)."""
    names = spark.read.option("sep", "\t").option("header", "true").option("quote", "").csv(path).columns
    fields = [tuple(n.replace(_BOM, "").strip().split(":", 1)) for n in names]
    if not fields or any(len(f) != 2 for f in fields):
        raise SourceError(
            f"{path} is not a RecBole atomic file: its first line {names!r} is not a tab-separated "
            "typed header such as `item_id:token<TAB>movie_title:token_seq`; nothing was written"
        )
    return [(f[0], f[1]) for f in fields]


def _read_atomic(spark: SparkSession, path: str, header: list[tuple[str, str]]) -> DataFrame:
    """All fields as strings, named as the header names them (`item_id:token`), + _corrupt + _file."""
    schema = T.StructType(
        [T.StructField(f"{n}:{t}", T.StringType()) for n, t in header] + [T.StructField("_corrupt", T.StringType())]
    )
    return (
        spark.read.option("sep", "\t")
        .option("header", "true")
        .option("quote", "")
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt")
        .schema(schema)
        .csv(path)
        .withColumn("_file", F.col("_metadata.file_name"))
    )


def _field(header: list[tuple[str, str]], path: str, *names: str) -> F.Column:
    present = [n for n, _t in header]
    for name in names:
        if name in present:
            return F.col(f"`{name}:{header[present.index(name)][1]}`")
    raise SourceError(f"{path} has no {' or '.join(names)} field (header: {', '.join(present)}); nothing was written")


def read_recbole(spark: SparkSession, item_path: str, inter_path: str) -> tuple[DataFrame, DataFrame, DataFrame]:
    """`.item` and `.inter` atomic files -> (raw titles, raw interactions, header lines)."""
    item_header, inter_header = atomic_header(spark, item_path), atomic_header(spark, inter_path)
    items = _read_atomic(spark, item_path, item_header)
    titles = items.select(
        _field(item_header, item_path, "item_id").alias("id"),
        _field(item_header, item_path, *TITLE_FIELDS).alias("title"),
        "_corrupt",
        "_file",
    )
    inter = _read_atomic(spark, inter_path, inter_header)
    pairs = inter.select(
        _field(inter_header, inter_path, "user_id").alias("user"),
        _field(inter_header, inter_path, "item_id").alias("item"),
        _field(inter_header, inter_path, "timestamp").alias("timestamp"),
        "_corrupt",
        "_file",
    )
    headers = spark.createDataFrame(
        [
            (p.rsplit("/", 1)[-1], "\t".join(f"{n}:{t}" for n, t in h))
            for p, h in ((item_path, item_header), (inter_path, inter_header))
        ],
        "file STRING, line STRING",
    )
    return titles, pairs, headers
