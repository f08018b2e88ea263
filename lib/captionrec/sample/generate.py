"""Seeded generator of a small dataset in the MicroLens-100K layout.

Output (`out_dir`), exactly as MicroLens ships it::

    videos/<item>.mp4          H.264 (yuv420p) + AAC clips, 5-15 s, landscape and vertical 9:16
    sample_pairs.csv           header ``user,item,timestamp`` (Unix ms)
    sample_title_en.csv        ``id,title`` rows, NO header, CSV-quoted

plus `manifest.json` (ground truth: per-item topic / speech / clean-or-bad, users' favourite topics, every
planted bad input with its expected quarantine reason, expected counts) and `README.md`.

Each item has a topic (see `captionrec.sample.topics`): its speech (espeak-ng) says a sentence with topic
words, its sound bed and its picture (ffmpeg lavfi sources) differ by topic, and only some titles name the
topic. Users have 1-2 favourite topics; interactions span `weeks` weeks, items are released week by week
(cold items), popularity is skewed. Planted bad inputs cover every ingest reason code:
empty_file, corrupt, not_a_video, no_video_stream, missing_file, unknown_item, malformed_row,
duplicate_interaction.

Same seed -> byte-identical CSVs, manifest and README. Video bytes are stable for one ffmpeg build
(bitexact flags, one encoder thread) but may differ across ffmpeg versions.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from captionrec.sample.topics import (
    GENERIC_TITLES,
    TOPIC_NAMES,
    TOPICS,
    audio_bed_graph,
    topic_words_in,
    video_graph,
)

__all__ = ["BAD_MEDIA_REASONS", "REASON_CODES", "generate", "main", "plan_dataset"]

MANIFEST_FORMAT = "captionrec-sample/1"
PAIRS_FILE = "sample_pairs.csv"
TITLES_FILE = "sample_title_en.csv"
VIDEOS_DIR = "videos"
MANIFEST_FILE = "manifest.json"
README_FILE = "README.md"

REASON_CODES = (
    "empty_file",
    "corrupt",
    "not_a_video",
    "no_video_stream",
    "missing_file",
    "unknown_item",
    "malformed_row",
    "duplicate_interaction",
)
# One planted item per media-level reason, in this order.
BAD_MEDIA_REASONS = ("empty_file", "corrupt", "not_a_video", "no_video_stream", "missing_file")

WEEK_MS = 7 * 24 * 3600 * 1000
DEFAULT_START = "2023-06-05"  # a Monday, UTC
# (width, height), weight: landscape 16:9 and vertical 9:16.
SIZES: tuple[tuple[tuple[int, int], float], ...] = (
    ((320, 180), 0.35),
    ((256, 144), 0.20),
    ((180, 320), 0.30),
    ((144, 256), 0.15),
)
FPS_CHOICES: tuple[tuple[int, float], ...] = ((15, 0.55), (24, 0.15), (25, 0.15), (30, 0.15))
# (sample_rate, channels, aac bitrate kbit/s), weight.
AUDIO_FORMATS: tuple[tuple[tuple[int, int, int], float], ...] = (((22050, 1, 24), 0.8), ((44100, 2, 48), 0.2))
VOICES = ("en-us", "en-us", "en")
WORDS_PER_SECOND = 2.3  # conservative espeak-ng rate at -s 150..165, pauses included
CORRUPT_KEEP_FRACTION = 0.30


class SampleGenerationError(RuntimeError):
    """The sample could not be generated (missing tool, ffmpeg failure, unsafe output folder)."""


# ----------------------------------------------------------------------------------------------- plan


@dataclass
class ItemPlan:
    """Everything decided about one item before any file is written (all of it goes to the manifest)."""

    item_id: int
    topic: str
    split: str  # "clean" | "bad"
    bad_reason: str | None
    title: str
    title_reveals_topic: bool
    release_week: int
    release_ms: int
    width: int
    height: int
    fps: int
    duration_s: float
    has_audio: bool
    sample_rate: int | None
    channels: int | None
    speech: str | None
    speech_topic_words: list[str]
    voice: str | None
    speech_rate_wpm: int | None
    speech_pitch: int | None
    speech_delay_s: float | None
    video_filter: str
    audio_bed_filter: str | None
    n_interactions: int = 0
    first_interaction_week: int | None = None


@dataclass
class Plan:
    """The whole dataset, decided from the seed alone."""

    seed: int
    params: dict[str, Any]
    start_ms: int
    end_ms: int
    weeks: int
    items: dict[int, ItemPlan]
    users: dict[int, dict[str, Any]]
    pairs_lines: list[str]  # data lines of sample_pairs.csv (no header), final order
    titles_lines: list[str]  # lines of sample_title_en.csv, final order
    bad_inputs: list[dict[str, Any]]
    expected: dict[str, Any]
    interactions: list[tuple[int, int, int]] = field(default_factory=list)  # clean (user, item, ts) base rows


def _rng(seed: int, purpose: str) -> random.Random:
    """Independent, stable stream per purpose (string seeds hash with SHA-512, not PYTHONHASHSEED)."""
    return random.Random(f"captionrec-sample:{seed}:{purpose}")


def _weighted(rng: random.Random, choices: Sequence[tuple[Any, float]]) -> Any:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices], k=1)[0]


def _csv_line(fields: Sequence[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL).writerow(fields)
    return buf.getvalue().rstrip("\n")


def _pick_sentences(rng: random.Random, topic_sentences: Sequence[str], budget_words: float) -> str:
    order = list(topic_sentences)
    rng.shuffle(order)
    chosen: list[str] = []
    used = 0
    for s in order:
        n = len(s.split())
        if used + n <= budget_words:
            chosen.append(s)
            used += n
        if len(chosen) == 2:
            break
    if not chosen:
        chosen = [min(order, key=lambda s: len(s.split()))]
    return " ".join(chosen)


def plan_dataset(
    seed: int = 7,
    n_items: int = 200,
    n_users: int = 500,
    *,
    weeks: int = 8,
    n_no_audio: int = 6,
    start_date: str = DEFAULT_START,
    mean_interactions_per_user: float = 38.0,
    favourite_share: float = 0.8,
    title_topic_share: float = 0.4,
    cold_share: float = 0.45,
    duration_range: tuple[float, float] = (5.0, 15.0),
    n_duplicates: int = 3,
    n_unknown_item_rows: int = 2,
) -> Plan:
    """Decide every item, user, interaction and planted bad input from `seed` (no files written)."""
    if n_items < 2 or n_users < 1 or weeks < 2:
        raise ValueError("need n_items >= 2, n_users >= 1, weeks >= 2")
    params = dict(
        n_items=n_items,
        n_users=n_users,
        weeks=weeks,
        n_no_audio=n_no_audio,
        start_date=start_date,
        mean_interactions_per_user=mean_interactions_per_user,
        favourite_share=favourite_share,
        title_topic_share=title_topic_share,
        cold_share=cold_share,
        duration_range=list(duration_range),
        n_duplicates=n_duplicates,
        n_unknown_item_rows=n_unknown_item_rows,
    )
    start = datetime.strptime(start_date, "%Y-%m-%d").replace(tzinfo=UTC)
    start_ms = int(start.timestamp()) * 1000
    end_ms = start_ms + weeks * WEEK_MS - 1
    total = n_items + len(BAD_MEDIA_REASONS)
    items, bad_ids = _plan_items(
        seed, n_items, total, weeks, n_no_audio, title_topic_share, cold_share, duration_range, start_ms
    )
    users, base = _plan_interactions(
        seed, items, n_users, mean_interactions_per_user, favourite_share, start_ms, end_ms
    )
    rb = _rng(seed, "bad-rows")
    pairs_lines, bad_inputs, counts = _plant_pair_rows(
        rb, base, items, total, n_users, start_ms, end_ms, n_unknown_item_rows, n_duplicates
    )
    title_lines = _title_lines(rb, items, bad_inputs)
    bad_inputs += _media_bad_inputs(bad_ids)
    bad_inputs.sort(key=lambda b: (REASON_CODES.index(b["reason"]), b["source"], b.get("line", 0), b["key"]))
    clean_set = {i for i, it in items.items() if it.split == "clean"}
    on_clean = sum(1 for _u, i, _t in base if i in clean_set)
    in_fav = sum(1 for u, i, _t in base if items[i].topic in users[u]["favourite_topics"])
    week_counts = Counter((t - start_ms) // WEEK_MS for _u, _i, t in base)
    expected = {
        "title_lines": len(title_lines),
        "title_items": total,
        "title_malformed_rows": 1,
        "pairs_data_lines": len(pairs_lines),
        "pairs_malformed_rows": counts["malformed"],
        "pairs_unknown_item_rows": n_unknown_item_rows,
        "pairs_duplicate_extra_rows": counts["duplicates"],
        "interactions_distinct_valid": len(base),
        "interactions_on_clean_items": on_clean,
        "interactions_on_bad_media_items": len(base) - on_clean,
        "interactions_per_week": [week_counts.get(w, 0) for w in range(weeks)],
        "favourite_topic_share": round(in_fav / max(1, len(base)), 4),
        "video_files": sum(1 for i in items if bad_ids.get(i) != "missing_file"),
        "clean_video_files": len(clean_set),
    }
    return Plan(
        seed=seed,
        params=params,
        start_ms=start_ms,
        end_ms=end_ms,
        weeks=weeks,
        items=items,
        users=users,
        pairs_lines=pairs_lines,
        titles_lines=title_lines,
        bad_inputs=bad_inputs,
        expected=expected,
        interactions=base,
    )


def _plan_items(
    seed: int,
    n_items: int,
    total: int,
    weeks: int,
    n_no_audio: int,
    title_topic_share: float,
    cold_share: float,
    duration_range: tuple[float, float],
    start_ms: int,
) -> tuple[dict[int, ItemPlan], dict[int, str]]:
    """Items: ids, clean/bad, topic (balanced round-robin), title, media format, speech; and the bad media ids."""
    r = _rng(seed, "items")
    ids = list(range(1, total + 1))
    r.shuffle(ids)
    bad_ids = {iid: reason for iid, reason in zip(ids[n_items:], BAD_MEDIA_REASONS)}
    topic_order = list(ids)
    r.shuffle(topic_order)
    topic_of = {iid: TOPIC_NAMES[k % len(TOPIC_NAMES)] for k, iid in enumerate(topic_order)}
    reveal = set(r.sample(sorted(ids), round(title_topic_share * total)))
    clean_ids = sorted(set(ids) - set(bad_ids))
    no_audio = set(r.sample(clean_ids, min(n_no_audio, max(0, len(clean_ids) - 1))))
    cold_order = r.sample(sorted(ids), max(1, round(cold_share * total)))
    release_week = {iid: 0 for iid in ids}
    for k, iid in enumerate(cold_order):
        release_week[iid] = 1 + k % (weeks - 1)  # every later week gets some new items
    items = {
        iid: _plan_item(
            seed,
            iid,
            topic_of[iid],
            iid in reveal,
            bad_ids.get(iid),
            iid not in no_audio,
            release_week[iid],
            start_ms,
            duration_range,
        )
        for iid in sorted(ids)
    }
    # small plans still get at least one vertical clean clip
    if not any(items[i].height > items[i].width for i in clean_ids):
        it = items[clean_ids[0]]
        it.width, it.height = 180, 320
        it.video_filter = video_graph(it.topic, 180, 320, it.fps, _rng(seed, f"item:{it.item_id}:vertical"))
    return items, bad_ids


def _plan_item(
    seed: int,
    iid: int,
    topic_name: str,
    reveals: bool,
    reason: str | None,
    may_have_audio: bool,
    release_week: int,
    start_ms: int,
    duration_range: tuple[float, float],
) -> ItemPlan:
    ri = _rng(seed, f"item:{iid}")
    topic = next(t for t in TOPICS if t.name == topic_name)
    n = ri.randint(2, 99)
    if reveals:
        title = ri.choice(topic.title_templates).format(w=ri.choice(topic.words), n=n)
    else:
        title = ri.choice(GENERIC_TITLES).format(n=n)
    (w, h) = _weighted(ri, SIZES)
    fps = _weighted(ri, FPS_CHOICES)
    dur = round(ri.uniform(*duration_range), 1)
    sr, ch, _kbps = _weighted(ri, AUDIO_FORMATS)
    delay = round(ri.uniform(0.3, 1.0), 2)
    speech = _pick_sentences(ri, topic.sentences, (dur - delay - 0.4) * WORDS_PER_SECOND)
    voice, wpm, pitch = ri.choice(VOICES), ri.randint(150, 165), ri.randint(35, 65)
    vf = video_graph(topic.name, w, h, fps, ri)
    af = audio_bed_graph(topic.name, sr, ri)
    audio = may_have_audio and reason not in ("empty_file", "not_a_video", "missing_file")
    return ItemPlan(
        item_id=iid,
        topic=topic.name,
        split="bad" if reason else "clean",
        bad_reason=reason,
        title=title,
        title_reveals_topic=bool(topic_words_in(title, topic.name)),
        release_week=release_week,
        release_ms=start_ms + release_week * WEEK_MS + ri.randint(0, 2 * 24 * 3600 * 1000),
        width=w,
        height=h,
        fps=fps,
        duration_s=dur,
        has_audio=audio,
        sample_rate=sr if audio else None,
        channels=ch if audio else None,
        speech=speech if audio else None,
        speech_topic_words=topic_words_in(speech, topic.name) if audio else [],
        voice=voice if audio else None,
        speech_rate_wpm=wpm if audio else None,
        speech_pitch=pitch if audio else None,
        speech_delay_s=delay if audio else None,
        video_filter=vf,
        audio_bed_filter=af if audio else None,
    )


class _Pool:
    """Items to draw an interaction from: released by t, not seen by the user, weighted by popularity and
    freshness (pop * (1 + 3 exp(-age / 1 week))). The draw is `random.choices`'s own (one `random()` against the
    running sum of the weights, in item order), computed over numpy arrays: O(pool) array work per draw instead
    of a Python loop over the pool (the 100k-user bench source took > 4 min in that loop, 10k users 6.5 s)."""

    def __init__(self, pool: list[int], items: dict[int, ItemPlan], pop: dict[int, float]):
        self.ids = np.asarray(pool, dtype=np.int64)
        self.release = np.asarray([items[i].release_ms for i in pool], dtype=np.int64)
        self.pop = np.asarray([pop[i] for i in pool], dtype=np.float64)
        self.where = {iid: k for k, iid in enumerate(pool)}

    def draw(self, rng: random.Random, t: int, seen: set[int]) -> int | None:
        ok = self.release <= t
        for iid in seen:
            k = self.where.get(iid)
            if k is not None:
                ok[k] = False
        if not ok.any():
            return None
        ids = self.ids[ok]
        weights = self.pop[ok] * (1.0 + 3.0 * np.exp(-(t - self.release[ok]) / WEEK_MS))
        cum = np.cumsum(weights)  # left to right, as itertools.accumulate
        # random.choices: bisect(cum_weights, random() * total, 0, n - 1)
        pick = np.searchsorted(cum[:-1], rng.random() * (float(cum[-1]) + 0.0), side="right")
        return int(ids[pick])


def _plan_interactions(
    seed: int,
    items: dict[int, ItemPlan],
    n_users: int,
    mean_per_user: float,
    favourite_share: float,
    start_ms: int,
    end_ms: int,
) -> tuple[dict[int, dict[str, Any]], list[tuple[int, int, int]]]:
    """Users with favourite topics and their (user, item, ts) interactions, sorted by user then time; counts each
    item's interactions and first week on the item plans."""
    ru = _rng(seed, "users")
    ids = sorted(items)
    pop = {iid: ru.lognormvariate(0.0, 1.5) for iid in ids}
    present = sorted({it.topic for it in items.values()}, key=TOPIC_NAMES.index)
    by_topic = {t: _Pool([i for i in ids if items[i].topic == t], items, pop) for t in present}
    everything = _Pool(ids, items, pop)
    sigma = 0.7
    mu = math.log(mean_per_user) - sigma * sigma / 2
    users: dict[int, dict[str, Any]] = {}
    base: list[tuple[int, int, int]] = []
    span = end_ms - start_ms
    for uid in range(1, n_users + 1):
        favs = ru.sample(present, 1 if ru.random() < 0.4 or len(present) < 2 else 2)
        n = min(120, max(3, round(ru.lognormvariate(mu, sigma))))
        u_start = start_ms + (0 if ru.random() < 0.4 else int(ru.uniform(0.0, 0.6) * span))
        u_end = end_ms if ru.random() < 0.75 else u_start + int(ru.uniform(0.3, 1.0) * (end_ms - u_start))
        times = sorted({ru.randint(u_start, u_end) for _ in range(n)})
        seen: set[int] = set()
        for t in times:
            topic = ru.choice(favs) if ru.random() < favourite_share else ru.choice(present)
            iid = by_topic[topic].draw(ru, t, seen)
            if iid is None:
                iid = everything.draw(ru, t, seen)
            if iid is None:
                continue
            seen.add(iid)
            base.append((uid, iid, t))
        users[uid] = {"favourite_topics": favs, "n_interactions": len(seen)}
    base.sort(key=lambda r: (r[0], r[2], r[1]))  # by user, then time (MicroLens order)
    for _uid, iid, t in base:
        it = items[iid]
        it.n_interactions += 1
        wk = (t - start_ms) // WEEK_MS
        it.first_interaction_week = wk if it.first_interaction_week is None else min(it.first_interaction_week, wk)
    return users, base


