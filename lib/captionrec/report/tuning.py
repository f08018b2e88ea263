"""The report's "tuning" section: each (feature set, model) row's tuning budget and chosen values.

Reads the grid's plan (`tuning`, written by the experiment stage: budget, finished trials, each trial's
validation score, the chosen trial and its values). Budget 1 says "no tuning". Without a plan that has one
(a report over a search filter, or a grid from before equal tuning) the section is left out.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from captionrec.report.render import html_table, md_table, num
from captionrec.report.sections import ReportContext, Section, section


def tuning_frame(plan_tuning: dict[str, dict[str, Any]], order: list[str]) -> pd.DataFrame:
    """One row per (feature set, model): budget, finished trials, chosen trial, its values and score."""
    rank = {fs: i for i, fs in enumerate(order)}
    rows = []
    for info in plan_tuning.values():
        scores = [float(v) for v in info.get("scores", {}).values() if v is not None]
        finite = [v for v in scores if not math.isnan(v)]
        rows.append(
            {
                "features": info["features"],
                "model": info["model"],
                "budget": int(info["budget"]),
                "finished": int(info.get("finished", 0)),
                "chosen_trial": info.get("trial"),
                "values": ", ".join(f"{k}={v:g}" for k, v in sorted((info.get("values") or {}).items())),
                "metric": info.get("metric", ""),
                "chosen_valid": info.get("valid", math.nan),
                "worst_valid": min(finite) if finite else math.nan,
                "_o": rank.get(info["features"], len(rank)),
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values(["_o", "features", "model"], kind="stable").drop(columns="_o").reset_index(drop=True)


def _intro(df: pd.DataFrame) -> str:
    budgets = sorted(set(df["budget"]))
    metric = df["metric"].iloc[0] or "the validation metric"
    if budgets == [1]:
        return (
            "Budget 1: no tuning. Every row ran its train config as given (epochs chosen on the validation "
            "weeks as always)."
        )
    same = f"the same budget of {budgets[0]} trials" if len(budgets) == 1 else f"budgets {budgets} (NOT equal)"
    return (
        f"Every row had {same} on the first seed (trial 0: the train config as given; then seeded random "
        f"points of the search space), chosen by the mean over windows of {metric} on the validation weeks; no "
        "test number was read before the choice. The other tables use only the chosen trial's runs."
    )


@section("tuning")
def tuning_section(ctx: ReportContext) -> Section | None:
    plan_tuning = ctx.runset.plan.get("tuning") or {}
    if not plan_tuning:
        return None
    df = tuning_frame(plan_tuning, ctx.order)
    header = [
        "feature set",
        "model",
        "budget",
        "trials finished",
        "chosen trial",
        "chosen values",
        "validation (chosen)",
        "validation (worst trial)",
    ]
    rows = [
        [
            r.features,
            r.model,
            r.budget,
            r.finished,
            "—" if r.chosen_trial is None or r.chosen_trial != r.chosen_trial else int(r.chosen_trial),
            r.values or "—",
            num(r.chosen_valid),
            num(r.worst_valid),
        ]
        for r in df.itertuples()
    ]
    intro = _intro(df)
    return Section(
        "tuning",
        "Tuning",
        f"{intro}\n\n{md_table(header, rows)}",
        f"<p>{intro}</p>\n{html_table(header, rows, 'tuning')}",
        tables={"tuning": df},
    )
