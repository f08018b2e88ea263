"""Report stage: a grid's MLflow runs -> the paper-style table, gains with bootstrap intervals, plots,
report.md / report.csv / report.html, and the caption gallery; logged as artifacts of the grid run.

    captionrec report                                   # the newest grid run of tracking.experiment
    captionrec report parent_run_id=<run id>            # a given grid
    captionrec report "filter=params.\\`train.model\\` = 'sasrec'"   # any runs of the experiment

Reads: MLflow (runs, metric histories, cases artifacts), the items and captions tables (gallery).
Writes: <report.out_dir>/<grid run id>/ (nothing to Delta).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from captionrec import contracts as C
from captionrec.report import build, gallery

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from captionrec.config import Config
    from captionrec.tables import TableStore

log = logging.getLogger("captionrec.report")


def read_gallery_tables(store: "TableStore", gcfg: Any) -> tuple[Any, Any] | None:
    """(items, captions) pandas frames of the gallery's items, or None when there are no captions yet."""
    from pyspark.sql import functions as F

    if not (store.exists(C.CAPTIONS) and store.exists(C.ITEMS)):
        return None
    caps = store.read(C.CAPTIONS)
    if gcfg.captioner_versions:
        caps = caps.where(F.col("captioner_version").isin(list(gcfg.captioner_versions)))
    ids = [str(i) for i in gcfg.item_ids] or gallery.pick_items(
        [r["item_id"] for r in caps.where(F.col("kind") == "video").select("item_id").distinct().collect()], gcfg.items
    )
    if not ids:
        return None
    items = store.read(C.ITEMS).where(F.col("item_id").isin(ids)).select("item_id", "title", "video_path").toPandas()
    return items, caps.where(F.col("item_id").isin(ids)).toPandas()


def win_loss_groups(ctx: Any, store: "TableStore", gcfg: Any, n: int) -> list[tuple[str, list[Any]]]:
    """Gallery groups of the items a caption feature wins / loses most against its baseline (captionrec.analysis)."""
    from dataclasses import replace

    from captionrec.analysis.core import analysis_for, gallery_picks

    a = analysis_for(ctx)
    picks = gallery_picks(a, n) if a is not None else []
    tables = (
        read_gallery_tables(store, replace(gcfg, item_ids=tuple({i for _, ids, _ in picks for i in ids})))
        if picks
        else None
    )
    if tables is None:
        return []
    return [
        (heading, gallery.gallery_entries(*tables, replace(gcfg, item_ids=tuple(ids)), extra=notes))
        for heading, ids, notes in picks
    ]


def synthetic_captions(store: "TableStore") -> list[str]:
    """Caption kinds with rows marked synthetic (written with tiny random models)."""
    from pyspark.sql import functions as F

    if not store.exists(C.CAPTIONS):
        return []
    rows = store.read(C.CAPTIONS).where(F.col("synthetic")).select("kind").distinct().collect()
    return sorted(r["kind"] for r in rows)


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """`captionrec report`: read the runs, write the report and the gallery, log them to the grid run."""
    rc = cfg.report
    t0 = time.perf_counter()
    runset = build.load(cfg.tracking, rc)
    log.info("read %d run(s) (%d finished) in %.1f s", len(runset.runs), len(runset.finished), time.perf_counter() - t0)
    ctx = build.context(
        runset,
        rc,
        store=store,
        synthetic_captions=synthetic_captions(store),
        analyze=cfg.analyze,
        data_source=cfg.data.source,
    )
    out_dir = build.out_folder(rc.out_dir, runset, rc)
    page, n_items = None, 0
    tables = read_gallery_tables(store, rc.gallery)
    if tables is not None:
        entries = gallery.gallery_entries(*tables, rc.gallery)
        groups = win_loss_groups(ctx, store, rc.gallery, cfg.analyze.gallery_items) if "win_loss" in rc.sections else []
        page, n_items = gallery.render_gallery(entries, groups=groups), len(entries) + sum(len(g) for _, g in groups)
        log.info("gallery: %d items", n_items)
    files = build.write_report(ctx, out_dir, gallery_html=page)
    latest = build.update_latest(out_dir)
    artifacts = build.log_to_parent(runset, files) if rc.log_artifacts else None
    g = ctx.gains if "gains" in rc.sections else None
    significant = (
        []
        if g is None
        else [
            f"{r.comparison} ({r.model}, {r.metric}): {r.diff:+.4f} [{r.holm_lo:+.4f}, {r.holm_hi:+.4f}]"
            for r in g[g["holm_significant"]].itertuples()
        ]
    )
    return {
        "out_dir": str(Path(out_dir).resolve()),
        "latest": str(latest),
        "parent_run_id": runset.parent["run_id"] if runset.parent else None,
        "runs_finished": len(runset.finished),
        "runs_failed": len(runset.failed),
        "rows": len(ctx.table),
        "table": json.loads(ctx.table.to_json(orient="records")),
        "significant": significant,
        "intervals": 0 if g is None else int(g["gain_lo"].notna().sum()),
        "gallery_items": n_items,
        "files": {
            "markdown": str(files.markdown),
            "csv": str(files.csv),
            "html": str(files.html),
            "gallery": str(files.gallery) if files.gallery else None,
            "plots": [str(p) for p in files.plots.values()],
        },
        "artifacts": artifacts,
        "analysis": analysis_summary(ctx),
    }


