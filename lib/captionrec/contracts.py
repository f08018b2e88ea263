"""The pipeline's public data contract, in one place: table names, keys and schemas, caption kinds,
feature-set names, the status/reason vocabulary, and what a train run logs to MLflow.

Stages, config, the report and the tests import these names instead of keeping copies. Nothing here
imports Spark: schemas are pyarrow schemas (`schema(name)`); `spark_schema(name)` converts one for
Spark when a stage needs it. Table and feature-set names are public: they appear in configs, MLflow
params and the report, so renaming one is a breaking change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

# ------------------------------------------------------------------------------------------------ tables

ITEMS = "items"
INTERACTIONS = "interactions"
QUARANTINE = "quarantine"
CAPTIONS = "captions"
ITEM_FEATURES = "item_features"
FEATURE_ERRORS = "feature_errors"
TRAIN_SEQUENCES = "train_sequences"  # derived per train run (versioned by its input tables' versions)

# MERGE keys of every stage-owned table.
KEYS: dict[str, tuple[str, ...]] = {
    ITEMS: ("item_id",),
    INTERACTIONS: ("user_id", "item_id", "ts"),
    QUARANTINE: ("source", "key", "reason"),
    CAPTIONS: ("item_id", "kind", "captioner_version"),
    ITEM_FEATURES: ("item_id", "feature_set", "model_id"),
    FEATURE_ERRORS: ("item_id", "feature_set", "model_id"),
}

_UTC = pa.timestamp("us", tz="UTC")


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


_TAG = pa.struct([_f("label", pa.string()), _f("score", pa.float64())])

SCHEMAS: dict[str, pa.Schema] = {
    ITEMS: pa.schema([
        _f("item_id", pa.string(), False),
        _f("title", pa.string()),
        _f("video_path", pa.string()),
        _f("duration_s", pa.float64()),
        _f("width", pa.int32()),
        _f("height", pa.int32()),
        _f("fps", pa.float64()),
        _f("has_audio", pa.bool_()),
        _f("video_codec", pa.string()),
        _f("audio_codec", pa.string()),
        _f("size_bytes", pa.int64()),
        _f("video_mtime", _UTC),
        _f("probe_status", pa.string()),
        _f("probe_detail", pa.string()),
        _f("ingested_at", _UTC),
    ]),
    INTERACTIONS: pa.schema([
        _f("user_id", pa.string(), False),
        _f("item_id", pa.string(), False),
        _f("ts", _UTC, False),
        _f("ts_ms", pa.int64(), False),
    ]),
    QUARANTINE: pa.schema([
        _f("source", pa.string(), False),
        _f("key", pa.string(), False),
        _f("reason", pa.string(), False),
        _f("detail", pa.string()),
        _f("seen_at", _UTC),
    ]),
    CAPTIONS: pa.schema([
        _f("item_id", pa.string(), False),
        _f("kind", pa.string(), False),
        _f("captioner_version", pa.string(), False),
        _f("status", pa.string(), False),
        _f("reason", pa.string()),
        _f("error", pa.string()),
        _f("text", pa.string()),
        _f("model_ids", pa.map_(pa.string(), pa.string())),
        _f("prompt_version", pa.string()),
        _f("frames_used", pa.int32()),
        _f("frame_times_s", pa.list_(pa.float64())),
        _f("transcript", pa.string()),
        _f("language", pa.string()),
        _f("sound_tags", pa.list_(_TAG)),
        _f("synthetic", pa.bool_()),
        _f("decode_s", pa.float64()),
        _f("model_s", pa.float64()),
        _f("total_s", pa.float64()),
        _f("device", pa.string()),
        _f("task_gpus", pa.string()),
        _f("settings", pa.string()),
        _f("created_at", _UTC),
        # The item's media fingerprint when captioned (`media_fingerprint`): a row for another fingerprint is stale.
        _f("media_fingerprint", pa.string()),
        _f("decode_errors", pa.int32()),  # packets that failed to decode (the item was still usable)
        _f("asr_confidence", pa.float64()),  # speech transcript confidence in [0, 1] (null: no speech)
        # The speech is doubtful: confidence below caption.audio.min_asr_confidence, or an English-only model
        # under `language: auto` (it cannot detect a language; `language` is then null).
        _f("low_confidence", pa.bool_()),
        _f("transcript_reason", pa.string()),  # why the transcript is left out of the caption (low_confidence)
    ]),
    ITEM_FEATURES: pa.schema([
        _f("item_id", pa.string(), False),
        _f("feature_set", pa.string(), False),
        _f("model_id", pa.string(), False),
        _f("dim", pa.int32(), False),
        _f("vector", pa.list_(pa.field("element", pa.float32(), nullable=False)), False),
        _f("source_version", pa.string(), False),
        _f("created_at", _UTC, False),
    ]),
    FEATURE_ERRORS: pa.schema([
        _f("item_id", pa.string(), False),
        _f("feature_set", pa.string(), False),
        _f("model_id", pa.string(), False),
        _f("source_version", pa.string(), False),
        _f("reason", pa.string(), False),
        _f("detail", pa.string()),
        _f("seen_at", _UTC, False),
    ]),
}

# Rows a worker returns (not tables): the ingest probe and the embed encoders.
PROBE_ROWS = "probe_rows"
EMBED_ROWS = "embed_rows"
SCHEMAS[PROBE_ROWS] = pa.schema([
    _f("item_id", pa.string(), False),
    _f("duration_s", pa.float64()),
    _f("width", pa.int32()),
    _f("height", pa.int32()),
    _f("fps", pa.float64()),
    _f("has_audio", pa.bool_()),
    _f("video_codec", pa.string()),
    _f("audio_codec", pa.string()),
    _f("probe_status", pa.string(), False),
    _f("probe_detail", pa.string()),
])
SCHEMAS[EMBED_ROWS] = pa.schema([
    _f("item_id", pa.string(), False),
    _f("feature_set", pa.string(), False),
    _f("model_id", pa.string(), False),
    _f("source_version", pa.string(), False),
    _f("dim", pa.int32()),
    _f("vector", pa.list_(pa.field("element", pa.float32(), nullable=False))),
    _f("reason", pa.string()),
    _f("detail", pa.string()),
])


def schema(name: str) -> pa.Schema:
    """The pyarrow schema of a table (or worker-row set) by name."""
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"no schema named {name!r}; known: {', '.join(sorted(SCHEMAS))}") from None


def columns(name: str) -> tuple[str, ...]:
    return tuple(schema(name).names)


def spark_schema(name: str) -> "StructType":
    """The Spark StructType of `schema(name)` (imports pyspark only when called)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema(name))


