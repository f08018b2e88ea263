"""The caption gallery: for a few items, the frames the captioner saw beside what it wrote.

Frames are decoded again with `captionrec.media.sample_frames`, using the video caption row's settings
(frame count / rate and window) at thumbnail size, and matched to the row's `frame_times_s`. Beside them:
title, video caption, transcript, sound tags, audio caption, captioner versions and models, and a mark when
the captions are synthetic (tiny random models). Spark-free: it takes pandas frames of the items and
captions tables (the report stage reads them). `GalleryEntry.extra` carries annotations a caller adds
(e.g. an item's win / loss under two runs).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from captionrec.report.render import esc, img, page

log = logging.getLogger(__name__)


@dataclass
class GalleryEntry:
    item_id: str
    title: str | None
    video: dict[str, Any] | None  # the captions row of kind video (None: no row)
    audio: dict[str, Any] | None  # the captions row of kind audio
    frames: list[tuple[float, bytes]] = field(default_factory=list)  # (time s, JPEG)
    frame_note: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        return any(bool(r and r.get("synthetic")) for r in (self.video, self.audio))


def _sort_key(item_id: str) -> tuple:
    return (0, int(item_id), "") if str(item_id).isdigit() else (1, 0, str(item_id))


def newest_captions(captions: pd.DataFrame, versions: Iterable[str] = ()) -> pd.DataFrame:
    """One row per (item, kind): the given captioner versions, else the newest row."""
    versions = tuple(versions)
    if versions:
        captions = captions[captions["captioner_version"].isin(versions)]
    return captions.sort_values("created_at").drop_duplicates(["item_id", "kind"], keep="last")


def pick_items(item_ids: Iterable[str], n: int) -> list[str]:
    """n ids spread evenly over the sorted ids (all when there are fewer)."""
    ids = sorted(set(map(str, item_ids)), key=_sort_key)
    if len(ids) <= n:
        return ids
    return [ids[i] for i in sorted(set(np.linspace(0, len(ids) - 1, n).round().astype(int)))]


def _jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def thumbnails(
    video_path: str | None, row: dict[str, Any] | None, thumb_pixels: int
) -> tuple[list[tuple[float, bytes]], str]:
    """The frames at a video caption row's frame_times_s, decoded at thumbnail size; (frames, note)."""
    from captionrec.media import MediaError, sample_frames

    times = [] if row is None or row.get("frame_times_s") is None else [float(t) for t in row["frame_times_s"]]
    if not times:
        why = "no video caption row" if row is None else f"no frames ({row.get('reason') or row.get('status')})"
        return [], why
    settings = json.loads(row.get("settings") or "{}")
    try:
        sample = sample_frames(
            video_path,
            num_frames=int(settings.get("num_frames") or len(times)),
            window_s=settings.get("window_s"),
            fps=settings.get("fps"),
            max_pixels=thumb_pixels,
        )
    except MediaError as exc:
        return [], f"frames not decoded: {exc.reason} ({exc})"
    got = np.asarray(sample.times_s)
    picked = [int(np.argmin(np.abs(got - t))) for t in times]
    worst = max(abs(got[j] - t) for j, t in zip(picked, times))
    note = f"{len(times)} frames at the caption's times (s)"
    if worst > 0.05:
        note += f"; nearest decoded frames differ by up to {worst:.2f} s (the video changed since captioning?)"
    return [(float(got[j]), _jpeg(sample.frames[j])) for j in picked], note


def _row_dict(df: pd.DataFrame, item_id: str, kind: str) -> dict[str, Any] | None:
    sub = df[(df["item_id"] == item_id) & (df["kind"] == kind)]
    return None if sub.empty else sub.iloc[-1].to_dict()


