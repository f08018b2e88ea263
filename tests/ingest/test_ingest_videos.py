"""Ingest of the video side on real clips, real Spark and real Delta tables: containers other than MP4
(issue 8.3) and listing failures that must stop the stage before any write (issue 8.4)."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.ingest import listing
from captionrec.ingest.listing import FileEntry, ListingError
from captionrec.pipeline import ingest
from captionrec.tables import open_store
from captionrec.testing.media_fixtures import make_clip

TS = 1686037505000
SMALL = dict(duration_s=1.0, size=(64, 36), fps=10)


def _cfg(source: Path, root: Path, *extra: str):
    return load_config("local", [f"data.source={source}", f"storage.root={root}", "ingest.probe_partitions=2", *extra])


def _write_csvs(src: Path, ids: list[str]) -> None:
    (src / "sample_title_en.csv").write_text("".join(f"{i},title {i}\n" for i in ids))
    (src / "sample_pairs.csv").write_text(
        "user,item,timestamp\n" + "".join(f"u1,{i},{TS + n}\n" for n, i in enumerate(ids))
    )


def _versions(store) -> dict[str, int]:
    return {t: store.version(t) for t in ("items", "interactions", "quarantine")}


# ------------------------------------------------------------------------------------------- containers


@pytest.fixture(scope="module")
def containers_source(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("containers")
    v = src / "videos"
    make_clip(v / "1.mkv", **SMALL)  # H.264 + AAC in Matroska
    make_clip(v / "2.webm", video_codec="libvpx", audio=None, **SMALL)  # VP8 in WebM
    make_clip(v / "3.mov", **SMALL)  # QuickTime
    # MPEG-2 program stream; MPEG-2 needs a standard frame rate, and FFmpeg's duration of an MPEG-PS file is
    # an estimate that is only close on clips of a few seconds
    make_clip(v / "4.mpg", video_codec="mpeg2video", audio=None, duration_s=3.0, size=(64, 36), fps=25)
    make_clip(v / "5.mp4", **SMALL)
    make_clip(v / "5.MKV", **SMALL)  # a second file for item 5
    (v / "notes.txt").write_text("not a video, not an item\n")
    _write_csvs(src, ["1", "2", "3", "4", "5", "6"])  # 6 has a title and no file
    return src


def test_videos_in_any_common_container_are_ingested(spark, containers_source, tmp_path):
    """Issue 8.3: .mkv/.webm/.mov/.mpg files were ignored and their items reported as
    'videos/<id>.mp4 does not exist'."""
    cfg = _cfg(containers_source, tmp_path / "lake")
    store = open_store(spark, cfg.storage)
    summary = ingest.run(cfg, spark, store)
    items = {r.item_id: r for r in store.read("items").collect()}
    assert {i: r.probe_status for i, r in items.items()} == {
        "1": C.OK,
        "2": C.OK,
        "3": C.OK,
        "4": C.OK,
        "5": C.OK,
        "6": C.MISSING_FILE,
    }
    for i, ext, codec, seconds in (
        ("1", ".mkv", "h264", 1),
        ("2", ".webm", "vp8", 1),
        ("3", ".mov", "h264", 1),
        ("4", ".mpg", "mpeg2video", 3),
        ("5", ".mp4", "h264", 1),
    ):
        assert items[i].video_path.endswith(f"/{i}{ext}"), items[i].video_path
        assert (items[i].width, items[i].height, items[i].video_codec) == (64, 36, codec)
        assert items[i].duration_s == pytest.approx(seconds, abs=0.2)
    assert summary["videos_found"] == 5 and summary["videos_probed"] == 5
    # the missing file's reason names what was looked for, not a .mp4 path
    detail = items["6"].probe_detail
    assert "6.<ext>" in detail and ".webm" in detail and "6.mp4 does not exist" not in detail
    assert C.is_permanent(C.MISSING_FILE)
    q = {(r.source, r.key, r.reason): r.detail for r in store.read("quarantine").collect()}
    assert set(q) == {("videos", "5", C.DUPLICATE_VIDEO), ("videos", "6", C.MISSING_FILE)}
    assert q[("videos", "5", C.DUPLICATE_VIDEO)] == "2 files for item 5: using 5.mp4, ignoring 5.MKV"

    again = ingest.run(cfg, spark, store)  # nothing new: nothing probed, nothing written
    assert again["videos_probed"] == 0 and again["items_upserted"] == 0 and again["quarantine_inserted"] == 0

    # a file that changes container is probed again
    (containers_source / "videos" / "3.mov").rename(containers_source / "videos" / "3.m4v")
    renamed = ingest.run(cfg, spark, store)
    assert renamed["videos_probed"] == 1 and renamed["items_upserted"] == 1
    row = store.read("items").where("item_id = '3'").first()
    assert row.video_path.endswith("/3.m4v") and row.probe_status == C.OK


def test_choose_videos_is_deterministic_and_configurable():
    files = [
        FileEntry(f"file:/v/{n}", n, 10, 0)
        for n in ("7.webm", "7.mkv", "8.MOV", ".hidden.mp4", "x.json", "9.mp4", "9.mp4.part", "a.b.mp4")
    ]
    exts = (".mp4", ".mkv", ".webm", ".mov")
    chosen, ignored = listing.choose_videos(files, exts)
    assert [(c.item_id, c.file.name, [o.name for o in c.others]) for c in chosen] == [
        ("7", "7.mkv", ["7.webm"]),
        ("8", "8.MOV", []),
        ("9", "9.mp4", []),
        ("a.b", "a.b.mp4", []),
    ]
    assert ignored == 3
    assert chosen == listing.choose_videos(list(reversed(files)), exts)[0]  # input order does not matter
    webm_first, _ = listing.choose_videos(files, (".webm", ".mkv"))
    assert [(c.item_id, c.file.name) for c in webm_first] == [("7", "7.webm")]


# ------------------------------------------------------------------------------------------- listing


def test_an_unreadable_path_is_an_error_not_an_empty_listing(spark, tmp_path):
    """Issue 8.4: a Hadoop error while checking or listing fell back to a local listing ([] for s3a://...)."""
    with pytest.raises(ListingError, match=r"cannot check nosuchfs://bucket/x.*nosuchfs"):
        listing.path_exists(spark, "nosuchfs://bucket/x")
    with pytest.raises(ListingError, match=r"cannot list nosuchfs://bucket/videos"):
        listing.list_files(spark, "nosuchfs://bucket/videos")
    # a real local folder lists through Hadoop as before
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "1.mp4").write_bytes(b"x" * 7)
    assert [(f.name, f.size_bytes) for f in listing.list_files(spark, str(tmp_path / "v"))] == [("1.mp4", 7)]
    assert listing.path_exists(spark, str(tmp_path / "v")) and not listing.path_exists(spark, str(tmp_path / "w"))


