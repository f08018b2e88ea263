"""Reading a grid's runs back from MLflow (`mlflow.search_runs` + metric histories + cases artifacts).

A grid is a parent run (tag captionrec.kind=grid) with one child run per (feature set, model, seed); see
`captionrec.contracts` for the run contract. Per child key the newest FINISHED run counts; a key whose
attempts all failed shows its newest failed attempt (with its error). Runs a grid reused from an earlier
grid (same config and input table versions) are listed in the parent's plan artifact and read too. Tuning
trials their row did not choose (`experiment.tuning`) are left out (`drop_unchosen`): every table, interval
and plot reads the chosen configuration's runs only.

Per-window values come from the metric histories (`test_<metric>` at step = window; the baselines
`test_random_<metric>` / `test_popularity_<metric>` beside them), never from the `_mean` summaries, so
the report recomputes every mean itself.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from captionrec import contracts as C

log = logging.getLogger(__name__)

FINISHED = "FINISHED"
MODEL = "model"  # the `series` of a run's own metrics (the baselines' series are their names)
SERIES: tuple[str, ...] = (MODEL, *C.BASELINES)
RUN_COLUMNS = ("run_id", "status", "features", "model", "seed", "child_key", "run_name", "start_time", "error")


class RunsNotFound(LookupError):
    """No grid / no runs where the report was asked to look."""


def metric_key(metric: str, series: str = MODEL) -> str:
    """('hr@10', 'model') -> 'test_hr_10'; ('hr@10', 'popularity') -> 'test_popularity_hr_10'."""
    name = C.metric_name(metric)
    return f"test_{name}" if series == MODEL else f"test_{series}_{name}"


@dataclass
class RunSet:
    """The runs a report reads: one row per child run, their per-window metrics, the grid's plan."""

    tracking_uri: str
    experiment_id: str
    runs: pd.DataFrame  # RUN_COLUMNS, one row per child key (finished, or the newest failed attempt)
    windows: pd.DataFrame  # run_id, series, metric, window, value (finished runs only)
    parent: dict[str, Any] | None = None  # run_id, name, tags
    plan: dict[str, Any] = field(default_factory=dict)  # the parent's grid/plan.json (empty without a parent)
    _cases: dict[str, pd.DataFrame | None] = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == FINISHED]

    @property
    def failed(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] != FINISHED]

    def cases(self, run_id: str) -> pd.DataFrame | None:
        """Every window's cases artifact of a run (contracts.CASE_COLUMNS + the OPTIONAL_CASE_COLUMNS it has), or
        None when it has none."""
        if run_id not in self._cases:
            self._cases[run_id] = _download_cases(self.tracking_uri, run_id)
        return self._cases[run_id]


def _client(tracking_uri: str):
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    return MlflowClient(tracking_uri)


def _experiment_id(client, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        raise RunsNotFound(f"no MLflow experiment {name!r} at {client.tracking_uri}; run `captionrec experiment` first")
    return exp.experiment_id


def _search(experiment_id: str, filter_string: str) -> pd.DataFrame:
    import mlflow

    df = mlflow.search_runs([experiment_id], filter_string=filter_string, output_format="pandas")
    return df if len(df) else pd.DataFrame(columns=["run_id", "status", "start_time"])


def find_parent(client, experiment_id: str, parent_run_id: str | None) -> dict[str, Any]:
    """The given grid run, or the newest grid run of the experiment."""
    if parent_run_id:
        run = client.get_run(parent_run_id)
    else:
        runs = client.search_runs(
            [experiment_id],
            f"tags.`{C.TAG_KIND}` = '{C.GRID_RUN}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not runs:
            raise RunsNotFound(
                "no grid run in the experiment; run `captionrec experiment` first "
                "(or set report.filter to read other runs)"
            )
        run = runs[0]
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "tags": dict(run.data.tags),
        "experiment_id": run.info.experiment_id,
    }


def read_plan(client, run_id: str) -> dict[str, Any]:
    names = {a.path for a in client.list_artifacts(run_id, str(Path(C.PLAN_ARTIFACT).parent))}
    if C.PLAN_ARTIFACT not in names:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, C.PLAN_ARTIFACT, tmp)).read_text())


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)


def normalize_runs(df: pd.DataFrame) -> pd.DataFrame:
    """search_runs' frame -> RUN_COLUMNS (params train.features / train.model / train.seed, grid tags)."""
    out = pd.DataFrame(
        {
            "run_id": _col(df, "run_id"),
            "status": _col(df, "status"),
            "features": _col(df, "params.train.features"),
            "model": _col(df, "params.train.model"),
            "seed": pd.to_numeric(_col(df, "params.train.seed"), errors="coerce"),
            "child_key": _col(df, f"tags.{C.TAG_CHILD_KEY}"),
            "run_name": _col(df, "tags.mlflow.runName"),
            "start_time": _col(df, "start_time"),
            "error": _col(df, f"tags.{C.TAG_ERROR}"),
        }
    )
    out["error"] = out["error"].fillna("").astype(str)
    kind = _col(df, f"tags.{C.TAG_KIND}")
    out = out[(~kind.isin([C.GRID_RUN, C.STAGE_RUN, C.REFIT_RUN])).to_numpy()]  # a report's rows: grid children
    missing = out["features"].isna() | out["model"].isna()
    if missing.any():
        log.warning(
            "ignoring %d run(s) without train.features / train.model params: %s",
            int(missing.sum()),
            ", ".join(out.loc[missing, "run_id"]),
        )
    return out[~missing].reset_index(drop=True)


