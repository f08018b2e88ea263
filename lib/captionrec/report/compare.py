"""The report's comparisons: per (feature set, model) means over windows and seeds, the gains of a
caption feature set over its baseline with paired bootstrap intervals, and cold vs warm targets. Pure pandas /
numpy; the metric definitions and the bootstrap are `captionrec.evaluation`.

Table: a row's value for a metric is the mean (and sample std) of that metric over every (run, window)
of the row's runs (the runs differ by seed), from the per-window values the runs logged.

Gains: "A vs B" pairs the test cases of A's runs and B's runs with the same model by (window, user_idx,
chunk), checking that both tested the same targets, and bootstraps them by user
(`captionrec.evaluation.bootstrap.cluster_bootstrap`: users resampled with all their cases, each side's seeds
resampled too; the statistic is the one the table shows, the mean over windows of each window's mean over
cases; relative gain = A / B - 1). Holm's correction runs over every gain with an interval (the family the
report's summary lists): `holm_lo` / `holm_hi` / `holm_significant` / `verdict`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from captionrec import contracts as C
from captionrec.evaluation.bootstrap import cluster_bootstrap, holm, paired_runs, subset_mask
from captionrec.evaluation.metrics import case_values, mean_std


def summary_table(
    runs: pd.DataFrame, windows: pd.DataFrame, metrics: Iterable[str], order: list[str] | None = None
) -> pd.DataFrame:
    """One row per (feature set, model) over its finished runs: runs, seeds, windows, and per metric
    `<m>_mean` / `<m>_std` for the model and `<baseline>_<m>_mean` / `_std` for each baseline."""
    done = runs[runs["status"] == "FINISHED"]
    rows = []
    for (features, model), grp in done.groupby(["features", "model"], sort=False):
        ids = set(grp["run_id"])
        w = windows[windows["run_id"].isin(ids)]
        row = {
            "features": features,
            "model": model,
            "runs": len(grp),
            "seeds": int(grp["seed"].nunique()),
            "windows": int(w["window"].nunique()),
        }
        for metric in metrics:
            name = C.metric_name(metric)
            for series in ("model", *C.BASELINES):
                vals = w.loc[(w["metric"] == metric) & (w["series"] == series), "value"]
                mean, std = mean_std(vals)
                prefix = "" if series == "model" else f"{series}_"
                row[f"{prefix}{name}_mean"], row[f"{prefix}{name}_std"] = mean, std
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    rank = {fs: i for i, fs in enumerate(order or [])}
    table["_o"] = table["features"].map(lambda f: rank.get(f, len(rank)))
    return table.sort_values(["_o", "features", "model"]).drop(columns="_o").reset_index(drop=True)


@dataclass
class Gain:
    comparison: str
    feature: str
    baseline: str
    model: str
    metric: str
    feature_value: float = math.nan
    baseline_value: float = math.nan
    gain: float = math.nan  # relative: feature / baseline - 1
    gain_lo: float = math.nan
    gain_hi: float = math.nan
    diff: float = math.nan  # absolute: feature - baseline
    diff_lo: float = math.nan
    diff_hi: float = math.nan
    cases: int = 0
    users: int = 0
    feature_runs: int = 0  # one run per seed
    baseline_runs: int = 0
    feature_seed_std: float = math.nan  # std over the side's seeds of its statistic (NaN for one seed)
    baseline_seed_std: float = math.nan
    diff_se: float = math.nan  # the bootstrap's standard error of diff
    p: float = math.nan  # two-sided, normal approximation with diff_se
    p_holm: float = math.nan  # Holm-adjusted over the report's family of gains
    holm_level: float = math.nan  # the level Holm tests this gain at
    holm_lo: float = math.nan  # diff's interval at that level (excludes 0 exactly when holm_significant)
    holm_hi: float = math.nan
    holm_significant: bool = False
    verdict: str = ""  # higher / lower / no difference shown (after Holm); "" when not tested
    note: str = ""

    @property
    def significant(self) -> bool:
        """The uncorrected (per-gain) interval of the difference excludes 0; the report's verdicts use
        `holm_significant`."""
        return bool(self.cases) and (self.diff_lo > 0 or self.diff_hi < 0)


def gains(
    comparisons: Iterable[str],
    runs: pd.DataFrame,
    cases_of: Callable[[str], pd.DataFrame | None],
    metrics: Iterable[str],
    samples: int,
    confidence: float,
    seed: int,
) -> list[Gain]:
    """Every comparison x model x metric; a comparison that cannot be computed carries a note saying why. A cold
    metric against (or of) the ID-only feature set is not a comparison: ID cannot score cold items."""
    done = runs[runs["status"] == "FINISHED"]
    out: list[Gain] = []
    for comp in comparisons:
        feature, baseline = (p.strip() for p in comp.split(" vs "))
        for model in sorted(done["model"].unique()):
            fa = done[(done["features"] == feature) & (done["model"] == model)]["run_id"].tolist()
            fb = done[(done["features"] == baseline) & (done["model"] == model)]["run_id"].tolist()
            for metric in metrics:
                if metric.startswith("cold_") and "id" in (feature, baseline):  # C.ID_NO_COLD: not a comparison
                    continue
                g = Gain(comp, feature, baseline, model, metric, feature_runs=len(fa), baseline_runs=len(fb))
                out.append(g)
                if not fa or not fb:
                    g.note = f"no finished run of {feature if not fa else baseline}"
                    continue
                ca, cb = [cases_of(r) for r in fa], [cases_of(r) for r in fb]
                if any(c is None for c in ca + cb):
                    g.note = "no cases artifact (the train stage logged none)"
                    continue
                names = ([f"run {r} ({feature})" for r in fa], [f"run {r} ({baseline})" for r in fb])
                paired = paired_runs(ca, cb, metric, *names)
                g.cases = len(paired)
                if not len(paired):
                    g.note = "no paired cases"
                    continue
                keys = paired.keys
                bs = cluster_bootstrap(paired.a, paired.b, keys["window"], keys["user_idx"], samples, confidence, seed)
                _fill(g, bs)
    correct(out, 1 - confidence)
    return out


def _fill(g: Gain, bs: dict[str, float]) -> None:
    g.users = int(bs["users"])
    g.feature_value, g.baseline_value = bs["a"], bs["b"]
    g.gain, g.gain_lo, g.gain_hi = bs["rel"], bs["rel_lo"], bs["rel_hi"]
    g.diff, g.diff_lo, g.diff_hi, g.diff_se = bs["diff"], bs["diff_lo"], bs["diff_hi"], bs["diff_se"]
    g.feature_seed_std, g.baseline_seed_std = bs["a_seed_std"], bs["b_seed_std"]
    if bs["b"] == 0:
        g.note = "baseline is 0: no relative gain"


def tested(items: list[Gain]) -> list[Gain]:
    """The gains Holm's family holds: every one with a difference and a standard error."""
    return [g for g in items if g.cases and math.isfinite(g.diff) and math.isfinite(g.diff_se)]


