"""Paired comparisons of two sides' test cases: pair the cases by (window, user_idx, chunk) (checking that
both sides tested the same target), a user-level (cluster) bootstrap of the difference and the relative gain,
and Holm's correction over a family of comparisons. Pure pandas / numpy; the report's gains and the analysis'
per-class gains use it.

A side is one or more cases frames (contracts.CASE_COLUMNS; a run's cases artifact, one per seed). The
statistic is the one the report's table shows: per seed, the mean over windows of each window's mean over
cases; a side's value is the mean over its seeds; relative gain = A / B - 1.

`cluster_bootstrap` resamples USERS with replacement, each user carrying all of their cases in every window
(a user contributes several cases per window and appears in every window: their cases are not independent),
and the same users for both sides (paired). When a side has several seeds it resamples that side's seeds too,
independently of the users and of the other side's seeds (a two-way "pigeonhole" bootstrap, Owen 2007, for
users crossed with seeds): the interval then holds seed-to-seed variation as well. `holm` corrects a family of
such comparisons (normal p-values from the bootstrap's standard error; docs/protocol.md says why).

`case_bootstrap` is the earlier case-level one (cases resampled one by one within each window); it is kept for
leave-one-out data, where every user has exactly one case and the two coincide (bench/bench_recbole.py), and
as the reference the coverage test shows to be too narrow on user-correlated cases.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import pandas as pd

from captionrec.evaluation.metrics import case_values, parse_metric

KEYS = ["window", "user_idx", "chunk"]  # a test case of a run
CHECKED = ("target", "cold")  # what two runs' cases with the same key must agree on


class PairingError(ValueError):
    """Cases with the same (window, user_idx, chunk) in two runs are not the same test case."""


def subset_mask(cases: pd.DataFrame, metric: str) -> np.ndarray:
    subset = parse_metric(metric)[0]
    cold = cases["cold"].to_numpy().astype(bool)
    return {"all": np.ones(len(cases), bool), "cold": cold, "warm": ~cold}[subset]


# ------------------------------------------------------------------------------------------------- pairing
@dataclass
class Paired:
    """Cases present in every run of both sides: their keys and each run's per-case metric value."""

    keys: pd.DataFrame  # KEYS columns, one row per paired case
    a: np.ndarray  # (cases, runs of side A)
    b: np.ndarray  # (cases, runs of side B)

    def __len__(self) -> int:
        return len(self.keys)


def _mismatch(col: str, first: str, other: str, n_bad: int, n_shared: int, e: pd.Series, value) -> PairingError:
    return PairingError(
        f"cases paired on {tuple(KEYS)} disagree on '{col}' between {first} and {other}: {n_bad} of {n_shared} "
        f"shared cases differ (e.g. window {e['window']}, user_idx {e['user_idx']}, chunk {e['chunk']}: {col} "
        f"{e[col]} vs {value}); the runs did not test the same cases (different data, split or sequence settings) "
        "and cannot be paired"
    )


def check_pairing(frames: list[pd.DataFrame], names: list[str]) -> None:
    """PairingError when runs disagree on the target (or the cold flag) of a case with the same key."""
    cols = [c for c in CHECKED if all(c in f.columns for f in frames)]
    if len(frames) < 2 or not cols:
        return
    ref = frames[0].drop_duplicates(KEYS)[[*KEYS, *cols]]
    for name, df in zip(names[1:], frames[1:]):
        both = ref.merge(df.drop_duplicates(KEYS)[[*KEYS, *cols]], on=KEYS, suffixes=("", "_other"))
        for col in cols:
            bad = both[both[col].to_numpy() != both[f"{col}_other"].to_numpy()]
            if len(bad):
                e = bad.iloc[0]
                raise _mismatch(col, names[0], name, len(bad), len(both), e, e[f"{col}_other"])


