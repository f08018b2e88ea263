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
RECOMMENDATIONS = "recommendations"  # the recommend stage: top-k items per active user
SIMILAR_ITEMS = "similar_items"  # the recommend stage: top-k cosine neighbours per item and feature set

# MERGE keys of every stage-owned table.
KEYS: dict[str, tuple[str, ...]] = {
    ITEMS: ("item_id",),
    INTERACTIONS: ("user_id", "item_id", "ts"),
    QUARANTINE: ("source", "key", "reason"),
    CAPTIONS: ("item_id", "kind", "captioner_version"),
    ITEM_FEATURES: ("item_id", "feature_set", "model_id"),
    FEATURE_ERRORS: ("item_id", "feature_set", "model_id"),
    # Every rewritten user gets ranks 1..k (item_id null past the user's candidates), so a MERGE replaces them all.
    RECOMMENDATIONS: ("user_id", "rank"),
    SIMILAR_ITEMS: ("item_id", "feature_set", "rank"),
}

_UTC = pa.timestamp("us", tz="UTC")


def _f(name: str, typ: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, typ, nullable=nullable)


_TAG = pa.struct([_f("label", pa.string()), _f("score", pa.float64())])
# One window's caption inside a video_full row (captions.segments); reason/error: why the window has no text.
_SEGMENT = pa.struct(
    [
        _f("index", pa.int32()),
        _f("start_s", pa.float64()),
        _f("end_s", pa.float64()),
        _f("text", pa.string()),
        _f("reason", pa.string()),
        _f("error", pa.string()),
        _f("frames_used", pa.int32()),
    ]
)

SCHEMAS: dict[str, pa.Schema] = {
    ITEMS: pa.schema(
        [
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
        ]
    ),
    INTERACTIONS: pa.schema(
        [
            _f("user_id", pa.string(), False),
            _f("item_id", pa.string(), False),
            _f("ts", _UTC, False),
            _f("ts_ms", pa.int64(), False),
        ]
    ),
    QUARANTINE: pa.schema(
        [
            _f("source", pa.string(), False),
            _f("key", pa.string(), False),
            _f("reason", pa.string(), False),
            _f("detail", pa.string()),
            _f("seen_at", _UTC),
        ]
    ),
    CAPTIONS: pa.schema(
        [
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
            # Kind video_full (caption.video.segments): the window captions this item caption was built from, in time
            # order (a list column on the item's one row, see captioning.kinds.video_full), how many windows were
            # captioned, whether the windows stop before the video's end (capped at max_windows), and the seconds
            # they cover.
            _f("segments", pa.list_(_SEGMENT)),
            _f("windows_used", pa.int32()),
            _f("truncated", pa.bool_()),
            _f("covered_s", pa.float64()),
        ]
    ),
    ITEM_FEATURES: pa.schema(
        [
            _f("item_id", pa.string(), False),
            _f("feature_set", pa.string(), False),
            _f("model_id", pa.string(), False),
            _f("dim", pa.int32(), False),
            _f("vector", pa.list_(pa.field("element", pa.float32(), nullable=False)), False),
            _f("source_version", pa.string(), False),
            _f("created_at", _UTC, False),
        ]
    ),
    FEATURE_ERRORS: pa.schema(
        [
            _f("item_id", pa.string(), False),
            _f("feature_set", pa.string(), False),
            _f("model_id", pa.string(), False),
            _f("source_version", pa.string(), False),
            _f("reason", pa.string(), False),
            _f("detail", pa.string()),
            _f("seen_at", _UTC, False),
        ]
    ),
}

SCHEMAS[RECOMMENDATIONS] = pa.schema(
    [
        _f("user_id", pa.string(), False),
        _f("rank", pa.int32(), False),
        _f("item_id", pa.string()),  # null: the user has fewer than k servable unseen items
        _f("score", pa.float32()),
        _f("run_id", pa.string(), False),  # the MLflow run whose model scored
        _f("model_name", pa.string()),  # registered model name / version (null: an unregistered run)
        _f("model_version", pa.string()),
        _f("feature_set", pa.string(), False),  # the model's train.features
        _f("interactions_version", pa.int64(), False),
        _f("item_features_version", pa.int64()),
        _f("created_at", _UTC, False),
    ]
)
SCHEMAS[SIMILAR_ITEMS] = pa.schema(
    [
        _f("item_id", pa.string(), False),
        _f("feature_set", pa.string(), False),
        _f("rank", pa.int32(), False),
        _f("neighbor_id", pa.string()),  # null: fewer than k other items have the set
        _f("score", pa.float32()),  # cosine similarity
        _f("model_id", pa.string(), False),
        _f("item_features_version", pa.int64(), False),
        _f("created_at", _UTC, False),
    ]
)