def test_a_file_that_cannot_be_checked_never_downgrades_an_item(spark, tmp_path):
    src = tmp_path / "src"
    make_clip(src / "videos" / "1.mp4", **SMALL)
    make_clip(src / "videos" / "2.mp4", **SMALL)
    _write_csvs(src, ["1", "2"])
    store = open_store(spark, _cfg(src, tmp_path / "lake").storage)
    ingest.run(_cfg(src, tmp_path / "lake"), spark, store)
    before = _versions(store)
    # the videos folder now sits where Hadoop can't read it: the run stops, no item is downgraded
    _write_csvs(src, ["1", "2", "3"])
    with pytest.raises(ListingError, match="nothing was written"):
        ingest.run(_cfg(src, tmp_path / "lake", "data.videos_dir=nosuchfs://bucket/videos"), spark, store)
    assert _versions(store) == before
    assert {r.probe_status for r in store.read("items").collect()} == {C.OK}
    # a whole source on an unknown scheme: an error about the scheme, not "missing files"
    with pytest.raises(ListingError, match="nosuchfs"):
        ingest.run(_cfg("nosuchfs://bucket/src", tmp_path / "lake"), spark, store)
    assert _versions(store) == before
    # the videos folder is gone (unmounted): data.videos=auto must not make this an interaction-only dataset
    for f in (src / "videos").iterdir():
        f.rename(tmp_path / f.name)
    (src / "videos").rmdir()
    with pytest.raises(ingest.SourceError, match="2 items in `items` have video files.*data.videos=none"):
        ingest.run(_cfg(src, tmp_path / "lake"), spark, store)
    assert _versions(store) == before
    # asked for explicitly, it becomes one
    ingest.run(_cfg(src, tmp_path / "lake", "data.videos=none"), spark, store)
    assert {r.probe_status for r in store.read("items").collect()} == {C.NO_VIDEO_EXPECTED}


class _NoJvmSession:
    """What `listing` sees of a Spark Connect session: no `_jsc` (a Connect server can't run in the tests)."""

    @property
    def _jsc(self):
        raise AttributeError("_jsc is not supported in Spark Connect")


def test_without_a_jvm_only_local_paths_are_read_locally(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "1.mkv").write_bytes(b"abc")
    session = _NoJvmSession()
    assert not listing.has_jvm(session)
    assert [f.name for f in listing.list_files(session, str(tmp_path / "v"))] == ["1.mkv"]
    assert listing.path_exists(session, (tmp_path / "v").as_uri())
    with pytest.raises(ListingError, match="no JVM"):
        listing.list_files(session, "s3a://bucket/videos")
    with pytest.raises(ListingError, match="no JVM"):
        listing.path_exists(session, "s3a://bucket/videos")


# ------------------------------------------------------------------------------------------- probing


def test_a_listed_file_that_cannot_be_read_is_transient_not_missing(tmp_path):
    """A file listed a moment ago and gone (or unreachable) at probe time: `probe_error`, retried next run."""
    make_clip(tmp_path / "1.mkv", **SMALL)
    rows = [
        {"item_id": "1", "video_path": (tmp_path / "1.mkv").as_uri()},
        {"item_id": "2", "video_path": (tmp_path / "2.mkv").as_uri()},
    ]
    out = [r for batch in ingest.probe_rows(iter(rows)) for r in batch]
    assert [(r["item_id"], r["probe_status"]) for r in out] == [("1", C.OK), ("2", C.PROBE_ERROR)]
    assert "listed, but could not be read" in out[1]["probe_detail"] and not C.is_permanent(C.PROBE_ERROR)


def test_transient_probe_failures_are_probed_again(spark):
    from datetime import datetime

    from captionrec.transforms.ingest import changed_videos

    t = datetime(2024, 1, 1, tzinfo=UTC)
    videos = spark.createDataFrame(
        [(i, f"file:/v/{i}.mp4", 10, t) for i in "123"],
        "item_id STRING, video_path STRING, size_bytes BIGINT, video_mtime TIMESTAMP",
    )
    existing = spark.createDataFrame(
        [
            ("1", "file:/v/1.mp4", 10, t, C.OK),
            ("2", "file:/v/2.mp4", 10, t, C.PROBE_ERROR),
            ("3", "file:/v/3.mp4", 10, t, C.CORRUPT),
        ],
        "item_id STRING, video_path STRING, size_bytes BIGINT, video_mtime TIMESTAMP, probe_status STRING",
    )
    assert [r.item_id for r in changed_videos(videos, existing).collect()] == ["2"]
