"""The report's "cold" section: the models beside the training-free baselines on the same test cases, on cold
targets (no interaction before t_k), warm targets and all of them.

Rows: every (feature set, model) of finished runs (the mean over its runs, i.e. seeds, of each run's mean over
windows of its per-window mean over cases), then the baselines each run ranked on its cases
(`captionrec.evaluation.baselines`): content kNN once per vector set (a run's feature sets without `id`; every
run of a vector set has the same vectors and cases, so one run's ranks are taken), recent popularity, random-new,
random and popularity (one run's ranks: they do not depend on the run). Rows that give every cold item the same
score cannot rank cold items, and say so in their cold cells instead of showing a 0 that looks like a result:
an ID-only model (one shared unknown vector, `contracts.ID_NO_COLD`) and the popularity scorers (0 interactions
before t_k). Reads only the cases artifacts (`RunSet.cases`); runs from before the cold baselines show none.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd

from captionrec import contracts as C
from captionrec.evaluation.bootstrap import subset_mask
from captionrec.evaluation.metrics import case_values, parse_metric
from captionrec.report.render import esc, html_table, md_table, num
from captionrec.report.sections import ReportContext, Section, section

SUBSETS = ("cold", "warm", "all")
POPULARITY_NO_COLD = "cannot score cold items (no interaction before t_k)"
# (case column, label, cold note) of the baselines that do not depend on the run, in display order
RUN_FREE = (
    ("rank_recent_popularity", f"recent popularity ({C.RECENT_POPULARITY_DAYS} days before t_k)", POPULARITY_NO_COLD),
    ("rank_random_new", "random, new items first", ""),
    ("rank_random", "random", ""),
    ("rank_popularity", "popularity (before t_k)", POPULARITY_NO_COLD),
)


def id_only(features: str) -> bool:
    """An ID-only feature set: its cold items share one unknown vector (it cannot rank them)."""
    return [p.strip() for p in features.split("+")] == ["id"]


def vector_set(features: str) -> str:
    """The feature set's vectors (what its content kNN uses): its parts without `id` ('' for ID only)."""
    return "+".join(p.strip() for p in features.split("+") if p.strip() != "id")


def base_metrics(metrics: tuple[str, ...]) -> list[str]:
    """The report's metrics without their cold_ / warm_ prefix, once each, in order."""
    out = []
    for m in metrics:
        subset, kind, k = parse_metric(m)
        name = "mrr" if kind == "mrr" else f"{kind}@{k}"
        if name not in out:
            out.append(name)
    return out


def subset_value(cases: pd.DataFrame, column: str, metric: str, subset: str) -> float:
    """Mean over windows of each window's mean of `metric` over the subset's cases ranked in `column`."""
    sel = cases if subset == "all" else cases[subset_mask(cases, f"{subset}_{metric}")]
    if not len(sel):
        return math.nan
    vals = case_values(sel[column].to_numpy(), metric)
    return float(pd.Series(vals).groupby(sel["window"].to_numpy()).mean().mean())


def _row(kind: str, name: str, model: str, frames: list[pd.DataFrame], column: str, metrics, no_cold: str) -> dict:
    row = {"kind": kind, "name": name, "model": model, "runs": len(frames)}
    row["cold_cases"] = int(frames[0]["cold"].astype(bool).sum())
    row["cases"] = len(frames[0])
    for m in metrics:
        for s in SUBSETS:
            vals = [subset_value(f, column, m, s) for f in frames]
            row[f"{s}_{m}"] = math.nan if (s == "cold" and no_cold) else sum(vals) / len(vals)
    row["note"] = no_cold
    return row


