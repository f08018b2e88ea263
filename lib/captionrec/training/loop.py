"""The training / evaluation loop, pure torch (Spark-free): one function runs on every rank.

Per window: build the model, train `epochs` x `steps_per_epoch` steps (the same count on every rank),
evaluate on the validation cases after each epoch (full ranking, metrics summed over ranks), keep the
best epoch by validation nDCG@10, then evaluate the test cases. Rank 0 logs to MLflow.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from captionrec.config.train import TrainConfig
from captionrec.models import ItemRepresentation, build_model, sampled_softmax_loss
from captionrec.training.distributed import all_reduce_sum, setup, teardown
from captionrec.training.loaders import SequenceSource, eval_rows, train_batches
from captionrec.training.metrics import MetricAccumulator, full_ranking, mean_std
from captionrec.training.splits import TEST, VALID, Window

log = logging.getLogger(__name__)


@dataclass
class TrainJob:
    """Everything a rank needs (made on the driver, pickled to each process)."""

    cfg: TrainConfig
    num_items: int
    num_users: int
    windows: list[Window]
    source: SequenceSource
    steps_per_epoch: dict[int, int]  # window -> optimiser steps per epoch, equal on every rank
    item_first_ms: np.ndarray  # (N + 1,) int64: first interaction of each item (candidate filter)
    features: Optional[np.ndarray] = None  # (N + 1, F) float32
    feature_mask: Optional[np.ndarray] = None  # (N + 1,) bool
    tracking: Any = None  # captionrec.tracking.TrackingSpec or None
    item_ids: Optional[list[str]] = None  # item_idx - 1 -> item_id, logged with the model
    stats: dict[str, float] = field(default_factory=dict)  # data counts logged as metrics


class _TrainStep(nn.Module):
    """model + loss in one forward, so DDP sees every parameter used in it."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, num_items: int):
        super().__init__()
        self.model = model
        self.cfg = cfg
        self.num_items = num_items

    def forward(self, seq: torch.Tensor, user_idx: torch.Tensor, generator: Optional[torch.Generator] = None):
        inp, tgt = seq[:, :-1], seq[:, 1:]  # (B, L), (B, L)
        states = self.model(inp, user_idx)  # (B, L, D)
        valid = (inp != 0) & (tgt != 0)  # (B, L): a real history predicting a real next item
        hidden, targets = states[valid], tgt[valid]  # (M, D), (M,)
        neg = self.cfg.negatives
        loss = sampled_softmax_loss(
            hidden, targets, self.model.item_repr, self.num_items, mode=neg.mode,
            num_uniform=neg.num_uniform, temperature=self.cfg.temperature, generator=generator,
        )
        return loss, targets.numel()