def _plant_pair_rows(
    rb: random.Random,
    base: list[tuple[int, int, int]],
    items: dict[int, ItemPlan],
    total: int,
    n_users: int,
    start_ms: int,
    end_ms: int,
    n_unknown_item_rows: int,
    n_duplicates: int,
) -> tuple[list[str], list[dict[str, Any]], dict[str, int]]:
    """The pairs file's lines with planted bad rows (unknown item, duplicates, malformed), their records with final
    line numbers, and how many of each were planted."""
    entries: list[tuple[str, dict[str, Any]]] = [(f"{u},{i},{t}", {}) for u, i, t in base]
    unknown_id = total + 1000 + rb.randint(0, 899)
    for _ in range(n_unknown_item_rows):
        u, t = rb.randint(1, n_users), rb.randint(start_ms, end_ms)
        entries.insert(
            rb.randint(0, len(entries)),
            (
                f"{u},{unknown_id},{t}",
                {
                    "source": "pairs",
                    "reason": "unknown_item",
                    "user_id": str(u),
                    "item_id": str(unknown_id),
                    "ts_ms": t,
                    "detail": "item id is in neither the titles file nor videos/",
                },
            ),
        )
    dup_pool = [row for row in base if items[row[1]].split == "clean"]
    for u, i, t in rb.sample(dup_pool, min(n_duplicates, len(dup_pool))):
        first = next(k for k, (line, _m) in enumerate(entries) if line == f"{u},{i},{t}")
        entries.insert(
            rb.randint(first + 1, len(entries)),
            (
                f"{u},{i},{t}",
                {
                    "source": "pairs",
                    "reason": "duplicate_interaction",
                    "user_id": str(u),
                    "item_id": str(i),
                    "ts_ms": t,
                    "detail": "exact copy of an earlier row",
                },
            ),
        )
    u0, i0 = base[0][0], base[0][1]
    malformed = [
        (f"{u0},{i0},yesterday", "non-numeric timestamp"),
        (f"{u0},{i0}", "missing field (2 of 3)"),
        ("garbage line: export interrupted, retrying", "not a user,item,timestamp row"),
    ]
    for raw, why in malformed:
        entries.insert(
            rb.randint(1, len(entries)), (raw, {"source": "pairs", "reason": "malformed_row", "detail": why})
        )
    bad_inputs: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for k, (line, meta) in enumerate(entries):
        lineno = k + 2  # 1-based, after the header
        if not meta:
            first_line.setdefault(line, lineno)
            continue
        rec = {"source": meta["source"], "reason": meta["reason"], "line": lineno, "raw": line}
        rec.update({kk: vv for kk, vv in meta.items() if kk not in ("source", "reason")})
        if meta["reason"] == "duplicate_interaction":
            rec["first_line"] = first_line[line]
        rec["key"] = f"{meta['user_id']}|{meta['item_id']}|{meta['ts_ms']}" if "user_id" in meta else f"line:{lineno}"
        bad_inputs.append(rec)
    counts = {"malformed": len(malformed), "duplicates": min(n_duplicates, len(dup_pool))}
    return [line for line, _m in entries], bad_inputs, counts