def paired_runs(
    side_a: list[pd.DataFrame],
    side_b: list[pd.DataFrame],
    metric: str,
    names_a: list[str] | None = None,
    names_b: list[str] | None = None,
) -> Paired:
    """The cases every run of both sides has (after checking that their targets agree), restricted to the
    metric's subset (cold / warm / all), with each run's value of the metric."""
    names_a = names_a or [f"A run {i + 1}" for i in range(len(side_a))]
    names_b = names_b or [f"B run {i + 1}" for i in range(len(side_b))]
    frames = [*side_a, *side_b]
    if not side_a or not side_b:
        raise ValueError("paired_runs: each side needs at least one cases frame")
    if _aligned(frames):  # the usual case (every run wrote the same split's cases in the same order): no joins
        return _paired_aligned(frames, len(side_a), metric, [*names_a, *names_b])
    check_pairing(frames, [*names_a, *names_b])
    common = None
    cols = []
    for i, df in enumerate(frames):
        keep = subset_mask(df, metric)
        part = df.loc[keep, KEYS].copy()
        part[f"v{i}"] = case_values(df.loc[keep, "rank"].to_numpy(), metric)
        part = part.drop_duplicates(KEYS)
        common = part if common is None else common.merge(part, on=KEYS, how="inner")
        cols.append(f"v{i}")
    common = common.sort_values(KEYS, kind="stable").reset_index(drop=True)
    values = common[cols].to_numpy(np.float64)
    return Paired(common[KEYS], values[:, : len(side_a)], values[:, len(side_a) :])


def _aligned(frames: list[pd.DataFrame]) -> bool:
    """Every frame holds the same keys in the same order, each key once."""
    keys = frames[0][KEYS].to_numpy()
    if any(len(f) != len(keys) or not np.array_equal(f[KEYS].to_numpy(), keys) for f in frames[1:]):
        return False
    return not frames[0].duplicated(KEYS).any()


def _paired_aligned(frames: list[pd.DataFrame], n_a: int, metric: str, names: list[str]) -> Paired:
    """paired_runs for aligned frames: the same checks (targets, cold flags) and values, compared row by row."""
    first = frames[0]
    for name, df in zip(names[1:], frames[1:]):
        for col in (c for c in CHECKED if c in first.columns and c in df.columns):
            bad = np.nonzero(first[col].to_numpy() != df[col].to_numpy())[0]
            if len(bad):
                raise _mismatch(col, names[0], name, len(bad), len(first), first.iloc[bad[0]], df[col].iloc[bad[0]])
    keep = subset_mask(first, metric)
    values = np.stack([case_values(df["rank"].to_numpy()[keep], metric) for df in frames], axis=1)
    return Paired(first.loc[keep, KEYS].reset_index(drop=True), values[:, :n_a], values[:, n_a:])


def paired_cases(side_a: list[pd.DataFrame], side_b: list[pd.DataFrame], metric: str) -> pd.DataFrame:
    """Cases of both sides joined on (window, user_idx, chunk): KEYS and columns a, b (each averaged over its
    side's runs), restricted to the metric's subset (cold / warm / all); targets checked as in `paired_runs`."""
    p = paired_runs(side_a, side_b, metric)
    return p.keys.assign(a=p.a.mean(axis=1), b=p.b.mean(axis=1))


# ---------------------------------------------------------------------------------------- the bootstrap
def _as_2d(x, n: int, what: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or x.shape[0] != n or x.shape[1] < 1:
        raise ValueError(f"cluster_bootstrap: {what} must be (cases,) or (cases, seeds), got shape {x.shape}")
    return x


def _side_stats(tot: np.ndarray, n_w: np.ndarray, W: int, K: int) -> np.ndarray:
    """(D, W*K) resampled sums, (D, W) resampled case counts -> (D, K): per seed, the mean over windows (with a
    case in the draw) of each window's mean."""
    ok = n_w > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ok[:, :, None], tot.reshape(len(tot), W, K) / n_w[:, :, None], 0.0)
        return means.sum(axis=1) / ok.sum(axis=1, keepdims=True)


def _seed_weights(rng: np.random.Generator, draws: int, k: int) -> np.ndarray:
    """(draws, k) weights summing to 1 per draw: k seeds drawn with replacement (all 1/k when k == 1)."""
    if k == 1:
        return np.ones((draws, 1))
    idx = rng.integers(0, k, size=(draws, k)) + k * np.arange(draws)[:, None]
    return np.bincount(idx.ravel(), minlength=draws * k).reshape(draws, k) / k