# Rows a worker returns (not tables): the ingest probe and the embed encoders.
PROBE_ROWS = "probe_rows"
EMBED_ROWS = "embed_rows"
SCHEMAS[PROBE_ROWS] = pa.schema(
    [
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
    ]
)
SCHEMAS[EMBED_ROWS] = pa.schema(
    [
        _f("item_id", pa.string(), False),
        _f("feature_set", pa.string(), False),
        _f("model_id", pa.string(), False),
        _f("source_version", pa.string(), False),
        _f("dim", pa.int32()),
        _f("vector", pa.list_(pa.field("element", pa.float32(), nullable=False))),
        _f("reason", pa.string()),
        _f("detail", pa.string()),
    ]
)

# The derived training table (pipeline/train.py writes it each run; ints only, so pyarrow 14 / petastorm
# read it). One row per training chunk or evaluation case, keyed by (window, role, user_idx, chunk).
# Roles: which part of a split window a row belongs to.
ROLE_FIT = 0  # training rows of the epoch-selection phase (interactions before the validation week)
ROLE_VALID = 1  # validation cases (the week before t_k): choose the epoch count
ROLE_TEST = 2  # test cases (the week from t_k)
ROLE_REFIT = 3  # training rows of the test phase: every interaction before t_k (train.retrain)
ROLE_NAMES: dict[int, str] = {ROLE_FIT: "fit", ROLE_VALID: "valid", ROLE_TEST: "test", ROLE_REFIT: "refit"}
_INT_LIST = pa.list_(pa.field("element", pa.int32()))
SCHEMAS[TRAIN_SEQUENCES] = pa.schema(
    [
        _f("window", pa.int32()),
        _f("role", pa.int32()),
        _f("user_idx", pa.int32()),
        _f("chunk", pa.int32()),
        _f("seq", _INT_LIST),
        _f("seq_len", pa.int32()),
        _f("new_targets", pa.int32()),
        _f("target", pa.int32()),
        _f("cold", pa.int32()),
        _f("repeat", pa.int32()),
        _f("seen", _INT_LIST),
    ]
)


# The sequences-table columns a training batch carries (both loaders; all ints).
TRAIN_BATCH_COLUMNS = ("user_idx", "seq", "new_targets")


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

# items.probe_status of an item of an interaction-only dataset (`data.videos=none`, or `auto` with no videos
# folder): no video was ever expected. Not a failure: ingest writes no quarantine row for it, and later stages
# skip such items (nothing to caption or embed from media) without writing error or skipped rows.
NO_VIDEO_EXPECTED = "no_video_expected"
NOT_APPLICABLE_STATUSES: frozenset[str] = frozenset({NO_VIDEO_EXPECTED})

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
    {
        MISSING_FILE,
        EMPTY_FILE,
        NOT_A_VIDEO,
        CORRUPT,
        NO_VIDEO_STREAM,
        NO_AUDIO_STREAM,
        SILENT,
        EMPTY_OUTPUT,
        ZERO_VECTOR,
        NON_FINITE_VECTOR,
    }
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
IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"  # before `data.earliest`, in the future, or of an unknown unit
DUPLICATE_VIDEO = "duplicate_video"  # two video files for one item id (e.g. 12.mp4 and 12.mkv): one is used

# ------------------------------------------------------------------------------------ captions, features