def gallery_entries(
    items: pd.DataFrame, captions: pd.DataFrame, cfg: Any, extra: dict[str, dict[str, str]] | None = None
) -> list[GalleryEntry]:
    """Entries for cfg.item_ids or cfg.items spread over the items with a video caption (cfg: GalleryConfig)."""
    caps = newest_captions(captions, cfg.captioner_versions)
    ids = [str(i) for i in cfg.item_ids] or pick_items(caps.loc[caps["kind"] == "video", "item_id"], cfg.items)
    by_id = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
    entries = []
    for item_id in ids:
        meta = by_id.loc[item_id].to_dict() if item_id in by_id.index else {}
        video, audio = _row_dict(caps, item_id, "video"), _row_dict(caps, item_id, "audio")
        frames, note = thumbnails(meta.get("video_path"), video, cfg.thumb_pixels)
        entries.append(
            GalleryEntry(item_id, meta.get("title"), video, audio, frames, note, dict((extra or {}).get(item_id, {})))
        )
    return entries


def pairs(value: Any) -> list[tuple[str, Any]]:
    """A map column (dict from Spark, list of pairs from Arrow) or a list of structs -> pairs."""
    if value is None:
        return []
    if isinstance(value, dict):
        return list(value.items())
    out = []
    for v in value:
        if hasattr(v, "asDict"):
            v = v.asDict()
        out.append((v.get("label"), v.get("score")) if isinstance(v, dict) else tuple(v))
    return out


def _caption_facts(kind: str, row: dict[str, Any] | None) -> list[tuple[str, str]]:
    if row is None:
        return [(f"{kind} caption", "(no row)")]
    status = row.get("status")
    text = row.get("text") if status == "ok" else f"({status}: {row.get('reason') or ''} {row.get('error') or ''})"
    models = ", ".join(f"{k}={v}" for k, v in pairs(row.get("model_ids")))
    facts = [(f"{kind} caption", text or "")]
    if kind == "audio":
        tags = ", ".join(f"{lbl} {float(s):.2f}" for lbl, s in pairs(row.get("sound_tags")))
        facts += [
            ("transcript", row.get("transcript") or ""),
            ("language", row.get("language") or ""),
            ("sound tags", tags),
        ]
    facts.append(
        (f"{kind} captioner", f"{row.get('captioner_version')} · {models} · prompt {row.get('prompt_version')}")
    )
    return facts


def render_entry(e: GalleryEntry, anchor: str = "") -> str:
    kinds = [k for k, r in (("video", e.video), ("audio", e.audio)) if r and r.get("synthetic")]
    mark = (
        f' <span class="synthetic">synthetic {" and ".join(kinds)} caption (tiny random model: noise)</span>'
        if kinds
        else ""
    )
    thumbs = "".join(
        img(jpg, f"item {e.item_id} at {t:.2f} s", cls="thumb", mime="image/jpeg").replace(
            "<img ", f'<img title="{t:.2f} s" ', 1
        )
        for t, jpg in e.frames
    )
    facts = [("title", e.title or "")] + _caption_facts("video", e.video) + _caption_facts("audio", e.audio)
    facts += list(e.extra.items())
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return (
        f'<div class="item" id="{esc(anchor or "item-" + str(e.item_id))}"><h3>item {esc(e.item_id)}{mark}</h3>'
        f'<div class="frames">{thumbs}</div><p class="note">{esc(e.frame_note)}</p><dl>{dl}</dl></div>\n'
    )


def render_gallery(
    entries: list[GalleryEntry],
    title: str = "captionrec caption gallery",
    notes: Iterable[str] = (),
    groups: Iterable[tuple[str, list[GalleryEntry]]] = (),
) -> str:
    """One self-contained HTML page (thumbnails inlined as data URIs): the entries, then each group (a heading
    and its entries, e.g. the items a caption feature wins / loses most; see captionrec.analysis)."""
    groups = list(groups)
    head = "".join(f'<p class="warn">{esc(n)}</p>' for n in notes)
    if any(e.synthetic for e in entries) or any(e.synthetic for _, g in groups for e in g):
        head += '<p class="warn">Some captions are synthetic: written by tiny random models, they are noise.</p>'
    body = head + "".join(render_entry(e) for e in entries)
    for i, (heading, group) in enumerate(groups):
        body += f'<h2 id="group-{i}">{esc(heading)}</h2>\n'
        body += "".join(render_entry(e, f"group-{i}-item-{e.item_id}") for e in group)
    return page(title, body)