def _title_lines(rb: random.Random, items: dict[int, ItemPlan], bad_inputs: list[dict[str, Any]]) -> list[str]:
    """Titles sorted by id, with one malformed row (empty id) recorded in `bad_inputs`."""
    title_lines = [_csv_line([iid, items[iid].title]) for iid in sorted(items)]
    pos = rb.randint(1, len(title_lines))
    bad_title = _csv_line(["", "orphan title, no id"])
    title_lines.insert(pos, bad_title)
    bad_inputs.append(
        {
            "source": "titles",
            "reason": "malformed_row",
            "line": pos + 1,
            "raw": bad_title,
            "detail": "empty id",
            "key": f"line:{pos + 1}",
        }
    )
    return title_lines


def _media_bad_inputs(bad_ids: dict[int, str]) -> list[dict[str, Any]]:
    out = []
    for iid, reason in sorted(bad_ids.items(), key=lambda kv: BAD_MEDIA_REASONS.index(kv[1])):
        detail = {
            "empty_file": "zero-byte file",
            "corrupt": f"real clip truncated to {int(CORRUPT_KEEP_FRACTION * 100)}% of its bytes (moov atom lost)",
            "not_a_video": "plain text file named .mp4",
            "no_video_stream": "valid MP4 holding only an AAC audio track",
            "missing_file": "listed in the titles file and in interactions, no file in videos/",
        }[reason]
        out.append(
            {
                "source": "videos",
                "reason": reason,
                "item_id": str(iid),
                "path": f"{VIDEOS_DIR}/{iid}.mp4",
                "detail": detail,
                "key": str(iid),
            }
        )
    return out


