"""The root config: one frozen dataclass per section. Defaults here are the embedded (local) profile's;
conf/<profile>.yaml overrides them. Stage sections live in their own modules (caption.py, embed.py, train.py, experiment.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

from captionrec.config.caption import CaptionConfig
from captionrec.config.embed import EmbedConfig
from captionrec.config.experiment import ExperimentConfig, ReportConfig
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
    catalog: Optional[str] = None
    schema: Optional[str] = None
    # Storage options passed to delta-rs for object stores (credentials come from the environment).
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    # A folder in MicroLens layout: videos/<item>.mp4, <name>_pairs.csv, <name>_title_en.csv.
    source: str = "data/sample"
    name: str = "sample"


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
    artifact_location: Optional[str] = "mlartifacts"


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
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
