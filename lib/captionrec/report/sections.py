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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from captionrec import contracts as C
from captionrec.evaluation.metrics import mean_std
from captionrec.report import compare, plots
from captionrec.report.render import esc, html_table, img, interval, md_table, num, pct, pm
from captionrec.report.runs import RunSet
from captionrec.report.verdicts import metric_label as _metric_label
from captionrec.report.verdicts import seed_fact, verdicts


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
        return compare.summary_table(self.runset.runs, self.runset.windows, self.config.metrics, self.order)

    @cached_property
    def gains(self) -> pd.DataFrame:
        c = self.config
        items = compare.gains(
            c.comparisons, self.runset.runs, self.runset.cases, c.metrics, c.bootstrap_samples, c.confidence, c.seed
        )
        return compare.gains_frame(items)


SectionBuilder = Callable[[ReportContext], Section | None]
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
        notes.append(
            f"Captions come from tiny random models (captions.synthetic; kinds: {kinds}): the caption "
            "features measure the pipeline, not the captioners."
        )
    if not has_base:
        notes.append(
            "The runs logged no random / popularity baselines (train stage before the run contract): "
            "baseline columns are empty."
        )
    if not has_cases:
        notes.append("The runs logged no per-case artifacts: gains have no bootstrap interval.")
    t = ctx.table
    if len(t):
        facts.append(("seeds per row", seed_fact(t)))
        if (t["seeds"] == 1).any():
            notes.append(
                "Rows with one seed: their intervals hold no seed-to-seed variation (only which users were tested)."
            )
    md = "".join(f"- **{k}**: {v}\n" for k, v in facts) + "".join(f"\n> {n}\n" for n in notes)
    html = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"
    html += "".join(f'<p class="warn">{esc(n)}</p>' for n in notes)
    tmd, thtml = (
        verdicts(ctx.gains, c.confidence)
        if "gains" in c.sections
        else ("\nNo comparisons (the gains section is off).\n", "")
    )
    return Section("summary", "Summary", md + tmd, html + thtml)


@section("table")
def table(ctx: ReportContext) -> Section | None:
    t, metrics = ctx.table, ctx.config.metrics
    if t.empty:
        return None
    header = ["feature set", "model", "seeds", "windows"] + [_metric_label(m) for m in metrics]
    header += [f"{b} {_metric_label(m)}" for b in C.BASELINES[::-1] for m in metrics]
    rows = []
    for r in t.to_dict("records"):
        row = [r["features"], r["model"], r["seeds"], r["windows"]]
        cells = [pm(r[f"{C.metric_name(m)}_mean"], r[f"{C.metric_name(m)}_std"]) for m in metrics]
        row += [C.ID_NO_COLD if r["features"] == "id" and m.startswith("cold_") else c for m, c in zip(metrics, cells)]
        row += [num(r[f"{b}_{C.metric_name(m)}_mean"]) for b in C.BASELINES[::-1] for m in metrics]
        rows.append(row)
    intro = (
        "Mean ± sample std over windows (and seeds) of each row's finished runs (seeds: how many, one run "
        "each); the baselines score the same test cases (random scorer, popularity before the window)."
    )
    return Section(
        "table",
        "Results per feature set and model",
        f"{intro}\n\n{md_table(header, rows)}",
        f'<p class="note">{esc(intro)}</p>' + html_table(header, rows, "results"),
        tables={"report": t},
    )


