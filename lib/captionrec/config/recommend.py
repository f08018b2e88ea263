"""Recommend stage config (owned with the recommend job).

    captionrec recommend run_id=<mlflow run id>       # serve that run's logged model
    captionrec recommend from_grid=latest             # refit the newest grid's best-by-validation configuration

Keys of this section may drop the `recommend.` prefix on the command line of its own stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from captionrec.config.common import GpuConfig
from captionrec.contracts import CAPTION_SOURCES


@dataclass(frozen=True)
class RecommendConfig:
    # The model: an MLflow run id whose logged model is served, or `latest` (from_grid): the newest grid's
    # configuration with the best mean validation metric (never a test metric), refit on every interaction.
    # run_id wins when both are set (conf/local.yaml sets from_grid: latest, `run_id=<id>` on the command line).
    run_id: str | None = None
    from_grid: str | None = "latest"
    # The validation metric the grid choice ranks by (mean over windows and seeds of valid_<metric>).
    select_metric: str = "ndcg@10"
    # The production refit: train overrides on top of the chosen child's config (num_processes=1 fits 2 cores).
    refit_overrides: tuple[str, ...] = ("num_processes=1", "log_model=true")
    # The registered model the refit is logged as (pyfunc) and the alias that moves only on a better
    # validation metric. Unity Catalog: <catalog>.<schema>.captionrec_recommender.
    registered_model: str = "captionrec_recommender"
    alias: str = "champion"
    # true: the refit takes the alias whatever the champion's validation value or metric name (re-baselines, e.g.
    # after select_metric changed: a champion tagged with another metric is otherwise never replaced); logged.
    force_promote: bool = False
    # Active users: an interaction in the `active_days` before `now` (null: the newest interaction's time).
    active_days: int = 30
    now: str | None = None
    k: int = 100
    # exact: full scores over the servable items; ann: the serving package's ItemIndex (FAISS by catalogue size),
    # built once on the driver, logged on the served run (ann_index/<catalogue digest>), loaded by the workers.
    retrieval: Literal["exact", "ann"] = "exact"
    # Users per Arrow batch inside a task, and the partitions the users are spread over (0: Spark's default).
    batch_size: int = 1024
    partitions: int = 0
    # delta-rs commits from the driver: the MERGE source is collected there. Above this many rows (users x k) the
    # users are split into blocks, one MERGE each (idempotent by key: a failed block is redone by the next run);
    # 0: always one MERGE. delta-spark MERGEs distributed: always one.
    write_block_rows: int = 2_000_000
    gpu: GpuConfig = field(default_factory=GpuConfig)
    # similar_items: per item and caption feature set, the top `similar_k` cosine neighbours in item_features.
    similar_k: int = 20
    similar_feature_sets: tuple[str, ...] = tuple(CAPTION_SOURCES)
    similar_batch_size: int = 2048
    recommendations_table: str = "recommendations"
    similar_items_table: str = "similar_items"

    def __post_init__(self) -> None:
        if not (self.run_id or self.from_grid):
            raise ValueError(
                "recommend needs a model: recommend.run_id=<run id> or recommend.from_grid=latest (or a grid run id)"
            )
        if self.k < 1 or self.similar_k < 1 or self.batch_size < 1 or self.similar_batch_size < 1:
            raise ValueError("recommend.k, similar_k, batch_size and similar_batch_size must be >= 1")
        if self.active_days < 1:
            raise ValueError(f"recommend.active_days must be >= 1, got {self.active_days}")
        if self.write_block_rows < 0:
            raise ValueError(f"recommend.write_block_rows must be >= 0, got {self.write_block_rows}")
        if self.partitions < 0:
            raise ValueError(f"recommend.partitions must be >= 0, got {self.partitions}")
        if self.now is not None:
            import datetime as dt

            try:
                dt.datetime.fromisoformat(self.now)
            except ValueError as exc:
                raise ValueError(f"recommend.now: {self.now!r} is not an ISO date/time") from exc