# ------------------------------------------------------------------------------------- statuses, reasons

# A per-row outcome (captions.status; the same words elsewhere):
OK = "ok"  # the row holds a result
SKIPPED = "skipped"  # a permanent reason: never retried for the same input
ERROR = "error"  # a transient reason: retried by the next run

# Why a video / audio track is unusable (items.probe_status, quarantine.reason, captions.reason).
MISSING_FILE = "missing_file"  # no file for an item that has a title (or the path does not exist)
EMPTY_FILE = "empty_file"  # zero bytes
NOT_A_VIDEO = "not_a_video"  # no known container signature (text, random bytes, an image)
CORRUPT = "corrupt"  # looks like a media container but cannot be opened / is truncated
NO_VIDEO_STREAM = "no_video_stream"  # opens, but holds no video track
NO_AUDIO_STREAM = "no_audio_stream"  # opens, but holds no audio track
SILENT = "silent"  # audio track below the silence threshold
DECODE_ERROR = "decode_error"  # opened, but (most of) the window could not be decoded
PROBE_ERROR = "probe_error"  # the prober itself failed unexpectedly

MEDIA_REASONS: frozenset[str] = frozenset(
    {MISSING_FILE, EMPTY_FILE, NOT_A_VIDEO, CORRUPT, NO_VIDEO_STREAM, NO_AUDIO_STREAM, SILENT, DECODE_ERROR}
)

# Model-side reasons.
OOM = "oom"  # out of memory even alone on the device
EMPTY_OUTPUT = "empty_output"  # the model produced no text
LOW_CONFIDENCE = "low_confidence"  # speech recognised below the confidence threshold (dropped from captions)
GENERIC_ERROR = "error"  # any other exception
EMBED_ERROR = "embed_error"  # an encoder call failed (feature_errors.reason)
ZERO_VECTOR = "zero_vector"  # the encoder returned an all-zero vector (never stored)
NON_FINITE_VECTOR = "non_finite_vector"  # the encoder returned NaN / inf (never stored)