@section("gains")
def gains(ctx: ReportContext) -> Section | None:
    g = ctx.gains
    if g.empty:
        return None
    c = ctx.config
    header = [
        "comparison",
        "model",
        "metric",
        "feature",
        "baseline",
        "relative gain",
        f"{int(c.confidence * 100)}% interval",
        "Holm",
        "seeds",
        "seed std",
        "users / cases",
        "note",
    ]
    rows, classes, seen = [], [], set()
    for r in g.itertuples():
        if r.cases == 0 and r.note:  # nothing computed: one row per comparison and model says why
            if (r.comparison, r.model) in seen:
                continue
            seen.add((r.comparison, r.model))
            rows.append([r.comparison, r.model, "all", "—", "—", "—", "—", "—", "—", "—", 0, r.note])
        else:
            rows.append(
                [
                    r.comparison,
                    r.model,
                    r.metric,
                    num(r.feature_value),
                    num(r.baseline_value),
                    pct(r.gain),
                    interval(r.gain_lo, r.gain_hi),
                    r.verdict or "—",
                    f"{r.feature_runs} / {r.baseline_runs}",
                    f"{num(r.feature_seed_std)} / {num(r.baseline_seed_std)}",
                    f"{r.users} / {r.cases}",
                    r.note,
                ]
            )
        classes.append("sig" if r.holm_significant else "")
    intro = (
        f"Relative gain of each caption feature over its baseline feature on the same test cases (paired by "
        f"window, user and chunk; both sides' targets checked equal). Interval: {c.bootstrap_samples} draws of a "
        f"user-level bootstrap (users resampled with all of their cases in every window, the same users for both "
        f"sides; each side's seeds resampled too), per gain, not corrected. Holm: the verdict after Holm's "
        f"correction over every gain below (the summary's table). Seeds: runs of the feature / baseline row; seed "
        f"std: the std over a side's seeds of its value (— for one seed). Green rows: the Holm verdict excludes 0."
    )
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
def figures(ctx: ReportContext) -> Section | None:
    t, rs = ctx.table, ctx.runset
    if t.empty:
        return None
    figs = {f"bars_{C.metric_name(m)}": plots.bars(t, m) for m in ctx.config.metrics}
    first = next((m for m in ctx.config.metrics if not m.startswith("cold_")), ctx.config.metrics[0])
    figs[f"windows_{C.metric_name(first)}"] = plots.windows(rs.windows, rs.runs, first, ctx.order)
    cw = compare.cold_warm_frame(rs.runs, rs.windows, rs.cases, first)
    if cw["value"].notna().any():
        figs[f"cold_warm_{C.metric_name(first)}"] = plots.cold_warm(cw, ctx.order, first)
    md = "".join(f"![{n}](plots/{n}.png)\n\n" for n in figs)
    return Section("plots", "Plots", md, "".join(img(p, n) for n, p in figs.items()), figures=figs)


@section("runs")
def runs(ctx: ReportContext) -> Section:
    rs = ctx.runset
    first = ctx.config.metrics[0]
    header = [
        "feature set",
        "model",
        "seed",
        "status",
        f"{_metric_label(first)} (mean over windows)",
        "windows",
        "run id",
        "error",
    ]
    rows, classes = [], []
    for r in rs.runs.sort_values(["features", "model", "seed"]).itertuples():
        w = rs.windows[
            (rs.windows["run_id"] == r.run_id) & (rs.windows["series"] == "model") & (rs.windows["metric"] == first)
        ]
        mean = mean_std(w["value"])[0]
        seed = "" if r.seed is None or (isinstance(r.seed, float) and math.isnan(r.seed)) else int(r.seed)
        rows.append([r.features, r.model, seed, r.status, num(mean), len(w), r.run_id, str(r.error or "")[:300]])
        classes.append("run" if r.status == "FINISHED" else "failed")
    frame = rs.runs.drop(columns=["start_time"])
    return Section(
        "runs",
        "Runs",
        md_table(header, rows),
        html_table(header, rows, "runs", classes, left_last=True),
        tables={"runs": frame},
    )


@section("not_run")
def not_run(ctx: ReportContext) -> Section | None:
    skipped = ctx.runset.plan.get("skipped", [])
    if not skipped:
        return None
    header = ["feature set", "reason"]
    rows = [[s["features"], s["reason"]] for s in skipped]
    return Section("not_run", "Feature sets not run", md_table(header, rows), html_table(header, rows, "skipped"))


# ---------------------------------------------------------------------------------- caption-quality analysis
# Sections over `captionrec.analysis` (issue 13): computed once per report from ctx.extras["store"] (the
# Delta tables), ctx.extras["analyze"] (AnalyzeConfig), ctx.extras["data_source"] and the runs; or taken from
# ctx.extras["analysis"] when the caller computed it. Without either, they are left out.


def _analysis(ctx: ReportContext):
    from captionrec.analysis.core import analysis_for

    return analysis_for(ctx)