# video + audio: the paper's two-stage pair; av: one omni-model pass over frames and soundtrack together;
# video_full: the whole video, consecutive windows captioned and combined (caption.video.segments).
# The names only: each kind is a module of captionrec.captioning.kinds, whose KINDS registry must cover these
# (tests/captioning/test_caption_kinds.py checks it). A kind with no audio track records NO_AUDIO_STREAM, one whose track
# holds nothing (no samples, or below its silence threshold) SILENT (captioning.common.soundtrack).
VIDEO_FULL = "video_full"
CAPTION_KINDS: tuple[str, ...] = ("video", "audio", "av", VIDEO_FULL)

ID = "id"  # the learned-embedding pseudo feature set (no vectors in item_features)
TEXT_FEATURE_SETS: tuple[str, ...] = ("title", "mllm_video", "mllm_audio", "mllm_av", "mllm_omni", "mllm_video_full")
MEDIA_FEATURE_SETS: tuple[str, ...] = ("videomae", "audio_raw")
FEATURE_SETS: tuple[str, ...] = TEXT_FEATURE_SETS + MEDIA_FEATURE_SETS  # sets the embed stage writes
TRAIN_FEATURE_SETS: tuple[str, ...] = (ID, *FEATURE_SETS)  # what `train.features` may combine with '+'
# Sets embedded only when asked for (`embed.feature_sets`): their captions exist only when a caption option is on
# (mllm_omni: caption.kinds includes av; mllm_video_full: caption.video.segments.enabled).
OPT_IN_FEATURE_SETS: tuple[str, ...] = ("mllm_omni", "mllm_video_full")
DEFAULT_FEATURE_SETS: tuple[str, ...] = tuple(f for f in FEATURE_SETS if f not in OPT_IN_FEATURE_SETS)

# The items columns whose change means the video file changed (`size:mtime:probe_status`, "-" for nulls): a
# caption or media vector made for another fingerprint is stale.
MEDIA_FINGERPRINT_COLUMNS: tuple[str, ...] = ("size_bytes", "video_mtime", "probe_status")

# Caption kinds each caption feature set reads.
CAPTION_SOURCES: dict[str, tuple[str, ...]] = {
    "mllm_video": ("video",),
    "mllm_audio": ("audio",),
    "mllm_av": ("video", "audio"),
    "mllm_omni": ("av",),
    "mllm_video_full": (VIDEO_FULL,),
}

# ---------------------------------------------------------------------------------- MLflow run contract
# What a train run logs (rank 0 only), so that the experiment grid and the report read runs by name.
# A train run may be a child run: pipeline.train.run(cfg, spark, store, parent_run_id=..., tags=...)
# creates it under the parent (tag mlflow.parentRunId, the parent's experiment) and returns its run_id.
#
# Metric names (MLflow names: '@' becomes '_', see `metric_name`; <metric> is hr@k, ndcg@k for every k in
# train.ks, and mrr):
#   test_<metric>              per window, step = window index: the mean over test cases
#   test_user_<metric>         per window, step = window: the mean over users of each user's mean
#   test_cold_<metric>, test_cold_user_<metric>
#                              the same over cold cases (the target had no interaction before t_k)
#   test_<baseline>_<...>      every metric above for each baseline on the same cases, step = window
#   test_cases, test_users, test_cold_cases, test_cold_users, test_repeat_dropped
#                              per window, step = window: what the means are over
#   valid_<metric> ...         per window, step = window: the chosen epoch's validation metrics
#   best_epoch, train_epochs, train_seconds, train_sequences_per_s   per window, step = window
#   test_<name>_mean, test_<name>_std
#                              over windows (no step), for every per-window test_* name above but counts
#   train_loss_w<k>, refit_loss_w<k>, valid_ndcg_10_w<k>, valid_hr_10_w<k>
#                              learning curves of window k, step = epoch
#   progress_<name>            live progress while training (PROGRESS_METRICS; training.progress), step = rank 0's
#                              global counter of training steps and evaluation blocks
# NaN is never logged: a metric without cases (e.g. no cold case) is left out and listed in the tag
# `nan_metrics`. Tags: git_commit, model, features, item_repr, split_protocol, loader,
# delta_version.<table> (read before training: the versions trained on), warning.k_share (when a cutoff
# covers a large share of the candidates). Params: the flattened config (train.split.test_history, ...).
# Artifacts:
#   cases/test_w<k>.parquet  one row per test case of window k (CASE_COLUMNS): the target's rank under
#                            the model and under each baseline, and how many candidates it was ranked
#                            among; the report pairs runs on (window, user_idx, chunk).
#   model/                   the scorer (mlflow.pytorch.load_model: histories (B, L) -> scores (B, N + 1))
#   item_index.json          item_idx - 1 -> item_id

