"""Training throughput and full-ranking evaluation throughput, each against a baseline measured in the same run.

    python bench/bench_train.py                 # MicroLens-100k scale catalogue (19,738 items)
    python bench/bench_train.py --quick         # smaller, for a smoke run

Training (pure torch, the loop's own train step: model + sampled softmax with in-batch + uniform
negatives, AdamW): sequences/s and next-item targets/s of SASRec and Two-Tower, as a ratio to a plain
embedding-dot model (user state = the last item's embedding) run through the same step.
Evaluation: users/s of the batched full ranking (one matmul per batch, masks, rank by counting) against
a per-user loop (score one user, sort the catalogue, find the target); both give identical ranks.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from captionrec.config.train import NegativesConfig, TrainConfig  # noqa: E402
from captionrec.models import ItemRepresentation, build_model  # noqa: E402
from captionrec.training.loop import _TrainStep  # noqa: E402
from captionrec.training.metrics import full_ranking, naive_ranking  # noqa: E402


class PlainDot(nn.Module):
    """Baseline: the user state at position t is the embedding of item t (item-to-item dot product)."""

    def __init__(self, item_repr: ItemRepresentation):
        super().__init__()
        self.item_repr = item_repr

    def forward(self, seq: torch.Tensor, user_idx: torch.Tensor | None = None) -> torch.Tensor:
        return self.item_repr(seq)  # (B, T, D)

    def item_vectors(self) -> torch.Tensor:
        return self.item_repr.all_items()


def _batches(n_items: int, batch: int, seq_len: int, count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        s = torch.randint(1, n_items + 1, (batch, seq_len + 1), generator=g)
        lengths = torch.randint(2, seq_len + 2, (batch,), generator=g)
        pad = torch.arange(seq_len + 1).unsqueeze(0) < (seq_len + 1 - lengths).unsqueeze(1)
        out.append(s.masked_fill(pad, 0))  # left-padded like the sequences table
    return out


def _best_of(fn, rounds: int) -> float:
    """The fastest of `rounds` timings of fn() (other processes on a shared machine only add time)."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_train(name: str, model: nn.Module, cfg: TrainConfig, n_items: int, batches, rounds: int = 3, warmup: int = 2) -> dict:
    step = _TrainStep(model, cfg, n_items)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    users = torch.zeros(batches[0].shape[0], dtype=torch.long)
    counted = {"targets": 0}

    def run(bs):
        for b in bs:
            loss, m = step(b, users, gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
            counted["targets"] += m

    run(batches[:warmup])
    timed = batches[warmup:]
    counted["targets"] = 0
    dt = _best_of(lambda: run(timed), rounds)
    seqs = sum(b.shape[0] for b in timed)
    targets = counted["targets"] / rounds
    return {"name": name, "seq_per_s": seqs / dt, "targets_per_s": targets / dt, "seconds": dt}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=19738)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seq-len", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--eval-users", type=int, default=2048)
    p.add_argument("--naive-users", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per measurement; the fastest counts")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.items, a.steps, a.eval_users, a.naive_users = 2000, 6, 512, 64
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus; items {a.items}, "
          f"dim {a.dim}, seq_len {a.seq_len}, batch {a.batch}; best of {a.rounds} rounds")

    cfg = TrainConfig(max_seq_len=a.seq_len, dim=a.dim, layers=2, heads=2, dropout=0.2,
                      negatives=NegativesConfig(mode="both", num_uniform=128))
    batches = _batches(a.items, a.batch, a.seq_len, a.steps + 2)

    def repr_():
        return ItemRepresentation(a.items, a.dim, "id")

    rows = [bench_train("plain embedding-dot (baseline)", PlainDot(repr_()), cfg, a.items, batches, a.rounds)]
    for model in ("two_tower", "sasrec"):
        m = build_model(model, repr_(), num_users=1, max_seq_len=a.seq_len, dim=a.dim, layers=2, heads=2, dropout=0.2)
        rows.append(bench_train(model, m, cfg, a.items, batches, a.rounds))
    # feature-based items: a frozen 384-d vector per item through the projection MLP
    feats = torch.randn(a.items + 1, 384)
    m = build_model("sasrec", ItemRepresentation(a.items, a.dim, "feature", features=feats), num_users=1,
                    max_seq_len=a.seq_len, dim=a.dim, layers=2, heads=2)
    rows.append(bench_train("sasrec, feature items (384-d)", m, cfg, a.items, batches, a.rounds))
    base = rows[0]["seq_per_s"]
    print("\nTraining throughput (one process)")
    print(f"{'model':34s} {'sequences/s':>12s} {'targets/s':>11s} {'vs baseline':>12s}")
    for r in rows:
        print(f"{r['name']:34s} {r['seq_per_s']:12.1f} {r['targets_per_s']:11.1f} {r['seq_per_s'] / base:11.2f}x")

    # -- evaluation ------------------------------------------------------------------------------
    g = torch.Generator().manual_seed(1)
    model = build_model("sasrec", repr_(), num_users=1, max_seq_len=a.seq_len, dim=a.dim, layers=2, heads=2).eval()
    hist = _batches(a.items, a.eval_users, a.seq_len, 1, seed=2)[0]
    targets = torch.randint(1, a.items + 1, (a.eval_users,), generator=g)
    seen = hist[:, :-1].clone()
    seen[seen == targets.unsqueeze(1)] = 0
    n = a.naive_users
    with torch.no_grad():
        items = model.item_vectors()

        def with_forward():
            for i in range(0, a.eval_users, 512):
                states = model(hist[i : i + 512, :-1])[:, -1]
                full_ranking(states, items, targets[i : i + 512], seen[i : i + 512])

        states = model(hist[:, :-1])[:, -1]

        def ranking_only():
            return torch.cat([full_ranking(states[i : i + 512], items, targets[i : i + 512], seen[i : i + 512])
                              for i in range(0, a.eval_users, 512)])

        t_fast_total = _best_of(with_forward, a.rounds)
        t_fast = _best_of(ranking_only, a.rounds)
        t_slow = _best_of(lambda: naive_ranking(states[:n], items, targets[:n], seen[:n]), a.rounds)
        fast = ranking_only()
        slow = naive_ranking(states[:n], items, targets[:n], seen[:n])
    assert torch.equal(fast[:n], slow), "batched and per-user ranks differ"
    print(f"\nFull-ranking evaluation over {a.items} items")
    print(f"{'method':44s} {'users/s':>10s} {'vs baseline':>12s}")
    base_eval = n / t_slow
    print(f"{'per-user loop: score, sort, find (baseline)':44s} {base_eval:10.1f} {1.0:11.2f}x")
    print(f"{'batched matmul + mask + count (ranking only)':44s} {a.eval_users / t_fast:10.1f} {a.eval_users / t_fast / base_eval:11.2f}x")
    print(f"{'batched, incl. SASRec forward':44s} {a.eval_users / t_fast_total:10.1f} {a.eval_users / t_fast_total / base_eval:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