class InferenceModel(nn.Module):
    """What gets logged to MLflow: history (B, L) long, left-padded -> scores over items (B, N + 1).

    Column i scores item_idx i; column 0 (padding) is -inf. A user-id tower part, if any, is left out
    (user 0), since serving requests carry only the history.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        states = self.model(seq.long(), None)[:, -1]  # (B, D)
        scores = states @ self.model.item_vectors().T  # (B, N + 1)
        scores[:, 0] = float("-inf")
        return scores


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_model(job: TrainJob) -> nn.Module:
    cfg = job.cfg
    feats = None if job.features is None else torch.from_numpy(np.asarray(job.features, dtype=np.float32))
    mask = None if job.feature_mask is None else torch.from_numpy(np.asarray(job.feature_mask, dtype=bool))
    item_repr = ItemRepresentation(
        job.num_items, cfg.dim, cfg.item_repr, features=feats, feature_mask=mask,
        hidden=cfg.feature_hidden, dropout=cfg.dropout,
    )
    return build_model(
        cfg.model, item_repr, num_users=job.num_users, max_seq_len=cfg.max_seq_len, dim=cfg.dim,
        layers=cfg.layers, heads=cfg.heads, dropout=cfg.dropout, user_id_in_tower=cfg.user_id_in_tower,
    )


def candidate_mask(item_first_ms: np.ndarray, until_ms: int) -> torch.Tensor:
    """(N + 1,) bool: items that had appeared before `until_ms` (items of the future are not ranked)."""
    m = torch.from_numpy(np.asarray(item_first_ms) < until_ms)
    m[0] = False
    return m


@torch.no_grad()
def evaluate(
    model: nn.Module,
    rows: dict[str, np.ndarray],
    cfg: TrainConfig,
    candidates: Optional[torch.Tensor],
    device: torch.device,
    world: int = 1,
) -> dict[str, float]:
    """Full ranking of this rank's cases, summed over ranks. Every rank must call it (all-reduce)."""
    model.eval()
    acc = MetricAccumulator(cfg.ks)
    n = len(rows["target"])
    keep = np.ones(n, dtype=bool)
    if cfg.exclude_seen:
        keep &= rows["repeat"] == 0  # a repeat target would be masked out as "seen": not a next-item case
    dropped = float(n - keep.sum())
    idx = np.nonzero(keep)[0]
    if len(idx):
        items = model.item_vectors()  # (N + 1, D)
        cand = None if candidates is None else candidates.to(device)
        for i in range(0, len(idx), cfg.eval_batch_size):
            b = idx[i : i + cfg.eval_batch_size]
            seq = torch.from_numpy(rows["seq"][b, :-1]).to(device)  # (B, L) history
            targets = torch.from_numpy(rows["target"][b]).to(device)  # (B,)
            users = torch.from_numpy(rows["user_idx"][b]).to(device)  # (B,)
            seen = torch.from_numpy(rows["seen"][b]).to(device) if cfg.exclude_seen else None  # (B, S)
            states = model(seq, users)[:, -1]  # (B, D)
            ranks = full_ranking(states, items, targets, seen, cand)
            acc.add(ranks, torch.from_numpy(rows["cold"][b] == 1))
    total = all_reduce_sum(torch.cat([acc.as_tensor(), torch.tensor([dropped], dtype=torch.float64)]), world, device)
    acc.load_tensor(total[:-1])
    out = acc.result()
    out["repeat_dropped"] = float(total[-1])
    return out


def _flat(prefix: str, metrics: dict[str, float], suffix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}{suffix}": v for k, v in metrics.items()}


