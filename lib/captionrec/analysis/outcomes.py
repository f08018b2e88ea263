"""Trained runs seen through the items: metrics per audio class of the target item, and win / loss cases of a
caption-feature run against its raw-feature baseline. Pure pandas / numpy over the runs' cases artifacts
(contracts.CASE_COLUMNS) and item index artifacts (contracts.ITEM_INDEX_ARTIFACT: item_idx - 1 -> item_id).

Per audio class: a case's value is the metric of its rank, averaged over the runs (seeds) of a feature set and
model; a class's value is the mean over its cases (pooled over windows: a class may have no case in a window).
Gains per class pair the two sides' cases by (window, user_idx, chunk) and reuse the report's stratified paired
bootstrap (`captionrec.evaluation.bootstrap`).

Win / loss: per (window, user_idx, chunk) the median rank over each side's runs; a win is a case the feature run
ranks within the top k and the baseline doesn't, a loss the reverse.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from captionrec import contracts as C
from captionrec.evaluation.bootstrap import KEYS as CASE_KEYS
from captionrec.evaluation.bootstrap import cluster_bootstrap, paired_cases
from captionrec.evaluation.metrics import case_values

log = logging.getLogger(__name__)

KEYS = list(CASE_KEYS)
CASE_FIELDS = [
    "run_id",
    "features",
    "model",
    "seed",
    *KEYS,
    "target",
    "item_id",
    "cold",
    "rank",
    "rank_random",
    "rank_popularity",
]
OUTCOMES = ("win", "loss", "both", "neither")


def download_item_index(tracking_uri: str, run_id: str) -> list[str] | None:
    """A run's item index (item_idx - 1 -> item_id), or None when it logged none."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if C.ITEM_INDEX_ARTIFACT not in {a.path for a in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        data = json.loads(Path(client.download_artifacts(run_id, C.ITEM_INDEX_ARTIFACT, tmp)).read_text())
    ids = data.get("item_ids") if isinstance(data, dict) else data
    if not isinstance(ids, list):
        raise ValueError(f"{C.ITEM_INDEX_ARTIFACT} of run {run_id}: expected {{'item_ids': [...]}} or a list")
    return [str(i) for i in ids]


def map_targets(targets: np.ndarray, index: list[str]) -> np.ndarray:
    """Item indices (1-based) -> item ids (None outside the index)."""
    ids = np.asarray(index, dtype=object)
    t = np.asarray(targets, dtype=np.int64)
    ok = (t >= 1) & (t <= len(ids))
    out = np.full(len(t), None, dtype=object)
    out[ok] = ids[t[ok] - 1]
    return out


def _grouped_notes(left_out: dict[str, list[str]], shown: int = 6) -> list[str]:
    """One note per reason: '<reason>: <n> run(s) left out: a, b, ... and k more'."""
    notes = []
    for reason, labels in left_out.items():
        more = f" and {len(labels) - shown} more" if len(labels) > shown else ""
        notes.append(f"{reason}: {len(labels)} run(s) left out: {', '.join(labels[:shown])}{more}")
    return notes


def collect_cases(
    runs: pd.DataFrame,
    cases_of: Callable[[str], pd.DataFrame | None],
    index_of: Callable[[str], list[str] | None],
) -> tuple[pd.DataFrame, list[str]]:
    """Every finished run's cases with the target's item id (CASE_FIELDS), and notes on the runs left out
    (one per reason) and on cases whose target is outside the run's item index."""
    frames, notes, left_out = [], [], {}
    for r in runs[runs["status"] == "FINISHED"].itertuples():
        label = f"{r.features} / {r.model} (run {r.run_id})"
        cases = cases_of(r.run_id)
        if cases is None or not len(cases):
            left_out.setdefault("no cases artifact (cases/test_w<k>.parquet)", []).append(label)
            continue
        index = index_of(r.run_id)
        if index is None:
            left_out.setdefault(f"no {C.ITEM_INDEX_ARTIFACT}, targets cannot be mapped to items", []).append(label)
            continue
        df = cases.copy()
        df["item_id"] = map_targets(df["target"].to_numpy(), index)
        unmapped = int(df["item_id"].isna().sum())
        if unmapped:
            notes.append(
                f"{label}: {unmapped} case(s) whose target is outside its {C.ITEM_INDEX_ARTIFACT} ({len(index)} items): left out"
            )
            df = df[df["item_id"].notna()]
        df = df.assign(run_id=r.run_id, features=r.features, model=r.model, seed=r.seed)
        frames.append(df[CASE_FIELDS])
    notes = _grouped_notes(left_out) + notes
    return (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CASE_FIELDS)), notes


