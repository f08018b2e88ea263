"""The report's figures as PNG bytes (matplotlib, Agg backend, nothing shown on screen).

bars: mean +- std of a metric per feature set, one bar per model, the baselines as horizontal lines;
windows: per-window values, one line per feature set, a panel per model; cold_warm: a metric on cold vs
warm test cases per feature set; gains: relative gains with their (per-gain) user-level bootstrap intervals,
green where Holm's correction over the report's comparisons shows a difference.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from captionrec import contracts as C

BASELINE_STYLE = {"popularity": dict(color="0.35", ls="--", lw=1.2), "random": dict(color="0.6", ls=":", lw=1.2)}


def _figure(width: float, height: float, ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), squeeze=False)
    return fig, list(axes[0])


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _label(metric: str) -> str:
    return metric.replace("cold_", "cold ").replace("warm_", "warm ").replace("hr", "HR").replace("ndcg", "nDCG")


def bars(table: pd.DataFrame, metric: str) -> bytes:
    """Grouped bars with std error bars: x = feature set (table order), one bar per model."""
    name = C.metric_name(metric)
    feats = list(dict.fromkeys(table["features"]))
    models = list(dict.fromkeys(table["model"]))
    fig, (ax,) = _figure(max(6.0, 0.9 * len(feats) + 2), 4.0)
    width = 0.8 / max(1, len(models))
    x = np.arange(len(feats))
    for i, model in enumerate(models):
        sub = table[table["model"] == model].set_index("features").reindex(feats)
        ax.bar(
            x + (i - (len(models) - 1) / 2) * width,
            sub[f"{name}_mean"],
            width,
            yerr=sub[f"{name}_std"],
            capsize=3,
            label=model,
        )
    for base in C.BASELINES:
        col = f"{base}_{name}_mean"
        if col in table and table[col].notna().any():
            ax.axhline(float(table[col].mean()), label=f"{base} baseline", **BASELINE_STYLE[base])
    ax.set_xticks(x, feats, rotation=30, ha="right")
    ax.set_ylabel(f"test {_label(metric)} (mean ± std over windows)")
    ax.set_title(f"{_label(metric)} per feature set and model")
    ax.legend(fontsize=8)
    return _png(fig)


def windows(frame: pd.DataFrame, runs: pd.DataFrame, metric: str, order: list[str]) -> bytes:
    """Per-window lines (mean over seeds), one panel per model; the popularity baseline dashed."""
    w = frame[frame["metric"] == metric].merge(runs[["run_id", "features", "model"]], on="run_id")
    models = list(dict.fromkeys(runs.loc[runs["status"] == "FINISHED", "model"]))
    fig, axes = _figure(5.0 * max(1, len(models)), 3.8, ncols=max(1, len(models)))
    for ax, model in zip(axes, models):
        sub = w[w["model"] == model]
        mine = sub[sub["series"] == "model"].groupby(["features", "window"])["value"].mean()
        for fs in [f for f in order if f in mine.index.get_level_values(0)]:
            s = mine.loc[fs]
            ax.plot(s.index, s.values, marker="o", label=fs)
        for base in C.BASELINES:
            b = sub[sub["series"] == base].groupby("window")["value"].mean()
            if len(b):
                ax.plot(b.index, b.values, label=f"{base} baseline", **BASELINE_STYLE[base])
        ax.set_title(f"{model}: test {_label(metric)} per window")
        ax.set_xlabel("window")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7)
    return _png(fig)


def cold_warm(frame: pd.DataFrame, order: list[str], metric: str) -> bytes:
    """frame: features, model, subset (cold / warm, or all when warm is unknown), value."""
    models = list(dict.fromkeys(frame["model"]))
    subsets = list(dict.fromkeys(frame["subset"]))
    fig, axes = _figure(max(6.0, 0.9 * len(order) + 2) * 0.8 * max(1, len(models)), 3.8, ncols=max(1, len(models)))
    for ax, model in zip(axes, models):
        sub = frame[frame["model"] == model]
        feats = [f for f in order if f in set(sub["features"])]
        x = np.arange(len(feats))
        width = 0.8 / max(1, len(subsets))
        for i, s in enumerate(subsets):
            vals = sub[sub["subset"] == s].set_index("features")["value"].reindex(feats)
            ax.bar(x + (i - (len(subsets) - 1) / 2) * width, vals, width, label=f"{s} items")
        ax.set_xticks(x, feats, rotation=30, ha="right")
        ax.set_title(f"{model}: {_label(metric)} on cold vs warm targets")
        ax.legend(fontsize=8)
    return _png(fig)


def gains(frame: pd.DataFrame, metric: str) -> bytes | None:
    """Relative gain per comparison and model with its interval (rows without an interval are left out)."""
    sub = frame[(frame["metric"] == metric) & frame["gain_lo"].notna()]
    if sub.empty:
        return None
    labels = [f"{r.comparison} ({r.model})" for r in sub.itertuples()]
    fig, (ax,) = _figure(7.0, 0.45 * len(sub) + 1.2)
    y = np.arange(len(sub))[::-1]
    g = 100 * sub["gain"].to_numpy()
    err = np.vstack([g - 100 * sub["gain_lo"].to_numpy(), 100 * sub["gain_hi"].to_numpy() - g])
    for i, sig in enumerate(sub["holm_significant"]):
        ax.errorbar(g[i], y[i], xerr=err[:, i : i + 1], fmt="o", color="tab:green" if sig else "tab:gray", capsize=3)
    ax.axvline(0, color="0.4", lw=1)
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"relative gain in {_label(metric)} (%), user-level bootstrap 95% interval (green: Holm verdict)")
    return _png(fig)