def train_window(job: TrainJob, window: Window, rank: int, world: int, device: torch.device, logger) -> dict[str, Any]:
    """Train and evaluate one window on this rank; returns its metrics (identical on every rank)."""
    cfg = job.cfg
    k = window.index
    seed_everything(cfg.seed + 7919 * k)
    model = make_model(job).to(device)
    step_module: nn.Module = _TrainStep(model, cfg, job.num_items)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed + 7919 * k + 104729 * rank)
    batches = train_batches(job.source, k, rank, world, cfg.batch_size, cfg.seed + 7919 * k)
    steps = job.steps_per_epoch[k]
    valid = eval_rows(job.source, k, VALID, rank, world)
    test = eval_rows(job.source, k, TEST, rank, world)
    protocol_loo = cfg.split.protocol == "loo"
    valid_cand = None if protocol_loo else candidate_mask(job.item_first_ms, window.test_start_ms)
    test_cand = None if protocol_loo else candidate_mask(job.item_first_ms, window.test_end_ms)
    select = f"ndcg@{10 if 10 in cfg.ks else cfg.ks[0]}"

    best, best_epoch, best_state = -math.inf, -1, None
    train_time, seqs, targets_seen = 0.0, 0, 0
    try:
        for epoch in range(cfg.epochs):
            step_module.train()
            t0 = time.perf_counter()
            loss_sum, n_targets, n_rows = 0.0, 0, 0
            for _ in range(steps):
                batch = next(batches)
                seq = batch["seq"].to(device)
                users = batch["user_idx"].to(device)
                loss, m = step_module(seq, users, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach()) * m
                n_targets += m
                n_rows += seq.shape[0]
            train_time += time.perf_counter() - t0
            tot = all_reduce_sum(torch.tensor([loss_sum, n_targets, n_rows], dtype=torch.float64), world, device)
            seqs += int(tot[2])
            targets_seen += int(tot[1])
            train_loss = float(tot[0]) / max(1.0, float(tot[1]))
            val = evaluate(model, valid, cfg, valid_cand, device, world)
            score = val.get(select, math.nan)
            logger.log_metrics({f"train_loss_w{k}": train_loss, f"valid_{select}_w{k}": score,
                                f"valid_hr@10_w{k}": val.get("hr@10", math.nan)}, step=epoch)
            if rank == 0:
                log.info("window %d epoch %d: loss %.4f valid %s %.4f", k, epoch, train_loss, select, score)
            # NaN (no validation case): keep the latest epoch.
            if not cfg.select_best_epoch or best_state is None or math.isnan(score) or score > best:
                best_epoch, best_state = epoch, copy.deepcopy(model.state_dict())
                best = score if not math.isnan(score) else best
        model.load_state_dict(best_state)
        val = evaluate(model, valid, cfg, valid_cand, device, world)
        tst = evaluate(model, test, cfg, test_cand, device, world)
    finally:
        close = getattr(batches, "close", None)
        if close:
            close()
    return {
        "window": k,
        "best_epoch": best_epoch,
        "valid": val,
        "test": tst,
        "train_seconds": train_time,
        "train_sequences_per_s": seqs / train_time if train_time else math.nan,
        "train_targets_per_s": targets_seen / train_time if train_time else math.nan,
        "model": model,
    }


def summarize(windows: list[dict[str, Any]], ks) -> dict[str, float]:
    """Mean and spread (sample std) over windows of every test metric."""
    out: dict[str, float] = {}
    names = list(windows[0]["test"].keys()) if windows else []
    for name in names:
        mean, std = mean_std([w["test"][name] for w in windows])
        out[f"test_{name}_mean"] = mean
        out[f"test_{name}_std"] = std
    return out


def run_rank(job: TrainJob) -> Optional[dict[str, Any]]:
    """The per-rank entry point (TorchDistributor target, or called directly with one process)."""
    from captionrec.tracking import RunLogger

    cfg = job.cfg
    rank, world, device = setup(cfg.use_gpu, cfg.torch_threads)
    results: list[dict[str, Any]] = []
    try:
        with RunLogger(job.tracking, rank) as logger:
            logger.log_metrics(job.stats)
            last_model = None
            for window in job.windows:
                res = train_window(job, window, rank, world, device, logger)
                last_model = res.pop("model")
                k = window.index
                logger.log_metrics(_flat("test_", res["test"], f"_w{k}"))
                logger.log_metrics(_flat("valid_best_", res["valid"], f"_w{k}"))
                logger.log_metrics({f"best_epoch_w{k}": res["best_epoch"],
                                    f"train_sequences_per_s_w{k}": res["train_sequences_per_s"],
                                    f"train_targets_per_s_w{k}": res["train_targets_per_s"]})
                results.append(res)
            summary = summarize(results, cfg.ks)
            logger.log_metrics(summary)
            if rank == 0 and last_model is not None:
                infer = InferenceModel(last_model.cpu())
                example = np.zeros((2, cfg.max_seq_len), dtype=np.int64)
                example[:, -1] = 1
                if job.item_ids is not None:
                    logger.log_dict({"item_ids": job.item_ids}, "item_index.json")
                logger.log_model(infer, example)
            run_id = logger.run_id
    finally:
        teardown()
    if rank != 0:
        return None
    return {"run_id": run_id, "windows": results, "summary": summary, "rank_world": world}
