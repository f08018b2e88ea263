"""Experiment grid and report config (owned with the experiment and report jobs).

    captionrec experiment feature_sets=[id,title,mllm_av] models=[sasrec] seeds=[1,2,3]
    captionrec report parent_run_id=<id> bootstrap_samples=2000

Keys of these sections may drop their prefix on the command line of their own stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from captionrec.contracts import TRAIN_FEATURE_SETS

# The paper's feature sets (ID, title, raw video / audio, the three caption sets) and the ID fusion.
PAPER_FEATURE_SETS: tuple[str, ...] = (
    "id",
    "title",
    "videomae",
    "audio_raw",
    "mllm_video",
    "mllm_audio",
    "mllm_av",
    "id+mllm_av",
)
# Each caption feature beside the feature it should beat (report: relative gain with a bootstrap interval).
PAPER_COMPARISONS: tuple[str, ...] = (
    "mllm_video vs videomae",  # video caption vs raw video
    "mllm_audio vs audio_raw",  # audio caption vs raw audio
    "mllm_video vs title",  # captions vs title
    "mllm_audio vs title",
    "mllm_av vs title",
    "id+mllm_av vs id",  # fusion vs ID
)


def _check_feature_set(name: str, key: str) -> None:
    parts = [p.strip() for p in name.split("+")]
    unknown = [p for p in parts if p not in TRAIN_FEATURE_SETS]
    if not name or unknown:
        raise ValueError(
            f"{key}: unknown feature set(s) {unknown or [name]} in {name!r}; known: {', '.join(TRAIN_FEATURE_SETS)}"
        )


@dataclass(frozen=True)
class TuningConfig:
    # Trials per (feature set, model) row, the same for every row (1: no tuning, the train config as given).
    # Trial 0 is always the train config itself; trials 1.. are distinct points of the space below, drawn with
    # `seed` (random search; rows with the same space get the same points). Trials run on the first seed and
    # are chosen by the mean over windows of valid_<metric> (epochs chosen by validation inside each trial).
    budget: int = 4
    seed: int = 0
    metric: str = "ndcg@10"
    # The search space (values per train key); id_dropout is searched only for id+feature (fusion) rows.
    lr: tuple[float, ...] = (3e-4, 1e-3, 3e-3)
    dropout: tuple[float, ...] = (0.1, 0.2, 0.4)
    temperature: tuple[float, ...] = (0.05, 0.1, 0.5, 1.0)
    id_dropout: tuple[float, ...] = (0.0, 0.1, 0.3)

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ValueError(f"experiment.tuning.budget must be >= 1, got {self.budget}")
        for key in ("lr", "dropout", "temperature", "id_dropout"):
            if not getattr(self, key):
                raise ValueError(f"experiment.tuning.{key} is empty")


@dataclass(frozen=True)
class ExperimentConfig:
    # Children: every feature set x model x seed (a feature set may be a '+' fusion).
    feature_sets: tuple[str, ...] = PAPER_FEATURE_SETS
    models: tuple[Literal["sasrec", "two_tower"], ...] = ("sasrec", "two_tower")
    seeds: tuple[int, ...] = (42,)
    # Train settings of every child, as `key=value` overrides of the train section (over the profile's).
    train_overrides: tuple[str, ...] = ("log_model=false",)
    # The parent run's name (the grid key is appended).
    name: str = "grid"
    # Stop at the first failed child (default: record it as a FAILED run with its error and go on).
    stop_on_error: bool = False
    # After every child is recorded, the stage fails (the job exits non-zero, `captionrec.pipeline.StageFailed`)
    # when more than this many children failed; the summary and the error name them. 0: any failure fails it.
    max_failed: int = 0
    # Equal tuning of every (feature set, model) row on the validation weeks (captionrec.training.tuning).
    tuning: TuningConfig = field(default_factory=TuningConfig)

    def __post_init__(self) -> None:
        for key, values in (("feature_sets", self.feature_sets), ("models", self.models), ("seeds", self.seeds)):
            if not values:
                raise ValueError(f"experiment.{key} is empty")
            if len(set(values)) != len(values):
                raise ValueError(f"experiment.{key} names an entry twice: {list(values)}")
        for fs in self.feature_sets:
            _check_feature_set(fs, "experiment.feature_sets")
        if self.max_failed < 0:
            raise ValueError(f"experiment.max_failed must be >= 0, got {self.max_failed}")
        for item in self.train_overrides:
            if "=" not in item:
                raise ValueError(f"experiment.train_overrides: {item!r} is not key=value")


@dataclass(frozen=True)
class GalleryConfig:
    # Items shown (spread evenly over the items that have a video caption), or exactly these item ids.
    items: int = 12
    item_ids: tuple[str, ...] = ()
    # Thumbnail pixel budget (frames are decoded again at the caption row's frame times, at this size).
    thumb_pixels: int = 160 * 120
    # Captioner versions to show per kind (empty: the newest row per item and kind).
    captioner_versions: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReportConfig:
    # Which runs: the children of this grid run (null: the newest grid run of tracking.experiment) ...
    parent_run_id: str | None = None
    # ... or, when set, every run of the experiment matching this mlflow.search_runs filter
    # (e.g. "params.`train.model` = 'sasrec'").
    filter: str | None = None
    # Output folder: <out_dir>/<parent run id or 'filter-<hash>'>/ (report.md, report.csv, report.html, plots/ ...).
    out_dir: str = "reports"
    # Metrics of the table (the train stage's names; cold_ = cases whose target is a cold item).
    metrics: tuple[str, ...] = ("hr@10", "ndcg@10", "cold_hr@10")
    # "<feature set> vs <baseline feature set>": relative gain with a paired bootstrap interval over test cases.
    comparisons: tuple[str, ...] = PAPER_COMPARISONS
    bootstrap_samples: int = 1000
    confidence: float = 0.95
    seed: int = 0
    # Sections of report.md / report.html, in order (captionrec.report.sections.SECTIONS names; quality,
    # grounding, audio_classes and win_loss are the caption-quality analysis, configured by `analyze`).
    sections: tuple[str, ...] = (
        "summary",
        "table",
        "gains",
        "cold",
        "cost",
        "plots",
        "served",
        "quality",
        "grounding",
        "audio_classes",
        "win_loss",
        "tuning",
        "runs",
        "not_run",
    )
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    # Log the report's files as artifacts of the parent run (under `report/`).
    log_artifacts: bool = True

    def __post_init__(self) -> None:
        if self.bootstrap_samples < 100:
            raise ValueError(f"report.bootstrap_samples must be >= 100, got {self.bootstrap_samples}")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError(f"report.confidence must be in (0.5, 1), got {self.confidence}")
        if not self.metrics:
            raise ValueError("report.metrics is empty")
        for c in self.comparisons:
            parts = c.split(" vs ")
            if len(parts) != 2:
                raise ValueError(f"report.comparisons: {c!r} is not '<feature set> vs <baseline>'")
            for p in parts:
                _check_feature_set(p.strip(), "report.comparisons")
