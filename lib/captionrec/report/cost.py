"""The report's "quality per cost" section: each caption feature set's gain over its baseline beside what it cost
to produce (caption + embed seconds per 1,000 items), from the stage runs the CLI logs (`tracking.cost`).

Stage runs (tag captionrec.kind=stage) in the grid's experiment carry `cost/<group>/<key>` metrics, a group being a
caption kind (stage caption) or a feature set (stage embed). Per group the newest run that processed items counts
(a re-run with nothing new measures nothing). A feature set's production cost per 1,000 items is the sum over its
parts (`id+mllm_av`: id costs nothing to produce) of the embed cost of the part plus the caption cost of each
kind the part reads (`contracts.CAPTION_SOURCES`: mllm_av reads video and audio). Model loads are a fixed cost,
shown apart. GPU-seconds where a GPU served (device time of the model calls), else CPU-seconds.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from captionrec import contracts as C
from captionrec.report.render import esc, html_table, interval, md_table, num, pct
from captionrec.report.sections import ReportContext, Section, section
from captionrec.tracking.cost import METRIC_PREFIX

STAGES = ("caption", "embed")


def read_stage_costs(tracking_uri: str, experiment_id: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{stage: {group: {metric: value, "run_id": ...}}}: per group, the newest stage run that processed items."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{C.TAG_KIND}` = '{C.STAGE_RUN}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1000,
    )
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run in runs:
        stage = run.data.tags.get(C.TAG_STAGE)
        if stage not in STAGES:
            continue
        groups: dict[str, dict[str, Any]] = {}
        for name, value in run.data.metrics.items():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == METRIC_PREFIX:
                groups.setdefault(parts[1], {})[parts[2]] = value
        for group, metrics in groups.items():
            if metrics.get("items", 0) > 0 and group not in out.setdefault(stage, {}):
                out[stage][group] = {**metrics, "run_id": run.info.run_id}
    return out


def production_cost(features: str, costs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Seconds per 1,000 items to produce a feature set (caption + embed of each part), with what is missing."""
    cpu = gpu = load = 0.0
    missing, kinds = [], []
    for part in (p.strip() for p in features.split("+")):
        if part == C.ID:
            continue
        pieces = [("embed", part)] + [("caption", k) for k in C.CAPTION_SOURCES.get(part, ())]
        for stage, group in pieces:
            entry = costs.get(stage, {}).get(group)
            if entry is None:
                missing.append(f"{stage} {group}")
                continue
            kinds.append(f"{stage} {group}")
            cpu += entry.get("per_1k_cpu_seconds", math.nan)
            gpu += entry.get("per_1k_gpu_seconds", 0.0)
            load += entry.get("load_seconds", 0.0)
    return {
        "features": features,
        "measured": ", ".join(kinds),
        "missing": ", ".join(missing),
        "cpu_seconds_per_1k": math.nan if missing else cpu,
        "gpu_seconds_per_1k": math.nan if missing else gpu,
        "load_seconds": load,
    }


def _unit(rows: list[dict[str, Any]]) -> str:
    return "gpu" if any(r["gpu_seconds_per_1k"] > 0 for r in rows) else "cpu"  # NaN > 0 is False


def quality_per_cost(ctx: ReportContext, costs: dict[str, dict[str, dict[str, Any]]]) -> pd.DataFrame:
    """One row per comparison x model (the first report metric): the gain and interval beside the production
    cost of the feature set and of its baseline per 1,000 items, in GPU-seconds where a GPU served, else CPU."""
    metric = ctx.config.metrics[0]
    g = ctx.gains
    g = g[g["metric"] == metric] if len(g) else g
    rows = []
    for r in g.itertuples():
        fa, fb = production_cost(r.feature, costs), production_cost(r.baseline, costs)
        unit = _unit([fa, fb])
        ca, cb = fa[f"{unit}_seconds_per_1k"], fb[f"{unit}_seconds_per_1k"]
        rows.append(
            {
                "comparison": r.comparison,
                "model": r.model,
                "metric": metric,
                "gain": r.gain,
                "gain_lo": r.gain_lo,
                "gain_hi": r.gain_hi,
                "significant": bool(r.significant),
                "unit": f"{unit.upper()}-seconds",
                "feature_seconds_per_1k": ca,
                "baseline_seconds_per_1k": cb,
                "extra_seconds_per_1k": ca - cb,
                "missing": "; ".join(m for m in (fa["missing"], fb["missing"]) if m),
            }
        )
    return pd.DataFrame(rows)


@section("cost")
def cost_section(ctx: ReportContext) -> Section | None:
    """Quality per cost; left out when the experiment holds no caption / embed stage run (no measured cost)."""
    rs = ctx.runset
    costs = read_stage_costs(rs.tracking_uri, rs.experiment_id)
    if not costs:
        return None
    per_set = pd.DataFrame([production_cost(fs, costs) for fs in ctx.order] if ctx.order else [])
    table = quality_per_cost(ctx, costs)
    header = ["comparison", "model", "relative gain", "interval", "unit", "feature / 1k", "baseline / 1k", "extra / 1k"]
    rows = [
        [
            r.comparison,
            r.model,
            pct(r.gain),
            interval(r.gain_lo, r.gain_hi),
            r.unit,
            num(r.feature_seconds_per_1k, 2),
            num(r.baseline_seconds_per_1k, 2),
            num(r.extra_seconds_per_1k, 2),
        ]
        for r in table.itertuples()
    ]
    set_header = ["feature set", "CPU-s / 1k", "GPU-s / 1k", "model loads (s, fixed)", "measured", "no stage run"]
    set_rows = [
        [
            r.features,
            num(r.cpu_seconds_per_1k, 2),
            num(r.gpu_seconds_per_1k, 2),
            num(r.load_seconds, 1),
            r.measured,
            r.missing,
        ]
        for r in per_set.itertuples()
    ]
    metric = ctx.config.metrics[0]
    intro = (
        f"Gain in {metric} of each caption feature over its baseline (as in the gains table) beside the seconds per "
        "1,000 items it took to produce each side: caption + embed of the feature set's parts, from the newest "
        "caption / embed stage runs that processed items; GPU-seconds (device time of the model calls) where a GPU "
        "served, else CPU-seconds (driver and workers). Model loads are a fixed cost, shown per feature set below."
    )
    md = f"{intro}\n\n{md_table(header, rows)}\n\n**Per feature set.**\n\n{md_table(set_header, set_rows)}"
    classes = ["sig" if s else "" for s in table["significant"]] if len(table) else None
    html = f'<p class="note">{esc(intro)}</p>' + html_table(header, rows, "quality_per_cost", classes, left=2)
    html += "<h3>Per feature set</h3>" + html_table(set_header, set_rows, "cost_per_feature_set", left=1)
    tables = {"quality_per_cost": table, "cost_per_feature_set": per_set}
    return Section("cost", "Quality per cost", md, html, tables=tables)
