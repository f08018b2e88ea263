"""The report's numbers: per (feature set, model) means over windows and seeds, and paired bootstrap
intervals of relative gains over test cases. Pure pandas / numpy.

Table: a row's value for a metric is the mean (and sample std) of that metric over every (run, window)
of the row's runs (the runs differ by seed), from the per-window values the runs logged.

Gains: "A vs B" pairs the test cases of A's runs and B's runs with the same model by (window, user_idx,
chunk). A case's value (HR@k = rank <= k, nDCG@k = 1 / log2(rank + 1) within k, MRR = 1 / rank) is
averaged over the seeds of a side. The statistic is the one the table shows: the mean over windows of
each window's mean over cases; relative gain = A / B - 1. The bootstrap resamples cases with replacement
within each window (stratified, the same draw for both sides: paired) and reads the percentile interval.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import pandas as pd

from captionrec import contracts as C

KEYS = ["window", "user_idx", "chunk"]
_METRIC = re.compile(r"^(cold_|warm_)?(?:(hr|ndcg)@(\d+)|(mrr))$")


def parse_metric(metric: str) -> tuple[str, str, Optional[int]]:
    """'cold_hr@10' -> ('cold', 'hr', 10); 'ndcg@10' -> ('all', 'ndcg', 10); 'mrr' -> ('all', 'mrr', None)."""
    m = _METRIC.match(metric)
    if not m:
        raise ValueError(f"unknown metric {metric!r}: expected [cold_|warm_](hr|ndcg)@k or mrr")
    subset = (m.group(1) or "all_").rstrip("_")
    if m.group(4):
        return subset, "mrr", None
    return subset, m.group(2), int(m.group(3))


def case_values(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Per-case values of a metric from 1-based ranks (the subset prefix is ignored here)."""
    _, kind, k = parse_metric(metric)
    r = np.asarray(ranks, dtype=np.float64)
    if kind == "mrr":
        return 1.0 / r
    hit = r <= k
    return hit.astype(np.float64) if kind == "hr" else np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)


def subset_mask(cases: pd.DataFrame, metric: str) -> np.ndarray:
    subset = parse_metric(metric)[0]
    cold = cases["cold"].to_numpy().astype(bool)
    return {"all": np.ones(len(cases), bool), "cold": cold, "warm": ~cold}[subset]


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count, NaN ignored."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summary_table(runs: pd.DataFrame, windows: pd.DataFrame, metrics: Iterable[str],
                  order: Optional[list[str]] = None) -> pd.DataFrame:
    """One row per (feature set, model) over its finished runs: runs, seeds, windows, and per metric
    `<m>_mean` / `<m>_std` for the model and `<baseline>_<m>_mean` / `_std` for each baseline."""
    done = runs[runs["status"] == "FINISHED"]
    rows = []
    for (features, model), grp in done.groupby(["features", "model"], sort=False):
        ids = set(grp["run_id"])
        w = windows[windows["run_id"].isin(ids)]
        row = {"features": features, "model": model, "runs": len(grp), "seeds": int(grp["seed"].nunique()),
               "windows": int(w["window"].nunique())}
        for metric in metrics:
            name = C.metric_name(metric)
            for series in ("model", *C.BASELINES):
                vals = w.loc[(w["metric"] == metric) & (w["series"] == series), "value"]
                mean, std, _ = mean_std(vals)
                prefix = "" if series == "model" else f"{series}_"
                row[f"{prefix}{name}_mean"], row[f"{prefix}{name}_std"] = mean, std
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    rank = {fs: i for i, fs in enumerate(order or [])}
    table["_o"] = table["features"].map(lambda f: rank.get(f, len(rank)))
    return table.sort_values(["_o", "features", "model"]).drop(columns="_o").reset_index(drop=True)


