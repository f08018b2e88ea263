"""Ranking metrics from 1-based ranks, and the means over them: the one definition of HR@k, nDCG@k and MRR
used by training, the report and the analysis. Pure numpy.

One test case = one target item with a rank (`captionrec.evaluation.ranking` computes it: ties count against
the target). HR@k = [rank <= k], nDCG@k = 1 / log2(rank + 1) if rank <= k (one relevant item, so IDCG = 1),
MRR = 1 / rank (untruncated). A metric is named `hr@10`, `ndcg@10` or `mrr`, optionally prefixed `cold_` /
`warm_` (the cases whose target had / had no training interaction).

Means, both named: `hr@10` is the mean over cases (every test interaction counts once; the paper's and
RecBole's number), `user_hr@10` the mean over users of each user's mean (every user counts once). A cutoff k
that is a large share of the candidates a case is ranked among gets a `KShareWarning`.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

K_SHARE_WARN = 0.2  # warn when k >= this share of a case's candidates (median over cases)
_METRIC = re.compile(r"^(cold_|warm_)?(?:(hr|ndcg)@(\d+)|(mrr))$")


class KShareWarning(UserWarning):
    """A cutoff k covers a large share of the candidates: HR@k says little (a random scorer gets k / C)."""


def parse_metric(metric: str) -> tuple[str, str, int | None]:
    """'cold_hr@10' -> ('cold', 'hr', 10); 'ndcg@10' -> ('all', 'ndcg', 10); 'mrr' -> ('all', 'mrr', None)."""
    m = _METRIC.match(metric)
    if not m:
        raise ValueError(f"unknown metric {metric!r}: expected [cold_|warm_](hr|ndcg)@k or mrr")
    subset = (m.group(1) or "all_").rstrip("_")
    if m.group(4):
        return subset, "mrr", None
    return subset, m.group(2), int(m.group(3))


def metric_names(ks: Sequence[int]) -> list[str]:
    """hr@k, ndcg@k for every k, then mrr."""
    return [n for k in ks for n in (f"hr@{k}", f"ndcg@{k}")] + ["mrr"]


def case_values(ranks, metric: str) -> np.ndarray:
    """Per-case float64 values of a metric from 1-based ranks (a numpy array, a list or a CPU tensor); the
    subset prefix (cold_ / warm_) is ignored here."""
    _, kind, k = parse_metric(metric)
    r = np.asarray(ranks, dtype=np.float64)
    if kind == "mrr":
        return 1.0 / r
    hit = r <= k
    return hit.astype(np.float64) if kind == "hr" else np.where(hit, 1.0 / np.log2(r + 1.0), 0.0)


def rank_metrics(ranks, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """ranks (B,) -> per-case values (B,) float64 for hr@k, ndcg@k (each k) and mrr."""
    return {name: case_values(ranks, name) for name in metric_names(ks)}


def _user_mean(values: np.ndarray, users: np.ndarray) -> float:
    """Mean over users of each user's mean value."""
    if len(values) == 0:
        return math.nan
    uniq, inv = np.unique(users, return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(uniq))
    counts = np.bincount(inv, minlength=len(uniq))
    return float(np.mean(sums / counts))


def summarize_ranks(
    ranks: np.ndarray, ks: Sequence[int], users: np.ndarray | None = None, cold: np.ndarray | None = None
) -> dict[str, float]:
    """Per-case means (`hr@10`, ...), per-user means (`user_hr@10`, ...) and the cold variants, with counts
    (`cases`, `users`, `cold_cases`, `cold_users`). NaN where there is no case."""
    ranks = np.asarray(ranks, dtype=np.int64)
    users = np.zeros(len(ranks), np.int64) if users is None else np.asarray(users, dtype=np.int64)
    cold = np.zeros(len(ranks), bool) if cold is None else np.asarray(cold).astype(bool)
    per = rank_metrics(ranks, ks)
    out: dict[str, float] = {}
    for prefix, sel in (("", np.ones(len(ranks), bool)), ("cold_", cold)):
        out[f"{prefix}cases"] = float(sel.sum())
        out[f"{prefix}users"] = float(len(np.unique(users[sel])))
        for name in metric_names(ks):
            vals = per[name][sel]
            out[f"{prefix}{name}"] = float(vals.mean()) if len(vals) else math.nan
            out[f"{prefix}user_{name}"] = _user_mean(vals, users[sel])
    return out


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the values that are not None or NaN; (NaN, NaN)
    when none is. Over windows (training's summary), over runs' windows (the report's table)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def warn_k_share(
    candidate_counts: np.ndarray, ks: Sequence[int], where: str = "", share: float = K_SHARE_WARN
) -> list[str]:
    """Warn (KShareWarning) for every k that is >= `share` of the median number of candidates per case.

    Returns the messages (the trainer also records them on the run)."""
    counts = np.asarray(candidate_counts)
    if counts.size == 0:
        return []
    median = float(np.median(counts))
    msgs = []
    for k in ks:
        if median <= 0 or k >= share * median:
            pct = 100.0 * k / median if median > 0 else math.inf
            msg = (
                f"{where}k={k} is {pct:.0f}% of the median {median:.0f} candidates per case: HR@{k} / nDCG@{k} "
                f"say little here (a random scorer gets HR@{k} ~ {min(1.0, k / max(median, 1)):.2f})"
            )
            warnings.warn(msg, KShareWarning, stacklevel=2)
            msgs.append(msg)
    return msgs
