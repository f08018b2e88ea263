"""Train stage config (owned with the train job).

`captionrec train model=sasrec features=title split.protocol=loo` — keys of this section may drop the
`train.` prefix on the command line.

`features` names what an item is made of: `id` (a learned embedding per item), a feature set from
`item_features` (`title`, `mllm_av`, ...: frozen vectors -> projection MLP), several sets joined with
`+` (their vectors are concatenated), or a fusion with `id` (`id+mllm_av`). The item representation
mode (`item_repr`: id | feature | id+feature) is derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from captionrec.contracts import TRAIN_FEATURE_SETS as KNOWN_FEATURE_SETS  # `id` + the embed stage's sets


@dataclass(frozen=True)
class NegativesConfig:
    # What the true next item is scored against (only items of the phase's training data are ever negatives):
    # full: a softmax over every training item (exact; the default: best on the sample, the synthetic data and
    #   ML-100K, see bench/README.md); in_batch: the other targets of the batch; uniform: `num_uniform`
    #   training items drawn uniformly per step (shared by the batch); both: in_batch + uniform.
    mode: Literal["full", "in_batch", "uniform", "both"] = "full"
    num_uniform: int = 128
    # Sampled modes: subtract log(expected copies of the item among the sampled negatives) from each logit,
    # each source with its own sampling probability (in-batch ~ training frequency, uniform = K / |items|).
    logq: bool = True
    # Never use a user's own other items (those in the user's rows of the batch) as that user's negatives.
    mask_user_items: bool = True

    def __post_init__(self) -> None:
        if self.mode in ("uniform", "both") and self.num_uniform < 1:
            raise ValueError(f"negatives.num_uniform must be >= 1 with mode={self.mode}, got {self.num_uniform}")


@dataclass(frozen=True)
class SplitConfig:
    # rolling: the paper's protocol. For window k, fit on interactions before t_k - window_days, validate on
    # [t_k - window_days, t_k) (epoch selection), test on [t_k, t_k + window_days).
    # loo: leave-one-out per user (last interaction = test, the one before = validation; MicroLens/RecBole).
    protocol: Literal["rolling", "loo"] = "rolling"
    num_windows: int = 3
    window_days: int = 7
    # ISO date/time (UTC) of t_0; null: derive it so that the last test window ends at the data's end.
    start: str | None = None
    # Test cases per user and window: every test interaction (`all`) or the user's first one (`first`).
    test_targets: Literal["all", "first"] = "all"
    # The history a test case sees (logged as the param train.split.test_history):
    # rolling: everything the user did before the target, earlier test-week items included (the model is
    #   never trained on them; this is today's next-item setting);
    # frozen: the history as it was at t_k, for every test case of the user (a "predict next week" setting).
    test_history: Literal["rolling", "frozen"] = "rolling"
    # What a rolling window's validation and test cases are ranked among (logged as train.split.candidates):
    # catalogue: every item of the `items` table (the items table has no source upload time, so every item
    #   counts as existing from the start); an item nobody watched is a candidate, and what happens in the test
    #   week never changes the set;
    # interacted: the items someone interacted with before the phase's end (the rule before issue 20: a new item
    #   is a candidate only once watched, so the cold distractors are the items watched that week).
    # Leave-one-out ignores it: it ranks every interacted item, as RecBole does.
    candidates: Literal["catalogue", "interacted"] = "catalogue"

    def __post_init__(self) -> None:
        if self.num_windows < 1:
            raise ValueError(f"split.num_windows must be >= 1, got {self.num_windows}")
        if self.window_days < 1:
            raise ValueError(f"split.window_days must be >= 1, got {self.window_days}")
        if self.start is not None:
            import datetime as dt

            try:
                dt.datetime.fromisoformat(self.start)
            except ValueError as exc:
                raise ValueError(f"split.start: {self.start!r} is not an ISO date/time") from exc


@dataclass(frozen=True)
class TrainConfig:
    model: Literal["sasrec", "two_tower"] = "sasrec"
    features: str = "id"
    # Keep only vectors of this embedding model in item_features (null: the newest model_id per set).
    feature_model_id: str | None = None

    # -- model -------------------------------------------------------------------------------
    max_seq_len: int = 20
    # Training rows: one row of max_seq_len + 1 items every `train_stride` items of a user's history, counted
    # back from the newest (null: max_seq_len, rows that do not overlap). With a smaller stride rows overlap
    # and a row trains only its newest `train_stride` targets, so each target is trained once per epoch and
    # sees at least max_seq_len - train_stride + 1 items of history (1: its full history, like RecBole's
    # one-sample-per-prefix); an epoch then costs about max_seq_len / train_stride times as much.
    train_stride: int | None = None
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    # Hidden width of the feature projection MLP (frozen vectors -> dim).
    feature_hidden: int = 256
    # SASRec's layout: "pre" (pre-LayerNorm blocks, Kang & McAuley's code) or "post" (RecBole's: LayerNorm on
    # the input vectors, post-LayerNorm blocks, no dropout inside the feed-forward, N(0, 0.02) linear layers).
    sasrec_norm: Literal["pre", "post"] = "pre"
    # Two-Tower: add a learned user-id embedding to the user tower (users unseen in training get none).
    user_id_in_tower: bool = False

    # -- optimisation ------------------------------------------------------------------------
    epochs: int = 20
    # Fixed optimiser steps per epoch on every rank (uneven DDP shards can't hang); 0: derive it from the
    # training rows (ceil(rows / (batch_size * world))), the same number on every rank.
    steps_per_epoch: int = 0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    temperature: float = 1.0
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    # Keep the epoch with the best validation nDCG@10 (else: the last epoch).
    select_best_epoch: bool = True
    # Stop the epoch-selection phase after this many epochs without a better validation score (0: never).
    patience: int = 0
    # The paper's protocol: after choosing the epoch count on the validation week, retrain a fresh model on
    # every interaction before t_k for that many epochs and test it (false: test the epoch-selection model,
    # trained without the validation week, as RecBole does).
    retrain: bool = True
    # Training only: replace an item's own id vector by the shared "unknown" vector with this probability,
    # so id+feature models learn to score items from their features (items without a training interaction
    # always use the unknown vector).
    id_dropout: float = 0.0

    # -- evaluation --------------------------------------------------------------------------
    split: SplitConfig = field(default_factory=SplitConfig)
    # Full ranking over all items; mask items the user already interacted with (repeat targets are
    # then dropped from the test cases and counted).
    exclude_seen: bool = True
    ks: tuple[int, ...] = (10, 20)
    eval_batch_size: int = 512
    # Warn (and tag the run) when a cutoff k is at least this share of the median number of candidates a
    # case is ranked among: HR@10 = 1.0 on a 12-item catalogue means nothing.
    warn_k_share: float = 0.2
    # Rank 0 logs a progress line (window, phase, epoch, step/steps, samples/s, ETA) and the same numbers as MLflow
    # metrics progress_* at least this often (checked after each training step or evaluation block).
    progress_every_s: float = 30.0

    # -- execution ---------------------------------------------------------------------------
    # 1: run in this process (no distributor); N > 1: TorchDistributor with N processes.
    num_processes: int = 2
    # TorchDistributor local_mode: processes on the driver (embedded default) vs barrier tasks on executors.
    local_mode: bool = True
    use_gpu: bool = False
    # CPU threads per training process (0: the cores divided among the local processes). Small models
    # train faster on 1 thread on a busy machine (OpenMP spin-waiting), so tests pin it to 1.
    torch_threads: int = 0
    loader: Literal["auto", "petastorm", "pyarrow"] = "auto"
    # petastorm converter cache: a URI every training process can read (shared storage on clusters: a
    # Unity Catalog Volume on Databricks, see conf/*.yaml); null: Spark's petastorm setting, else a temp
    # folder on local masters only (a cluster run without shared storage is an error).
    petastorm_cache_dir: str | None = None
    # Where the driver materialises (through Spark) the rows every training process reads; ranks never open a
    # table's own files. Null: ${storage.cache_dir}/train_inputs, else <storage.root>/_train_inputs (path-
    # addressed tables); catalog tables need one of the two (Databricks: a Volume). One subfolder per input
    # version and split/sequence settings, reused while those are unchanged (transforms/train_inputs.py).
    inputs_dir: str | None = None
    seed: int = 42
    # Derived table written per run (ints only: readable by pyarrow 14 / petastorm).
    sequences_table: str = "train_sequences"
    log_model: bool = True

    def __post_init__(self) -> None:
        parts = self.feature_parts
        if not parts or any(not p for p in parts):
            raise ValueError(f"features: {self.features!r} is not a feature-set name or a '+' fusion")
        unknown = [p for p in parts if p not in KNOWN_FEATURE_SETS]
        if unknown:
            raise ValueError(f"features: unknown feature set(s) {unknown}; known: {', '.join(KNOWN_FEATURE_SETS)}")
        if len(set(parts)) != len(parts):
            raise ValueError(f"features: {self.features!r} names a set twice")
        if self.max_seq_len < 1 or self.dim < 1 or self.layers < 1 or self.heads < 1:
            raise ValueError("max_seq_len, dim, layers and heads must be >= 1")
        if self.train_stride is not None and not 1 <= self.train_stride <= self.max_seq_len:
            raise ValueError(
                f"train_stride must be in 1..max_seq_len ({self.max_seq_len}) or null, got {self.train_stride}"
            )
        if self.model == "sasrec" and self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.epochs < 1 or self.batch_size < 1 or self.steps_per_epoch < 0 or self.eval_batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1, steps_per_epoch >= 0")
        if not self.ks or any(k < 1 for k in self.ks):
            raise ValueError(f"ks must be positive cutoffs, got {self.ks}")
        if self.num_processes < 1:
            raise ValueError(f"num_processes must be >= 1, got {self.num_processes}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if not 0.0 < self.warn_k_share <= 1.0:
            raise ValueError(f"warn_k_share must be in (0, 1], got {self.warn_k_share}")
        if self.progress_every_s <= 0:
            raise ValueError(f"progress_every_s must be > 0, got {self.progress_every_s}")

    @property
    def feature_parts(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.features.split("+"))

    @property
    def feature_sets(self) -> tuple[str, ...]:
        """The item_features sets to load (everything but `id`), in the order given."""
        return tuple(p for p in self.feature_parts if p != "id")

    @property
    def item_repr(self) -> str:
        """id | feature | id+feature."""
        has_id = "id" in self.feature_parts
        if not self.feature_sets:
            return "id"
        return "id+feature" if has_id else "feature"