# Permanent: the input itself is unusable; a re-run with the same input would fail the same way.
# (A missing file is permanent for its input: when the file appears, the item's fingerprint changes
# and the item is pending again.)
PERMANENT_REASONS: frozenset[str] = frozenset(
    {MISSING_FILE, EMPTY_FILE, NOT_A_VIDEO, CORRUPT, NO_VIDEO_STREAM, NO_AUDIO_STREAM, SILENT, EMPTY_OUTPUT,
     ZERO_VECTOR, NON_FINITE_VECTOR}
)
# Transient: worth retrying (memory pressure, a flaky read, a crashed model call).
TRANSIENT_REASONS: frozenset[str] = frozenset({DECODE_ERROR, PROBE_ERROR, OOM, GENERIC_ERROR, EMBED_ERROR})


def is_permanent(reason: str | None) -> bool:
    """True for reasons that a retry cannot fix; unknown reasons count as transient."""
    return reason in PERMANENT_REASONS


def status_of(reason: str | None) -> str:
    """ok (no reason), skipped (permanent reason) or error (transient reason)."""
    if reason is None:
        return OK
    return SKIPPED if is_permanent(reason) else ERROR


# Ingest quarantine reasons for rows of the source files.
MALFORMED_ROW = "malformed_row"
DUPLICATE_ITEM = "duplicate_item"
DUPLICATE_INTERACTION = "duplicate_interaction"
UNKNOWN_ITEM = "unknown_item"

# ------------------------------------------------------------------------------------ captions, features

# video + audio: the paper's two-stage pair; av: one omni-model pass over frames and soundtrack together.
CAPTION_KINDS: tuple[str, ...] = ("video", "audio", "av")

ID = "id"  # the learned-embedding pseudo feature set (no vectors in item_features)
TEXT_FEATURE_SETS: tuple[str, ...] = ("title", "mllm_video", "mllm_audio", "mllm_av", "mllm_omni")
MEDIA_FEATURE_SETS: tuple[str, ...] = ("videomae", "audio_raw")
FEATURE_SETS: tuple[str, ...] = TEXT_FEATURE_SETS + MEDIA_FEATURE_SETS  # sets the embed stage writes
# What the embed stage writes unless configured: every set but mllm_omni (its av captions are opt-in:
# caption.kinds must include av).
DEFAULT_FEATURE_SETS: tuple[str, ...] = tuple(f for f in FEATURE_SETS if f != "mllm_omni")
TRAIN_FEATURE_SETS: tuple[str, ...] = (ID, *FEATURE_SETS)  # what `train.features` may combine with '+'

# The items columns whose change means the video file changed (`size:mtime:probe_status`, "-" for nulls): a
# caption or media vector made for another fingerprint is stale.
MEDIA_FINGERPRINT_COLUMNS: tuple[str, ...] = ("size_bytes", "video_mtime", "probe_status")

# Caption kinds each caption feature set reads.
CAPTION_SOURCES: dict[str, tuple[str, ...]] = {
    "mllm_video": ("video",),
    "mllm_audio": ("audio",),
    "mllm_av": ("video", "audio"),
    "mllm_omni": ("av",),
}

# ---------------------------------------------------------------------------------- MLflow run contract
# What a train run logs (rank 0 only), so that the experiment grid and the report read runs by name.
#
# Metrics (MLflow names: '@' becomes '_', see `metric_name`):
#   test_<metric>            per window, step = window index (hr_10, ndcg_10, cold_hr_10, mrr, ...)
#   test_<baseline>_<metric> the same cases scored by a baseline, step = window (baselines below)
#   test_<metric>_mean/_std  over windows (no step)
# Artifacts:
#   cases/test_w<k>.parquet  one row per test case of window k (CASE_COLUMNS): the target's rank under
#                            the model and under each baseline; the report pairs runs on these rows.

BASELINES: tuple[str, ...] = ("random", "popularity")
CASE_COLUMNS: tuple[str, ...] = ("window", "user_idx", "chunk", "target", "cold", "rank", "rank_random", "rank_popularity")


def metric_name(name: str) -> str:
    """MLflow metric names may not contain '@': hr@10 -> hr_10."""
    return name.replace("@", "_")


def cases_artifact(window: int) -> str:
    return f"cases/test_w{int(window)}.parquet"
