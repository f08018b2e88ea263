"""The paired bootstrap over test cases: pair two sides' cases by (window, user_idx, chunk), and a
percentile interval of the difference and the relative gain of their means. Pure pandas / numpy; the
report's gains and the analysis' per-class gains use it.

A side is one or more cases frames (contracts.CASE_COLUMNS; a run's cases artifact). A case's value
(`captionrec.evaluation.metrics.case_values` of its rank) is averaged over the runs (seeds) of a side. The
statistic is the mean over windows of each window's mean over cases; relative gain = A / B - 1. The bootstrap
resamples cases with replacement within each window (stratified, the same draw for both sides: paired) and
reads the percentile interval.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from captionrec.evaluation.metrics import case_values, parse_metric

KEYS = ["window", "user_idx", "chunk"]  # a test case of a run


def subset_mask(cases: pd.DataFrame, metric: str) -> np.ndarray:
    subset = parse_metric(metric)[0]
    cold = cases["cold"].to_numpy().astype(bool)
    return {"all": np.ones(len(cases), bool), "cold": cold, "warm": ~cold}[subset]


def _stratified_means(values: np.ndarray, groups: list[np.ndarray], idx: list[np.ndarray]) -> np.ndarray:
    """(B,) mean over strata of each stratum's resampled mean."""
    per = [values[g][i].mean(axis=1) for g, i in zip(groups, idx)]
    return np.mean(per, axis=0)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    strata: np.ndarray,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_cells: int = 4_000_000,
) -> dict[str, float]:
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
    out = {
        "a": A,
        "b": B,
        "diff": A - B,
        "diff_lo": float(diff_lo),
        "diff_hi": float(diff_hi),
        "rel": math.nan,
        "rel_lo": math.nan,
        "rel_hi": math.nan,
    }
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
