"""Report sections: each turns the report context into Markdown, HTML, CSV tables and figures.

A new section is one function registered under a name and listed in `report.sections`:

    from captionrec.report.sections import Section, section

    @section("quality")
    def quality(ctx):                       # ctx: ReportContext (runs, table, gains, config, extras)
        return Section("quality", "Caption quality", markdown=..., html=..., tables={"quality": df})

`ctx.extras` carries what the stage hands in besides the runs (the TableStore as `store`, for sections
that read Delta tables). A builder returning None leaves its section out (nothing to show).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Optional

import pandas as pd

from captionrec import contracts as C
from captionrec.report import plots, stats
from captionrec.report.render import esc, html_table, img, interval, md_table, num, pct, pm
from captionrec.report.runs import RunSet


@dataclass
class Section:
    key: str
    title: str
    markdown: str = ""
    html: str = ""
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # written as <name>.csv
    figures: dict[str, bytes] = field(default_factory=dict)  # written as plots/<name>.png


@dataclass
class ReportContext:
    config: Any  # captionrec.config.experiment.ReportConfig
    runset: RunSet
    order: list[str]  # feature sets in display order
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def table(self) -> pd.DataFrame:
        return stats.summary_table(self.runset.runs, self.runset.windows, self.config.metrics, self.order)

    @cached_property
    def gains(self) -> pd.DataFrame:
        c = self.config
        items = stats.gains(c.comparisons, self.runset.runs, self.runset.cases, c.metrics,
                            c.bootstrap_samples, c.confidence, c.seed)
        return stats.gains_frame(items)


SectionBuilder = Callable[[ReportContext], Optional[Section]]
SECTIONS: dict[str, SectionBuilder] = {}


def section(key: str) -> Callable[[SectionBuilder], SectionBuilder]:
    def register(fn: SectionBuilder) -> SectionBuilder:
        SECTIONS[key] = fn
        return fn

    return register


def build_sections(ctx: ReportContext, keys: tuple[str, ...]) -> list[Section]:
    unknown = [k for k in keys if k not in SECTIONS]
    if unknown:
        raise ValueError(f"report.sections: unknown section(s) {unknown}; known: {', '.join(SECTIONS)}")
    return [s for s in (SECTIONS[k](ctx) for k in keys) if s is not None]


def _metric_label(metric: str) -> str:
    return metric.replace("cold_", "cold ").replace("hr", "HR").replace("ndcg", "nDCG")


@section("summary")
def summary(ctx: ReportContext) -> Section:
    rs, c = ctx.runset, ctx.config
    facts = [("runs read", f"{len(rs.finished)} finished, {len(rs.failed)} failed")]
    if rs.parent:
        facts.insert(0, ("grid run", f"{rs.parent['name']} ({rs.parent['run_id']})"))
    else:
        facts.insert(0, ("filter", c.filter))
    if rs.parent:
        for k, v in sorted(rs.parent["tags"].items()):
            if k.startswith("delta_version.") or k == "git_commit":
                facts.append((k, v))
    has_base = rs.windows["series"].isin(C.BASELINES).any() if len(rs.windows) else False
    has_cases = any(rs.cases(r) is not None for r in rs.finished["run_id"])
    notes = []
    synthetic = ctx.extras.get("synthetic_captions")
    if synthetic:
        kinds = ", ".join(synthetic) if isinstance(synthetic, (list, tuple)) else "some"
        notes.append(f"Captions come from tiny random models (captions.synthetic; kinds: {kinds}): the caption "
                     "features measure the pipeline, not the captioners.")
    if not has_base:
        notes.append("The runs logged no random / popularity baselines (train stage before the run contract): "
                     "baseline columns are empty.")
    if not has_cases:
        notes.append("The runs logged no per-case artifacts: gains have no bootstrap interval.")
    gains_on = "gains" in c.sections
    sig = ctx.gains[ctx.gains["significant"]] if gains_on else None
    if not gains_on or not ctx.gains["gain_lo"].notna().any():
        verdict = "no intervals computed"
    else:
        verdict = "; ".join(f"{g.comparison} ({g.model}, {g.metric}): {pct(g.gain)} {interval(g.gain_lo, g.gain_hi)}"
                            for g in sig.itertuples()) or "none"
    md = "".join(f"- **{k}**: {v}\n" for k, v in facts) + "".join(f"\n> {n}\n" for n in notes)
    md += f"\nDifferences larger than their interval: {verdict}.\n"
    html = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"
    html += "".join(f'<p class="warn">{esc(n)}</p>' for n in notes)
    html += f"<p>Differences larger than their interval: {esc(verdict)}.</p>"
    return Section("summary", "Summary", md, html)


@section("table")
def table(ctx: ReportContext) -> Optional[Section]:
    t, metrics = ctx.table, ctx.config.metrics
    if t.empty:
        return None
    header = ["feature set", "model", "runs", "windows"] + [_metric_label(m) for m in metrics]
    header += [f"{b} {_metric_label(m)}" for b in C.BASELINES[::-1] for m in metrics]
    rows = []
    for r in t.to_dict("records"):
        row = [r["features"], r["model"], r["runs"], r["windows"]]
        row += [pm(r[f"{C.metric_name(m)}_mean"], r[f"{C.metric_name(m)}_std"]) for m in metrics]
        row += [num(r[f"{b}_{C.metric_name(m)}_mean"]) for b in C.BASELINES[::-1] for m in metrics]
        rows.append(row)
    intro = ("Mean ± sample std over windows (and seeds) of each row's finished runs; the baselines score the "
             "same test cases (random scorer, popularity before the window).")
    return Section("table", "Results per feature set and model", f"{intro}\n\n{md_table(header, rows)}",
                   f'<p class="note">{esc(intro)}</p>' + html_table(header, rows, "results"), tables={"report": t})


@section("gains")
def gains(ctx: ReportContext) -> Optional[Section]:
    g = ctx.gains
    if g.empty:
        return None
    c = ctx.config
    header = ["comparison", "model", "metric", "feature", "baseline", "relative gain",
              f"{int(c.confidence * 100)}% interval", "paired cases", "note"]
    rows, classes, seen = [], [], set()
    for r in g.itertuples():
        if r.cases == 0 and r.note:  # nothing computed: one row per comparison and model says why
            if (r.comparison, r.model) in seen:
                continue
            seen.add((r.comparison, r.model))
            rows.append([r.comparison, r.model, "all", "—", "—", "—", "—", 0, r.note])
        else:
            rows.append([r.comparison, r.model, r.metric, num(r.feature_value), num(r.baseline_value), pct(r.gain),
                         interval(r.gain_lo, r.gain_hi), r.cases, r.note])
        classes.append("sig" if r.significant else "")
    intro = (f"Relative gain of each caption feature over its baseline feature, paired by test case (window, "
             f"user, chunk); {c.bootstrap_samples} bootstrap draws stratified by window. Green rows: the "
             f"interval of the difference excludes 0.")
    figures = {}
    for m in c.metrics[:1]:
        png = plots.gains(g, m)
        if png:
            figures[f"gains_{C.metric_name(m)}"] = png
    html = f'<p class="note">{esc(intro)}</p>' + html_table(header, rows, "gains", classes, left=3, left_last=True)
    html += "".join(img(p, n) for n, p in figures.items())
    md = f"{intro}\n\n{md_table(header, rows)}" + "".join(f"\n![{n}](plots/{n}.png)\n" for n in figures)
    return Section("gains", "Caption features vs their baselines", md, html, tables={"gains": g}, figures=figures)


@section("plots")
def figures(ctx: ReportContext) -> Optional[Section]:
    t, rs = ctx.table, ctx.runset
    if t.empty:
        return None
    figs = {f"bars_{C.metric_name(m)}": plots.bars(t, m) for m in ctx.config.metrics}
    first = next((m for m in ctx.config.metrics if not m.startswith("cold_")), ctx.config.metrics[0])
    figs[f"windows_{C.metric_name(first)}"] = plots.windows(rs.windows, rs.runs, first, ctx.order)
    cw = stats.cold_warm_frame(rs.runs, rs.windows, rs.cases, first)
    if cw["value"].notna().any():
        figs[f"cold_warm_{C.metric_name(first)}"] = plots.cold_warm(cw, ctx.order, first)
    md = "".join(f"![{n}](plots/{n}.png)\n\n" for n in figs)
    return Section("plots", "Plots", md, "".join(img(p, n) for n, p in figs.items()), figures=figs)


@section("runs")
def runs(ctx: ReportContext) -> Section:
    rs = ctx.runset
    first = ctx.config.metrics[0]
    header = ["feature set", "model", "seed", "status", f"{_metric_label(first)} (mean over windows)", "windows", "run id", "error"]
    rows, classes = [], []
    for r in rs.runs.sort_values(["features", "model", "seed"]).itertuples():
        w = rs.windows[(rs.windows["run_id"] == r.run_id) & (rs.windows["series"] == "model") & (rs.windows["metric"] == first)]
        mean = stats.mean_std(w["value"])[0]
        seed = "" if r.seed is None or (isinstance(r.seed, float) and math.isnan(r.seed)) else int(r.seed)
        rows.append([r.features, r.model, seed, r.status, num(mean), len(w), r.run_id, str(r.error or "")[:300]])
        classes.append("run" if r.status == "FINISHED" else "failed")
    frame = rs.runs.drop(columns=["start_time"])
    return Section("runs", "Runs", md_table(header, rows), html_table(header, rows, "runs", classes, left_last=True), tables={"runs": frame})


@section("not_run")
def not_run(ctx: ReportContext) -> Optional[Section]:
    skipped = ctx.runset.plan.get("skipped", [])
    if not skipped:
        return None
    header = ["feature set", "reason"]
    rows = [[s["features"], s["reason"]] for s in skipped]
    return Section("not_run", "Feature sets not run", md_table(header, rows), html_table(header, rows, "skipped"))