@dataclass
class Gain:
    comparison: str
    feature: str
    baseline: str
    model: str
    metric: str
    feature_value: float = math.nan
    baseline_value: float = math.nan
    gain: float = math.nan  # relative: feature / baseline - 1
    gain_lo: float = math.nan
    gain_hi: float = math.nan
    diff: float = math.nan  # absolute: feature - baseline
    diff_lo: float = math.nan
    diff_hi: float = math.nan
    cases: int = 0
    feature_runs: int = 0
    baseline_runs: int = 0
    note: str = ""

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes 0."""
        return bool(self.cases) and (self.diff_lo > 0 or self.diff_hi < 0)


def _stratified_means(values: np.ndarray, groups: list[np.ndarray], idx: list[np.ndarray]) -> np.ndarray:
    """(B,) mean over strata of each stratum's resampled mean."""
    per = [values[g][i].mean(axis=1) for g, i in zip(groups, idx)]
    return np.mean(per, axis=0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, strata: np.ndarray, samples: int = 1000,
                     confidence: float = 0.95, seed: int = 0, chunk_cells: int = 4_000_000) -> dict[str, float]:
    """Point estimates and percentile intervals of rel = A/B - 1 and diff = A - B, where A and B are the
    means over strata of per-stratum case means; cases are resampled within strata, paired."""
    a, b, strata = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(strata)
    groups = [np.nonzero(strata == s)[0] for s in np.unique(strata)]
    groups = [g for g in groups if len(g)]
    if not groups:
        raise ValueError("paired_bootstrap: no cases")
    A = float(np.mean([a[g].mean() for g in groups]))
    B = float(np.mean([b[g].mean() for g in groups]))
    rng = np.random.default_rng(seed)
    per_draw = sum(len(g) for g in groups)
    step = max(1, chunk_cells // per_draw)
    boot_a, boot_b = [], []
    for start in range(0, samples, step):
        n = min(step, samples - start)
        idx = [rng.integers(0, len(g), size=(n, len(g))) for g in groups]
        boot_a.append(_stratified_means(a, groups, idx))
        boot_b.append(_stratified_means(b, groups, idx))
    ba, bb = np.concatenate(boot_a), np.concatenate(boot_b)
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    diff_lo, diff_hi = np.percentile(ba - bb, q)
    out = {"a": A, "b": B, "diff": A - B, "diff_lo": float(diff_lo), "diff_hi": float(diff_hi),
           "rel": math.nan, "rel_lo": math.nan, "rel_hi": math.nan}
    if B > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = ba / bb - 1.0
        rel = rel[np.isfinite(rel)]
        out["rel"] = A / B - 1.0
        if rel.size >= 0.9 * ba.size:  # intervals from (almost) every draw only
            out["rel_lo"], out["rel_hi"] = (float(x) for x in np.percentile(rel, q))
    return out


def paired_cases(side_a: list[pd.DataFrame], side_b: list[pd.DataFrame], metric: str) -> pd.DataFrame:
    """Cases of both sides joined on (window, user_idx, chunk): columns a, b (averaged over each side's
    runs) and window, restricted to the metric's subset (cold / warm / all)."""

    def side(frames: list[pd.DataFrame], name: str) -> pd.DataFrame:
        parts = []
        for df in frames:
            keep = subset_mask(df, metric)
            part = df.loc[keep, KEYS].copy()
            part[name] = case_values(df.loc[keep, "rank"].to_numpy(), metric)
            parts.append(part)
        return pd.concat(parts).groupby(KEYS, as_index=False)[name].mean()

    return side(side_a, "a").merge(side(side_b, "b"), on=KEYS, how="inner")


def gains(comparisons: Iterable[str], runs: pd.DataFrame, cases_of: Callable[[str], Optional[pd.DataFrame]],
          metrics: Iterable[str], samples: int, confidence: float, seed: int) -> list[Gain]:
    """Every comparison x model x metric; a comparison that cannot be computed carries a note saying why."""
    done = runs[runs["status"] == "FINISHED"]
    out: list[Gain] = []
    for comp in comparisons:
        feature, baseline = (p.strip() for p in comp.split(" vs "))
        for model in sorted(done["model"].unique()):
            fa = done[(done["features"] == feature) & (done["model"] == model)]["run_id"].tolist()
            fb = done[(done["features"] == baseline) & (done["model"] == model)]["run_id"].tolist()
            for metric in metrics:
                g = Gain(comp, feature, baseline, model, metric, feature_runs=len(fa), baseline_runs=len(fb))
                out.append(g)
                if not fa or not fb:
                    g.note = f"no finished run of {feature if not fa else baseline}"
                    continue
                ca, cb = [cases_of(r) for r in fa], [cases_of(r) for r in fb]
                if any(c is None for c in ca + cb):
                    g.note = "no cases artifact (the train stage logged none)"
                    continue
                paired = paired_cases(ca, cb, metric)
                g.cases = len(paired)
                if not len(paired):
                    g.note = "no paired cases"
                    continue
                bs = paired_bootstrap(paired["a"].to_numpy(), paired["b"].to_numpy(), paired["window"].to_numpy(),
                                      samples, confidence, seed)
                g.feature_value, g.baseline_value = bs["a"], bs["b"]
                g.gain, g.gain_lo, g.gain_hi = bs["rel"], bs["rel_lo"], bs["rel_hi"]
                g.diff, g.diff_lo, g.diff_hi = bs["diff"], bs["diff_lo"], bs["diff_hi"]
                if bs["b"] == 0:
                    g.note = "baseline is 0: no relative gain"
    return out


def gains_frame(items: list[Gain]) -> pd.DataFrame:
    rows = [{**g.__dict__, "significant": g.significant} for g in items]
    return pd.DataFrame(rows, columns=[*Gain.__dataclass_fields__, "significant"])


def cold_warm_frame(runs: pd.DataFrame, windows: pd.DataFrame, cases_of: Callable[[str], Optional[pd.DataFrame]],
                    metric: str = "hr@10") -> pd.DataFrame:
    """features, model, subset, value: the metric on cold and warm targets per (feature set, model), each the
    mean over the runs' windows. Warm needs the cases artifacts; without them the rows are cold vs all."""
    rows = []
    for r in runs[runs["status"] == "FINISHED"].itertuples():
        cases = cases_of(r.run_id)
        if cases is not None:
            for subset in ("cold", "warm"):
                sel = cases[subset_mask(cases, f"{subset}_{metric}")]
                vals = case_values(sel["rank"].to_numpy(), metric)
                per_window = pd.Series(vals).groupby(sel["window"].to_numpy()).mean()
                rows.append((r.features, r.model, subset, float(per_window.mean()) if len(per_window) else math.nan))
            continue
        w = windows[(windows["run_id"] == r.run_id) & (windows["series"] == "model")]
        for subset, name in (("cold", f"cold_{metric}"), ("all", metric)):
            rows.append((r.features, r.model, subset, mean_std(w.loc[w["metric"] == name, "value"])[0]))
    frame = pd.DataFrame(rows, columns=["features", "model", "subset", "value"])
    return frame.groupby(["features", "model", "subset"], as_index=False, sort=False)["value"].mean()
