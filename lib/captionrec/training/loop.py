"""The training / evaluation loop, pure torch (Spark-free): one function runs on every rank.

Per window (the paper's protocol, issue 10):
1. Epoch selection: a fresh model trains on the fit rows (before the validation week); after each epoch it
   ranks the validation cases; the epoch count with the best validation nDCG@10 wins (`patience` stops
   early). Only items of the fit data have their own id rows and are negatives.
2. Retrain (`train.retrain`, default on): a fresh model trains on every interaction before t_k (refit
   rows) for the chosen number of epochs; its training items are everything before t_k.
3. Test: the model ranks the test cases (full ranking over the catalogue); the training-free baselines
   (`captionrec.evaluation.baselines`: random, popularity, recent popularity, random-new, content kNN) rank
   the same cases with the same candidates. Cold = the target had no interaction before t_k.
The model only ever touches the declared interface (`calculate_loss`, `score_all`); rank 0 logs to MLflow
(names: `captionrec.contracts`, "MLflow run contract").
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from captionrec.config.train import TrainConfig
from captionrec.evaluation.metrics import warn_k_share
from captionrec.models import ItemRepresentation, NextItemObjective, Recommender, build_model
from captionrec.training.distributed import all_reduce_sum, setup, teardown
from captionrec.training.evaluate import evaluate_cases
from captionrec.training.loaders import SequenceSource, eval_rows, train_batches
from captionrec.training.progress import Progress
from captionrec.training.results import log_run_results, summarize
from captionrec.training.windows import FIT, REFIT, TEST, VALID, Window

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a rank needs (made on the driver, pickled to each process)."""

    cfg: TrainConfig
    num_items: int
    num_users: int
    windows: list[Window]
    source: SequenceSource
    steps: dict[tuple[int, int], int]  # (window, training role) -> optimiser steps per epoch, equal on every rank
    item_available_ms: np.ndarray  # (N + 1,) int64: from when each item is a candidate (training.candidates)
    counts: dict[int, dict[str, np.ndarray]]  # window -> {"fit", "prior"}: (N + 1,) interactions per item
    features: np.ndarray | None = None  # (N + 1, F) float32
    feature_mask: np.ndarray | None = None  # (N + 1,) bool
    tracking: Any = None  # captionrec.tracking.TrackingSpec or None
    item_ids: list[str] | None = None  # item_idx - 1 -> item_id, logged with the model
    stats: dict[str, float] = field(default_factory=dict)  # run-level data counts (no step)
    window_stats: dict[int, dict[str, float]] = field(default_factory=dict)  # per window (step = window)


@dataclass
class Context:
    """Where this rank runs."""

    rank: int
    world: int
    device: torch.device
    logger: Any  # captionrec.tracking.RunLogger
    progress: Progress = field(default_factory=Progress.off)  # rank 0's live progress (training.progress)