def _with_class(cases: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    cls = classes.set_index("item_id")["audio_class"]
    return cases.assign(audio_class=cases["item_id"].map(cls).fillna("unknown"))


def class_metrics(cases: pd.DataFrame, classes: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per (features, model, audio class, and 'all'): runs, cases, hr@k / ndcg@k of the model and the
    baselines' hr@k on the same cases."""
    cols = [
        "features",
        "model",
        "audio_class",
        "runs",
        "cases",
        f"hr_{k}",
        f"ndcg_{k}",
        f"popularity_hr_{k}",
        f"random_hr_{k}",
    ]
    if cases.empty:
        return pd.DataFrame(columns=cols)
    df = _with_class(cases, classes)
    df = df.assign(
        hr=case_values(df["rank"].to_numpy(), f"hr@{k}"),
        ndcg=case_values(df["rank"].to_numpy(), f"ndcg@{k}"),
        pop=case_values(df["rank_popularity"].to_numpy(), f"hr@{k}"),
        rnd=case_values(df["rank_random"].to_numpy(), f"hr@{k}"),
    )
    per_case = df.groupby(["features", "model", "audio_class", *KEYS], as_index=False).agg(
        hr=("hr", "mean"), ndcg=("ndcg", "mean"), pop=("pop", "mean"), rnd=("rnd", "mean")
    )
    runs = df.groupby(["features", "model"])["run_id"].nunique()
    rows = []
    for (features, model), g in per_case.groupby(["features", "model"], sort=False):
        for cls, sub in [("all", g), *sorted(g.groupby("audio_class"), key=lambda t: t[0])]:
            rows.append(
                (
                    features,
                    model,
                    cls,
                    int(runs[(features, model)]),
                    len(sub),
                    sub["hr"].mean(),
                    sub["ndcg"].mean(),
                    sub["pop"].mean(),
                    sub["rnd"].mean(),
                )
            )
    return pd.DataFrame(rows, columns=cols)


def _sides(cases: pd.DataFrame, comparison: str, model: str) -> tuple[str, str, list[pd.DataFrame], list[pd.DataFrame]]:
    feature, baseline = (p.strip() for p in comparison.split(" vs "))
    on = cases[cases["model"] == model]
    side = lambda fs: [g for _, g in on[on["features"] == fs].groupby("run_id")]  # noqa: E731
    return feature, baseline, side(feature), side(baseline)


def class_gains(
    comparisons: Iterable[str],
    cases: pd.DataFrame,
    classes: pd.DataFrame,
    k: int,
    samples: int,
    confidence: float,
    seed: int,
) -> pd.DataFrame:
    """Per comparison x model x audio class (and 'all') x metric (hr@k, ndcg@k): relative gain with a paired
    bootstrap interval; rows that cannot be computed carry a note."""
    rows = []
    df = _with_class(cases, classes) if len(cases) else cases.assign(audio_class=[])
    for comp in comparisons:
        for model in sorted(df["model"].unique()):
            feature, baseline, a, b = _sides(df, comp, model)
            if not a or not b:
                rows.append(
                    {
                        "comparison": comp,
                        "model": model,
                        "audio_class": "all",
                        "metric": "—",
                        "cases": 0,
                        "note": f"no run of {feature if not a else baseline} with cases and an item index",
                    }
                )
                continue
            present = sorted(set(pd.concat(a)["audio_class"]) & set(pd.concat(b)["audio_class"]))
            for cls in ["all", *present]:
                pick = (lambda fr: fr) if cls == "all" else (lambda fr, c=cls: fr[fr["audio_class"] == c])  # noqa: E731
                for metric in (f"hr@{k}", f"ndcg@{k}"):
                    paired = paired_cases([pick(x) for x in a], [pick(x) for x in b], metric)
                    row = {
                        "comparison": comp,
                        "model": model,
                        "audio_class": cls,
                        "metric": metric,
                        "cases": len(paired),
                        "note": "",
                    }
                    if len(paired):
                        bs = cluster_bootstrap(
                            paired["a"].to_numpy(),
                            paired["b"].to_numpy(),
                            paired["window"].to_numpy(),
                            paired["user_idx"].to_numpy(),
                            samples,
                            confidence,
                            seed,
                        )
                        row.update(
                            feature_value=bs["a"],
                            baseline_value=bs["b"],
                            gain=bs["rel"],
                            gain_lo=bs["rel_lo"],
                            gain_hi=bs["rel_hi"],
                            diff=bs["diff"],
                            diff_lo=bs["diff_lo"],
                            diff_hi=bs["diff_hi"],
                        )
                        row["note"] = "baseline is 0: no relative gain" if bs["b"] == 0 else ""
                    rows.append(row)
    cols = [
        "comparison",
        "model",
        "audio_class",
        "metric",
        "cases",
        "feature_value",
        "baseline_value",
        "gain",
        "gain_lo",
        "gain_hi",
        "diff",
        "diff_lo",
        "diff_hi",
        "note",
    ]
    out = pd.DataFrame(rows).reindex(columns=cols)
    out["significant"] = (out["cases"] > 0) & ((out["diff_lo"] > 0) | (out["diff_hi"] < 0))
    return out


def _median_ranks(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames).groupby([*KEYS, "item_id"], as_index=False)["rank"].median()


def win_loss(pairs: Iterable[str], cases: pd.DataFrame, k: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(per-case outcomes, per (comparison, model) summary, notes). Outcome columns: comparison, model, KEYS,
    item_id, rank_feature, rank_baseline, outcome (win / loss / both / neither)."""
    per_case, summary, notes = [], [], []
    for comp in pairs:
        models = sorted(cases["model"].unique()) if len(cases) else []
        if not models:
            notes.append(f"{comp}: no run with cases and an item index")
        for model in models:
            feature, baseline, a, b = _sides(cases, comp, model)
            if not a or not b:
                notes.append(
                    f"{comp} ({model}): no run of {feature if not a else baseline} with cases and an item index"
                )
                continue
            j = _median_ranks(a).merge(_median_ranks(b), on=[*KEYS, "item_id"], suffixes=("_feature", "_baseline"))
            hit_a, hit_b = (
                case_values(j[c].to_numpy(), f"hr@{k}") > 0 for c in ("rank_feature", "rank_baseline")
            )  # HR@k's hit: within the top k
            j["outcome"] = np.select(
                [hit_a & ~hit_b, hit_b & ~hit_a, hit_a & hit_b], ["win", "loss", "both"], "neither"
            )
            j.insert(0, "model", model)
            j.insert(0, "comparison", comp)
            per_case.append(j)
            counts = j["outcome"].value_counts()
            summary.append(
                {
                    "comparison": comp,
                    "model": model,
                    "cases": len(j),
                    **{o: int(counts.get(o, 0)) for o in OUTCOMES},
                    "net": (int(counts.get("win", 0)) - int(counts.get("loss", 0))) / len(j) if len(j) else math.nan,
                }
            )
    cols = ["comparison", "model", *KEYS, "item_id", "rank_feature", "rank_baseline", "outcome"]
    out = pd.concat(per_case, ignore_index=True) if per_case else pd.DataFrame(columns=cols)
    return out[cols], pd.DataFrame(summary, columns=["comparison", "model", "cases", *OUTCOMES, "net"]), notes


def win_loss_items(outcomes: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per (comparison, model): the n items with the most net wins and the n with the most net losses
    (columns comparison, model, direction, item_id, cases, wins, losses, net)."""
    cols = ["comparison", "model", "direction", "item_id", "cases", "wins", "losses", "net"]
    if outcomes.empty:
        return pd.DataFrame(columns=cols)
    per = (
        outcomes.assign(wins=outcomes["outcome"] == "win", losses=outcomes["outcome"] == "loss")
        .groupby(["comparison", "model", "item_id"], as_index=False)
        .agg(cases=("outcome", "size"), wins=("wins", "sum"), losses=("losses", "sum"))
    )
    per["net"] = per["wins"] - per["losses"]
    picked = []
    for _, g in per.groupby(["comparison", "model"], sort=False):
        top = g[g["net"] > 0].sort_values(["net", "wins", "item_id"], ascending=[False, False, True]).head(n)
        low = g[g["net"] < 0].sort_values(["net", "losses", "item_id"], ascending=[True, False, True]).head(n)
        picked += [top.assign(direction="win"), low.assign(direction="loss")]
    return pd.concat(picked, ignore_index=True)[cols] if picked else pd.DataFrame(columns=cols)


def win_loss_cases(outcomes: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per (comparison, model): n win cases and n loss cases with the largest rank gap between the runs."""
    if outcomes.empty:
        return outcomes
    sel = outcomes[outcomes["outcome"].isin(["win", "loss"])]
    sel = sel.assign(gap=(sel["rank_feature"] - sel["rank_baseline"]).abs())
    sel = sel.sort_values(
        ["comparison", "model", "outcome", "gap", "window", "user_idx", "chunk"],
        ascending=[True, True, False, False, True, True, True],
        kind="stable",
    )
    return (
        sel.groupby(["comparison", "model", "outcome"], sort=False).head(n).drop(columns="gap").reset_index(drop=True)
    )