def _user_draws(rng: np.random.Generator, draws: int, n_users: int) -> np.ndarray:
    """(draws, users) float64: how often each user is drawn when n_users users are drawn with replacement."""
    idx = rng.integers(0, n_users, size=(draws, n_users)) + n_users * np.arange(draws)[:, None]
    return np.bincount(idx.ravel(), minlength=draws * n_users).reshape(draws, n_users).astype(np.float64)


def _intervals(da: np.ndarray, db: np.ndarray, A: float, B: float, confidence: float) -> dict[str, float]:
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    diff = da - db
    lo, hi = np.percentile(diff, q)
    out = {"a": A, "b": B, "diff": A - B, "diff_lo": float(lo), "diff_hi": float(hi)}
    out["diff_se"] = float(diff.std(ddof=1)) if len(diff) > 1 else math.nan
    out.update(rel=math.nan, rel_lo=math.nan, rel_hi=math.nan)
    if B > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = da / db - 1.0
        rel = rel[np.isfinite(rel)]
        out["rel"] = A / B - 1.0
        if rel.size >= 0.9 * da.size:  # intervals from (almost) every draw only
            out["rel_lo"], out["rel_hi"] = (float(x) for x in np.percentile(rel, q))
    return out


def cluster_bootstrap(
    a,
    b,
    windows,
    users,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_cells: int = 4_000_000,
) -> dict[str, float]:
    """Point estimates, percentile intervals and the bootstrap standard error of diff = A - B and rel = A/B - 1
    over paired cases. a: (cases,) or (cases, seeds of A); b likewise (its own seeds); windows, users: (cases,).

    Per draw: the users are drawn with replacement (the same draw for both sides), every drawn user bringing all
    of their cases in every window; each side's seeds are drawn with replacement (independently); the statistic
    is the mean over the drawn seeds of the mean over windows of each window's case mean. Vectorised: cases are
    summed per (user, window, seed) once, and each draw is a user-count vector times that matrix."""
    windows, users = np.asarray(windows), np.asarray(users)
    n = len(windows)
    if n == 0:
        raise ValueError("cluster_bootstrap: no cases")
    if len(users) != n:
        raise ValueError(f"cluster_bootstrap: {n} windows but {len(users)} users")
    a, b = _as_2d(a, n, "a"), _as_2d(b, n, "b")
    ka, kb = a.shape[1], b.shape[1]
    _, w_inv = np.unique(windows, return_inverse=True)
    _, u_inv = np.unique(users, return_inverse=True)
    W, U = int(w_inv.max()) + 1, int(u_inv.max()) + 1
    cell = u_inv * W + w_inv

    def sums(x: np.ndarray) -> np.ndarray:  # (U, W * K), column w * K + k
        return np.stack([np.bincount(cell, x[:, k], U * W).reshape(U, W) for k in range(x.shape[1])], axis=2)

    mat = np.concatenate(
        [np.bincount(cell, minlength=U * W).reshape(U, W), sums(a).reshape(U, -1), sums(b).reshape(U, -1)], axis=1
    ).astype(np.float64)
    cuts = np.cumsum([W, W * ka])

    def stats(tot: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_w, ta, tb = np.split(tot, cuts, axis=1)
        return (_side_stats(ta, n_w, W, ka) * wa).sum(1), (_side_stats(tb, n_w, W, kb) * wb).sum(1)

    total = mat.sum(axis=0, keepdims=True)
    point_a, point_b = stats(total, np.full((1, ka), 1 / ka), np.full((1, kb), 1 / kb))
    n_all, ta_all, tb_all = np.split(total, cuts, axis=1)
    per_seed_a, per_seed_b = _side_stats(ta_all, n_all, W, ka)[0], _side_stats(tb_all, n_all, W, kb)[0]
    rng = np.random.default_rng(seed)
    step = max(1, chunk_cells // U)
    da, db = [], []
    for start in range(0, samples, step):
        d = min(step, samples - start)
        tot = _user_draws(rng, d, U) @ mat
        x, y = stats(tot, _seed_weights(rng, d, ka), _seed_weights(rng, d, kb))
        da.append(x)
        db.append(y)
    da, db = np.concatenate(da), np.concatenate(db)
    ok = np.isfinite(da) & np.isfinite(db)  # a draw without any case of a subset in any window: left out
    out = _intervals(da[ok], db[ok], float(point_a[0]), float(point_b[0]), confidence)
    out.update(
        users=float(U),
        seeds_a=float(ka),
        seeds_b=float(kb),
        a_seed_std=float(per_seed_a.std(ddof=1)) if ka > 1 else math.nan,
        b_seed_std=float(per_seed_b.std(ddof=1)) if kb > 1 else math.nan,
    )
    return out


def _stratified_means(values: np.ndarray, groups: list[np.ndarray], idx: list[np.ndarray]) -> np.ndarray:
    """(B,) mean over strata of each stratum's resampled mean."""
    per = [values[g][i].mean(axis=1) for g, i in zip(groups, idx)]
    return np.mean(per, axis=0)


def case_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    strata: np.ndarray,
    samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk_cells: int = 4_000_000,
) -> dict[str, float]:
    """The CASE-LEVEL paired bootstrap: cases resampled one by one within strata (windows). Right only when
    cases are independent (one case per user, as in leave-one-out); on several cases per user it is too
    narrow (tests/evaluation/test_bootstrap.py). Same outputs as `cluster_bootstrap` without the seed fields."""
    a, b, strata = np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(strata)
    groups = [np.nonzero(strata == s)[0] for s in np.unique(strata)]
    groups = [g for g in groups if len(g)]
    if not groups:
        raise ValueError("case_bootstrap: no cases")
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
    return _intervals(np.concatenate(boot_a), np.concatenate(boot_b), A, B, confidence)


# ------------------------------------------------------------------------------------ multiple comparisons
@dataclass
class HolmResult:
    p: np.ndarray  # two-sided p-values, normal approximation with the bootstrap standard error
    p_adjusted: np.ndarray  # Holm's adjusted p-values
    reject: np.ndarray  # bool: adjusted p < alpha
    level: np.ndarray  # the per-comparison level Holm tests it at (alpha / (m - j + 1), frozen after a retain)
    lo: np.ndarray  # diff -+ z(1 - level / 2) * se: the interval that matches the verdict
    hi: np.ndarray


def holm(diff, se, alpha: float = 0.05) -> HolmResult:
    """Holm's step-down correction over m comparisons of diff with bootstrap standard error se.

    p_j = 2 (1 - Phi(|diff_j| / se_j)); sorted ascending, the j-th is tested at alpha / (m - j + 1) until the
    first one retained, and every later one at that same level. Each comparison's corrected interval is
    diff -+ z(1 - level / 2) se: it excludes 0 exactly when Holm rejects (the interval and verdict agree)."""
    diff, se = np.asarray(diff, np.float64), np.asarray(se, np.float64)
    m = len(diff)
    if m == 0:
        e = np.zeros(0)
        return HolmResult(e, e, e.astype(bool), e, e, e)
    if not (np.isfinite(diff).all() and np.isfinite(se).all()):
        raise ValueError("holm: every comparison needs a finite difference and standard error")
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, np.abs(diff) / se, np.where(diff == 0, 0.0, np.inf))
    p = np.array([math.erfc(v / math.sqrt(2)) for v in z])
    order = np.argsort(p, kind="stable")
    steps = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(steps)
    reject = adjusted < alpha
    level = np.empty(m)
    frozen = None
    for j, i in enumerate(order):
        if frozen is None and not reject[i]:
            frozen = alpha / (m - j)
        level[i] = alpha / (m - j) if frozen is None else frozen
    q = np.array([NormalDist().inv_cdf(1 - lv / 2) for lv in level])
    return HolmResult(p, adjusted, reject, level, diff - q * se, diff + q * se)
