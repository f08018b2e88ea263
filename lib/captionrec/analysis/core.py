"""The caption-quality analysis in one object: `analyze(inputs, runset, cfg)` -> `Analysis` (pandas frames and
notes), computed once per report (`analysis_for(ctx)` caches it in the report context) or by
`captionrec analyze`.

Tables (`quality`, `vectors`, `grounding`, `grounding_low`, `audio_classes`, `class_counts`) need only the
Delta tables; `class_metrics`, `class_gains`, `win_loss`, `win_loss_items`, `win_loss_cases` need a grid's
runs with cases artifacts and item indexes. Whatever cannot be computed is empty, with a note saying why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from captionrec import contracts as C
from captionrec.analysis import grounding, outcomes, text, vectors
from captionrec.analysis.audio import CLASSES, audio_classes
from captionrec.analysis.inputs import Inputs

log = logging.getLogger(__name__)

# caption kind -> the feature set that embeds that kind alone (mllm_video <- video, mllm_audio <- audio, ...)
KIND_FEATURE_SET = {kinds[0]: fs for fs, kinds in C.CAPTION_SOURCES.items() if len(kinds) == 1}
VECTOR_COLUMNS = [
    "feature_set",
    "model_id",
    "caption_versions",
    "items",
    "dropped",
    "near_duplicates",
    "nn_cosine_mean",
    "pair_cosine_mean",
    "labelled",
    "topics",
    "purity_1",
    "purity_k",
    "chance",
    "common_items",
    "purity_k_common",
]


@dataclass
class Analysis:
    config: Any  # AnalyzeConfig
    inputs: Inputs
    quality: pd.DataFrame
    vectors: pd.DataFrame
    grounding: pd.DataFrame
    grounding_low: pd.DataFrame
    audio_classes: pd.DataFrame  # per item
    class_counts: pd.DataFrame
    class_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    class_gains: pd.DataFrame = field(default_factory=pd.DataFrame)
    outcomes: pd.DataFrame = field(default_factory=pd.DataFrame)  # every paired case's win / loss
    win_loss: pd.DataFrame = field(default_factory=pd.DataFrame)
    win_loss_items: pd.DataFrame = field(default_factory=pd.DataFrame)
    win_loss_cases: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: dict[str, list[str]] = field(default_factory=dict)  # section key -> notes

    def note(self, key: str, text_: str) -> None:
        self.notes.setdefault(key, []).append(text_)

    @property
    def synthetic_kinds(self) -> list[str]:
        caps = self.inputs.captions
        if caps.empty or "synthetic" not in caps:
            return []
        return sorted(caps.loc[caps["synthetic"].fillna(False).astype(bool), "kind"].unique())


def caption_versions(feature_set: str, source_version: Any) -> str:
    """The captioner version(s) an mllm_* vector was made from: the embed stage's source_version is
    "<captioner_version(s)>:<sha(text)>@<settings>" ('+'-joined versions for mllm_av); '' for other sets."""
    if not str(feature_set).startswith("mllm_"):
        return ""
    sv = str(source_version or "")
    return sv.split(":", 1)[0] if ":" in sv else "?"


def vector_table(features: pd.DataFrame, topics: pd.Series | None, knn: int, threshold: float) -> pd.DataFrame:
    """One row per (feature set, model id, caption versions): vectors.vector_stats, plus purity@knn over the
    labelled items that every feature set has a vector for (a like-for-like comparison)."""
    if features.empty:
        return pd.DataFrame(columns=VECTOR_COLUMNS)
    f = features.assign(
        caption_versions=[
            caption_versions(fs, sv) for fs, sv in zip(features["feature_set"], features["source_version"])
        ]
    )
    common = set.intersection(*[set(g["item_id"]) for _, g in f.groupby("feature_set")])
    if topics is not None:
        common &= set(topics.index)
    rank = {fs: i for i, fs in enumerate(C.FEATURE_SETS)}
    rows = []
    for (fs, model_id, versions), g in f.groupby(["feature_set", "model_id", "caption_versions"], sort=False):
        lengths = sorted({len(v) for v in g["vector"]})
        if len(lengths) > 1:  # the train stage refuses such a set too; the report describes the others
            log.warning("quality: %s (%s) left out: vectors of different lengths %s", fs, model_id, lengths)
            continue
        row = {
            "feature_set": fs,
            "model_id": model_id,
            "caption_versions": versions,
            **vectors.vector_stats(list(g["vector"]), list(g["item_id"]), topics, knn, threshold),
        }
        sub = g[g["item_id"].isin(common)]
        row["common_items"] = len(sub)
        row["purity_k_common"] = (
            vectors.vector_stats(list(sub["vector"]), list(sub["item_id"]), topics, knn, threshold)["purity_k"]
            if topics is not None and len(sub) >= 2
            else math.nan
        )
        rows.append(row)
    out = pd.DataFrame(rows, columns=VECTOR_COLUMNS)
    out["_o"] = out["feature_set"].map(lambda s: rank.get(s, len(rank)))
    return (
        out.sort_values(["_o", "feature_set", "model_id", "caption_versions"]).drop(columns="_o").reset_index(drop=True)
    )


def quality_table(captions: pd.DataFrame, vec: pd.DataFrame) -> pd.DataFrame:
    """One row per caption kind x captioner version (x text-encoder model id of its vectors): row counts by
    status, text statistics of its ok captions, and near-duplicates / purity of its feature set's vectors."""
    rows = []
    vec_cols = ["model_id", "items", "near_duplicates", "nn_cosine_mean", "purity_1", "purity_k", "chance"]
    for (kind, version), g in captions.groupby(["kind", "captioner_version"], sort=True):
        ok = g[g["status"] == C.OK]
        has_text = ok["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))
        base = {
            "kind": kind,
            "captioner_version": version,
            "synthetic": bool(g["synthetic"].fillna(False).astype(bool).any()),
            "rows": len(g),
            "ok": len(ok),
            "skipped": int((g["status"] == C.SKIPPED).sum()),
            "error": int((g["status"] == C.ERROR).sum()),
            "ok_without_text": int((~has_text).sum()),
            **text.text_stats(list(ok.loc[has_text, "text"])),
        }
        fs = KIND_FEATURE_SET.get(kind, "")
        mine = vec[(vec["feature_set"] == fs) & (vec["caption_versions"] == version)].to_dict("records")
        for r in mine or [{c: math.nan for c in vec_cols} | {"model_id": ""}]:
            rows.append({**base, "feature_set": fs, **{c: r[c] for c in vec_cols}})
    cols = [
        "kind",
        "captioner_version",
        "synthetic",
        "rows",
        "ok",
        "skipped",
        "error",
        "ok_without_text",
        "words_mean",
        "words_median",
        "chars_mean",
        "distinct_1",
        "distinct_2",
        "exact_duplicates",
        "feature_set",
        *vec_cols,
    ]
    return pd.DataFrame(rows, columns=cols).rename(columns={"items": "vectors"})


def class_counts(classes: pd.DataFrame) -> pd.DataFrame:
    counts = classes["audio_class"].value_counts()
    n = len(classes)
    words = classes.groupby("audio_class")["transcript_words"].mean()
    return pd.DataFrame(
        [(c, int(counts.get(c, 0)), counts.get(c, 0) / n if n else math.nan, words.get(c, math.nan)) for c in CLASSES],
        columns=["audio_class", "items", "share", "transcript_words_mean"],
    )


def analyze_tables(inputs: Inputs, cfg: Any) -> Analysis:
    """Everything the Delta tables alone give (see the module docstring)."""
    caps, items = inputs.captions, inputs.items
    vec = vector_table(inputs.features, inputs.topics, cfg.knn, cfg.near_duplicate)
    ov = (
        grounding.item_overlaps(caps, inputs.titles, cfg.ignore_words)
        if len(caps)
        else pd.DataFrame(columns=grounding.COLUMNS)
    )
    classes = (
        audio_classes(caps, items, cfg.audio)
        if len(items)
        else pd.DataFrame(columns=["item_id", "audio_class", "transcript_words", "top_tag"])
    )
    a = Analysis(
        cfg,
        inputs,
        quality_table(caps, vec),
        vec,
        grounding.summary(ov),
        grounding.lowest(ov, caps, inputs.titles, cfg.review_items),
        classes,
        class_counts(classes),
    )
    for n in inputs.notes:
        a.note("inputs", n)
    if inputs.topics is None:
        a.note("vectors", inputs.topics_note)
    elif len(vec) and not vec["labelled"].any():
        a.note("vectors", f"{inputs.topics_note}: none of the analysed items has a topic label")
    bad = (
        caps[(caps["status"] == C.OK) & ~caps["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
        if len(caps)
        else caps
    )
    if len(bad):
        a.note(
            "quality",
            f"{len(bad)} caption row(s) with status ok but no text (left out of the text statistics): "
            + ", ".join(f"{r.item_id}/{r.kind}" for r in bad.head(10).itertuples()),
        )
    return a


def analyze_runs(
    a: Analysis, runset: Any, rc: Any, index_of: Callable[[str], list[str] | None] | None = None
) -> Analysis:
    """Fill the runs-based frames from a report RunSet (rc: ReportConfig, for the bootstrap settings)."""
    cfg = a.config
    if runset is None:
        cases, notes = (
            pd.DataFrame(columns=outcomes.CASE_FIELDS),
            ["no grid run to read (run `captionrec experiment`): no per-class metrics and no win / loss cases"],
        )
    else:
        index_of = index_of or (lambda run_id: outcomes.download_item_index(runset.tracking_uri, run_id))
        cases, notes = outcomes.collect_cases(runset.runs, runset.cases, index_of)
    for n in notes:
        a.note("runs", n)
    a.class_metrics = outcomes.class_metrics(cases, a.audio_classes, cfg.top_k)
    a.class_gains = outcomes.class_gains(
        cfg.class_comparisons, cases, a.audio_classes, cfg.top_k, rc.bootstrap_samples, rc.confidence, rc.seed
    )
    a.outcomes, a.win_loss, wl_notes = outcomes.win_loss(cfg.win_loss, cases, cfg.top_k)
    for n in wl_notes:
        a.note("win_loss", n)
    a.win_loss_items = outcomes.win_loss_items(a.outcomes, cfg.win_loss_items)
    a.win_loss_cases = outcomes.win_loss_cases(a.outcomes, cfg.win_loss_cases)
    return a


def analyze(
    inputs: Inputs, runset: Any, cfg: Any, rc: Any, index_of: Callable[[str], list[str] | None] | None = None
) -> Analysis:
    return analyze_runs(analyze_tables(inputs, cfg), runset, rc, index_of)


def analysis_for(ctx: Any) -> Analysis | None:
    """The analysis of a report context, computed on first use and kept in `ctx.extras["analysis"]`; None
    when the context has neither an analysis nor a TableStore (`extras["store"]`) to compute one from."""
    ex = ctx.extras
    if "analysis" not in ex:
        store = ex.get("store")
        if store is None:
            return None
        from captionrec.analysis.inputs import read_inputs
        from captionrec.config.analyze import AnalyzeConfig

        cfg = ex.get("analyze") or AnalyzeConfig()
        inputs = read_inputs(store, cfg.max_items, cfg.labels, ex.get("data_source", ""))
        ex["analysis"] = analyze(inputs, ctx.runset, cfg, ctx.config)
    return ex["analysis"]


def gallery_picks(a: Analysis, n: int) -> list[tuple[str, list[str], dict[str, dict[str, str]]]]:
    """Per win / loss comparison: (heading, item ids, annotations) of the n items with the most net wins and
    the n with the most net losses over all models."""
    if a.outcomes.empty or n <= 0:
        return []
    out = []
    classes = a.audio_classes.set_index("item_id")["audio_class"] if len(a.audio_classes) else pd.Series(dtype=object)
    for comp, g in a.outcomes.groupby("comparison", sort=False):
        per = (
            g.assign(w=g["outcome"] == "win", l=g["outcome"] == "loss")
            .groupby(["item_id", "model"])
            .agg(cases=("outcome", "size"), wins=("w", "sum"), losses=("l", "sum"))
        )
        tot = per.groupby(level="item_id").sum()
        tot["net"] = tot["wins"] - tot["losses"]
        for direction, sel in (
            ("wins", tot[tot["net"] > 0].sort_values(["net", "wins"], ascending=False)),
            ("losses", tot[tot["net"] < 0].sort_values(["net", "losses"], ascending=[True, False])),
        ):
            ids = [str(i) for i in sel.head(n).index]
            if not ids:
                continue
            notes = {}
            for i in ids:
                t = tot.loc[i]
                detail = "; ".join(
                    f"{m}: {int(r.wins)} won, {int(r.losses)} lost of {int(r.cases)}"
                    for (_, m), r in per.loc[[i]].iterrows()
                )
                notes[i] = {
                    "win / loss": f"{comp}: {int(t.wins)} case(s) won, {int(t.losses)} lost of {int(t.cases)} ({detail})",
                    "audio class": str(classes.get(i, "unknown")),
                }
            out.append(
                (f"{comp}: items the caption feature {'wins' if direction == 'wins' else 'loses'} most", ids, notes)
            )
    return out