def _manifest(plan: Plan) -> dict[str, Any]:
    items = plan.items
    clean = sorted(i for i, it in items.items() if it.split == "clean")
    cold_by_week: dict[str, list[str]] = {}
    for i, it in sorted(items.items()):
        if it.first_interaction_week and it.release_week > 0:
            cold_by_week.setdefault(str(it.first_interaction_week), []).append(str(i))
    return {
        "format": MANIFEST_FORMAT,
        "seed": plan.seed,
        "params": plan.params,
        "layout": {
            "videos_dir": VIDEOS_DIR,
            "pairs_file": PAIRS_FILE,
            "pairs_header": ["user", "item", "timestamp"],
            "titles_file": TITLES_FILE,
            "titles_header": None,
            "timestamp_unit": "ms",
        },
        "time": {
            "start_ms": plan.start_ms,
            "end_ms": plan.end_ms,
            "weeks": plan.weeks,
            "week_starts_ms": [plan.start_ms + w * WEEK_MS for w in range(plan.weeks)],
        },
        "reason_codes": list(REASON_CODES),
        "topics": {t.name: {"words": list(t.words), "visual": t.visual, "sound": t.sound} for t in TOPICS},
        "clean_items": [str(i) for i in clean],
        "bad_items": {str(i): it.bad_reason for i, it in sorted(items.items()) if it.split == "bad"},
        "no_audio_items": [str(i) for i in clean if not items[i].has_audio],
        "cold_items": [str(i) for i in sorted(items) if items[i].release_week > 0],
        "cold_items_by_first_week": cold_by_week,
        "items": {str(i): {k: v for k, v in asdict(it).items() if k != "item_id"} for i, it in sorted(items.items())},
        "users": {str(u): v for u, v in sorted(plan.users.items())},
        "bad_inputs": plan.bad_inputs,
        "expected": plan.expected,
    }


