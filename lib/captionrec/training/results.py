"""A train run's results -> the MLflow run contract (`captionrec.contracts`, "MLflow run contract").

Per window k (step = k): `test_<metric>` (the model), `test_<baseline>_<metric>` for each baseline ranked
on the same cases (contracts.BASELINES and COLD_BASELINES: random, popularity, random_new, recent_popularity,
knn where the run has feature vectors), `valid_<metric>` (the chosen epoch), counts (`test_cases`,
`test_cold_cases`, ...) and training numbers (`best_epoch`, `train_epochs`, ...); one artifact
`cases/test_w<k>.parquet` (contracts.CASE_COLUMNS + the OPTIONAL_CASE_COLUMNS the run ranked). Over windows
(no step): `test_<metric>_mean` / `_std` and the same for each baseline.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from captionrec.contracts import CASE_COLUMNS, OPTIONAL_CASE_COLUMNS, cases_artifact
from captionrec.evaluation.metrics import mean_std

COUNTS = ("cases", "users", "cold_cases", "cold_users", "repeat_dropped")
PER_WINDOW = (
    "best_epoch",
    "train_epochs",
    "epochs_selected",
    "train_seconds",
    "select_seconds",
    "train_sequences_per_s",
    "train_targets_per_s",
)


def _is_count(name: str) -> bool:
    return name in COUNTS


def window_metrics(res: dict[str, Any]) -> dict[str, float]:
    """The step=window metrics of one window's results (names before MLflow's '@' -> '_')."""
    out = {f"test_{k}": v for k, v in res["test"].items()}
    for name, metrics in res.get("baselines", {}).items():
        out.update({f"test_{name}_{k}": v for k, v in metrics.items() if not _is_count(k)})
    out.update({f"valid_{k}": v for k, v in res.get("valid", {}).items()})
    out.update({k: float(res[k]) for k in PER_WINDOW if k in res})
    return out


def summarize(windows: list[dict[str, Any]]) -> dict[str, float]:
    """Mean and spread (sample std) over windows of every test metric, the model's and each baseline's."""
    out: dict[str, float] = {}
    if not windows:
        return out
    series: dict[str, list[float]] = {}
    for w in windows:
        for k, v in w["test"].items():
            series.setdefault(f"test_{k}", []).append(v)
        for name, metrics in w.get("baselines", {}).items():
            for k, v in metrics.items():
                if not _is_count(k):
                    series.setdefault(f"test_{name}_{k}", []).append(v)
    for key, values in series.items():
        mean, std = mean_std(values)
        out[f"{key}_mean"] = mean
        out[f"{key}_std"] = std
    return out


def cases_table(window: int, cases: dict[str, np.ndarray]):
    """One window's cases as an Arrow table: contracts.CASE_COLUMNS, then the OPTIONAL_CASE_COLUMNS it has."""
    import pyarrow as pa

    n = len(cases["rank"])
    cols = {
        "window": np.full(n, window, dtype=np.int64),
        **{k: np.asarray(v, dtype=np.int64) for k, v in cases.items()},
    }
    names = [*CASE_COLUMNS, *(c for c in OPTIONAL_CASE_COLUMNS if c in cols)]
    return pa.table({c: cols[c] for c in names})


def log_run_results(
    logger,
    stats: dict[str, float],
    window_stats: dict[int, dict[str, float]],
    results: list[dict[str, Any]],
    summary: dict[str, float],
) -> None:
    """Everything the contract names, through a RunLogger (a no-op on ranks other than 0)."""
    logger.log_metrics(stats)
    for k, st in sorted(window_stats.items()):
        logger.log_metrics(st, step=k)
    warnings_ = []
    for res in results:
        k = res["window"]
        logger.log_metrics(window_metrics(res), step=k)
        logger.log_table(cases_table(k, res["cases"]), cases_artifact(k))
        warnings_ += res.get("warnings", [])
    logger.log_metrics(summary)
    if warnings_:
        logger.set_tags({"warning.k_share": " | ".join(warnings_)[:5000]})