def cold_frame(
    runs: pd.DataFrame, cases_of: Callable[[str], pd.DataFrame | None], metrics: list[str], order: list[str]
) -> pd.DataFrame:
    """kind (model / baseline), name, model, runs, cases, cold_cases, <subset>_<metric> per subset and metric,
    note (why a cold value is missing). Runs without a cases artifact are left out."""
    done = runs[runs["status"] == "FINISHED"]
    rank = {fs: i for i, fs in enumerate(order)}
    done = done.assign(_o=done["features"].map(lambda f: rank.get(f, len(rank))))
    done = done.sort_values(["_o", "features", "model", "run_id"], kind="stable")
    with_cases = [(r, c) for r in done.itertuples() if (c := cases_of(r.run_id)) is not None]
    groups: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for r, cases in with_cases:
        groups.setdefault((r.features, r.model), []).append(cases)
    rows = []
    for (features, model), frames in groups.items():
        no_cold = C.ID_NO_COLD if id_only(features) else ""
        rows.append(_row("model", features, model, frames, "rank", metrics, no_cold))
    knn_done: set[str] = set()
    for r, cases in with_cases:
        vs = vector_set(r.features)
        if vs and vs not in knn_done and "rank_knn" in cases.columns:
            knn_done.add(vs)
            rows.append(_row("baseline", f"content kNN ({vs})", "—", [cases], "rank_knn", metrics, ""))
    for column, label, no_cold in RUN_FREE:
        source = next((c for _, c in with_cases if column in c.columns), None)
        if source is not None:
            rows.append(_row("baseline", label, "—", [source], column, metrics, no_cold))
    return pd.DataFrame(rows)


def _cell(row: dict, subset: str, metric: str) -> str:
    v = row[f"{subset}_{metric}"]
    if subset == "cold" and row["note"] and (v is None or (isinstance(v, float) and math.isnan(v))):
        return row["note"]
    return num(v)


@section("cold")
def cold_section(ctx: ReportContext) -> Section | None:
    metrics = base_metrics(tuple(ctx.config.metrics))
    frame = cold_frame(ctx.runset.runs, ctx.runset.cases, metrics, ctx.order)
    if frame.empty:
        return None
    labels = {m: m.replace("hr", "HR").replace("ndcg", "nDCG").replace("mrr", "MRR") for m in metrics}
    header = ["row", "model", "runs", "cold cases"] + [f"{s} {labels[m]}" for m in metrics for s in SUBSETS]
    records = frame.to_dict("records")
    rows = [
        [r["name"], r["model"], r["runs"], r["cold_cases"]] + [_cell(r, s, m) for m in metrics for s in SUBSETS]
        for r in records
    ]
    classes = ["" if r["kind"] == "model" else "base" for r in records]
    notes = []
    if not frame["name"].isin([label for col, label, _ in RUN_FREE if col == "rank_random_new"]).any():
        notes.append(
            "The runs logged no cold baselines (a train stage from before them): re-run them to rank content kNN, "
            "recent popularity and random-new on their cases."
        )
    intro = (
        "Every row on the same test cases (the runs' cases artifacts); cold = the target had no interaction "
        "before t_k. Models: mean over their runs (seeds). Baselines, without training: content kNN (cosine of a "
        "candidate's vector to the mean of the history's vectors; one row per vector set, the same in every run "
        f"of it), recent popularity (interactions in the {C.RECENT_POPULARITY_DAYS} days before t_k), random with "
        "the new (cold) items first, what a 'show something new' rule does (cold HR@k = E[min(k, C_new) / C_new] "
        "over the C_new new candidates), uniform random, popularity. An ID-only model gives every cold item one "
        "shared unknown vector and the popularity scorers count 0 for each, so their cold cells say they cannot "
        "score cold items; ID-only rows are not compared on cold items."
    )
    md = f"{intro}\n\n" + "".join(f"> {n}\n\n" for n in notes) + md_table(header, rows)
    html = f'<p class="note">{esc(intro)}</p>' + "".join(f'<p class="warn">{esc(n)}</p>' for n in notes)
    html += html_table(header, rows, "cold", classes)
    return Section("cold", "Cold items: models beside training-free baselines", md, html, tables={"cold": frame})
