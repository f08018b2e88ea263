"""The report summary's comparisons table: every gain in Holm's family (`captionrec.report.compare.correct`)
with its gain, Holm-corrected interval and verdict, and the seeds-per-row fact."""

from __future__ import annotations

import pandas as pd

from captionrec.report.render import esc, html_table, interval, md_table, pct


def metric_label(metric: str) -> str:
    return metric.replace("cold_", "cold ").replace("hr", "HR").replace("ndcg", "nDCG")


def seed_fact(t: pd.DataFrame) -> str:
    """'2 (every row)', or '1-3 (the table's seeds column has each row's)' when rows differ."""
    lo, hi = int(t["seeds"].min()), int(t["seeds"].max())
    return f"{lo} (every row)" if lo == hi else f"{lo}-{hi} (the table's seeds column has each row's)"


def verdicts(g: pd.DataFrame, confidence: float) -> tuple[str, str]:
    """The summary's comparisons table: every gain Holm's family holds, with its corrected interval and verdict."""
    fam = g[g["p_holm"].notna()] if len(g) else g
    if fam.empty:
        text = "No comparison has an interval (no paired cases artifacts)."
        return f"\n{text}\n", f"<p>{esc(text)}</p>"
    alpha = 1 - confidence
    shown = sum(fam["holm_significant"])
    intro = (
        f"Differences larger than their interval, after Holm's correction over the {len(fam)} comparisons "
        f"below (family-wise error {alpha:g}): {shown} of {len(fam)}. Gain: feature set - baseline in the metric "
        f"(relative gain in brackets); corrected interval: the difference's interval at the level Holm tests it "
        f"at (user-level bootstrap standard error, normal quantile); it excludes 0 exactly when the verdict is "
        f"higher / lower."
    )
    header = ["comparison", "model", "metric", "gain", "corrected interval", "verdict"]
    rows = [
        [
            r.comparison,
            r.model,
            metric_label(r.metric),
            f"{r.diff:+.4f} ({pct(r.gain)})",
            interval(r.holm_lo, r.holm_hi, as_pct=False, digits=4),
            r.verdict,
        ]
        for r in fam.itertuples()
    ]
    classes = ["sig" if r.holm_significant else "" for r in fam.itertuples()]
    untested = sorted({f"{r.comparison} ({r.model}): {r.note}" for r in g.itertuples() if pd.isna(r.p_holm)})
    md = f"\n{intro}\n\n{md_table(header, rows)}"
    html = f"<p>{esc(intro)}</p>" + html_table(header, rows, "verdicts", classes, left=3, left_last=True)
    if untested:
        md += "\nNot tested: " + "; ".join(untested) + ".\n"
        html += f'<p class="note">Not tested: {esc("; ".join(untested))}.</p>'
    return md, html
