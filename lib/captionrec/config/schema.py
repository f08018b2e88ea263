"""The root config: one frozen dataclass per section. Defaults here are the embedded (local) profile's;
conf/<profile>.yaml overrides them. Stage sections live in their own modules (caption.py, embed.py, train.py, experiment.py, analyze.py,
recommend.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from captionrec.config.analyze import AnalyzeConfig
from captionrec.config.caption import CaptionConfig
from captionrec.config.embed import EmbedConfig
from captionrec.config.experiment import ExperimentConfig, ReportConfig
from captionrec.config.recommend import RecommendConfig
from captionrec.config.train import TrainConfig


@dataclass(frozen=True)
class SparkConfig:
    # "local[*]" etc. starts an embedded session; "active" uses the session spark-submit / Databricks made.
    master: str = "local[2]"
    app_name: str = "captionrec"
    driver_memory: str = "4g"
    shuffle_partitions: int = 4
    # Extra Spark settings, applied as given (e.g. Delta's extensions, GPU resource settings).
    conf: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageConfig:
    # auto: delta-spark when the session has Delta configured, else delta-rs (embedded default).
    backend: Literal["auto", "delta-rs", "delta-spark"] = "auto"
    # Table locations: <root>/<table> (a local path or a URI such as s3://bucket/prefix) ...
    root: str = "lakehouse"
    # ... or, with delta-spark, catalog tables <catalog>.<schema>.<table> (Unity Catalog / Hive metastore).
    catalog: str | None = None
    schema: str | None = None
    # Storage options passed to delta-rs for object stores (credentials come from the environment).
    options: Mapping[str, str] = field(default_factory=dict)
    # A commit that loses a race with a concurrent writer is retried from a fresh read this many times,
    # waiting retry_backoff_s * 2^attempt (jittered) in between.
    commit_retries: int = 5
    retry_backoff_s: float = 0.5
    # OPTIMIZE (compact small files) after a write once a table holds this many files; 0: never automatically.
    optimize_min_files: int = 0
    # Pre-staged model weights (Databricks: the models Volume) and shared scratch space every task can read
    # (Databricks: the cache Volume; the petastorm cache). Profiles refer to them as ${storage.models_dir}/<model>
    # and ${storage.cache_dir}/<what>, so one override moves every path (conf/databricks.yaml).
    models_dir: str | None = None
    cache_dir: str | None = None


VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".m4v",
    ".avi",
    ".mpg",
    ".mpeg",
    ".ts",
    ".flv",
    ".wmv",
    ".3gp",
    ".ogv",
)


@dataclass(frozen=True)
class DataConfig:
    # The source folder (a local path or a URI Hadoop can read) and the dataset name its files start with.
    source: str = "data/sample"
    name: str = "sample"
    # microlens: videos/, <name>_pairs.csv (user,item,timestamp), a titles CSV (id,title);
    # recbole: RecBole atomic files <name>.inter (user_id, item_id, timestamp) and <name>.item (item_id, a title).
    format: Literal["microlens", "recbole"] = "microlens"
    # Files inside `source`; None: the format's names (microlens titles: <name>_title_en.csv or
    # <name>_titles.csv, whichever exists; recbole: <name>.item / <name>.inter).
    titles_file: str | None = None
    interactions_file: str | None = None
    # auto: list `videos_dir` when it exists, else the dataset is interaction-only; required: a missing
    # folder is an error; none: interaction-only (items get probe_status `no_video_expected`).
    videos: Literal["auto", "required", "none"] = "auto"
    videos_dir: str = "videos"  # relative to `source`, or a URI / absolute path
    # Video files are <item_id><ext> for these extensions (case-insensitive); when one item has several,
    # the first extension in this order is used and the others are quarantined as `duplicate_video`.
    video_extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    # Unit of the interactions' timestamps: auto detects it per file (from the median value).
    timestamp_unit: Literal["auto", "ms", "s"] = "auto"
    # Earliest plausible interaction time (ISO date); later than now + 1 day is implausible too.
    # auto: 2000-01-01 for microlens, 1995-01-01 for recbole (MovieLens ratings start in 1995).
    earliest: str | date = "auto"  # YAML reads 2000-01-01 as a date: kept as its ISO string

    def __post_init__(self) -> None:
        if isinstance(self.earliest, date):
            object.__setattr__(self, "earliest", self.earliest.isoformat())
        if self.earliest != "auto":
            try:
                date.fromisoformat(self.earliest)
            except ValueError:
                raise ValueError(
                    f"earliest must be 'auto' or an ISO date (YYYY-MM-DD), got {self.earliest!r}"
                ) from None
        bad = [e for e in self.video_extensions if not e.startswith(".") or len(e) < 2]
        if bad:
            raise ValueError(f"video_extensions must look like '.mp4', got {bad}")


@dataclass(frozen=True)
class IngestConfig:
    # Videos probed per pandas batch, and partitions the probe spreads over.
    probe_batch_size: int = 16
    probe_partitions: int = 4


@dataclass(frozen=True)
class TrackingConfig:
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "captionrec"
    # Where artifacts of a new experiment go (None: MLflow's default next to the store).
    artifact_location: str | None = "mlartifacts"
    # The code's git commit for the runs' `git_commit` tag. None: `git rev-parse HEAD` of the checkout; set it
    # where the code runs from a wheel without .git (Databricks jobs pass ${bundle.git.commit}).
    git_commit: str | None = None
    # Model registry (None: MLflow's default for the tracking URI). `databricks-uc`: Unity Catalog, where
    # `registered_model` must be a three-part <catalog>.<schema>.<model> name.
    registry_uri: str | None = None
    # Register each logged model (train.log_model) under this name; None: log without registering.
    registered_model: str | None = None

    def __post_init__(self) -> None:
        if self.registry_uri == "databricks-uc" and self.registered_model is not None:
            parts = self.registered_model.split(".")
            if len(parts) != 3 or not all(parts):
                raise ValueError(
                    f"tracking.registered_model={self.registered_model!r}: Unity Catalog (registry_uri "
                    f"databricks-uc) needs <catalog>.<schema>.<model>"
                )


@dataclass(frozen=True)
class Config:
    profile: str = "local"
    spark: SparkConfig = field(default_factory=SparkConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