class LossStep(nn.Module):
    """DDP needs the loss computed inside the forward of the module it wraps: forward = calculate_loss."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        return self.model.calculate_loss(batch, generator)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_model(job: TrainJob, known: np.ndarray) -> Recommender:
    """A fresh recommender whose own id rows are the `known` items (items with a training interaction)."""
    cfg = job.cfg
    feats = None if job.features is None else torch.from_numpy(np.asarray(job.features, dtype=np.float32))
    mask = None if job.feature_mask is None else torch.from_numpy(np.asarray(job.feature_mask, dtype=bool))
    item_repr = ItemRepresentation(
        job.num_items,
        cfg.dim,
        cfg.item_repr,
        features=feats,
        feature_mask=mask,
        hidden=cfg.feature_hidden,
        dropout=cfg.dropout,
        known=torch.from_numpy(np.asarray(known, dtype=bool)),
        id_dropout=cfg.id_dropout,
    )
    return build_model(
        cfg.model,
        item_repr,
        num_users=job.num_users,
        max_seq_len=cfg.max_seq_len,
        dim=cfg.dim,
        layers=cfg.layers,
        heads=cfg.heads,
        dropout=cfg.dropout,
        user_id_in_tower=cfg.user_id_in_tower,
        sasrec_norm=cfg.sasrec_norm,
    )


def make_objective(cfg: TrainConfig, counts: np.ndarray) -> NextItemObjective:
    neg = cfg.negatives
    c = torch.from_numpy(np.asarray(counts, dtype=np.int64))
    return NextItemObjective(
        c > 0,
        c,
        mode=neg.mode,
        num_uniform=neg.num_uniform,
        temperature=cfg.temperature,
        logq=neg.logq,
        mask_user_items=neg.mask_user_items,
    )


def candidate_mask(item_available_ms: np.ndarray, until_ms: int) -> torch.Tensor:
    """(N + 1,) bool: the items available before `until_ms` (`split.candidates`: the whole catalogue, or the
    items interacted with by then); index 0 (padding) never."""
    m = torch.from_numpy(np.asarray(item_available_ms) < until_ms)
    m[0] = False
    return m


def _one_epoch(step_module, opt, batches, steps: int, ctx: Context, gen, timing: dict) -> float:
    """`steps` optimiser steps; returns the mean loss over every rank's targets."""
    step_module.train()
    t0 = time.perf_counter()
    loss_sum, n_targets, n_rows = 0.0, 0, 0
    for _ in range(steps):
        batch = {k: v.to(ctx.device) for k, v in next(batches).items()}
        loss, m = step_module(batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += float(loss.detach()) * m
        n_targets += m
        n_rows += batch["seq"].shape[0]
        ctx.progress.step(batch["seq"].shape[0])
    timing["seconds"] += time.perf_counter() - t0
    tot = all_reduce_sum(torch.tensor([loss_sum, n_targets, n_rows], dtype=torch.float64), ctx.world, ctx.device)
    timing["targets"] += int(tot[1])
    timing["sequences"] += int(tot[2])
    return float(tot[0]) / max(1.0, float(tot[1]))


def train_model(
    job: TrainJob,
    window: Window,
    role: int,
    epochs: int,
    ctx: Context,
    after_epoch: Callable[[int, Recommender], bool] | None = None,
) -> tuple[Recommender, dict[str, float]]:
    """A fresh model trained on the (window, role) rows for up to `epochs` epochs.

    Its training items (own id rows, negatives) are the items of those rows. after_epoch(epoch, model)
    runs after each epoch and returns False to stop.
    """
    cfg, k = job.cfg, window.index
    counts = job.counts[k]["fit" if role == FIT else "prior"]
    seed_everything(cfg.seed + 7919 * k)
    model = make_model(job, counts > 0).to(ctx.device)
    model.set_objective(make_objective(cfg, counts))
    step_module: nn.Module = LossStep(model)
    if ctx.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=ctx.device)
    gen.manual_seed(cfg.seed + 7919 * k + 104729 * ctx.rank)
    batches = train_batches(job.source, k, role, ctx.rank, ctx.world, cfg.batch_size, cfg.seed + 7919 * k)
    timing = {"seconds": 0.0, "sequences": 0, "targets": 0, "epochs": 0}
    name = "train" if role == FIT else "refit"
    steps = job.steps[(k, role)]
    try:
        with ctx.progress.phase(k, "fit" if role == FIT else "refit", epochs * steps, steps):
            for epoch in range(epochs):
                loss = _one_epoch(step_module, opt, batches, steps, ctx, gen, timing)
                timing["epochs"] = epoch + 1
                ctx.logger.log_metrics({f"{name}_loss_w{k}": loss}, step=epoch)
                if ctx.rank == 0:
                    log.info("window %d %s epoch %d: loss %.4f", k, name, epoch, loss)
                if after_epoch is not None and not after_epoch(epoch, model):
                    break
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()
    return model, timing


class EpochSelector:
    """after_epoch hook of the epoch-selection phase: rank the validation cases, keep the best state."""

    def __init__(self, job: TrainJob, window: Window, rows: dict[str, np.ndarray], ctx: Context):
        self.job, self.window, self.rows, self.ctx = job, window, rows, ctx
        cfg = job.cfg
        self.metric = f"ndcg@{10 if 10 in cfg.ks else cfg.ks[0]}"
        self.candidates = None if window.is_loo else candidate_mask(job.item_available_ms, window.test_start_ms)
        self.best, self.best_epoch, self.best_state, self.best_metrics = -math.inf, -1, None, {}
        self.since_best = 0
        self.t0 = time.perf_counter()  # wall and CPU time of the phase (training + validation) per epoch
        self.c0 = time.process_time()

    def __call__(self, epoch: int, model: Recommender) -> bool:
        cfg, k = self.job.cfg, self.window.index
        with self.ctx.progress.phase(k, "eval", detail="valid"):
            res = evaluate_cases(
                model,
                self.rows,
                ks=cfg.ks,
                exclude_seen=cfg.exclude_seen,
                candidates=self.candidates,
                popularity=None,
                device=self.ctx.device,
                world=self.ctx.world,
                seed=cfg.seed,
                batch_size=cfg.eval_batch_size,
                progress=self.ctx.progress,
            )
        score = res["metrics"].get(self.metric, math.nan)
        self.ctx.logger.log_metrics(
            {
                f"valid_{self.metric}_w{k}": score,
                f"valid_hr@10_w{k}": res["metrics"].get("hr@10", math.nan),
                f"elapsed_seconds_w{k}": time.perf_counter() - self.t0,
                f"elapsed_cpu_seconds_w{k}": time.process_time() - self.c0,
            },
            step=epoch,
        )
        # NaN (no validation case) or select_best_epoch=false: keep the latest epoch.
        if not cfg.select_best_epoch or self.best_state is None or math.isnan(score) or score > self.best:
            self.best_epoch, self.best_state, self.best_metrics = (
                epoch,
                copy.deepcopy(model.state_dict()),
                res["metrics"],
            )
            self.best = score if not math.isnan(score) else self.best
            self.since_best = 0
        else:
            self.since_best += 1
        return not (cfg.patience and self.since_best >= cfg.patience)