def analysis_summary(ctx: Any) -> dict[str, Any] | None:
    """The caption-quality numbers for the one-screen summary (None when no analysis section was built)."""
    a = ctx.extras.get("analysis")
    if a is None:
        return None
    v = a.vectors[["feature_set", "caption_versions", "items", "near_duplicates", "purity_k", "chance"]]
    v = (
        v.loc[v.groupby("feature_set", sort=False)["items"].idxmax().to_list()] if len(v) else v
    )  # each set's largest group
    wl = a.win_loss[["comparison", "model", "cases", "win", "loss"]] if len(a.win_loss) else a.win_loss
    return {
        "knn": a.config.knn,
        "vectors": json.loads(v.to_json(orient="records")),
        "win_loss": json.loads(wl.to_json(orient="records")),
    }


def format_summary(s: dict[str, Any]) -> str:
    """One screen: the table (HR@10 / nDCG@10 / cold HR@10 with the popularity baseline), then the files."""
    from captionrec.report.render import num, pm

    t = s["table"]
    lines = [
        f"report: {s['runs_finished']} finished run(s), {s['runs_failed']} failed, {s['rows']} row(s) "
        f"in {s.get('seconds', 0):.0f} s",
        "",
    ]
    lines.append(
        f"  {'feature set':<14} {'model':<9} {'HR@10':>17} {'nDCG@10':>17} {'cold HR@10':>17} {'pop HR@10':>9}"
    )
    for r in t[:30]:
        lines.append(
            f"  {r['features']:<14} {r['model']:<9} {pm(r.get('hr_10_mean'), r.get('hr_10_std')):>17} "
            f"{pm(r.get('ndcg_10_mean'), r.get('ndcg_10_std')):>17} "
            f"{pm(r.get('cold_hr_10_mean'), r.get('cold_hr_10_std')):>17} {num(r.get('popularity_hr_10_mean')):>9}"
        )
    lines.append("")
    verdict = "; ".join(s["significant"]) or "none"
    if not s.get("intervals"):
        verdict = "no intervals computed (the runs logged no cases artifacts)"
    lines.append(f"differences larger than their Holm-corrected interval: {verdict}")
    f = s["files"]
    lines.append(f"folder:  {s['out_dir']}   (also {s['latest']})")
    lines += [
        f"table:   {f['markdown']}  {f['csv']}",
        f"html:    {f['html']}",
        f"plots:   {s['out_dir']}/plots/ ({len(f['plots'])} PNG)",
    ]
    lines.append(f"gallery: {f['gallery']}" if f["gallery"] else "gallery: (no captions table yet)")
    if s.get("artifacts"):
        lines.append(f"MLflow:  {s['artifacts']}")
    a = s.get("analysis")
    if a:
        k = a["knn"]
        lines.append(f"caption quality (report.md#quality): topic purity@{k} vs chance, near-duplicate share")
        for r in a["vectors"][:10]:
            lines.append(
                f"  {r['feature_set']:<12} {num(r.get('purity_k'), 3):>6} vs {num(r.get('chance'), 3):>6}  "
                f"near-dup {num(r.get('near_duplicates'), 3):>6}  ({r['items']} items"
                f"{', ' + r['caption_versions'] if r['caption_versions'] else ''})"
            )
        for r in a["win_loss"][:6]:
            lines.append(f"  {r['comparison']} ({r['model']}): {r['win']} cases won, {r['loss']} lost of {r['cases']}")
    return "\n".join(lines)
