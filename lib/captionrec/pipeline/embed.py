"""Embed: `items` + `captions` -> Delta table `item_features` (one vector per item, feature set and model).

Feature sets (public names):
    title        the item title                               text encoder (sentence-transformers)
    mllm_video   the video caption                            text encoder
    mllm_audio   the audio caption                            text encoder
    mllm_av      both captions in one text (`text.av_template`) text encoder
    videomae     16 frames of the first 30 s -> VideoMAE, mean of the last hidden state
    audio_raw    the first 30 s of audio -> AST, pooled per ~10 s chunk, chunks averaged

Captions: per (item_id, kind) the latest `status = 'ok'` caption with text (latest by the captions
table's timestamp column, then captioner_version), or only `embed.caption_version` when set.

Incremental. Every candidate row carries a `source_version`:
    title        "t:<sha(title)>@<settings>"
    mllm_*       "<captioner_version(s)>:<sha(text)>@<settings>"
    videomae/
    audio_raw    "<size_bytes>:<mtime ms>@<sampling settings>"  (the media fingerprint)
where <settings> is a short hash of the encoder settings that change vectors. Rows whose
(item_id, feature_set, model_id, source_version) already has a vector, or already failed (unless
`embed.retry_failed`), are skipped; the rest are embedded and MERGEd on (item_id, feature_set, model_id).
A re-run with nothing new embeds and writes nothing.

Failures never become vectors: a missing/failed caption, an empty title, a bad video, a silent or
missing audio track, or a non-finite / all-zero vector is recorded in the Delta table `feature_errors`
(item_id, feature_set, model_id, source_version, reason, detail, seen_at), keyed like item_features;
a key's error row is removed once the key gets a vector. Before writing, every (feature_set, model_id)
is checked to have a single vector dim, old rows included (`FeatureDimError` otherwise).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from captionrec.config import Config
from captionrec.config.embed import FEATURE_SETS, TEXT_FEATURE_SETS, EmbedConfig
from captionrec.features import ResolvedModel, resolve_model
from captionrec.paths import to_local_path
from captionrec.spark.udf import cached_model, limit_torch_threads, map_in_pandas, profile_for, task_device

log = logging.getLogger(__name__)

# A mapInPandas function: pandas batches in, pandas batches (EMBED_OUT_SCHEMA) out.
Worker = Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]

ITEM_FEATURES = "item_features"
FEATURE_ERRORS = "feature_errors"
FEATURE_KEYS = ["item_id", "feature_set", "model_id"]
VERSION_KEYS = [*FEATURE_KEYS, "source_version"]
MEDIA_FEATURE_SETS = ("videomae", "audio_raw")

ITEM_FEATURES_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("feature_set", T.StringType(), False),
        T.StructField("model_id", T.StringType(), False),
        T.StructField("dim", T.IntegerType(), False),
        T.StructField("vector", T.ArrayType(T.FloatType(), False), False),
        T.StructField("source_version", T.StringType(), False),
        T.StructField("created_at", T.TimestampType(), False),
    ]
)

FEATURE_ERRORS_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("feature_set", T.StringType(), False),
        T.StructField("model_id", T.StringType(), False),
        T.StructField("source_version", T.StringType(), False),
        T.StructField("reason", T.StringType(), False),
        T.StructField("detail", T.StringType(), True),
        T.StructField("seen_at", T.TimestampType(), False),
    ]
)

# What the model workers return, one row per input row: a vector, or an error (reason + detail).
EMBED_OUT_SCHEMA = T.StructType(
    [
        T.StructField("item_id", T.StringType(), False),
        T.StructField("feature_set", T.StringType(), False),
        T.StructField("model_id", T.StringType(), False),
        T.StructField("source_version", T.StringType(), False),
        T.StructField("dim", T.IntegerType(), True),
        T.StructField("vector", T.ArrayType(T.FloatType(), False), True),
        T.StructField("reason", T.StringType(), True),
        T.StructField("detail", T.StringType(), True),
    ]
)

_DETAIL_MAX = 500


class FeatureDimError(ValueError):
    """Vectors of one (feature_set, model_id) with more than one dim (or a vector whose length != dim)."""


class MissingInputError(LookupError):
    """A table the embed stage reads does not exist."""


# ----------------------------------------------------------------------------- small helpers


def settings_tag(settings: dict[str, Any]) -> str:
    """8 hex chars identifying encoder settings that change vectors (part of source_version)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:8]