def _readme(plan: Plan, manifest: dict[str, Any]) -> str:
    items = plan.items
    clean = [it for it in items.values() if it.split == "clean"]
    per_topic = Counter(it.topic for it in clean)
    exp = plan.expected
    start = datetime.fromtimestamp(plan.start_ms / 1000, tz=UTC).date()
    n_topics = len({it.topic for it in items.values()})
    base_share = sum(len(u["favourite_topics"]) for u in plan.users.values()) / max(1, len(plan.users)) / n_topics
    lines = [
        "# captionrec synthetic sample (MicroLens-100K layout)",
        "",
        f"Generated by `captionrec sample --out <dir> --seed {plan.seed}` (`captionrec.sample.generate`); "
        "regenerating with the same seed gives byte-identical CSVs, `manifest.json` and this README "
        "(video bytes can differ across ffmpeg builds). Everything here is synthetic: lavfi test sources, "
        "espeak-ng speech, no third-party media.",
        "",
        "## Files",
        "",
        f"- `videos/<item>.mp4`: {len(clean)} clean clips, H.264 yuv420p + AAC, "
        f"{plan.params['duration_range'][0]:g}-{plan.params['duration_range'][1]:g} s, 15-30 fps, landscape "
        f"(320x180, 256x144) and vertical 9:16 (180x320, 144x256); {len(manifest['no_audio_items'])} have no "
        "audio track; audio is mono 22.05 kHz or stereo 44.1 kHz. Plus the planted bad files below.",
        f"- `{PAIRS_FILE}`: header `user,item,timestamp` (Unix ms), sorted by user then time; "
        f"{exp['interactions_distinct_valid']} valid distinct interactions of {len(plan.users)} users over "
        f"{plan.weeks} weeks starting {start} (Monday, UTC), plus planted bad rows.",
        f"- `{TITLES_FILE}`: `id,title` rows, no header, CSV-quoted (titles contain commas, quotes, an emoji); "
        f"{exp['title_items']} items plus one malformed row.",
        "- `manifest.json`: ground truth: per item its topic, clean/bad split, title, speech text and the topic "
        "words in it, size/fps/duration/audio, release week, the exact lavfi graphs; per user the favourite "
        "topics; every planted bad input with its expected quarantine reason; expected counts.",
        "",
        "## Topics",
        "",
        "Each item has one topic. Its speech says a sentence with words of the topic (a real ASR recovers them), "
        "its sound bed and its picture differ by topic, and only ~"
        f"{round(100 * plan.params['title_topic_share'])}% of titles name the topic (the rest are generic, "
        '"you won\'t believe this #42"). Topic words are unique across topics.',
        "",
        "| topic | clean items | picture | sound bed | example words |",
        "|---|---|---|---|---|",
    ]
    for t in TOPICS:
        lines.append(f"| {t.name} | {per_topic.get(t.name, 0)} | {t.visual} | {t.sound} | {', '.join(t.words[:6])} |")
    lines += [
        "",
        "## Users and interactions",
        "",
        f"Users have 1-2 favourite topics: a pick comes from them with probability {plan.params['favourite_share']:g} "
        "while the user has unseen items of that topic left, else from any topic; a user meets an item at most "
        f"once, so {round(100 * exp['favourite_topic_share'])}% of all interactions land in a favourite topic "
        f"(topic-blind picks would give ~{round(100 * base_share)}%). Item popularity is log-normal with a boost "
        "in the week after "
        f"release. {len(manifest['cold_items'])} items are released in weeks 1-{plan.weeks - 1} (cold items: they "
        "first appear in later weeks, see `cold_items_by_first_week`). Interactions per week: "
        f"{exp['interactions_per_week']}. A 7-day rolling split (train on the weeks before, test on the next) has "
        f"up to {plan.weeks - 1} test windows.",
        "",
        "## Planted bad inputs (expected quarantine reasons)",
        "",
        "| source | reason | where | what |",
        "|---|---|---|---|",
    ]
    for b in plan.bad_inputs:
        where = b.get("path") or f"line {b['line']}"
        lines.append(
            f"| {b['source']} | `{b['reason']}` | {where} | {b['detail']} (`{b['raw']}`) |"
            if "raw" in b
            else f"| {b['source']} | `{b['reason']}` | {where} | {b['detail']} |"
        )
    lines += [
        "",
        "Interactions naming the bad media items are otherwise valid rows (their item is in the titles file): "
        f"{exp['interactions_on_bad_media_items']} of them; `expected` in the manifest has every count an ingest "
        "test needs. Line numbers are 1-based physical lines (the pairs header is line 1). Each `bad_inputs` entry "
        "has a suggested `key`: the item id for media problems, `user|item|timestamp` for unknown items and "
        "duplicates (the later copy is the duplicate, `first_line` the original), `line:N` for malformed rows. "
        "The size/fps/duration/speech fields of a bad media item describe what was planned, not what is on disk.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- render


def _find_espeak(candidate: str | None = None) -> str:
    """Path of the espeak-ng binary (`candidate` when given), or a clear error naming the apt package."""
    if candidate is not None:
        exe = shutil.which(candidate)
    else:
        exe = shutil.which("espeak-ng") or shutil.which("/usr/bin/espeak-ng")
    if exe is None:
        raise SampleGenerationError(
            f"espeak-ng not found ({candidate or 'espeak-ng on PATH'}): the sample's speech needs it. "
            "Install it with `apt-get install espeak-ng`."
        )
    return exe


def _find_ffmpeg() -> str:
    try:
        import imageio_ffmpeg
    except ImportError as e:  # pragma: no cover - the `local` extra brings it
        raise SampleGenerationError("imageio-ffmpeg is needed for sample generation: pip install imageio-ffmpeg") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def _wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / float(w.getframerate())


_BITEXACT = [
    "-fflags",
    "+bitexact",
    "-flags:v",
    "+bitexact",
    "-flags:a",
    "+bitexact",
    "-map_metadata",
    "-1",
    "-map_chapters",
    "-1",
]


def _video_kbps(it: ItemPlan) -> int:
    return max(32, round(56 * it.width * it.height / (320 * 180)))


def _render(
    it: ItemPlan, out: Path, ffmpeg: str, espeak: str, tmp: Path, *, audio_only: bool = False, faststart: bool = True
) -> dict[str, Any]:
    """Render one clip (one espeak call, one ffmpeg call). Returns timing and warnings."""
    t0 = time.perf_counter()
    warnings: list[str] = []
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    graph: list[str] = []
    if it.has_audio:
        assert it.speech is not None and it.sample_rate is not None and it.speech_delay_s is not None
        wav = tmp / f"{it.item_id}.wav"
        subprocess.run(
            [
                espeak,
                "-v",
                str(it.voice),
                "-s",
                str(it.speech_rate_wpm),
                "-p",
                str(it.speech_pitch),
                "-w",
                str(wav),
                it.speech,
            ],
            check=True,
            capture_output=True,
        )
        room = it.duration_s - it.speech_delay_s - 0.2
        speech_s = _wav_seconds(wav)
        tempo = ""
        if speech_s > room:
            factor = min(2.0, speech_s / room)
            tempo = f"atempo={factor:.3f},"
            warnings.append(f"item {it.item_id}: speech {speech_s:.2f}s > room {room:.2f}s, atempo {factor:.2f}")
        cmd += ["-i", str(wav)]
        delay_ms = int(round(it.speech_delay_s * 1000))
        graph.append(
            f"[0:a]aresample={it.sample_rate},aformat=channel_layouts=mono,{tempo}adelay={delay_ms}:all=1,apad[sp]"
        )
        graph.append(f"{it.audio_bed_filter}[bed]")
        graph.append("[sp][bed]amix=inputs=2:duration=first:normalize=0[a]")
    if not audio_only:
        graph.append(f"{it.video_filter},scale=out_range=tv,format=yuv420p[v]")
    cmd += ["-filter_complex", ";".join(graph), "-filter_complex_threads", "1"]
    if not audio_only:
        kbps = _video_kbps(it)
        cmd += [
            "-map",
            "[v]",
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-crf",
            "30",
            "-maxrate",
            f"{kbps}k",
            "-bufsize",
            f"{2 * kbps}k",
            "-g",
            str(2 * it.fps),
            "-pix_fmt",
            "yuv420p",
            "-threads",
            "1",
        ]
    if it.has_audio:
        akbps = next(k for (sr, ch, k), _w in AUDIO_FORMATS if (sr, ch) == (it.sample_rate, it.channels))
        cmd += ["-map", "[a]", "-c:a", "aac", "-b:a", f"{akbps}k", "-ar", str(it.sample_rate), "-ac", str(it.channels)]
    cmd += ["-t", f"{it.duration_s:.1f}", *_BITEXACT]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    cmd += [str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        raise SampleGenerationError(
            f"ffmpeg failed for item {it.item_id} (rc={proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return {"item_id": it.item_id, "seconds": time.perf_counter() - t0, "warnings": warnings}


def _render_item(it: ItemPlan, videos: Path, ffmpeg: str, espeak: str, tmp: Path) -> dict[str, Any]:
    out = videos / f"{it.item_id}.mp4"
    if it.split == "clean":
        return _render(it, out, ffmpeg, espeak, tmp)
    if it.bad_reason == "empty_file":
        out.write_bytes(b"")
    elif it.bad_reason == "not_a_video":
        out.write_text(f"This is not a video.\nitem {it.item_id}: the download returned an error page instead.\n")
    elif it.bad_reason == "no_video_stream":
        audio_it = ItemPlan(**{**asdict(it), "has_audio": True})
        if audio_it.speech is None:  # bad items keep their planned speech; guard anyway
            raise SampleGenerationError(f"item {it.item_id}: no speech planned for the audio-only file")
        return _render(audio_it, out, ffmpeg, espeak, tmp, audio_only=True)
    elif it.bad_reason == "corrupt":
        full = tmp / f"{it.item_id}.full.mp4"
        res = _render(ItemPlan(**{**asdict(it), "has_audio": True}), full, ffmpeg, espeak, tmp, faststart=False)
        data = full.read_bytes()
        out.write_bytes(data[: int(len(data) * CORRUPT_KEEP_FRACTION)])
        return res
    elif it.bad_reason == "missing_file":
        pass
    return {"item_id": it.item_id, "seconds": 0.0, "warnings": []}


def _prepare_out_dir(out_dir: Path, overwrite: bool) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    ours = (out_dir / MANIFEST_FILE).exists()
    others = [
        p for p in out_dir.iterdir() if p.name not in (VIDEOS_DIR, PAIRS_FILE, TITLES_FILE, MANIFEST_FILE, README_FILE)
    ]
    if any(out_dir.iterdir()) and not ours and not overwrite:
        raise SampleGenerationError(
            f"{out_dir} is not empty and holds no {MANIFEST_FILE}: refusing to write there "
            "(pass overwrite=True / --overwrite)"
        )
    if others and not overwrite:
        raise SampleGenerationError(f"{out_dir} holds files the generator did not write: {[p.name for p in others]}")
    videos = out_dir / VIDEOS_DIR
    videos.mkdir(exist_ok=True)
    for p in videos.glob("*.mp4"):  # stale clips from an earlier run
        p.unlink()
    return videos


def _dir_bytes(path: Path) -> int:
    """Apparent size of every file under `path` (what `du -sb` counts, less directory entries)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def generate(
    out_dir: str | os.PathLike[str],
    seed: int = 7,
    n_items: int = 200,
    n_users: int = 500,
    *,
    weeks: int = 8,
    n_no_audio: int = 6,
    duration_range: tuple[float, float] = (5.0, 15.0),
    workers: int = 2,
    overwrite: bool = False,
    render: bool = True,
    espeak_exe: str | None = None,
    ffmpeg_exe: str | None = None,
    **plan_kwargs: Any,
) -> dict[str, Any]:
    """Write a MicroLens-layout sample into `out_dir` and return a summary of counts.

    `render=False` writes the CSVs, manifest and README only (no videos/). Clips are rendered by
    `workers` concurrent ffmpeg processes (imageio-ffmpeg's binary unless `ffmpeg_exe`); speech comes from
    espeak-ng (`espeak_exe` or the one on PATH). Other keyword arguments go to `plan_dataset`.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    ffmpeg = espeak = ""
    if render:
        espeak = _find_espeak(espeak_exe)
        ffmpeg = ffmpeg_exe or _find_ffmpeg()
    plan = plan_dataset(
        seed, n_items, n_users, weeks=weeks, n_no_audio=n_no_audio, duration_range=duration_range, **plan_kwargs
    )
    videos = _prepare_out_dir(out, overwrite)
    manifest = _manifest(plan)
    (out / PAIRS_FILE).write_text("user,item,timestamp\n" + "\n".join(plan.pairs_lines) + "\n", encoding="utf-8")
    (out / TITLES_FILE).write_text("\n".join(plan.titles_lines) + "\n", encoding="utf-8")
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / README_FILE).write_text(_readme(plan, manifest), encoding="utf-8")

    render_s = 0.0
    warnings: list[str] = []
    if render:
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="captionrec-sample-") as td:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                futures = [
                    pool.submit(_render_item, it, videos, ffmpeg, espeak, Path(td))
                    for _iid, it in sorted(plan.items.items())
                ]
                for f in futures:
                    warnings += f.result()["warnings"]
        render_s = time.perf_counter() - t1

    clean = [it for it in plan.items.values() if it.split == "clean"]
    summary = {
        "out_dir": str(out),
        "seed": seed,
        "items_total": len(plan.items),
        "items_clean": len(clean),
        "items_bad_media": len(plan.items) - len(clean),
        "users": len(plan.users),
        "interactions_valid": plan.expected["interactions_distinct_valid"],
        "pairs_data_lines": plan.expected["pairs_data_lines"],
        "interactions_per_week": plan.expected["interactions_per_week"],
        "per_topic_clean_items": dict(sorted(Counter(it.topic for it in clean).items())),
        "cold_items": len(manifest["cold_items"]),
        "no_audio_clips": len(manifest["no_audio_items"]),
        "vertical_clips": sum(1 for it in clean if it.height > it.width),
        "titles_revealing_topic": sum(1 for it in plan.items.values() if it.title_reveals_topic),
        "bad_inputs": dict(Counter(b["reason"] for b in plan.bad_inputs)),
        "clip_seconds_total": round(sum(it.duration_s for it in clean), 1),
        "bytes_total": _dir_bytes(out),
        "render_seconds": round(render_s, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "warnings": warnings,
    }
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """`captionrec sample --out DIR [--seed N]`: generate the sample and print its summary as JSON."""
    ap = argparse.ArgumentParser(prog="captionrec sample", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created; must be empty or an earlier sample)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--items", type=int, default=200, help="clean items (5 planted bad media items come on top)")
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--weeks", type=int, default=8)
    ap.add_argument("--no-audio", type=int, default=6, dest="no_audio", help="clean clips without an audio track")
    ap.add_argument("--workers", type=int, default=2, help="concurrent ffmpeg processes")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty folder that is not a sample")
    ap.add_argument("--no-render", action="store_true", help="CSVs + manifest only, no videos")
    args = ap.parse_args(list(argv) if argv is not None else None)
    try:
        summary = generate(
            args.out,
            seed=args.seed,
            n_items=args.items,
            n_users=args.users,
            weeks=args.weeks,
            n_no_audio=args.no_audio,
            workers=args.workers,
            overwrite=args.overwrite,
            render=not args.no_render,
        )
    except SampleGenerationError as e:
        print(f"captionrec sample: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
