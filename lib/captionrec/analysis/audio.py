"""Audio class of an item (speech, music, other, silent, unknown) from its audio caption row: the transcript
length and the sound tags (rule: `captionrec.config.analyze.AudioClassConfig`)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from captionrec import contracts as C
from captionrec.analysis.text import tokens

CLASSES: tuple[str, ...] = ("speech", "music", "other", "silent", "unknown")
SILENT_REASONS = frozenset({C.NO_AUDIO_STREAM, C.SILENT})


def _tags(value: Any) -> list[tuple[str, float]]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    out = []
    for t in value:
        if hasattr(t, "asDict"):
            t = t.asDict()
        label, score = (t.get("label"), t.get("score")) if isinstance(t, dict) else (t[0], t[1])
        if label is not None:
            out.append((str(label).lower(), float(score) if score is not None else 0.0))
    return out


def _matches(label: str, names: tuple[str, ...]) -> bool:
    return any(n in label for n in names)


def audio_class(row: dict[str, Any] | None, has_audio: bool | None, cfg: Any) -> str:
    """The class of one item: `row` is its audio caption row (None: none), `cfg` an AudioClassConfig."""
    if has_audio is False or (row is not None and row.get("status") != C.OK and row.get("reason") in SILENT_REASONS):
        return "silent"
    if row is None or row.get("status") != C.OK:
        return "unknown"
    words = len(tokens(row.get("transcript")))
    tags = sorted(_tags(row.get("sound_tags")), key=lambda t: -t[1])
    if words == 0 and tags and _matches(tags[0][0], tuple(cfg.silence_labels)):
        return "silent"
    if words >= cfg.speech_min_words:
        return "speech"
    if any(_matches(label, tuple(cfg.music_labels)) and score >= cfg.music_min_score for label, score in tags):
        return "music"
    return "other"


def audio_classes(captions: pd.DataFrame, items: pd.DataFrame, cfg: Any) -> pd.DataFrame:
    """item_id, audio_class, transcript_words, top_tag for every item of `items`, from the newest audio
    caption row per item (the row the embed stage reads)."""
    audio = captions[captions["kind"] == "audio"].sort_values(["created_at", "captioner_version"], na_position="first")
    rows = {r["item_id"]: r for r in audio.drop_duplicates("item_id", keep="last").to_dict("records")}
    out = []
    for r in items.itertuples(index=False):
        row = rows.get(r.item_id)
        has_audio = getattr(r, "has_audio", None)
        has_audio = (
            None if has_audio is None or (isinstance(has_audio, float) and math.isnan(has_audio)) else bool(has_audio)
        )
        tags = sorted(_tags(row.get("sound_tags")), key=lambda t: -t[1]) if row else []
        out.append(
            (
                r.item_id,
                audio_class(row, has_audio, cfg),
                len(tokens(row.get("transcript"))) if row else 0,
                tags[0][0] if tags else None,
            )
        )
    return pd.DataFrame(out, columns=["item_id", "audio_class", "transcript_words", "top_tag"])
