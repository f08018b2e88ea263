"""The experiment grid's MLflow bookkeeping (driver side): the parent run, finished children by key,
failed children, the plan artifact. `captionrec.report.runs` reads what this writes."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C

if TYPE_CHECKING:
    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)


class GridTracker:
    """One grid in one MLflow experiment: finds (or makes) its parent run and records children."""

    def __init__(self, cfg: "Config", store: "TableStore", grid_key: str):
        import mlflow
        from mlflow.tracking import MlflowClient

        from captionrec.tracking import tracking_spec

        spec = tracking_spec(cfg)  # absolute tracking URI / artifact location, git commit
        self.cfg, self.store, self.grid_key, self.git_commit = (
            cfg,
            store,
            grid_key,
            spec.tags.get("git_commit", "unknown"),
        )
        self.tracking_uri = spec.tracking_uri
        mlflow.set_tracking_uri(spec.tracking_uri)
        self.client = MlflowClient(spec.tracking_uri)
        exp = self.client.get_experiment_by_name(spec.experiment)
        self.experiment_id = (
            exp.experiment_id
            if exp
            else self.client.create_experiment(spec.experiment, artifact_location=spec.artifact_location)
        )
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{C.TAG_GRID_KEY}` = '{grid_key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        self.parent_id: str | None = found[0].info.run_id if found else None
        self.opened = False  # open_parent was called by this invocation (it trains or records something)

    @property
    def has_parent(self) -> bool:
        return self.parent_id is not None

    def _search(self, filter_string: str) -> list:
        import mlflow

        return mlflow.search_runs([self.experiment_id], filter_string=filter_string, output_format="list")

    def finished_children(self) -> dict[str, str]:
        """child key -> the newest FINISHED run with that key, across the whole experiment."""
        runs = self._search(f"tags.`{C.TAG_KIND}` = '{C.CHILD_RUN}' and attributes.status = 'FINISHED'")
        out: dict[str, tuple[int, str]] = {}
        for r in runs:
            key = r.data.tags.get(C.TAG_CHILD_KEY)
            if key and (key not in out or r.info.start_time > out[key][0]):
                out[key] = (r.info.start_time, r.info.run_id)
        return {k: v[1] for k, v in out.items()}

    def metric(self, run_id: str, key: str) -> float:
        return float(self.client.get_run(run_id).data.metrics.get(key, math.nan))

    def validation_score(self, run_id: str, metric: str) -> float:
        """Mean over windows of the run's `valid_<metric>` (step = window; a step logged twice: its latest
        value), NaN without one. Reads that one metric history and nothing else of the run (no test number)."""
        name = f"valid_{C.metric_name(metric)}"
        hist = sorted(self.client.get_metric_history(run_id, name), key=lambda m: (m.step, m.timestamp))
        last = {m.step: m.value for m in hist}
        return float(sum(last.values()) / len(last)) if last else math.nan

    def tag_trials(self, entries: list[dict[str, Any]]) -> None:
        """Row, trial number, values and chosen flag on every finished or failed trial / seed run."""
        from mlflow.entities import RunTag

        for e in entries:
            if not e.get("run_id") or "trial" not in e:
                continue
            tags = {
                C.TAG_ROW: f"{e['model']} {e['features']}",
                C.TAG_TRIAL: str(e["trial"]),
                C.TAG_TRIAL_VALUES: json.dumps(e.get("values", {}), sort_keys=True),
                C.TAG_TRIAL_CHOSEN: "true" if e.get("chosen") else "false",
            }
            self.client.log_batch(e["run_id"], tags=[RunTag(k, v) for k, v in tags.items()])

    def input_tags(self) -> dict[str, str]:
        tags = {"storage_backend": self.store.backend}
        for name in (C.INTERACTIONS, C.ITEM_FEATURES):
            if self.store.exists(name):
                tags[f"delta_version.{name}"] = str(self.store.version(name))
        return tags

    def open_parent(self, params: dict[str, Any]) -> str:
        """Reopen the grid's parent run, or create it (tagged with the grid key, git commit, table versions)."""
        self.opened = True
        if self.parent_id:
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        tags = {
            C.TAG_KIND: C.GRID_RUN,
            C.TAG_GRID_KEY: self.grid_key,
            "git_commit": self.git_commit,
            **self.input_tags(),
        }
        run = self.client.create_run(
            self.experiment_id, run_name=f"{self.cfg.experiment.name}-{self.grid_key[:8]}", tags=tags
        )
        self.parent_id = run.info.run_id
        from mlflow.entities import Param

        items = [Param(k, ("" if v is None else str(v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.parent_id, params=items[i : i + 100])
        return self.parent_id

    def record_failure(self, child: Any, exc: BaseException, trace: str, started_ms: int) -> str:
        """Mark a failed child: the train stage's own run of this attempt if it made one, else a new run with
        the child's params; FAILED, with the error as a tag and error.txt."""
        # started_ms and MLflow's start_time come from the same clock; no slack, or a retry that starts within
        # the slack of the previous attempt's failure record would overwrite that record instead of adding one
        runs = self._search(f"tags.`{C.TAG_CHILD_KEY}` = '{child.key}' and attributes.start_time >= {started_ms}")
        if runs:
            run_id = runs[0].info.run_id
        else:
            from mlflow.entities import Param

            from captionrec.config.loader import flatten

            tags = {
                C.TAG_KIND: C.CHILD_RUN,
                C.TAG_CHILD_KEY: child.key,
                "mlflow.parentRunId": self.parent_id,
                "git_commit": self.git_commit,
                **self.input_tags(),
            }
            run_id = self.client.create_run(
                self.experiment_id, run_name=f"{child.model}-{child.features}", tags=tags
            ).info.run_id
            params = [
                Param(f"train.{k}", ("" if v is None else str(v))[:6000]) for k, v in flatten(child.cfg.train).items()
            ]
            for i in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.set_tag(run_id, C.TAG_ERROR, f"{type(exc).__name__}: {exc}"[:5000])
        self.client.log_text(run_id, trace, C.ERROR_ARTIFACT)
        self.client.set_terminated(run_id, status="FAILED")
        return run_id

    def save_plan(
        self,
        entries: list[dict[str, Any]],
        skipped: list[dict[str, str]] | None = None,
        finished: bool = True,
        tuning: dict[str, Any] | None = None,
    ) -> None:
        """grid/plan.json on the parent (every child, skipped feature set and each row's tuning) and the
        parent's status."""
        plan = {"grid_key": self.grid_key, "children": entries, "skipped": skipped or [], "tuning": tuning or {}}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(C.PLAN_ARTIFACT).name
            path.write_text(json.dumps(plan, indent=2, default=str))
            self.client.log_artifact(self.parent_id, str(path), str(Path(C.PLAN_ARTIFACT).parent))
        counts = {s: sum(e["status"] == s for e in entries) for s in ("ran", "reused", "failed")}
        for k, v in counts.items():
            self.client.set_tag(self.parent_id, f"grid.{k}", str(v))
        self.client.set_tag(self.parent_id, "grid.skipped", ",".join(s["features"] for s in skipped or []) or "-")
        self.client.set_terminated(self.parent_id, status="FINISHED" if finished else "FAILED")
