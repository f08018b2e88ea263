"""Ingest of the CSV side on real Spark + real Delta tables: timestamp units and plausibility (issue 8.3),
titles files with a header row or unquoted commas (8.3, 10), interaction-only datasets (10)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from captionrec import contracts as C
from captionrec.config import ConfigError, load_config
from captionrec.ingest import timestamps as TS
from captionrec.pipeline import ingest
from captionrec.tables import open_store

T2023 = 1686037505  # 2023-06-06 07:45:05 UTC, in seconds


def _cfg(source: Path, root: Path, *extra: str):
    return load_config("local", [f"data.source={source}", f"storage.root={root}", "ingest.probe_partitions=2", *extra])


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _year(ts) -> int:
    return ts.astimezone(UTC).year if ts.tzinfo else ts.year


# ------------------------------------------------------------------------------------------- timestamps


def test_guess_unit_per_median():
    b = TS.bounds("2000-01-01", "microlens", now_ms=1_800_000_000_000)
    assert TS.guess_unit(1.7e12, b) == "ms"
    assert TS.guess_unit(1.7e9, b) == "s"
    assert TS.guess_unit(9.0e8, b) is None  # 1998 in seconds, 1970 in ms: before 2000 either way
    assert TS.guess_unit(1.7e15, b) is None  # microseconds: the unit is neither
    assert TS.guess_unit(None, b) is None
    assert TS.guess_unit(9.0e8, TS.bounds("auto", "recbole", now_ms=1_800_000_000_000)) == "s"  # MovieLens 1998
    with pytest.raises(ValueError, match="data.earliest"):
        TS.bounds("last year", "microlens")
    assert load_config("local", ["data.earliest=1990-01-01"]).data.earliest == "1990-01-01"  # YAML reads a date
    with pytest.raises(ConfigError, match="earliest"):
        load_config("local", ["data.earliest=last year"])


def test_clean_pairs_detects_the_unit_of_each_file_and_quarantines_implausible_times(spark):
    ms, s = T2023 * 1000, T2023
    rows = [
        ("u1", "1", str(ms), "a.csv"),
        ("u1", "2", str(ms + 5000), "a.csv"),
        ("u2", "1", str(ms + 9000), "a.csv"),
        ("u3", "1", str(s), "a.csv"),  # a seconds value in a ms file: 1970-01-20
        ("u3", "2", str(ms * 1000), "a.csv"),  # far future
        ("u7", "1", "1e30", "a.csv"),  # beyond BIGINT in any unit (an ANSI cast error if not guarded)
        ("u7", "2", "Infinity", "a.csv"),  # not a time at all
        ("u6", "1", str(s), "b.csv"),
        ("u1", "3", f"{s + 60}.0", "b.csv"),
        ("u2", "3", str(s + 120), "b.csv"),
        ("u4", "3", "946684799", "b.csv"),  # 1999-12-31 23:59:59 in seconds: before 2000
        ("u4", "4", "0", "b.csv"),
        ("u5", "1", "17", "c.csv"),
        ("u5", "2", "18", "c.csv"),  # a file whose unit is neither
    ]
    raw = spark.createDataFrame(
        [(u, i, t, None, f) for u, i, t, f in rows],
        "user STRING, item STRING, timestamp STRING, _corrupt STRING, _file STRING",
    )
    b = TS.bounds("2000-01-01", "microlens")
    units = TS.file_units(raw, "auto", b)
    assert units == {"a.csv": "ms", "b.csv": "s", "c.csv": None}
    pairs, q = ingest.clean_pairs(raw, units, b)
    got = sorted((r.user_id, r.item_id, r.ts_ms) for r in pairs.collect())
    assert got == sorted(
        [
            ("u1", "1", ms),
            ("u1", "2", ms + 5000),
            ("u2", "1", ms + 9000),
            ("u6", "1", s * 1000),
            ("u1", "3", (s + 60) * 1000),
            ("u2", "3", (s + 120) * 1000),
        ]
    )
    assert all(_year(r.ts) == 2023 for r in pairs.collect())
    quarantined = q.collect()
    assert [r.detail for r in quarantined if r.reason == C.MALFORMED_ROW] == ["unparseable row in a.csv: u7,2,Infinity"]
    bad = {r.key: r for r in quarantined if r.reason != C.MALFORMED_ROW}
    assert {r.reason for r in bad.values()} == {C.IMPLAUSIBLE_TIMESTAMP}
    assert set(bad) == {f"u3|1|{s}", f"u3|2|{ms * 1000}", "u4|3|946684799", "u4|4|0", "u5|1|17", "u5|2|18", "u7|1|1e30"}
    assert "too large" in bad["u7|1|1e30"].detail
    assert "1970-01-20" in bad[f"u3|1|{s}"].detail and "read as ms" in bad[f"u3|1|{s}"].detail
    assert "1999-12-31 23:59:59" in bad["u4|3|946684799"].detail
    assert "no usable unit" in bad["u5|1|17"].detail and "c.csv" in bad["u5|1|17"].detail
    # a fixed unit is applied as given: read as seconds, the ms file lands in the far future but for one row
    a_only = raw.where("_file = 'a.csv'")
    p_s, q_s = ingest.clean_pairs(a_only, TS.file_units(a_only, "s", b), b)
    assert [(r.user_id, r.ts_ms) for r in p_s.collect()] == [("u3", s * 1000)]
    assert q_s.count() == 6


def test_seconds_timestamps_are_read_as_seconds_and_reported(spark, tmp_path):
    """Issue 8.3: a pairs file in seconds was ingested as 1970-01-20 dates."""
    src = tmp_path / "src"
    _write(src / "sample_title_en.csv", ["1,first", "2,second"])
    _write(
        src / "sample_pairs.csv",
        ["user,item,timestamp", f"u1,1,{T2023}", f"u1,2,{T2023 + 60}", f"u2,1,{T2023 + 3600}", "u2,2,946684799"],
    )
    store = open_store(spark, _cfg(src, tmp_path / "lake").storage)
    summary = ingest.run(_cfg(src, tmp_path / "lake", "data.videos=none"), spark, store)
    assert summary["timestamp_units"] == {"sample_pairs.csv": "s"}
    inter = store.read("interactions").collect()
    assert sorted(r.ts_ms for r in inter) == [T2023 * 1000, (T2023 + 60) * 1000, (T2023 + 3600) * 1000]
    assert {_year(r.ts) for r in inter} == {2023}
    q = store.read("quarantine").collect()
    assert [(r.source, r.key, r.reason) for r in q] == [("pairs", "u2|2|946684799", C.IMPLAUSIBLE_TIMESTAMP)]

    # told the unit is ms, the same file is all 1970: everything is quarantined, nothing trained on
    store2 = open_store(spark, _cfg(src, tmp_path / "lake2").storage)
    forced = ingest.run(_cfg(src, tmp_path / "lake2", "data.videos=none", "data.timestamp_unit=ms"), spark, store2)
    assert forced["timestamp_units"] == {"sample_pairs.csv": "ms"}
    assert forced["interactions_total"] == 0
    assert forced["quarantine_by_reason"] == {C.IMPLAUSIBLE_TIMESTAMP: 4}


# ------------------------------------------------------------------------------------------- titles


def test_titles_header_row_and_unquoted_commas(spark, tmp_path):
    """Issue 8.3/10: MicroLens-50k's `<name>_titles.csv` starts with `item,title` (a phantom item `item`), and a
    title with an unquoted comma lost everything after the comma."""
    src = tmp_path / "src"
    _write(
        src / "MicroLens-50k_titles.csv",
        [
            "\ufeffitem,title",
            "1,hello, world",
            '2,"quoted, fine"',
            '3,"she said ""hi"""',
            "4,a, b, c and d",
            ",no id",
            "5,",
        ],
    )
    _write(
        src / "MicroLens-50k_pairs.csv",
        ["user,item,timestamp", f"u1,1,{T2023}000", f"u1,2,{T2023 + 1}000", f"u2,4,{T2023 + 2}000"],
    )
    cfg = _cfg(src, tmp_path / "lake", "data.name=MicroLens-50k", "data.videos=none")
    store = open_store(spark, cfg.storage)
    summary = ingest.run(cfg, spark, store)
    titles = {r.item_id: r.title for r in store.read("items").collect()}
    assert titles == {"1": "hello, world", "2": "quoted, fine", "3": 'she said "hi"', "4": "a, b, c and d", "5": None}
    assert summary["titles_file"].endswith("MicroLens-50k_titles.csv")
    assert summary["headers_skipped"] == {
        "MicroLens-50k_titles.csv": "item,title",
        "MicroLens-50k_pairs.csv": "user,item,timestamp",
    }
    q = store.read("quarantine").collect()
    assert [(r.source, r.reason) for r in q] == [("titles", C.MALFORMED_ROW)]  # only the row with no id
    assert store.read("interactions").count() == 3