def latest_per_child(runs: pd.DataFrame) -> pd.DataFrame:
    """Per child key (runs without one: per run): the newest FINISHED run, else the newest attempt."""
    if runs.empty:
        return runs
    runs = runs.copy()
    runs["_key"] = runs["child_key"].where(runs["child_key"].notna(), runs["run_id"])
    runs["_done"] = runs["status"] == FINISHED
    runs = runs.sort_values(["_key", "_done", "start_time"], ascending=[True, False, False])
    return runs.drop_duplicates("_key").drop(columns=["_key", "_done"]).reset_index(drop=True)


def read_windows(client, runs: pd.DataFrame, metrics: tuple[str, ...], available: set[str]) -> pd.DataFrame:
    """Per-window values of `metrics` (and the baselines') from the metric histories of finished runs."""
    rows = []
    for run_id in runs.loc[runs["status"] == FINISHED, "run_id"]:
        for metric in metrics:
            for series in SERIES:
                key = metric_key(metric, series)
                if (run_id, key) not in available:
                    continue
                hist = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
                last = {m.step: m.value for m in hist}  # a step logged twice: its latest value
                rows += [(run_id, series, metric, int(step), float(v)) for step, v in last.items()]
    return pd.DataFrame(rows, columns=["run_id", "series", "metric", "window", "value"])


def _available(df: pd.DataFrame) -> set[tuple[str, str]]:
    out = set()
    for col in (c for c in df.columns if c.startswith("metrics.test_")):
        for run_id in df.loc[df[col].notna(), "run_id"]:
            out.add((run_id, col[len("metrics.") :]))
    return out


def drop_unchosen(df: pd.DataFrame, plan: dict[str, Any]) -> pd.DataFrame:
    """search_runs' frame without the finished tuning trials their row did not choose (experiment.tuning): by
    the grid's plan when there is one (a run reused by several grids may be chosen in one and not in another),
    else by the run's tag captionrec.trial_chosen. Failed trials stay (the report lists failures)."""
    if plan.get("children"):
        unchosen = {
            c["run_id"]
            for c in plan["children"]
            if c.get("chosen") is False and c.get("status") != "failed" and c.get("run_id")
        }
        keep = ~df["run_id"].isin(unchosen)
    else:
        keep = (_col(df, f"tags.{C.TAG_TRIAL_CHOSEN}") != "false") | (_col(df, "status") != FINISHED)
    if (~keep).any():
        log.info("leaving out %d tuning trial run(s) their row did not choose", int((~keep).sum()))
    return df[keep.to_numpy()].reset_index(drop=True)


def read_runs(
    tracking_uri: str,
    experiment: str,
    metrics: tuple[str, ...],
    parent_run_id: str | None = None,
    filter_string: str | None = None,
) -> RunSet:
    """The runs of a grid (its children and the runs it reused), or of a search filter."""
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment)
    parent, plan = None, {}
    if filter_string:
        df = _search(exp_id, filter_string)
    else:
        parent = find_parent(client, exp_id, parent_run_id)
        exp_id = parent["experiment_id"]
        plan = read_plan(client, parent["run_id"])
        df = _search(exp_id, f"tags.mlflow.parentRunId = '{parent['run_id']}'")
        reused = sorted(
            {c["run_id"] for c in plan.get("children", []) if c.get("status") == "reused" and c.get("run_id")}
        )
        if reused:
            quoted = ", ".join(f"'{r}'" for r in reused)
            df = pd.concat([df, _search(exp_id, f"attributes.run_id IN ({quoted})")], ignore_index=True)
    df = drop_unchosen(df, plan)
    runs = latest_per_child(normalize_runs(df))
    if runs.empty:
        where = f"filter {filter_string!r}" if filter_string else f"grid run {parent['run_id']}"
        raise RunsNotFound(f"no train runs found for {where} in experiment {experiment!r}")
    windows = read_windows(client, runs, metrics, _available(df))
    return RunSet(tracking_uri=tracking_uri, experiment_id=exp_id, runs=runs, windows=windows, parent=parent, plan=plan)


def _download_cases(tracking_uri: str, run_id: str) -> pd.DataFrame | None:
    client = _client(tracking_uri)
    names = [a.path for a in client.list_artifacts(run_id, "cases") if a.path.endswith(".parquet")]
    if not names:
        return None
    frames = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(names):
            frames.append(pd.read_parquet(client.download_artifacts(run_id, name, tmp)))
    df = pd.concat(frames, ignore_index=True)
    missing = [c for c in C.CASE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"cases artifact of run {run_id} lacks column(s) {missing} (contracts.CASE_COLUMNS)")
    keep = [*C.CASE_COLUMNS, *(c for c in C.OPTIONAL_CASE_COLUMNS if c in df.columns)]  # + the cold baselines ranked
    return df[keep].astype({"window": np.int64, "user_idx": np.int64, "chunk": np.int64})