BASELINES: tuple[str, ...] = ("random", "popularity")
# Cold baselines (issue 20), logged the same way (test_<name>_<metric>, rank_<name> in the cases artifact) beside the
# two above and shown by the report's `cold` section: content kNN over the run's feature vectors (feature runs
# only), popularity in the 7 days before t_k (rolling windows only), random with the new items first.
COLD_BASELINES: tuple[str, ...] = ("knn", "recent_popularity", "random_new")
RECENT_POPULARITY_DAYS = 7  # recent_popularity counts the interactions of these days before t_k
ID_NO_COLD = "ID cannot score cold items"  # the report's cold cells of ID-only rows (cold items share one vector)
CASE_COLUMNS: tuple[str, ...] = (
    "window",
    "user_idx",
    "chunk",
    "target",
    "cold",
    "rank",
    "rank_random",
    "rank_popularity",
    "candidates",
)
# Cases-artifact columns written when the run ranked that baseline (runs before issue 20 have none of them).
OPTIONAL_CASE_COLUMNS: tuple[str, ...] = tuple(f"rank_{b}" for b in COLD_BASELINES)
# Live training progress (captionrec.training.progress): progress_phase is the index of the phase in PROGRESS_PHASES.
PROGRESS_PHASES: tuple[str, ...] = ("fit", "refit", "eval")
PROGRESS_METRICS: tuple[str, ...] = tuple(
    f"progress_{n}"
    for n in ("window", "phase", "epoch", "epochs", "step", "steps", "samples_per_s", "eta_seconds", "elapsed_seconds")
)


def metric_name(name: str) -> str:
    """MLflow metric names may not contain '@': hr@10 -> hr_10."""
    return name.replace("@", "_")


def cases_artifact(window: int) -> str:
    return f"cases/test_w{int(window)}.parquet"


# A train run's item index: {"item_ids": [...]}, position i holds the item id of item_idx i + 1 (the cases'
# `target`); the caption-quality analysis maps targets to items with it.
ITEM_INDEX_ARTIFACT = "item_index.json"

# ------------------------------------------------------------------------------- experiment grid runs
# `captionrec experiment` logs one parent run per grid and one child run per (feature set, model, seed)
# (MLflow nesting: tag mlflow.parentRunId); `captionrec report` reads them back by these names.
TAG_KIND = "captionrec.kind"  # GRID_RUN on the parent, CHILD_RUN on every child
GRID_RUN = "grid"
CHILD_RUN = "child"
STAGE_RUN = "stage"  # a caption / embed / ingest run recording what the stage cost (`tracking.cost`)
TAG_STAGE = "captionrec.stage"  # on a STAGE_RUN: the stage
REFIT_RUN = "refit"  # the recommend stage's production refit of the grid's chosen configuration
TAG_GRID_KEY = "captionrec.grid_key"  # hash of the grid's child keys: a re-run of the same grid finds its parent
TAG_CHILD_KEY = "captionrec.child_key"  # hash of the effective train config + input table locations/versions
TAG_ERROR = "captionrec.error"  # a failed child's error (the traceback is the artifact ERROR_ARTIFACT)
# Equal tuning (experiment.tuning): every trial and every seed of a chosen configuration is a child run tagged with
# its row ("<model> <features>"), trial number, the trial's values (JSON) and whether the row chose it
# ("true" / "false"; the grid's plan.json is authoritative when a run is reused by grids that chose differently).
TAG_ROW = "captionrec.row"
TAG_TRIAL = "captionrec.trial"
TAG_TRIAL_VALUES = "captionrec.trial_values"
TAG_TRIAL_CHOSEN = "captionrec.trial_chosen"
ERROR_ARTIFACT = "error.txt"
PLAN_ARTIFACT = "grid/plan.json"  # on the parent: every child (ran / reused / failed) and every skipped feature set
REPORT_ARTIFACTS = "report"  # on the parent: the report's files
