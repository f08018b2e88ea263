"""Grounding proxies: how much of a caption is backed by what it was made from, in content words.

- audio: the audio caption against its sources, the transcript and the sound tags' labels:
  `grounded` = |caption ∩ sources| / |caption| (share of the caption's content words found in the sources;
  low: the caption says things neither the speech nor the tags did), `covered` = |caption ∩ sources| / |sources|;
- video: the video caption against the title: `covered` = |caption ∩ title| / |title| (share of the title's
  content words the caption mentions), `grounded` = |caption ∩ title| / |caption|.

The primary measure (the table's mean, the review list's order) is `grounded` for audio and `covered` for
video; an item whose caption (audio) or title (video) has no content word has no value (NaN) and is counted.
A template audio caption (`caption.audio.fusion: template`) is its sources by construction: grounded ~ 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd

from captionrec.analysis.text import content_words

PRIMARY = {"audio": "grounded", "video": "covered"}
SOURCE = {"audio": "transcript + sound tags", "video": "title"}
COLUMNS = ["item_id", "kind", "captioner_version", "caption_words", "source_words", "shared", "grounded", "covered"]


def tag_labels(tags: Any) -> list[str]:
    """Labels of a sound_tags value (list of {label, score} structs, Rows or (label, score) pairs)."""
    if tags is None or (isinstance(tags, float) and math.isnan(tags)):
        return []
    out = []
    for t in tags:
        if hasattr(t, "asDict"):
            t = t.asDict()
        label = t.get("label") if isinstance(t, dict) else (t[0] if len(t) else None)
        if label:
            out.append(str(label))
    return out


def overlap(caption: set[str], source: set[str]) -> tuple[int, float, float]:
    """(shared words, shared / caption words, shared / source words); NaN where a side is empty."""
    shared = len(caption & source)
    return (shared, shared / len(caption) if caption else math.nan, shared / len(source) if source else math.nan)


def item_overlaps(captions: pd.DataFrame, titles: pd.Series, ignore: Iterable[str] = ()) -> pd.DataFrame:
    """One row per ok caption with text (kinds audio and video): COLUMNS.

    captions: the captions table's rows (one per item, kind, version); titles: item_id -> title."""
    ignore = tuple(ignore)
    rows = []
    ok = captions[(captions["status"] == "ok") & captions["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))]
    for r in ok.itertuples(index=False):
        if r.kind == "audio":
            src = " ".join([r.transcript if isinstance(r.transcript, str) else "", *tag_labels(r.sound_tags)])
        elif r.kind == "video":
            src = titles.get(r.item_id)
        else:
            continue
        cap_w, src_w = content_words(r.text, ignore), content_words(src, ignore)
        shared, grounded, covered = overlap(cap_w, src_w)
        rows.append((r.item_id, r.kind, r.captioner_version, len(cap_w), len(src_w), shared, grounded, covered))
    return pd.DataFrame(rows, columns=COLUMNS)


def summary(overlaps: pd.DataFrame) -> pd.DataFrame:
    """Per (kind, captioner_version): items, items without a value, mean grounded / covered, share at 0."""
    rows = []
    for (kind, version), g in overlaps.groupby(["kind", "captioner_version"], sort=True):
        primary = g[PRIMARY.get(kind, "grounded")]
        rows.append(
            {
                "kind": kind,
                "captioner_version": version,
                "source": SOURCE.get(kind, ""),
                "measure": PRIMARY.get(kind, "grounded"),
                "items": len(g),
                "no_value": int(primary.isna().sum()),
                "grounded_mean": float(g["grounded"].mean()) if g["grounded"].notna().any() else math.nan,
                "covered_mean": float(g["covered"].mean()) if g["covered"].notna().any() else math.nan,
                "zero_share": float((primary.dropna() == 0).mean()) if primary.notna().any() else math.nan,
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "kind",
            "captioner_version",
            "source",
            "measure",
            "items",
            "no_value",
            "grounded_mean",
            "covered_mean",
            "zero_share",
        ],
    )


def lowest(overlaps: pd.DataFrame, captions: pd.DataFrame, titles: pd.Series, n: int) -> pd.DataFrame:
    """Per kind, the n items with the lowest primary measure (ties: fewer shared words, then item id), with
    the caption, the transcript / tags and the title beside them for review."""
    out = []
    for kind, g in overlaps.groupby("kind", sort=True):
        measure = PRIMARY.get(kind, "grounded")
        g = g[g[measure].notna()].assign(measure=measure, value=lambda d, m=measure: d[m])
        out.append(g.sort_values(["value", "shared", "item_id"], kind="stable").head(n))
    if not out:
        return pd.DataFrame(columns=[*COLUMNS, "measure", "value", "caption", "transcript", "tags", "title"])
    low = pd.concat(out, ignore_index=True)
    key = captions.set_index(["item_id", "kind", "captioner_version"])
    cap = [key.loc[(r.item_id, r.kind, r.captioner_version)] for r in low.itertuples()]
    first = [c.iloc[0] if isinstance(c, pd.DataFrame) else c for c in cap]
    low["caption"] = [c["text"] for c in first]
    low["transcript"] = [c.get("transcript") if k == "audio" else None for c, k in zip(first, low["kind"])]
    low["tags"] = [
        ", ".join(tag_labels(c.get("sound_tags"))) if k == "audio" else None for c, k in zip(first, low["kind"])
    ]
    low["title"] = [titles.get(i) for i in low["item_id"]]
    return low