def correct(items: list[Gain], alpha: float) -> None:
    """Holm over `tested(items)`, in place: p, p_holm, holm_level, holm_lo / hi, holm_significant, verdict."""
    family = tested(items)
    h = holm([g.diff for g in family], [g.diff_se for g in family], alpha)
    for i, g in enumerate(family):
        g.p, g.p_holm, g.holm_level = float(h.p[i]), float(h.p_adjusted[i]), float(h.level[i])
        g.holm_lo, g.holm_hi, g.holm_significant = float(h.lo[i]), float(h.hi[i]), bool(h.reject[i])
        g.verdict = ("higher" if g.diff > 0 else "lower") if g.holm_significant else "no difference shown"


def gains_frame(items: list[Gain]) -> pd.DataFrame:
    rows = [{**g.__dict__, "significant": g.significant} for g in items]
    return pd.DataFrame(rows, columns=[*Gain.__dataclass_fields__, "significant"])


def cold_warm_frame(
    runs: pd.DataFrame, windows: pd.DataFrame, cases_of: Callable[[str], pd.DataFrame | None], metric: str = "hr@10"
) -> pd.DataFrame:
    """features, model, subset, value: the metric on cold and warm targets per (feature set, model), each the
    mean over the runs' windows. Warm needs the cases artifacts; without them the rows are cold vs all."""
    rows = []
    for r in runs[runs["status"] == "FINISHED"].itertuples():
        cases = cases_of(r.run_id)
        if cases is not None:
            for subset in ("cold", "warm"):
                sel = cases[subset_mask(cases, f"{subset}_{metric}")]
                vals = case_values(sel["rank"].to_numpy(), metric)
                per_window = pd.Series(vals).groupby(sel["window"].to_numpy()).mean()
                rows.append((r.features, r.model, subset, float(per_window.mean()) if len(per_window) else math.nan))
            continue
        w = windows[(windows["run_id"] == r.run_id) & (windows["series"] == "model")]
        for subset, name in (("cold", f"cold_{metric}"), ("all", metric)):
            rows.append((r.features, r.model, subset, mean_std(w.loc[w["metric"] == name, "value"])[0]))
    frame = pd.DataFrame(rows, columns=["features", "model", "subset", "value"])
    return frame.groupby(["features", "model", "subset"], as_index=False, sort=False)["value"].mean()
