"""Ingest on real MP4s into real Delta tables: happy path, every planted bad input, re-runs, new data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from captionrec.config import load_config
from captionrec.pipeline import ingest
from captionrec.tables import open_store


def _cfg(source: Path, root: Path):
    return load_config("local", [f"data.source={source}", f"storage.root={root}", "ingest.probe_partitions=2"])


def _counts(store) -> dict[str, int]:
    return {t: store.read(t).count() for t in ("items", "interactions", "quarantine")}


@pytest.fixture(scope="module")
def sample_run(spark, sample_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("lakehouse")
    cfg = _cfg(sample_dir, root)
    store = open_store(spark, cfg.storage)
    first = ingest.run(cfg, spark, store)
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    return cfg, store, first, manifest


def test_sample_tables_and_counts(sample_run):
    _cfg_, store, summary, manifest = sample_run
    exp = manifest["expected"]
    items = store.read("items")
    assert items.count() == exp["title_items"] == summary["items_total"]
    assert store.read("interactions").count() == exp["interactions_distinct_valid"]
    assert summary["videos_found"] == exp["video_files"]
    assert summary["items_video_ok"] == exp["clean_video_files"]
    assert store.backend == "delta-rs"
    # the schema promised to later stages
    assert {
        "item_id",
        "title",
        "video_path",
        "duration_s",
        "width",
        "height",
        "fps",
        "has_audio",
        "probe_status",
    } <= set(items.columns)
    assert dict(store.read("interactions").dtypes) == {
        "user_id": "string",
        "item_id": "string",
        "ts": "timestamp",
        "ts_ms": "bigint",
    }


def test_probe_values_match_what_was_encoded(sample_run):
    _cfg_, store, _s, manifest = sample_run
    rows = {r["item_id"]: r for r in store.read("items").where("probe_status = 'ok'").collect()}
    assert set(rows) == set(manifest["clean_items"])
    for item_id, meta in manifest["items"].items():
        if meta["split"] != "clean":
            continue
        row = rows[item_id]
        assert (row["width"], row["height"]) == (meta["width"], meta["height"]), item_id
        assert row["duration_s"] == pytest.approx(meta["duration_s"], abs=0.25), item_id
        assert row["has_audio"] == meta["has_audio"], item_id
        assert row["fps"] == pytest.approx(meta["fps"], rel=0.05), item_id
    assert any(r["height"] > r["width"] for r in rows.values())  # vertical 9:16 clips came through


def test_every_planted_bad_input_is_quarantined_with_its_reason(sample_run):
    _cfg_, store, _s, manifest = sample_run
    q = store.read("quarantine").collect()
    by_key = {(r["source"], r["key"], r["reason"]) for r in q}
    for bad in manifest["bad_inputs"]:
        if bad["reason"] == "malformed_row":
            raw = bad["raw"].replace('"', "")  # the detail shows the parsed fields, CSV quotes removed
            hits = [
                r
                for r in q
                if r["reason"] == "malformed_row" and r["source"] == bad["source"] and raw in (r["detail"] or "")
            ]
            assert hits, f"malformed row not quarantined: {bad}"
        else:
            assert (bad["source"], bad["key"], bad["reason"]) in by_key, f"missing from quarantine: {bad}"
    assert all(r["detail"] for r in q)
    # bad media items stay in `items` (their titles and interactions are usable) with the reason as status
    items = {r["item_id"]: r["probe_status"] for r in store.read("items").collect()}
    for item_id, reason in manifest["bad_items"].items():
        assert items[item_id] == reason
    # nothing valid was quarantined: only the planted rows are there
    planted = {(b["source"], b["reason"]) for b in manifest["bad_inputs"]}
    assert {(r["source"], r["reason"]) for r in q} <= planted


def test_duplicates_kept_once_and_unknown_items_dropped(sample_run):
    _cfg_, store, _s, manifest = sample_run
    inter = store.read("interactions")
    assert inter.count() == inter.dropDuplicates(["user_id", "item_id", "ts"]).count()
    unknown = {b["item_id"] for b in manifest["bad_inputs"] if b["reason"] == "unknown_item"}
    assert inter.where(F.col("item_id").isin(list(unknown))).count() == 0


def test_second_run_changes_nothing(spark, sample_run):
    cfg, store, _first, _m = sample_run
    before = _counts(store)
    versions = {t: store.version(t) for t in before}
    again = ingest.run(cfg, spark, store)
    assert _counts(store) == before
    assert again["videos_probed"] == 0
    assert again["items_upserted"] == 0 and again["interactions_inserted"] == 0 and again["quarantine_inserted"] == 0
    assert {t: store.version(t) for t in before} == versions  # no empty commits either


def test_new_files_and_rows_are_picked_up(spark, sample_dir, tmp_path):
    src = tmp_path / "src"
    (src / "videos").mkdir(parents=True)
    manifest = json.loads((sample_dir / "manifest.json").read_text())
    clean = manifest["clean_items"][:6]
    for item_id in clean[:5]:
        shutil.copy(sample_dir / "videos" / f"{item_id}.mp4", src / "videos" / f"{item_id}.mp4")
    titles = [
        ln for ln in (sample_dir / "sample_title_en.csv").read_text().splitlines() if ln.split(",", 1)[0] in clean
    ]
    pairs = [
        ln
        for ln in (sample_dir / "sample_pairs.csv").read_text().splitlines()[1:]
        if ln.count(",") == 2 and ln.split(",")[1] in clean
    ]
    (src / "sample_title_en.csv").write_text("\n".join(t for t in titles if t.split(",", 1)[0] in clean[:5]) + "\n")
    old_pairs = [p for p in pairs if p.split(",")[1] in clean[:5]]
    (src / "sample_pairs.csv").write_text("user,item,timestamp\n" + "\n".join(old_pairs) + "\n")
    cfg = _cfg(src, tmp_path / "lh")
    store = open_store(spark, cfg.storage)
    ingest.run(cfg, spark, store)
    assert _counts(store)["items"] == 5

    # a new clip, its title and its interactions arrive; one old row is repeated in the new export
    shutil.copy(sample_dir / "videos" / f"{clean[5]}.mp4", src / "videos" / f"{clean[5]}.mp4")
    (src / "sample_title_en.csv").write_text("\n".join(titles) + "\n")
    (src / "sample_pairs.csv").write_text("user,item,timestamp\n" + "\n".join(pairs) + "\n")
    second = ingest.run(cfg, spark, store)
    assert second["videos_probed"] == 1
    assert second["items_upserted"] == 1
    assert second["interactions_inserted"] == len(pairs) - len(old_pairs)
    assert _counts(store)["items"] == 6
    assert store.read("interactions").count() == len(set(pairs))


def test_a_source_whose_videos_are_all_bad_still_ingests(spark, sample_dir, tmp_path):
    """Issue 8.2: a probe batch of only unusable files (zero-byte, text, random bytes) crashed ingest."""
    import os

    src = tmp_path / "src"
    (src / "videos").mkdir(parents=True)
    (src / "videos" / "1.mp4").write_bytes(b"")
    (src / "videos" / "2.mp4").write_text("not a video at all\n")
    (src / "videos" / "3.mp4").write_bytes(os.urandom(4096))
    (src / "sample_title_en.csv").write_text("1,zero bytes\n2,text\n3,random\n")
    (src / "sample_pairs.csv").write_text("user,item,timestamp\nu1,1,1700000000000\nu1,2,1700000100000\n")
    cfg = _cfg(src, tmp_path / "lake")
    store = open_store(spark, cfg.storage)
    summary = ingest.run(cfg, spark, store)
    assert summary["videos_probed"] == 3 and summary["items_video_ok"] == 0
    status = {r["item_id"]: r["probe_status"] for r in store.read("items").collect()}
    assert status == {"1": "empty_file", "2": "not_a_video", "3": "not_a_video"}
    assert store.read("interactions").count() == 2
    # a later run with one new broken upload alone in its batch goes through too
    (src / "videos" / "4.mp4").write_bytes(os.urandom(100))
    (src / "sample_title_en.csv").write_text("1,zero bytes\n2,text\n3,random\n4,late upload\n")
    again = ingest.run(cfg, spark, store)
    assert again["videos_probed"] == 1 and again["items_total"] == 4


def test_missing_source_file_is_a_clear_error(spark, tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "sample_title_en.csv").write_text("1,a title\n")
    cfg = _cfg(tmp_path, tmp_path / "lh")
    store = open_store(spark, cfg.storage)
    with pytest.raises(ingest.SourceError, match="sample_pairs.csv"):
        ingest.run(cfg, spark, store)
    assert not store.exists("items")  # nothing half-written


def test_clean_pairs_transform(spark):
    raw = spark.createDataFrame(
        [
            ("1", "10", "1700000000000", None, "p.csv"),
            ("1", "10", "1700000000000", None, "p.csv"),
            ("2", "11", "soon", None, "p.csv"),
            (None, None, None, "junk line", "p.csv"),
            ("3", "", "5", None, "p.csv"),
        ],
        "user STRING, item STRING, timestamp STRING, _corrupt STRING, _file STRING",
    )
    pairs, q = ingest.clean_pairs(raw)
    assert [(r.user_id, r.item_id, r.ts_ms) for r in pairs.collect()] == [("1", "10", 1700000000000)]
    reasons = sorted(r.reason for r in q.collect())
    assert reasons == ["duplicate_interaction", "malformed_row", "malformed_row", "malformed_row"]
