"""The embed stage end to end on real Spark + Delta (delta-rs) with tiny models and real MP4s."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from captionrec import contracts as C
from captionrec.config.embed import AudioRawEmbedConfig, EmbedConfig, TextEmbedConfig, VideoMAEEmbedConfig
from captionrec.config.schema import Config, StorageConfig
from captionrec.pipeline import embed
from captionrec.testing import media_fixtures
from captionrec.transforms import embed as et

CAPTION_COLS = ["item_id", "kind", "captioner_version", "status", "reason", "error", "text", "created_at"]
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ITEMS_SCHEMA = (
    "item_id string, title string, video_path string, has_audio boolean, size_bytes long, "
    "video_mtime timestamp, probe_status string, probe_detail string"
)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    good = media_fixtures.make_clip(d / "i1.mp4", duration_s=2.0, size=(160, 90))
    silent_video = media_fixtures.make_clip(d / "i2.mp4", duration_s=2.0, size=(96, 64), audio=None)
    corrupt = d / "i3.mp4"
    corrupt.write_bytes(good.read_bytes()[:1500])  # a cut-off file that ingest's probe did not catch
    return {"i1": good, "i2": silent_video, "i3": corrupt}


def _items(spark, media: dict[str, Path]):
    rows = []
    for item_id, title, has_audio, probe in [
        ("i1", "Beach dog", True, "ok"),
        ("i2", "Silent city", False, "ok"),
        ("i3", "   ", True, "ok"),
        ("i4", "Lost video", None, "missing_file"),
    ]:
        path = media.get(item_id)
        st = path.stat() if path else None
        rows.append(
            (
                item_id,
                title,
                str(path) if path else f"/nowhere/{item_id}.mp4",
                has_audio,
                st.st_size if st else None,
                dt.datetime.fromtimestamp(st.st_mtime, dt.UTC) if st else None,
                probe,
                None if probe == "ok" else "no such file",
            )
        )
    return spark.createDataFrame(rows, ITEMS_SCHEMA)


def _captions(spark, rows: list[tuple]):
    return spark.createDataFrame(
        rows,
        "item_id string, kind string, captioner_version string, status string, reason string, error string, "
        "text string, created_at timestamp",
    )


BASE_CAPTIONS = [
    ("i1", "video", "v1", "ok", None, None, "A dog runs along a sunny beach.", T0),
    ("i1", "audio", "a1", "ok", None, None, "Waves and a barking dog.", T0),
    ("i2", "video", "v1", "ok", None, None, "Cars drive through a grey city.", T0),
    ("i2", "audio", "a1", "skipped", "no_audio_stream", "no audio stream", None, T0),
    ("i3", "video", "v1", "error", "decode_error", "DecodeError: bad packet", None, T0),
]


def _cfg(root: Path, tiny_dir: Path, **embed_kw) -> Config:
    ecfg = EmbedConfig(
        text=TextEmbedConfig(model="tiny:text", batch_size=8),
        videomae=VideoMAEEmbedConfig(model="tiny:videomae", batch_size=2, max_pixels=160 * 90),
        audio_raw=AudioRawEmbedConfig(model="tiny:ast", batch_size=2),
        tiny_models_dir=str(tiny_dir),
        partitions=1,  # one Python worker loads the models once (2 cores shared here)
        torch_threads=1,
        decode_threads=1,
        **embed_kw,
    )
    return Config(storage=StorageConfig(backend="delta-rs", root=str(root)), embed=ecfg)


def _features(store) -> dict[tuple[str, str], dict]:
    return {(r["item_id"], r["feature_set"]): r.asDict() for r in store.read(C.ITEM_FEATURES).collect()}


def _errors(store) -> dict[tuple[str, str], str]:
    return {(r["item_id"], r["feature_set"]): r["reason"] for r in store.read(C.FEATURE_ERRORS).collect()}


def test_embed_every_feature_set_incrementally(spark, tmp_path, tiny_dir, media):
    from captionrec.tables import open_store

    cfg = _cfg(tmp_path / "lake", tiny_dir)
    store = open_store(spark, cfg.storage)
    store.upsert("items", _items(spark, media), ["item_id"])
    store.upsert("captions", _captions(spark, BASE_CAPTIONS), ["item_id", "kind", "captioner_version"])

    # -- first run: every feature set, failures recorded, never a zero vector
    s1 = embed.run(cfg, spark, store)
    feats = _features(store)
    assert set(feats) == {
        ("i1", "title"),
        ("i2", "title"),
        ("i4", "title"),
        ("i1", "mllm_video"),
        ("i2", "mllm_video"),
        ("i1", "mllm_audio"),
        ("i1", "mllm_av"),
        ("i2", "mllm_av"),  # i2: its video caption alone (no audio track)
        ("i1", "videomae"),
        ("i2", "videomae"),
        ("i1", "audio_raw"),
    }
    for (item, fs), row in feats.items():
        vec = np.asarray(row["vector"], dtype=np.float32)
        assert row["dim"] == len(vec) == 32, (item, fs)
        assert np.isfinite(vec).all() and np.linalg.norm(vec) > 0, (item, fs)
        assert row["model_id"] == {"videomae": "tiny:videomae", "audio_raw": "tiny:ast"}.get(fs, "tiny:text")
    assert feats[("i1", "mllm_video")]["source_version"].startswith("v1:")
    assert feats[("i2", "mllm_av")]["source_version"].startswith("v1+-:")
    assert not np.allclose(feats[("i1", "title")]["vector"], feats[("i1", "mllm_video")]["vector"])
    errors = _errors(store)
    assert errors == {
        ("i3", "title"): "no_title",
        ("i3", "mllm_video"): "caption_decode_error",
        ("i3", "mllm_audio"): "no_caption",
        ("i3", "mllm_av"): "caption_decode_error",
        ("i3", "videomae"): errors[("i3", "videomae")],  # decoded in the worker: a media reason
        ("i3", "audio_raw"): errors[("i3", "audio_raw")],
        ("i2", "mllm_audio"): "caption_no_audio_stream",
        ("i2", "audio_raw"): "no_audio_stream",
        ("i4", "mllm_video"): "missing_file",
        ("i4", "mllm_audio"): "missing_file",
        ("i4", "mllm_av"): "missing_file",
        ("i4", "videomae"): "missing_file",
        ("i4", "audio_raw"): "missing_file",
    }
    assert errors[("i3", "videomae")] in {"corrupt", "decode_error", "not_a_video"}
    assert s1["inserted"] == 11 and s1["updated"] == 0 and s1["errors_recorded"] == 13
    assert s1["dims"] == {
        "audio_raw/tiny:ast": 32,
        "mllm_audio/tiny:text": 32,
        "mllm_av/tiny:text": 32,
        "mllm_video/tiny:text": 32,
        "title/tiny:text": 32,
        "videomae/tiny:videomae": 32,
    }
    # cost per feature set: the rows each one sent through the model-map, measured in the workers, on a CPU
    per_set = s1["cost_per_feature_set"]
    assert {fs: c["items"] for fs, c in per_set.items()} == s1["to_embed"]
    for fs, c in per_set.items():
        assert c["device"] == "cpu" and c["gpu_seconds"] == 0 and c["per_1k_gpu_seconds"] == 0, fs
        assert c["worker_cpu_seconds"] > 0 and c["per_1k_cpu_seconds"] > 0 and c["worker_peak_rss_mb"] > 50, fs
    assert s1["cost"]["items"] == sum(s1["to_embed"].values()) and s1["cost"]["load_seconds"] > 0
    assert embed.format_summary(s1).count("cost per 1,000 items:") == len(per_set) == 6
    assert s1["cost"]["cpu_seconds"] == pytest.approx(
        s1["cost"]["driver_cpu_seconds"] + sum(c["worker_cpu_seconds"] for c in per_set.values()), abs=0.01
    )
    assert sum(c["wall_seconds"] for c in per_set.values()) == pytest.approx(s1["cost"]["wall_seconds"], abs=0.01)

    # -- re-run with nothing new: nothing embedded, no commit
    v_feat, v_err = store.version(C.ITEM_FEATURES), store.version(C.FEATURE_ERRORS)
    s2 = embed.run(cfg, spark, store)
    assert s2["to_embed"] == {} and s2["inserted"] == s2["updated"] == s2["errors_recorded"] == 0
    assert s2["cost_per_feature_set"] == {} and s2["cost"]["items"] == 0 and s2["cost"]["items_per_s"] == 0
    assert (store.version(C.ITEM_FEATURES), store.version(C.FEATURE_ERRORS)) == (v_feat, v_err)

    # -- a new video caption version for i1 re-embeds exactly i1's mllm_video and mllm_av
    later = T0 + dt.timedelta(days=1)
    store.upsert(
        "captions",
        _captions(
            spark,
            [
                ("i1", "video", "v2", "ok", None, None, "A brown dog chases a ball on the sand.", later),
                # i3's video caption succeeds under v2: its error row is resolved
                ("i3", "video", "v2", "ok", None, None, "Static noise on a black screen.", later),
            ],
        ),
        ["item_id", "kind", "captioner_version"],
    )
    s3 = embed.run(cfg, spark, store)
    assert s3["to_embed"] == {"mllm_av": 2, "mllm_video": 2}
    assert {fs: c["items"] for fs, c in s3["cost_per_feature_set"].items()} == s3["to_embed"]
    assert (s3["inserted"], s3["updated"], s3["errors_resolved"]) == (2, 2, 2)
    after = _features(store)
    changed = {k for k in after if k not in feats or after[k]["source_version"] != feats[k]["source_version"]}
    assert changed == {("i1", "mllm_video"), ("i1", "mllm_av"), ("i3", "mllm_video"), ("i3", "mllm_av")}
    assert after[("i1", "mllm_video")]["source_version"].startswith("v2:")
    assert not np.allclose(after[("i1", "mllm_video")]["vector"], feats[("i1", "mllm_video")]["vector"])
    for k in feats.keys() - changed:
        assert after[k]["created_at"] == feats[k]["created_at"] and after[k]["vector"] == feats[k]["vector"], k
    errors3 = _errors(store)
    assert ("i3", "mllm_video") not in errors3 and ("i3", "mllm_av") not in errors3
    assert errors3[("i3", "title")] == "no_title"


def test_text_sources_reasons_and_av_template(spark):
    """DataFrame in/out: which text each feature set embeds, and why an item gets none."""
    import pandas as pd

    items = spark.createDataFrame(
        pd.DataFrame(
            {
                "item_id": ["a", "b", "c"],
                "title": ["  Title A ", "B", None],
                "video_path": ["x", "y", "z"],
                "has_audio": [True, True, False],
                "probe_status": ["ok", "ok", "ok"],
            }
        )
    )
    caps = _captions(
        spark,
        [
            ("a", "video", "v1", "ok", None, None, "video text", T0),
            ("a", "audio", "a1", "ok", None, None, "audio text", T0),
            ("a", "audio", "a0", "ok", None, None, "older audio text", T0 - dt.timedelta(days=1)),
            ("b", "video", "v1", "ok", None, None, "   ", T0),  # ok but blank: not usable
            ("b", "audio", "a2", "error", "oom", "CUDA out of memory", None, T0 + dt.timedelta(days=1)),
            ("b", "audio", "a1", "ok", None, None, "earlier audio ok", T0),  # the latest *ok* wins
        ],
    )
    cfg = EmbedConfig(text=TextEmbedConfig(av_template="[V] {video} [A] {audio} 100%"))
    rows = {(r.item_id, r.feature_set): r for r in et.text_sources(items, caps, cfg.feature_sets, "m", cfg).collect()}
    assert rows[("a", "title")].text == "Title A" and rows[("c", "title")].reason == "no_title"
    assert rows[("a", "mllm_audio")].text == "audio text"
    assert rows[("a", "mllm_av")].text == "[V] video text [A] audio text 100%"
    assert rows[("b", "mllm_video")].reason == "caption_empty_text"
    assert rows[("b", "mllm_audio")].text == "earlier audio ok"
    assert rows[("b", "mllm_av")].text == "earlier audio ok"
    assert rows[("c", "mllm_video")].reason == "no_caption"
    assert rows[("c", "mllm_audio")].reason == "no_audio_stream"
    assert {r.model_id for r in rows.values()} == {"m"}
    # a pinned caption version: only that version's rows count
    pinned = {(r.item_id, r.kind): r for r in et.select_captions(caps, caption_version="a0").collect()}
    assert list(pinned) == [("a", "audio")] and pinned[("a", "audio")].text == "older audio text"
    strict = replace(cfg, text=replace(cfg.text, av_require_both=True))
    av = {r.item_id: r for r in et.text_sources(items, caps, ("mllm_av",), "m", strict).collect()}
    assert av["b"].reason == "caption_empty_text" and av["a"].reason is None
    # a changed text setting changes every source version (vectors would change)
    other = replace(cfg, text=replace(cfg.text, max_seq_length=64))
    sv = {
        (r.item_id, r.feature_set): r.source_version
        for r in et.text_sources(items, caps, ("title",), "m", other).collect()
    }
    assert sv[("a", "title")] != rows[("a", "title")].source_version


def test_media_sources_fingerprint_and_reasons(spark):
    rows = [
        ("a", "/v/a.mp4", True, 100, T0, "ok"),
        ("b", "/v/b.m4a", True, 50, T0, "no_video_stream"),  # audio-only: audio_raw yes, videomae no
        ("c", "/v/c.mp4", False, 70, T0, "ok"),
        ("d", "/v/d.mp4", None, None, None, "corrupt"),
    ]
    items = spark.createDataFrame(
        rows,
        "item_id string, video_path string, has_audio boolean, size_bytes long, "
        "video_mtime timestamp, probe_status string",
    )
    v = {r.item_id: r for r in et.media_sources(items, "videomae", "m", {"num_frames": 16}).collect()}
    a = {r.item_id: r for r in et.media_sources(items, "audio_raw", "m", {"window_s": 30}).collect()}
    assert [v[k].reason for k in "abcd"] == [None, "no_video_stream", None, "corrupt"]
    assert [a[k].reason for k in "abcd"] == [None, None, "no_audio_stream", "corrupt"]
    assert v["a"].path == "/v/a.mp4" and v["a"].source_version.startswith(f"100:{int(T0.timestamp() * 1000)}@")
    # a touched file or other sampling settings give another source version (so the item is re-embedded)
    touched = items.where("item_id = 'a'").selectExpr(
        "item_id", "video_path", "has_audio", "101L AS size_bytes", "video_mtime", "probe_status"
    )
    assert (
        et.media_sources(touched, "videomae", "m", {"num_frames": 16}).first().source_version != v["a"].source_version
    )
    assert et.media_sources(items, "videomae", "m", {"num_frames": 8}).first().source_version != v["a"].source_version


def test_bad_inputs(spark, tmp_path, tiny_dir):
    from captionrec.tables import open_store

    cfg = _cfg(tmp_path / "lake", tiny_dir)
    store = open_store(spark, cfg.storage)
    with pytest.raises(embed.MissingInputError, match="run `captionrec ingest` first"):
        embed.run(cfg, spark, store)
    bad_caps = spark.createDataFrame([("a", "video", "hi")], "item_id string, kind string, text string")
    with pytest.raises(ValueError, match=r"captions table lacks column\(s\) \['captioner_version', 'status'\]"):
        et.select_captions(bad_caps)
    with pytest.raises(ValueError, match="not a media feature set"):
        et.media_sources(spark.createDataFrame([("a",)], "item_id string"), "title", "m", {})


def test_check_dims(spark):
    schema = "item_id string, feature_set string, model_id string, dim int, vector array<float>"
    ok = spark.createDataFrame(
        [
            ("a", "title", "m", 2, [0.1, 0.2]),
            ("b", "title", "m", 2, [0.3, 0.4]),
            ("a", "videomae", "v", 3, [1.0, 2.0, 3.0]),
        ],
        schema,
    )
    assert et.check_dims(ok) == {("title", "m"): 2, ("videomae", "v"): 3}
    mixed = spark.createDataFrame([("a", "title", "m", 2, [0.1, 0.2]), ("b", "title", "m", 3, [0.1, 0.2, 0.3])], schema)
    with pytest.raises(embed.FeatureDimError, match="'title' with model 'm' would hold vectors of dims \\[2, 3\\]"):
        et.check_dims(mixed)
    old = spark.createDataFrame([("z", "title", "m", 4, [0.1, 0.2, 0.3, 0.4])], schema)
    with pytest.raises(embed.FeatureDimError, match="dims \\[2, 4\\]"):
        et.check_dims(ok, old)
    liar = spark.createDataFrame([("a", "title", "m", 3, [0.1, 0.2])], schema)
    with pytest.raises(embed.FeatureDimError, match="length differs from its dim"):
        et.check_dims(liar)


def test_media_results_record_failures_instead_of_zero_vectors(media):
    """The Spark-free core (rows in, rows out) with real decoding and a stand-in encoder: bad files, an
    encoder failing on one item, and zero / NaN vectors all become reasons, never vectors."""
    from captionrec.captioning.common import Models
    from captionrec.features.core import EncoderSpec, embed_rows, result
    from captionrec.inference.batching import BatchRunner
    from captionrec.inference.refs import ResolvedModel

    cfg = EmbedConfig(videomae=VideoMAEEmbedConfig(num_frames=4, window_s=2.0, max_pixels=None, batch_size=2))
    spec = EncoderSpec.of("videomae", ResolvedModel("m", "m", "m", False), cfg)
    paths = {"i1": str(media["i1"]), "i3": str(media["i3"]), "gone": "/nowhere/x.mp4", "i2": str(media["i2"])}
    rows = [
        {"item_id": k, "feature_set": "videomae", "model_id": "m", "source_version": "s", "payload": p}
        for k, p in paths.items()
    ]

    class Encoder:  # (B, T, H, W, 3) -> (B, 3); the i2 clip (96x64) "crashes"
        def encode(self, clips: list) -> np.ndarray:
            if any(c.shape[1:3] == (64, 96) for c in clips):
                raise RuntimeError("boom")
            return np.stack([c.reshape(-1, 3).mean(axis=0) + 1.0 for c in clips])

    models = Models(Encoder(), "cpu", BatchRunner(2))
    out = {r["item_id"]: r for batch in embed_rows(rows, spec, models, threads=1) for r in batch}
    assert out["i1"]["reason"] is None and out["i1"]["dim"] == 3 and len(out["i1"]["vector"]) == 3
    assert (out["gone"]["reason"], out["gone"]["vector"]) == ("missing_file", None)
    assert out["i3"]["reason"] in {"corrupt", "decode_error", "not_a_video"} and out["i3"]["vector"] is None
    assert out["i2"]["reason"] == "embed_error" and "boom" in out["i2"]["detail"]

    row = rows[0]
    zero = result(row, np.zeros(4, dtype=np.float32))
    nan = result(row, np.array([1.0, np.nan], dtype=np.float32))
    assert (zero["reason"], zero["vector"]) == ("zero_vector", None)
    assert (nan["reason"], nan["vector"]) == ("non_finite_vector", None)


def test_transient_failures_are_retried_permanent_ones_are_not(spark, tmp_path, tiny_dir, media):
    """With retry_failed=false (the default) a decode error (transient) is retried by the next run, a corrupt file
    (permanent) is not; a retried item that now decodes gets its vector and loses its error row."""
    from captionrec.tables import open_store

    damaged = media_fixtures.make_damaged(
        media_fixtures.make_clip(tmp_path / "ten.mp4", duration_s=10.0, keyint=25), tmp_path / "i5.mp4", upto=0.9
    )
    media = {**media, "i5": damaged}
    cfg = _cfg(tmp_path / "lake", tiny_dir, feature_sets=("videomae", "audio_raw"))
    store = open_store(spark, cfg.storage)
    st = damaged.stat()
    i5 = spark.createDataFrame(
        [
            (
                "i5",
                "Damaged",
                str(damaged),
                True,
                st.st_size,
                dt.datetime.fromtimestamp(st.st_mtime, dt.UTC),
                "ok",
                None,
            )
        ],
        ITEMS_SCHEMA,
    )
    store.upsert("items", _items(spark, media).where("item_id IN ('i1', 'i3')").unionByName(i5), ["item_id"])
    first = embed.run(cfg, spark, store)
    errors = _errors(store)
    assert errors[("i5", "videomae")] == errors[("i5", "audio_raw")] == "decode_error"  # transient
    assert errors[("i3", "videomae")] in C.PERMANENT_REASONS  # the cut-off file
    assert first["failed"]["videomae:decode_error"] == 1
    again = embed.run(cfg, spark, store)  # the flaky item is retried, the corrupt one is not
    assert again["to_embed"] == {"audio_raw": 1, "videomae": 1} and again["skipped_failed"] == 2
    assert again["errors_recorded"] == 0 and again["inserted"] == 0  # failed the same way: nothing rewritten
    (tmp_path / "i5.mp4").write_bytes(media["i1"].read_bytes())  # the read works this time (same fingerprint)
    fixed = embed.run(cfg, spark, store)
    assert fixed["to_embed"] == {"audio_raw": 1, "videomae": 1} and fixed["inserted"] == 2
    assert fixed["errors_resolved"] == 2 and ("i5", "videomae") not in _errors(store)