def test_titles_file_name_is_detected_or_configured(spark, tmp_path):
    src = tmp_path / "src"
    _write(src / "ml_title_en.csv", ["1,from title_en"])
    _write(src / "ml_titles.csv", ["item,title", "1,from titles"])
    _write(src / "ml_pairs.csv", [f"u1,1,{T2023}000"])  # no header: the first row is data, not lost
    store = open_store(spark, _cfg(src, tmp_path / "lake").storage)
    with pytest.raises(ingest.SourceError, match="two titles files.*data.titles_file"):
        ingest.run(_cfg(src, tmp_path / "lake", "data.name=ml", "data.videos=none"), spark, store)
    assert not store.exists("items")
    cfg = _cfg(src, tmp_path / "lake", "data.name=ml", "data.videos=none", "data.titles_file=ml_titles.csv")
    summary = ingest.run(cfg, spark, store)
    assert [(r.item_id, r.title) for r in store.read("items").collect()] == [("1", "from titles")]
    assert summary["interactions_total"] == 1 and summary["headers_skipped"] == {"ml_titles.csv": "item,title"}


# ------------------------------------------------------------------------------------------- no videos


def test_interaction_only_dataset_needs_no_videos_folder(spark, tmp_path):
    """Issue 10: a source without videos/ was refused (`missing videos`), and with an empty videos/ every item
    was quarantined as missing_file."""
    src = tmp_path / "src"
    _write(src / "sample_title_en.csv", ["1,first", "2,second", "3,third"])
    _write(
        src / "sample_pairs.csv",
        [
            "user,item,timestamp",
            f"u1,1,{T2023}000",
            f"u1,2,{T2023 + 1}000",
            f"u2,3,{T2023 + 2}000",
            f"u2,9,{T2023 + 3}000",
        ],
    )
    cfg = _cfg(src, tmp_path / "lake")
    store = open_store(spark, cfg.storage)
    with pytest.raises(ingest.SourceError, match="videos"):
        ingest.run(_cfg(src, tmp_path / "lake", "data.videos=required"), spark, store)
    assert not store.exists("items")

    summary = ingest.run(cfg, spark, store)  # data.videos=auto (the default)
    assert summary["videos"].startswith("none: data.videos=auto")
    items = store.read("items").collect()
    assert {r.item_id for r in items} == {"1", "2", "3"}
    assert {r.probe_status for r in items} == {C.NO_VIDEO_EXPECTED}
    assert all(r.video_path is None and r.probe_detail for r in items)
    q = store.read("quarantine").collect()
    assert [(r.source, r.reason) for r in q] == [("pairs", C.UNKNOWN_ITEM)]  # no rows for videos never expected
    assert summary["interactions_total"] == 3 and summary["items_video_ok"] == 0
    again = ingest.run(cfg, spark, store)
    assert again["items_upserted"] == 0 and again["quarantine_inserted"] == 0