def _frame(
    df: pd.DataFrame,
    cols: list[tuple[str, str, Callable[[Any], Any]]],
    table_id: str,
    classes: list[str] | None = None,
    left: int = 2,
) -> tuple[str, str]:
    """(Markdown, HTML) of a frame's columns: (header, column, formatter)."""
    if df.empty:
        return "_(none)_\n", '<p class="note">(none)</p>'
    header = [h for h, _, _ in cols]
    rows = [[fmt(r.get(c)) for _, c, fmt in cols] for r in df.to_dict("records")]
    return md_table(header, rows), html_table(header, rows, table_id, classes, left=left)


def _notes(notes: list[str]) -> tuple[str, str]:
    return "".join(f"\n> {n}\n" for n in notes), "".join(f'<p class="warn">{esc(n)}</p>' for n in notes)


def _txt(v: Any, width: int = 160) -> str:
    s = "" if v is None or (isinstance(v, float) and math.isnan(v)) else " ".join(str(v).split())
    return s if len(s) <= width else s[: width - 1] + "…"


def _n(v: Any) -> Any:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else int(v)


def _f2(v: Any) -> str:
    return num(v, 2)


def _f3(v: Any) -> str:
    return num(v, 3)


def _in_order(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Rows by feature set in the report's order (then model, keeping the rest of the order)."""
    if df.empty:
        return df
    rank = {fs: i for i, fs in enumerate(order)}
    key = df["features"].map(lambda f: rank.get(f, len(rank)))
    return df.assign(_o=key).sort_values(["_o", "features", "model"], kind="stable").drop(columns="_o")


def _assemble(
    key: str, title: str, parts: list[tuple[str, str, str]], notes: list[str], tables: dict[str, pd.DataFrame]
) -> Section:
    """parts: (sub-heading, intro, (md, html) table) joined into one section."""
    md_notes, html_notes = _notes(notes)
    md, html = md_notes, html_notes
    for heading, intro, (tmd, thtml) in parts:
        md += f"\n**{heading}.** {intro}\n\n{tmd}"
        html += f'<h3>{esc(heading)}</h3><p class="note">{esc(intro)}</p>{thtml}'
    return Section(key, title, md, html, tables=tables)


@section("quality")
def quality(ctx: ReportContext) -> Section | None:
    a = _analysis(ctx)
    if a is None:
        return None
    cfg, notes = a.config, [*a.notes.get("inputs", []), *a.notes.get("quality", []), *a.notes.get("vectors", [])]
    if a.synthetic_kinds:
        notes.insert(
            0,
            f"Captions of kind(s) {', '.join(a.synthetic_kinds)} are synthetic (tiny random models): their "
            "statistics describe noise.",
        )
    q = a.quality
    qcols = [
        ("kind", "kind", str),
        ("captioner version", "captioner_version", str),
        ("synthetic", "synthetic", str),
        ("ok / skipped / error", "ok", str),
        ("words (mean)", "words_mean", _f2),
        ("distinct-1", "distinct_1", _f3),
        ("distinct-2", "distinct_2", _f3),
        ("exact duplicates", "exact_duplicates", _f3),
        ("vectors", "vectors", _n),
        (f"near-duplicates (cos ≥ {cfg.near_duplicate})", "near_duplicates", _f3),
        ("purity@1", "purity_1", _f3),
        (f"purity@{cfg.knn}", "purity_k", _f3),
        ("chance", "chance", _f3),
    ]
    q = q.assign(ok=[f"{r.ok} / {r.skipped} / {r.error}" for r in q.itertuples()]) if len(q) else q
    v = a.vectors
    vcols = [
        ("feature set", "feature_set", str),
        ("model", "model_id", str),
        ("caption versions", "caption_versions", str),
        ("items", "items", _n),
        ("near-duplicates", "near_duplicates", _f3),
        ("NN cosine", "nn_cosine_mean", _f3),
        ("pair cosine", "pair_cosine_mean", _f3),
        ("labelled", "labelled", _n),
        ("purity@1", "purity_1", _f3),
        (f"purity@{cfg.knn}", "purity_k", _f3),
        ("chance", "chance", _f3),
        (f"purity@{cfg.knn} on common items", "purity_k_common", _f3),
        ("common items", "common_items", _n),
    ]
    parts = [
        (
            "Per caption kind and captioner version",
            "Text of the ok captions (words are lower-case tokens; distinct-n = "
            "distinct n-grams / all n-grams over the group), and the near-duplicates and topic purity of the vectors "
            "embedded from them.",
            _frame(q, qcols, "quality"),
        ),
        (
            "How discriminative the vectors are",
            f"Near-duplicates: share of items whose nearest other item has cosine ≥ "
            f"{cfg.near_duplicate}. Purity@k: mean share of an item's k nearest neighbours (cosine) with its topic, among "
            f"labelled items; chance: the same for random neighbours. The common-items column compares every feature set "
            f"on the same labelled items. Caption versions: the captioners the vectors were embedded from ('-': that kind's "
            f"caption was missing for those items).",
            _frame(v, vcols, "vectors", left=3),
        ),
    ]
    return _assemble("quality", "Caption quality", parts, notes, {"quality": a.quality, "vectors": a.vectors})


@section("grounding")
def grounding_section(ctx: ReportContext) -> Section | None:
    a = _analysis(ctx)
    if a is None:
        return None
    g, low = a.grounding, a.grounding_low
    gcols = [
        ("kind", "kind", str),
        ("captioner version", "captioner_version", str),
        ("against", "source", str),
        ("items", "items", _n),
        ("no value", "no_value", _n),
        ("grounded (mean)", "grounded_mean", _f3),
        ("covered (mean)", "covered_mean", _f3),
        ("share at 0", "zero_share", _f3),
    ]
    lcols = [
        ("kind", "kind", str),
        ("item", "item_id", str),
        ("measure", "measure", str),
        ("value", "value", _f3),
        ("caption", "caption", _txt),
        ("transcript", "transcript", _txt),
        ("tags", "tags", _txt),
        ("title", "title", _txt),
    ]
    parts = [
        (
            "Content-word overlap",
            "grounded = shared content words / the caption's; covered = shared / the source's. "
            "Audio captions against their transcript and sound tags (low grounded: the caption says what neither did), "
            "video captions against the title (low covered: the caption misses what the title names). A template audio "
            "caption is its sources: grounded ≈ 1 by construction.",
            _frame(g, gcols, "grounding"),
        ),
        (
            f"Lowest overlap, for review ({a.config.review_items} per kind)",
            "Sorted by the kind's measure.",
            _frame(low, lcols, "grounding_review", left=8),
        ),
    ]
    return _assemble("grounding", "Caption grounding", parts, [], {"grounding": g, "grounding_review": low})


@section("audio_classes")
def audio_class_section(ctx: ReportContext) -> Section | None:
    a = _analysis(ctx)
    if a is None:
        return None
    k, cfg = a.config.top_k, a.config.audio
    rule = (
        f"silent: no usable audio track (skipped as no_audio_stream / silent, or items.has_audio false) or no "
        f"speech and a silence top tag; speech: a transcript of ≥ {cfg.speech_min_words} words; music: a music "
        f"tag scored ≥ {cfg.music_min_score}; other: the rest with audio; unknown: no audio caption row or one in error."
    )
    ccols = [
        ("audio class", "audio_class", str),
        ("items", "items", _n),
        ("share", "share", _f3),
        ("transcript words (mean)", "transcript_words_mean", _f2),
    ]
    mcols = [
        ("feature set", "features", str),
        ("model", "model", str),
        ("audio class", "audio_class", str),
        ("cases", "cases", _n),
        (f"HR@{k}", f"hr_{k}", num),
        (f"nDCG@{k}", f"ndcg_{k}", num),
        (f"popularity HR@{k}", f"popularity_hr_{k}", num),
        (f"random HR@{k}", f"random_hr_{k}", num),
    ]
    gains = a.class_gains
    shown = gains[gains["metric"].isin([f"hr@{k}", "—"])] if len(gains) else gains
    gcols = [
        ("comparison", "comparison", str),
        ("model", "model", str),
        ("audio class", "audio_class", str),
        ("cases", "cases", _n),
        ("feature", "feature_value", num),
        ("baseline", "baseline_value", num),
        ("relative gain", "gain", pct),
        ("95% interval", "gain_lo", str),
        ("note", "note", str),
    ]
    shown = (
        shown.assign(gain_lo=[interval(lo, hi) for lo, hi in zip(shown["gain_lo"], shown["gain_hi"])])
        if len(shown)
        else shown
    )
    classes = ["sig" if s else "" for s in shown["significant"]] if len(shown) else None
    metrics = _in_order(a.class_metrics, ctx.order)
    parts = [
        ("Items per audio class", rule, _frame(a.class_counts, ccols, "audio_class_counts", left=1)),
        (
            "Metrics per audio class of the target item",
            "Cases pooled over windows, each case averaged over the "
            "runs (seeds) of its row; baselines score the same cases.",
            _frame(metrics, mcols, "audio_class_metrics", left=3),
        ),
    ]
    if len(shown):
        parts.append(
            (
                f"Gains per audio class (HR@{k})",
                "Paired by test case, user-level bootstrap as in the gains table, per gain and not "
                "corrected for the number of classes (exploratory); green rows: that interval of the difference "
                "excludes 0. Does the audio caption help most where the audio carries the content (speech, music)?",
                _frame(shown, gcols, "audio_class_gains", classes, left=3),
            )
        )
    tables = {
        "audio_classes": a.audio_classes,
        "audio_class_metrics": a.class_metrics,
        "audio_class_gains": a.class_gains,
    }
    return _assemble("audio_classes", "Audio-heavy subsets", parts, a.notes.get("runs", []), tables)


@section("win_loss")
def win_loss_section(ctx: ReportContext) -> Section | None:
    a = _analysis(ctx)
    if a is None:
        return None
    k = a.config.top_k
    titles = a.inputs.titles
    classes = a.audio_classes.set_index("item_id")["audio_class"] if len(a.audio_classes) else pd.Series(dtype=object)
    items = a.win_loss_items.assign(
        title=lambda d: d["item_id"].map(titles), audio_class=lambda d: d["item_id"].map(classes)
    )
    cases = (
        a.win_loss_cases.assign(title=lambda d: d["item_id"].map(titles)) if len(a.win_loss_cases) else a.win_loss_cases
    )
    scols = [
        ("comparison", "comparison", str),
        ("model", "model", str),
        ("paired cases", "cases", _n),
        ("wins", "win", _n),
        ("losses", "loss", _n),
        ("both hit", "both", _n),
        ("neither", "neither", _n),
        ("net (share)", "net", pct),
    ]
    icols = [
        ("comparison", "comparison", str),
        ("model", "model", str),
        ("direction", "direction", str),
        ("item", "item_id", str),
        ("title", "title", _txt),
        ("audio class", "audio_class", str),
        ("wins", "wins", _n),
        ("losses", "losses", _n),
        ("cases", "cases", _n),
    ]
    ccols = [
        ("comparison", "comparison", str),
        ("model", "model", str),
        ("outcome", "outcome", str),
        ("window", "window", _n),
        ("user", "user_idx", _n),
        ("item", "item_id", str),
        ("title", "title", _txt),
        ("rank (feature)", "rank_feature", _n),
        ("rank (baseline)", "rank_baseline", _n),
    ]
    parts = [
        (
            f"Cases won and lost (top {k})",
            f"A win: the caption-feature run ranks the target in the top {k} and its "
            f"raw-feature baseline doesn't (median rank over seeds); a loss: the reverse. Items with the most wins and "
            f"losses are in the caption gallery, captions beside transcript and title.",
            _frame(a.win_loss, scols, "win_loss"),
        ),
        (
            "Items won and lost most",
            "Net wins per item (wins - losses).",
            _frame(items, icols, "win_loss_items", left=6),
        ),
        (
            "User cases",
            "The wins and losses with the largest rank gaps.",
            _frame(cases, ccols, "win_loss_cases", left=3),
        ),
    ]
    tables = {"win_loss": a.win_loss, "win_loss_items": items, "win_loss_cases": cases}
    notes = a.notes.get("win_loss", []) + a.notes.get("runs", [])
    return _assemble("win_loss", "Win / loss cases: caption vs raw features", parts, notes, tables)