def train_window(job: TrainJob, window: Window, ctx: Context) -> dict[str, Any]:
    """Epoch selection, retraining and testing of one window; the results are identical on every rank."""
    cfg, k = job.cfg, window.index
    valid = eval_rows(job.source, k, VALID, ctx.rank, ctx.world)
    test = eval_rows(job.source, k, TEST, ctx.rank, ctx.world)
    selector = EpochSelector(job, window, valid, ctx)
    model, fit_timing = train_model(job, window, FIT, cfg.epochs, ctx, selector)
    epochs = selector.best_epoch + 1
    timing = fit_timing
    if cfg.retrain:  # a fresh model on everything before t_k, for the chosen number of epochs
        model, timing = train_model(job, window, REFIT, epochs, ctx)
    else:
        model.load_state_dict(selector.best_state)
    t_eval = time.perf_counter()
    with ctx.progress.phase(k, "eval", detail="test"):
        res = evaluate_cases(
            model,
            test,
            ks=cfg.ks,
            exclude_seen=cfg.exclude_seen,
            candidates=None if window.is_loo else candidate_mask(job.item_available_ms, window.test_end_ms),
            popularity=job.counts[k]["prior"],
            device=ctx.device,
            world=ctx.world,
            seed=cfg.seed + 7919 * k,
            batch_size=cfg.eval_batch_size,
            recent=None if window.is_loo else job.counts[k]["recent"],  # the 7 days before t_k (baselines.RECENT_DAYS)
            features=job.features if cfg.feature_sets else None,  # the content kNN's vectors: the run's (none for ID)
            feature_mask=job.feature_mask,
            progress=ctx.progress,
        )
    ctx.logger.log_metrics({f"test_eval_seconds_w{k}": time.perf_counter() - t_eval})  # full-catalogue ranking
    warnings_ = warn_k_share(res["cases"]["candidates"], cfg.ks, f"window {k} test: ", cfg.warn_k_share)
    secs = timing["seconds"]
    return {
        "window": k,
        "best_epoch": selector.best_epoch,
        "epochs_selected": fit_timing["epochs"],
        "train_epochs": epochs if cfg.retrain else fit_timing["epochs"],
        "valid": selector.best_metrics,
        "test": res["metrics"],
        "baselines": res["baselines"],
        "cases": res["cases"],
        "warnings": warnings_,
        "select_seconds": fit_timing["seconds"],
        "train_seconds": secs,
        "train_sequences_per_s": timing["sequences"] / secs if secs else math.nan,
        "train_targets_per_s": timing["targets"] / secs if secs else math.nan,
        "model": model,
    }


def _log_model(job: TrainJob, model: Recommender, logger) -> None:
    from captionrec.models import HistoryScorer

    model.objective = None  # the training objective is not part of the served model
    scorer = HistoryScorer(model.cpu()).eval()
    example = np.zeros((2, job.cfg.max_seq_len), dtype=np.int64)
    example[:, -1] = 1
    if job.item_ids is not None:
        logger.log_dict({"item_ids": job.item_ids}, "item_index.json")
    logger.log_model(scorer, example)


def run_rank(job: TrainJob) -> dict[str, Any] | None:
    """The per-rank entry point (TorchDistributor target, or called directly with one process)."""
    from captionrec.tracking import RunLogger

    cfg = job.cfg
    rank, world, device = setup(cfg.use_gpu, cfg.torch_threads)
    results: list[dict[str, Any]] = []
    try:
        with RunLogger(job.tracking, rank) as logger:
            progress = Progress(logger, cfg.progress_every_s, active=rank == 0, world=world)
            ctx = Context(rank, world, device, logger, progress)
            last_model = None
            for window in job.windows:
                res = train_window(job, window, ctx)
                last_model = res.pop("model")
                results.append(res)
            summary = summarize(results)
            log_run_results(logger, job.stats, job.window_stats, results, summary)
            if rank == 0 and last_model is not None:
                _log_model(job, last_model, logger)
            run_id = logger.run_id
    finally:
        teardown()
    if rank != 0:
        return None
    return {"run_id": run_id, "windows": results, "summary": summary, "rank_world": world}