def _sha(col) -> Any:
    return F.substring(F.sha2(col, 256), 1, 16)


def _blank(col) -> Any:
    return col.isNull() | (F.trim(col) == "")


def _empty(spark: SparkSession, schema: T.StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


def _first_present(df: DataFrame, names: Sequence[str]) -> Optional[str]:
    cols = {c.lower(): c for c in df.columns}
    return next((cols[n] for n in names if n in cols), None)


def text_settings(cfg: EmbedConfig) -> dict[str, Any]:
    t = cfg.text
    return {"normalize": t.normalize, "max_seq_length": t.max_seq_length, "instruction": t.passage_instruction}


def videomae_settings(cfg: EmbedConfig) -> dict[str, Any]:
    v = cfg.videomae
    return {"num_frames": v.num_frames, "window_s": v.window_s, "max_pixels": v.max_pixels}


def audio_settings(cfg: EmbedConfig) -> dict[str, Any]:
    a = cfg.audio_raw
    return {"window_s": a.window_s, "chunk_s": a.chunk_s, "min_chunk_s": a.min_chunk_s, "pooling": a.pooling}


# ----------------------------------------------------------------------------- captions -> sources


def select_captions(captions: DataFrame, caption_version: Optional[str] = None) -> DataFrame:
    """Per (item_id, kind) one caption row: the latest usable one (status ok, non-blank text), else the
    latest row of any status (its reason explains why there is no vector).

    -> (item_id, kind, captioner_version, text, ok boolean, status, detail); for unusable rows `status` is
    the caption's `reason` (else its status) and `detail` its `error`.
    """
    from pyspark.sql import Window

    need = {"item_id", "kind", "captioner_version", "text", "status"}
    missing = need - {c.lower() for c in captions.columns}
    if missing:
        raise ValueError(f"captions table lacks column(s) {sorted(missing)} (has {captions.columns})")
    if caption_version is not None:
        captions = captions.where(F.col("captioner_version") == caption_version)
    reason_col = _first_present(captions, ("reason",))
    detail_col = _first_present(captions, ("error", "detail"))
    ts_col = _first_present(captions, ("created_at", "captioned_at", "updated_at"))
    ok = (F.col("status") == "ok") & ~_blank(F.col("text"))
    order = [ok.desc()]
    if ts_col:
        order.append(F.col(ts_col).desc_nulls_last())
    order.append(F.col("captioner_version").desc())
    w = Window.partitionBy("item_id", "kind").orderBy(*order)
    # Why a row is unusable: the caption's own reason (no_audio_stream, silent, decode_error, ...) or its status.
    status = F.when((F.col("status") == "ok") & _blank(F.col("text")), F.lit("empty_text")).otherwise(
        F.coalesce(F.col(reason_col), F.col("status")) if reason_col else F.col("status")
    )
    return (
        captions.withColumn("_rank", F.row_number().over(w))
        .where(F.col("_rank") == 1)
        .select(
            "item_id",
            "kind",
            "captioner_version",
            F.trim(F.col("text")).alias("text"),
            ok.alias("ok"),
            status.alias("status"),
            (F.col(detail_col).cast("string") if detail_col else F.lit(None).cast("string")).alias("detail"),
        )
    )


def text_sources(
    items: DataFrame,
    captions: Optional[DataFrame],
    feature_sets: Sequence[str],
    model_id: str,
    cfg: EmbedConfig,
) -> DataFrame:
    """Items (+ captions) -> one row per (item, text feature set):
    (item_id, feature_set, model_id, source_version, text, reason, detail); `reason` null = embed `text`.

    One pass: items are joined with their chosen video / audio captions once, then exploded into one
    row per feature set.
    """
    spark = items.sparkSession
    tag = settings_tag(text_settings(cfg))
    wanted = [f for f in feature_sets if f in TEXT_FEATURE_SETS]
    out_cols = ["item_id", "feature_set", "model_id", "source_version", "text", "reason", "detail"]
    if not wanted:
        return _empty(spark, T.StructType([T.StructField(c, T.StringType()) for c in out_cols]))
    cols = set(items.columns)
    probe = F.coalesce(F.col("probe_status"), F.lit("ok")) if "probe_status" in cols else F.lit("ok")
    joined = items.select(
        "item_id",
        F.trim(F.col("title")).alias("title"),
        (probe == "ok").alias("probe_ok"),
        probe.alias("probe_status"),
        (F.col("has_audio") if "has_audio" in cols else F.lit(None).cast("boolean")).alias("has_audio"),
    )
    none = F.lit(None).cast("string")

    def row(fs: str, source_version: Any, text: Any, reason: Any, detail: Any) -> Any:
        return F.struct(
            F.lit(fs).alias("feature_set"),
            F.concat(source_version, F.lit("@" + tag)).alias("source_version"),
            F.when(reason.isNull(), text).alias("text"),
            reason.alias("reason"),
            F.when(reason.isNotNull(), detail).alias("detail"),
        )

    structs = []
    if "title" in wanted:
        structs.append(row(
            "title",
            F.concat(F.lit("t:"), F.coalesce(_sha(F.col("title")), F.lit("none"))),
            F.col("title"),
            F.when(_blank(F.col("title")), F.lit("no_title")),
            none,
        ))

    mllm = [f for f in wanted if f.startswith("mllm_")]
    if mllm:
        caps_schema = T.StructType(
            [T.StructField(n, T.StringType()) for n in ("item_id", "kind", "captioner_version", "text")]
            + [T.StructField("ok", T.BooleanType()), T.StructField("status", T.StringType()),
               T.StructField("detail", T.StringType())]
        )
        caps = _empty(spark, caps_schema) if captions is None else select_captions(captions, cfg.caption_version)
        by_kind = caps.groupBy("item_id").agg(*[
            F.first(F.when(F.col("kind") == kind, F.struct("captioner_version", "text", "ok", "status", "detail")),
                    ignorenulls=True).alias(kind[0])
            for kind in ("video", "audio")
        ])
        joined = joined.join(by_kind, "item_id", "left").select(
            *joined.columns,
            *[F.col(f"{k}.{n}").alias(f"{k}_{n}") for k in ("v", "a")
              for n in ("captioner_version", "text", "ok", "status", "detail")],
        )

        def why(k: str) -> Any:
            """Reason there is no usable `k` caption (null when there is one)."""
            fallback = F.when(~F.col("probe_ok"), F.col("probe_status"))
            if k == "a":
                fallback = fallback.when(F.col("has_audio") == F.lit(False), F.lit("no_audio_stream"))
            fallback = fallback.otherwise(F.lit("no_caption"))
            return (
                F.when(F.coalesce(F.col(f"{k}_ok"), F.lit(False)), none)
                .when(F.col(f"{k}_status").isNull(), fallback)
                .otherwise(F.concat(F.lit("caption_"), F.col(f"{k}_status")))
            )

        def version(k: str) -> Any:
            return F.when(F.coalesce(F.col(f"{k}_ok"), F.lit(False)), F.col(f"{k}_captioner_version"))

        for fs, k in (("mllm_video", "v"), ("mllm_audio", "a")):
            if fs in mllm:
                ok_text = F.when(why(k).isNull(), F.col(f"{k}_text"))
                structs.append(row(
                    fs,
                    F.concat(
                        F.coalesce(version(k), F.col(f"{k}_captioner_version"), F.lit("none")),
                        F.lit(":"),
                        F.coalesce(_sha(ok_text), F.lit("none")),
                    ),
                    ok_text,
                    why(k),
                    F.col(f"{k}_detail"),
                ))
        if "mllm_av" in mllm:
            fmt = cfg.text.av_template.replace("%", "%%").replace("{video}", "%1$s").replace("{audio}", "%2$s")
            v_ok, a_ok = why("v").isNull(), why("a").isNull()
            text = (
                F.when(v_ok & a_ok, F.format_string(fmt, F.col("v_text"), F.col("a_text")))
                .when(v_ok, F.col("v_text"))
                .when(a_ok, F.col("a_text"))
            )
            if cfg.text.av_require_both:
                reason = F.when(~v_ok, why("v")).when(~a_ok, why("a"))
            else:
                reason = F.when(~v_ok & ~a_ok, why("v"))
            structs.append(row(
                "mllm_av",
                F.concat(
                    F.coalesce(version("v"), F.lit("-")),
                    F.lit("+"),
                    F.coalesce(version("a"), F.lit("-")),
                    F.lit(":"),
                    F.coalesce(_sha(F.when(reason.isNull(), text)), F.lit("none")),
                ),
                text,
                reason,
                F.when(~v_ok, F.col("v_detail")).otherwise(F.col("a_detail")),
            ))

    return joined.select("item_id", F.explode(F.array(*structs)).alias("s")).select(
        "item_id", "s.feature_set", F.lit(model_id).alias("model_id"), "s.source_version", "s.text", "s.reason",
        "s.detail",
    )


def media_sources(items: DataFrame, feature_set: str, model_id: str, settings: dict[str, Any]) -> DataFrame:
    """Items -> (item_id, feature_set, model_id, source_version, path, reason, detail) for a media set.

    Items whose probe failed carry that reason; `audio_raw` for an item without an audio track carries
    `no_audio_stream` (an audio-only file, probe `no_video_stream`, is embedded for `audio_raw`).
    """
    if feature_set not in MEDIA_FEATURE_SETS:
        raise ValueError(f"{feature_set!r} is not a media feature set ({MEDIA_FEATURE_SETS})")
    cols = set(items.columns)
    mtime = (
        F.coalesce(F.unix_millis(F.col("video_mtime").cast("timestamp")).cast("string"), F.lit("-"))
        if "video_mtime" in cols
        else F.lit("-")
    )
    size = F.coalesce(F.col("size_bytes").cast("string"), F.lit("-")) if "size_bytes" in cols else F.lit("-")
    probe = F.coalesce(F.col("probe_status"), F.lit("ok")) if "probe_status" in cols else F.lit("ok")
    probe_detail = F.col("probe_detail") if "probe_detail" in cols else F.lit(None).cast("string")
    reason = F.when(_blank(F.col("video_path")), F.lit("missing_file"))
    if feature_set == "audio_raw":
        # an audio-only file (probe: no_video_stream) still has a soundtrack to embed
        reason = reason.when(~probe.isin("ok", "no_video_stream"), probe)
        if "has_audio" in cols:
            reason = reason.when(F.col("has_audio") == F.lit(False), F.lit("no_audio_stream"))
    else:
        reason = reason.when(probe != "ok", probe)
    return items.select(
        "item_id",
        F.lit(feature_set).alias("feature_set"),
        F.lit(model_id).alias("model_id"),
        F.concat(size, F.lit(":"), mtime, F.lit("@" + settings_tag(settings))).alias("source_version"),
        F.col("video_path").alias("path"),
        reason.alias("reason"),
        F.when(reason.isNotNull(), probe_detail).alias("detail"),
    )


# ----------------------------------------------------------------------------- model workers


def _worker_setup(torch_threads: Optional[int]) -> None:
    n = torch_threads
    if not n:
        try:
            from pyspark import TaskContext

            ctx = TaskContext.get()
            n = ctx.cpus() if ctx is not None else 1
        except Exception:  # pragma: no cover - outside Spark
            n = 1
    limit_torch_threads(int(n))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass


def _result(row: Any, vec: Optional[np.ndarray] = None, reason: Optional[str] = None, detail: Any = None) -> dict:
    if vec is not None:
        if not np.isfinite(vec).all():
            reason, detail, vec = "non_finite_vector", "the encoder returned NaN/inf", None
        elif not np.any(vec):
            reason, detail, vec = "zero_vector", "the encoder returned an all-zero vector", None
    return {
        "item_id": row.item_id,
        "feature_set": row.feature_set,
        "model_id": row.model_id,
        "source_version": row.source_version,
        "dim": int(vec.shape[0]) if vec is not None else None,
        "vector": vec.astype(np.float32).tolist() if vec is not None else None,
        "reason": reason,
        "detail": None if detail is None else str(detail)[:_DETAIL_MAX],
    }


def _encode_rows(rows: list, inputs: list, encode: Callable[[list], np.ndarray]) -> list[dict]:
    """Encode a batch; if the batch fails, encode item by item so one bad input fails alone."""
    try:
        vecs = encode(inputs)  # (B, D)
        return [_result(r, v) for r, v in zip(rows, vecs)]
    except Exception as batch_exc:  # noqa: BLE001 - isolate the bad item below
        log.warning("batch of %d failed (%s); retrying item by item", len(rows), batch_exc)
    out = []
    for r, x in zip(rows, inputs):
        try:
            out.append(_result(r, encode([x])[0]))
        except Exception as exc:  # noqa: BLE001
            out.append(_result(r, reason="embed_error", detail=f"{type(exc).__name__}: {exc}"))
    return out


def _frame(results: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(results, columns=[f.name for f in EMBED_OUT_SCHEMA.fields])


def text_worker(resolved: ResolvedModel, cfg: EmbedConfig) -> Worker:
    """mapInPandas fn: (item_id, feature_set, model_id, source_version, text) -> EMBED_OUT_SCHEMA rows."""
    t = cfg.text
    opts = dict(
        batch_size=t.batch_size, normalize=t.normalize, max_seq_length=t.max_seq_length,
        instruction=t.passage_instruction, dtype=t.dtype, local_files_only=cfg.local_files_only,
    )
    threads = cfg.torch_threads

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from captionrec.features.text import TextEncoder

        _worker_setup(threads)
        device = task_device()
        key = f"text|{resolved.location}|{device}|{sorted(opts.items())}"
        enc = cached_model(key, lambda: TextEncoder(resolved, device=device, **opts))
        for pdf in batches:
            if pdf.empty:
                continue
            rows = list(pdf.itertuples(index=False))
            yield _frame(_encode_rows(rows, pdf["text"].tolist(), enc.encode))

    return fn


def _load_frames(path: str, v: Any) -> np.ndarray:
    from captionrec.media import sample_frames

    sample = sample_frames(to_local_path(path), num_frames=v.num_frames, window_s=v.window_s, max_pixels=v.max_pixels)
    return sample.frames  # (T, H, W, 3) uint8 RGB


def _load_audio(path: str, sample_rate: int, window_s: float) -> np.ndarray:
    from captionrec.media import load_audio

    audio = load_audio(to_local_path(path), sample_rate=sample_rate, window_s=window_s)  # (S,) float32 mono
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def _media_results(
    pdf: pd.DataFrame,
    load: Callable[[str], Any],
    encode: Callable[[list], np.ndarray],
    batch_size: int,
    threads: int,
) -> Iterator[dict]:
    """Decode rows in a bounded thread pool (PyAV releases the GIL) while batches are encoded."""

    def safe_load(path: str) -> tuple[Any, Optional[tuple[str, str]]]:
        try:
            return load(path), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded reason
            reason = getattr(exc, "reason", None) or "decode_error"
            return None, (reason, f"{type(exc).__name__}: {exc}")

    rows = list(pdf.itertuples(index=False))
    batch_rows: list = []
    batch_inputs: list = []
    window = max(batch_size * 2, threads)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        queue: deque = deque()
        it = iter(rows)

        def fill() -> None:
            while len(queue) < window:
                r = next(it, None)
                if r is None:
                    return
                queue.append((r, pool.submit(safe_load, r.path)))

        fill()
        while queue:
            r, fut = queue.popleft()
            fill()
            data, err = fut.result()
            if err is not None:
                yield _result(r, reason=err[0], detail=err[1])
                continue
            batch_rows.append(r)
            batch_inputs.append(data)
            if len(batch_rows) >= batch_size:
                yield from _encode_rows(batch_rows, batch_inputs, encode)
                batch_rows, batch_inputs = [], []
    if batch_rows:
        yield from _encode_rows(batch_rows, batch_inputs, encode)


def videomae_worker(resolved: ResolvedModel, cfg: EmbedConfig) -> Worker:
    """mapInPandas fn: (item_id, feature_set, model_id, source_version, path) -> EMBED_OUT_SCHEMA rows."""
    v = cfg.videomae
    threads, decode_threads, local_only = cfg.torch_threads, cfg.decode_threads, cfg.local_files_only

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from captionrec.features.videomae import VideoMAEEncoder

        _worker_setup(threads)
        device = task_device()
        key = f"videomae|{resolved.location}|{device}|{v.dtype}|{v.batch_size}"
        enc = cached_model(
            key,
            lambda: VideoMAEEncoder(resolved, device=device, num_frames=v.num_frames, batch_size=v.batch_size,
                                    dtype=v.dtype, local_files_only=local_only),
        )
        for pdf in batches:
            if not pdf.empty:
                yield _frame(list(_media_results(pdf, lambda p: _load_frames(p, v), enc.encode, v.batch_size,
                                                 decode_threads)))

    return fn


def audio_worker(resolved: ResolvedModel, cfg: EmbedConfig) -> Worker:
    """mapInPandas fn: (item_id, feature_set, model_id, source_version, path) -> EMBED_OUT_SCHEMA rows."""
    a = cfg.audio_raw
    threads, decode_threads, local_only = cfg.torch_threads, cfg.decode_threads, cfg.local_files_only

    def fn(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from captionrec.features.audio_raw import ASTEncoder

        _worker_setup(threads)
        device = task_device()
        key = f"ast|{resolved.location}|{device}|{a.dtype}|{a.pooling}|{a.chunk_s}|{a.min_chunk_s}|{a.batch_size}"
        enc = cached_model(
            key,
            lambda: ASTEncoder(resolved, device=device, chunk_s=a.chunk_s, min_chunk_s=a.min_chunk_s,
                               pooling=a.pooling, batch_size=a.batch_size, dtype=a.dtype, local_files_only=local_only),
        )
        for pdf in batches:
            if not pdf.empty:
                yield _frame(list(_media_results(pdf, lambda p: _load_audio(p, enc.sample_rate, a.window_s),
                                                 enc.encode, a.batch_size, decode_threads)))

    return fn


def _spread(df: DataFrame, n_rows: int, partitions: int, batch_size: int) -> DataFrame:
    """Round-robin over at most `partitions` partitions, never fewer than one batch per partition."""
    n = max(1, min(partitions, math.ceil(n_rows / max(1, batch_size))))
    return df.repartition(n)


def embed_texts(
    todo: DataFrame, resolved: ResolvedModel, cfg: EmbedConfig, n_rows: Optional[int] = None, profile: Any = None
) -> DataFrame:
    """(item_id, feature_set, model_id, source_version, text) -> EMBED_OUT_SCHEMA via the text encoder."""
    n_rows = todo.count() if n_rows is None else n_rows
    df = _spread(todo.select(*VERSION_KEYS, "text"), n_rows, cfg.partitions, cfg.text.batch_size)
    return map_in_pandas(df, text_worker(resolved, cfg), EMBED_OUT_SCHEMA, profile)


def embed_media(
    todo: DataFrame,
    feature_set: str,
    resolved: ResolvedModel,
    cfg: EmbedConfig,
    n_rows: Optional[int] = None,
    profile: Any = None,
) -> DataFrame:
    """(item_id, feature_set, model_id, source_version, path) -> EMBED_OUT_SCHEMA via VideoMAE or AST."""
    worker = {"videomae": videomae_worker, "audio_raw": audio_worker}[feature_set]
    batch = cfg.videomae.batch_size if feature_set == "videomae" else cfg.audio_raw.batch_size
    n_rows = todo.count() if n_rows is None else n_rows
    df = _spread(todo.select(*VERSION_KEYS, "path"), n_rows, cfg.partitions, batch)
    return map_in_pandas(df, worker(resolved, cfg), EMBED_OUT_SCHEMA, profile)


# ----------------------------------------------------------------------------- checks and outputs


def check_dims(new: DataFrame, existing: Optional[DataFrame] = None) -> dict[tuple[str, str], int]:
    """One dim per (feature_set, model_id) over new and existing vectors, and len(vector) == dim for new ones.

    Reads only the `dim` column of `existing`. Returns {(feature_set, model_id): dim}; raises
    FeatureDimError naming the offending feature set and model.
    """
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
        if r["bad"]:
            raise FeatureDimError(
                f"feature set {r['feature_set']!r} with model {r['model_id']!r}: a vector's length differs from its dim"
            )
        if len(r["dims"]) != 1:
            raise FeatureDimError(
                f"feature set {r['feature_set']!r} with model {r['model_id']!r} would hold vectors of dims "
                f"{list(r['dims'])}; all vectors of one feature set and model must share one dim "
                "(did a model folder change under the same model id?)"
            )
        out[(r["feature_set"], r["model_id"])] = int(r["dims"][0])
    return out


def to_item_features(results: DataFrame) -> DataFrame:
    """Successful worker rows -> the item_features schema."""
    return results.where(F.col("reason").isNull() & F.col("vector").isNotNull()).select(
        "item_id",
        "feature_set",
        "model_id",
        F.col("dim").cast("int").alias("dim"),
        F.col("vector").cast(T.ArrayType(T.FloatType())).alias("vector"),
        "source_version",
        F.current_timestamp().alias("created_at"),
    )


def to_feature_errors(rows: DataFrame) -> DataFrame:
    """Rows with a reason (sources or worker results) -> the feature_errors schema."""
    return rows.where(F.col("reason").isNotNull()).select(
        *VERSION_KEYS,
        "reason",
        F.substring(F.col("detail"), 1, _DETAIL_MAX).alias("detail"),
        F.current_timestamp().alias("seen_at"),
    )


# ----------------------------------------------------------------------------- the stage


def _read_optional(store, name: str) -> Optional[DataFrame]:
    return store.read(name) if store.exists(name) else None


def resolve_models(cfg: EmbedConfig) -> dict[str, ResolvedModel]:
    """Feature-set family -> resolved model, for the families `cfg.feature_sets` needs (driver side)."""
    out: dict[str, ResolvedModel] = {}
    if any(f in TEXT_FEATURE_SETS for f in cfg.feature_sets):
        out["text"] = resolve_model(cfg.text.model, cfg.tiny_models_dir)
    if "videomae" in cfg.feature_sets:
        out["videomae"] = resolve_model(cfg.videomae.model, cfg.tiny_models_dir)
    if "audio_raw" in cfg.feature_sets:
        out["audio_raw"] = resolve_model(cfg.audio_raw.model, cfg.tiny_models_dir)
    return out


def plan_sources(src: DataFrame, existing: Optional[DataFrame], failed: Optional[DataFrame]) -> DataFrame:
    """Add `state` to source rows: "missing" (a reason, no input to embed), "done" (a vector for this
    source_version exists), "failed" (this source_version already failed; pass `failed=None` to retry)
    or "todo"."""
    df = src
    state = F.when(F.col("reason").isNotNull(), F.lit("missing"))
    for name, table in (("_done", existing), ("_failed", failed)):
        if table is not None:
            df = df.join(table.select(*VERSION_KEYS).distinct().withColumn(name, F.lit(True)), VERSION_KEYS, "left")
            state = state.when(F.col(name).isNotNull(), F.lit(name[1:]))
    return df.withColumn("state", state.otherwise(F.lit("todo"))).drop("_done", "_failed")


def run(cfg: Config, spark: SparkSession, store) -> dict:
    """Embed what changed; MERGE vectors into item_features and failures into feature_errors."""
    ecfg = cfg.embed
    if not store.exists("items"):
        raise MissingInputError(f"table 'items' not found at {store.location('items')}: run `captionrec ingest` first")
    items = store.read("items")
    captions = _read_optional(store, "captions")
    if captions is None and any(f.startswith("mllm_") for f in ecfg.feature_sets):
        log.warning("table 'captions' not found: mllm_* feature sets get reason 'no_caption' (run `captionrec caption`)")
    existing = _read_optional(store, ITEM_FEATURES)
    old_errors = _read_optional(store, FEATURE_ERRORS)
    models = resolve_models(ecfg)
    log.info("embed models: %s", {k: f"{m.model_id} ({m.location})" for k, m in models.items()})

    sources: list[DataFrame] = []
    if "text" in models:
        sources.append(text_sources(items, captions, ecfg.feature_sets, models["text"].model_id, ecfg)
                       .withColumnRenamed("text", "payload"))
    for fs, settings in (("videomae", videomae_settings(ecfg)), ("audio_raw", audio_settings(ecfg))):
        if fs in models:
            sources.append(media_sources(items, fs, models[fs].model_id, settings).withColumnRenamed("path", "payload"))
    src = sources[0]
    for s in sources[1:]:
        src = src.unionByName(s)
    planned = plan_sources(src, existing, None if ecfg.retry_failed else old_errors).localCheckpoint(eager=True)
    states = planned.groupBy("feature_set", "state", "reason").count().collect()
    counts: dict[str, int] = {}
    for r in states:
        if r["state"] == "todo":
            counts[r["feature_set"]] = counts.get(r["feature_set"], 0) + r["count"]
    summary: dict[str, Any] = {
        "models": {k: m.model_id for k, m in models.items()},
        "to_embed": dict(sorted(counts.items())),
        "up_to_date": sum(r["count"] for r in states if r["state"] == "done"),
        "skipped_failed": sum(r["count"] for r in states if r["state"] == "failed"),
        "missing_inputs": {f"{r['feature_set']}:{r['reason']}": r["count"]
                           for r in sorted(states, key=lambda r: (r["feature_set"], r["reason"] or ""))
                           if r["state"] == "missing"},
    }
    log.info("embed plan: %s", summary)

    # Model work: one mapInPandas per encoder over the rows to embed.
    todo = planned.where(F.col("state") == "todo")
    profile = profile_for(spark, ecfg.gpu.enabled, ecfg.gpu.task_amount, ecfg.gpu.task_cpus, ecfg.gpu.executor_amount)
    outputs: list[DataFrame] = []
    n_text = sum(v for k, v in counts.items() if k in TEXT_FEATURE_SETS)
    if n_text:
        t = todo.where(F.col("feature_set").isin(*TEXT_FEATURE_SETS)).withColumnRenamed("payload", "text")
        outputs.append(embed_texts(t, models["text"], ecfg, n_text, profile))
    for fs in MEDIA_FEATURE_SETS:
        if counts.get(fs):
            m = todo.where(F.col("feature_set") == fs).withColumnRenamed("payload", "path")
            outputs.append(embed_media(m, fs, models[fs], ecfg, counts[fs], profile))

    inserted = updated = 0
    new: Optional[DataFrame] = None
    worker_errors: Optional[DataFrame] = None
    if outputs:
        results = outputs[0]
        for o in outputs[1:]:
            results = results.unionByName(o)
        results = results.localCheckpoint(eager=True)  # the model work runs once, here
        new = to_item_features(results)
        dims = check_dims(new, existing)
        summary["dims"] = {f"{fs}/{mid}": d for (fs, mid), d in dims.items()}
        outcome = results.groupBy("feature_set", "reason").count().collect()
        summary["embedded"] = {r["feature_set"]: r["count"] for r in sorted(outcome, key=lambda r: r["feature_set"])
                               if r["reason"] is None}
        summary["failed"] = {f"{r['feature_set']}:{r['reason']}": r["count"] for r in outcome if r["reason"] is not None}
        if summary["embedded"]:
            res = store.upsert(ITEM_FEATURES, new, FEATURE_KEYS)
            inserted, updated = res.inserted, res.updated
            summary["item_features_version"] = res.version
        else:
            new = None
        worker_errors = to_feature_errors(results)

    # Failures: missing inputs + worker failures; only new (key, source_version, reason) rows are written.
    errors = to_feature_errors(planned.where(F.col("state") == "missing"))
    if worker_errors is not None:
        errors = errors.unionByName(worker_errors)
    if old_errors is not None:
        errors = errors.join(old_errors.select(*VERSION_KEYS, "reason"), [*VERSION_KEYS, "reason"], "left_anti")
    errors_pdf = errors.select(*[f.name for f in FEATURE_ERRORS_SCHEMA.fields]).toPandas()  # small: one row per failure
    errors = spark.createDataFrame(errors_pdf, FEATURE_ERRORS_SCHEMA)
    resolved_n = 0
    if old_errors is not None and new is not None:
        ok_keys = new.select(*FEATURE_KEYS)
        resolved_n = old_errors.join(ok_keys, FEATURE_KEYS, "left_semi").count()
        if resolved_n:  # keys that now have a vector lose their error row: rewrite the (small) table
            keep = old_errors.join(ok_keys, FEATURE_KEYS, "left_anti").join(
                errors.select(*FEATURE_KEYS), FEATURE_KEYS, "left_anti")
            final = keep.select(*errors.columns).toPandas()
            store.overwrite(FEATURE_ERRORS, spark.createDataFrame(pd.concat([final, errors_pdf]), FEATURE_ERRORS_SCHEMA))
    if not resolved_n and len(errors_pdf):
        store.upsert(FEATURE_ERRORS, errors, FEATURE_KEYS)
    summary.update(
        {"inserted": inserted, "updated": updated, "errors_recorded": len(errors_pdf), "errors_resolved": resolved_n}
    )
    return summary


__all__ = [
    "EMBED_OUT_SCHEMA",
    "FEATURE_ERRORS",
    "FEATURE_ERRORS_SCHEMA",
    "FEATURE_KEYS",
    "FEATURE_SETS",
    "FeatureDimError",
    "ITEM_FEATURES",
    "ITEM_FEATURES_SCHEMA",
    "MissingInputError",
    "audio_worker",
    "check_dims",
    "embed_media",
    "embed_texts",
    "media_sources",
    "plan_sources",
    "resolve_models",
    "run",
    "select_captions",
    "text_sources",
    "text_worker",
    "to_feature_errors",
    "to_item_features",
    "videomae_worker",
]
