"""Caption-quality analysis (issue 13 part 3): every number on small hand-built inputs whose answer is derived
here, the bad inputs (empty captions, items without vectors, runs without cases artifacts) as notes, and the
report sections on the report fixtures' real MLflow grid."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.analysis import core, grounding, outcomes, text, vectors
from captionrec.analysis.audio import audio_classes
from captionrec.analysis.inputs import Inputs, load_labels, parse_labels
from captionrec.config.analyze import AnalyzeConfig


def cap(item_id, kind, text_, version=None, status="ok", reason=None, transcript=None, tags=None, synthetic=False):
    return {
        "item_id": item_id,
        "kind": kind,
        "captioner_version": version or f"{kind}-v1",
        "status": status,
        "reason": reason,
        "error": None,
        "text": text_,
        "transcript": transcript,
        "sound_tags": tags,
        "synthetic": synthetic,
        "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
    }


def feat(item_id, feature_set, vector, source_version="", model_id="m"):
    return {
        "item_id": item_id,
        "feature_set": feature_set,
        "model_id": model_id,
        "source_version": source_version,
        "vector": np.asarray(vector, dtype=np.float32),
    }


# ------------------------------------------------------------------------------------------------- text


def test_text_statistics_by_hand():
    texts = ["a red car drives", "a red car stops", "A red  car drives"]
    # 12 unigrams, distinct {a, red, car, drives, stops} = 5; 9 bigrams, distinct {a red, red car, car drives, car stops} = 4
    assert text.distinct_n(texts, 1) == pytest.approx(5 / 12)
    assert text.distinct_n(texts, 2) == pytest.approx(4 / 9)
    assert text.duplicate_share(texts) == pytest.approx(2 / 3)  # case and spacing do not make a caption new
    s = text.text_stats(texts)
    assert s["words_mean"] == 4 and s["words_median"] == 4 and s["exact_duplicates"] == pytest.approx(2 / 3)
    empty = text.text_stats([])
    assert all(math.isnan(v) for v in empty.values())
    assert math.isnan(text.distinct_n(["one"], 2))  # no bigram at all: undefined, not 0
    assert text.content_words("The cats' guitars and a glass, 2024 sound!", ignore=("sound",)) == {
        "cat",
        "guitar",
        "glass",
    }


# ------------------------------------------------------------------------------------------------ vectors


def test_near_duplicates_and_topic_purity_on_constructed_vectors():
    # two topics on two orthogonal axes; items a1/a2 identical, b1/b2 at cosine 0.8; c alone on a third axis
    v = {"a1": [1, 0, 0], "a2": [1, 0, 0], "a3": [0.9, 0.1, 0], "b1": [0, 1, 0], "b2": [0, 0.8, 0.6], "c": [0, 0, 1]}
    topics = pd.Series({"a1": "x", "a2": "x", "a3": "x", "b1": "y", "b2": "y"})  # c has no label
    s = vectors.vector_stats(list(v.values()), list(v), topics, knn=2, threshold=0.95)
    # nearest other item: a1<->a2 (1.0), a3->a1 (0.994), b1->b2 (0.8), b2->c (0.6 vs 0.8 to b1: b1), c->b2 (0.6)
    assert s["near_duplicates"] == pytest.approx(3 / 6) and s["items"] == 6 and s["dropped"] == 0
    assert s["labelled"] == 5 and s["topics"] == 2
    assert s["purity_1"] == 1.0  # every labelled item's nearest labelled neighbour shares its topic
    # k=2 among labelled: a1 {a2,a3} 1, a2 {a1,a3} 1, a3 {a1,a2} 1, b1 {b2, a3: 0.1/0.906} 1/2, b2 {b1, a3} 1/2
    assert s["purity_k"] == pytest.approx((1 + 1 + 1 + 0.5 + 0.5) / 5)
    assert s["chance"] == pytest.approx((3 * 2 / 4 + 2 * 1 / 4) / 5)
    # a zero vector is dropped (not a crash, not a neighbour of everything)
    z = vectors.vector_stats([[1, 0], [0, 0], [1, 0]], ["p", "q", "r"], None, knn=5, threshold=0.95)
    assert z["items"] == 2 and z["dropped"] == 1 and z["near_duplicates"] == 1.0 and math.isnan(z["purity_1"])
    one = vectors.vector_stats([[1, 0]], ["p"], None, knn=5, threshold=0.95)
    assert one["items"] == 1 and math.isnan(one["near_duplicates"]) and math.isnan(one["pair_cosine_mean"])
    x, _ = vectors.unit_rows(np.array([[1, 0], [0, 1], [1, 1]], dtype=float))
    assert vectors.mean_pair_cosine(x) == pytest.approx((0 + 2**-0.5 + 2**-0.5) / 3)


def test_vector_table_compares_caption_title_and_videomae_on_common_items():
    topics = pd.Series({f"i{k}": ("x" if k < 3 else "y") for k in range(6)})
    axis = {"x": [1.0, 0.0], "y": [0.0, 1.0]}
    rows = []
    for k in range(6):
        i = f"i{k}"
        rows.append(feat(i, "mllm_video", axis[topics[i]], "video-v1:abc@s"))  # separates topics perfectly
        rows.append(feat(i, "videomae", [1.0, 0.1 * k]))  # ignores topic: all near-duplicates
    rows.append(feat("i0", "title", [1.0, 0.0]))  # a title vector for one item only
    t = core.vector_table(pd.DataFrame(rows), topics, knn=2, threshold=0.95).set_index("feature_set")
    assert list(t.index) == ["title", "mllm_video", "videomae"]  # the contract's order
    assert t.loc["mllm_video", "caption_versions"] == "video-v1" and t.loc["videomae", "caption_versions"] == ""
    assert t.loc["mllm_video", "purity_1"] == 1.0 and t.loc["mllm_video", "near_duplicates"] == 1.0
    assert t.loc["mllm_video", "chance"] == pytest.approx(2 / 5)
    assert t.loc["videomae", "near_duplicates"] == 1.0 and t.loc["videomae", "purity_k"] < 1.0
    assert (t["common_items"] == [1, 1, 1]).all() and t["purity_k_common"].isna().all()  # one common item: no purity


# ---------------------------------------------------------------------------------------------- grounding


def test_grounding_overlap_by_hand():
    caps = pd.DataFrame(
        [
            cap(
                "1",
                "audio",
                "A man talks about the engine and music",
                transcript="the engine is loud",
                tags=[{"label": "Speech", "score": 0.9}, {"label": "Music", "score": 0.4}],
            ),
            cap("2", "audio", "Birds singing in a forest", transcript="", tags=[{"label": "Bird", "score": 0.8}]),
            cap("1", "video", "A red car on a road"),
            cap("2", "video", "A kitchen"),
            cap("3", "video", "", status="ok"),  # no text: left out
            cap("4", "video", None, status="error"),
        ]
    )
    titles = pd.Series({"1": "Red car review", "2": "Best forest birds", "3": "x", "4": "y"})
    ov = grounding.item_overlaps(caps, titles).set_index(["item_id", "kind"])
    # audio 1: caption {man, talk, engine, music}, sources {engine, loud, speech, music} -> shared 2
    assert ov.loc[("1", "audio"), ["shared", "grounded", "covered"]].tolist() == [2, 0.5, 0.5]
    # audio 2: caption {bird, singing, forest}, sources {bird} -> grounded 1/3, covered 1
    assert ov.loc[("2", "audio"), "grounded"] == pytest.approx(1 / 3) and ov.loc[("2", "audio"), "covered"] == 1.0
    # video 1: caption {red, car, road} vs title {red, car, review}: covered 2/3
    assert ov.loc[("1", "video"), "covered"] == pytest.approx(2 / 3) and ov.loc[("2", "video"), "covered"] == 0.0
    assert len(ov) == 4
    s = grounding.summary(ov.reset_index()).set_index("kind")
    assert s.loc["audio", "grounded_mean"] == pytest.approx((0.5 + 1 / 3) / 2) and s.loc["video", "zero_share"] == 0.5
    low = grounding.lowest(ov.reset_index(), caps, titles, 1).set_index("kind")
    assert low.loc["audio", "item_id"] == "2" and low.loc["video", "item_id"] == "2"
    assert low.loc["audio", "tags"] == "Bird" and low.loc["video", "title"] == "Best forest birds"
    assert low.loc["video", "caption"] == "A kitchen" and low.loc["video", "transcript"] is None


# ----------------------------------------------------------------------------------------- audio classes


def test_audio_class_rules():
    cfg = AnalyzeConfig().audio
    caps = pd.DataFrame(
        [
            cap(
                "speech",
                "audio",
                "t",
                transcript="one two three four five six",
                tags=[{"label": "Music", "score": 0.9}],
            ),
            cap(
                "music",
                "audio",
                "t",
                transcript="la la",
                tags=[{"label": "Speech", "score": 0.5}, {"label": "Guitar", "score": 0.4}],
            ),
            cap("weak", "audio", "t", transcript="", tags=[{"label": "Piano", "score": 0.1}]),
            cap("quiet", "audio", "t", transcript="", tags=[{"label": "Silence", "score": 0.7}]),
            cap("nostream", "audio", None, status="skipped", reason=C.NO_AUDIO_STREAM),
            cap("broken", "audio", None, status="error"),
        ]
    )
    items = pd.DataFrame(
        {
            "item_id": ["speech", "music", "weak", "quiet", "nostream", "broken", "never", "muted"],
            "has_audio": [True, True, True, True, True, True, True, False],
        }
    )
    got = audio_classes(caps, items, cfg).set_index("item_id")
    assert got["audio_class"].to_dict() == {
        "speech": "speech",
        "music": "music",
        "weak": "other",
        "quiet": "silent",
        "nostream": "silent",
        "broken": "unknown",
        "never": "unknown",
        "muted": "silent",
    }
    assert got.loc["speech", "transcript_words"] == 6 and got.loc["music", "top_tag"] == "speech"
    counts = core.class_counts(got.reset_index()).set_index("audio_class")
    assert counts.loc["silent", "items"] == 3 and counts.loc["silent", "share"] == pytest.approx(3 / 8)


# --------------------------------------------------------------------------------------- runs: outcomes


def _run_cases(ranks, targets, window=0):
    n = len(ranks)
    return pd.DataFrame(
        {
            "window": window,
            "user_idx": np.arange(n),
            "chunk": 0,
            "target": targets,
            "cold": 0,
            "rank": ranks,
            "rank_random": 50,
            "rank_popularity": [5] * n,
        }
    )


def _runs(*rows):
    return pd.DataFrame([{"run_id": r, "status": s, "features": f, "model": "sasrec", "seed": 1} for r, f, s in rows])


def test_win_loss_and_class_metrics_by_hand():
    index = ["a", "b", "c"]  # item_idx 1 -> a, 2 -> b, 3 -> c
    targets = [1, 2, 3, 1]
    cases = {"cap": _run_cases([1, 20, 5, 30], targets), "raw": _run_cases([15, 3, 2, 40], targets)}
    runs = _runs(
        ("cap", "mllm_audio", "FINISHED"),
        ("raw", "audio_raw", "FINISHED"),
        ("gone", "title", "FINISHED"),
        ("bad", "title", "FAILED"),
    )
    got, notes = outcomes.collect_cases(runs, lambda r: cases.get(r), lambda r: index)
    assert notes == ["no cases artifact (cases/test_w<k>.parquet): 1 run(s) left out: title / sasrec (run gone)"]
    assert list(got.loc[got["run_id"] == "cap", "item_id"]) == ["a", "b", "c", "a"]
    per_case, summary, wl_notes = outcomes.win_loss(["mllm_audio vs audio_raw", "mllm_video vs videomae"], got, 10)
    # case 0: 1 vs 15 -> win; 1: 20 vs 3 -> loss; 2: 5 vs 2 -> both; 3: 30 vs 40 -> neither
    assert list(per_case["outcome"]) == ["win", "loss", "both", "neither"]
    row = summary.iloc[0]
    assert (row["cases"], row["win"], row["loss"], row["both"], row["neither"], row["net"]) == (4, 1, 1, 1, 1, 0.0)
    assert wl_notes == ["mllm_video vs videomae (sasrec): no run of mllm_video with cases and an item index"]
    items = outcomes.win_loss_items(per_case, 5)
    assert items[["direction", "item_id", "net"]].values.tolist() == [["win", "a", 1], ["loss", "b", -1]]
    # per audio class: a, b speech; c music -> speech cases 0, 1, 3 (ranks 1, 20, 30), music case 2 (rank 5)
    classes = pd.DataFrame({"item_id": ["a", "b", "c"], "audio_class": ["speech", "speech", "music"]})
    m = outcomes.class_metrics(got, classes, 10).set_index(["features", "audio_class"])
    assert (
        m.loc[("mllm_audio", "speech"), "hr_10"] == pytest.approx(1 / 3)
        and m.loc[("mllm_audio", "speech"), "cases"] == 3
    )
    assert m.loc[("mllm_audio", "music"), "ndcg_10"] == pytest.approx(1 / math.log2(6))
    assert (
        m.loc[("audio_raw", "all"), "hr_10"] == pytest.approx(2 / 4)
        and m.loc[("audio_raw", "all"), "popularity_hr_10"] == 1.0
    )
    g = outcomes.class_gains(["mllm_audio vs audio_raw"], got, classes, 10, 200, 0.95, 0)
    sp = g[(g["audio_class"] == "speech") & (g["metric"] == "hr@10")].iloc[0]
    assert (
        sp["cases"] == 3
        and sp["feature_value"] == pytest.approx(1 / 3)
        and sp["baseline_value"] == pytest.approx(1 / 3)
    )
    # a target outside the item index is left out with a note, not mapped to a wrong item
    _, notes = outcomes.collect_cases(runs.iloc[:1], lambda r: _run_cases([1, 2], [1, 9]), lambda r: index)
    assert "1 case(s) whose target is outside its item_index.json (3 items)" in notes[0]
    _, notes = outcomes.collect_cases(runs.iloc[:1], lambda r: cases["cap"], lambda r: None)
    assert "no item_index.json" in notes[0]
    many = _runs(*[(f"r{k}", "title", "FINISHED") for k in range(8)])
    got, notes = outcomes.collect_cases(many, lambda r: None, lambda r: index)
    assert (
        got.empty and len(notes) == 1 and "8 run(s) left out" in notes[0] and notes[0].endswith("(run r5) and 2 more")
    )


# ------------------------------------------------------------------------------------ whole analysis


def _inputs(captions, features, items=None, topics=None):
    caps = (
        pd.DataFrame(captions, columns=list(C.columns(C.CAPTIONS)))
        if captions
        else pd.DataFrame(columns=list(C.columns(C.CAPTIONS)))
    )
    if items is None:
        ids = sorted({c["item_id"] for c in captions} | {f["item_id"] for f in features})
        items = pd.DataFrame(
            {"item_id": ids, "title": [f"title {i}" for i in ids], "has_audio": True, "probe_status": "ok"}
        )
    feats = pd.DataFrame(features, columns=["item_id", "feature_set", "model_id", "source_version", "vector"])
    return Inputs(
        items, caps, feats, topics, "test topics" if topics is not None else "no topic labels (test)", len(items)
    )


def test_quality_table_per_kind_and_version():
    caps = [
        cap("1", "video", "a red car"),
        cap("2", "video", "a red car"),
        cap("3", "video", "a blue boat", synthetic=True),
        cap("1", "video", "red car driving fast", version="video-v2"),
        cap("2", "video", None, version="video-v2", status="error"),
        cap("3", "video", "  ", version="video-v2"),
        cap("1", "audio", "speech about cars", transcript="cars"),
    ]
    feats = [
        feat("1", "mllm_video", [1, 0], "video-v1:x@s"),
        feat("2", "mllm_video", [1, 0], "video-v1:y@s"),
        feat("3", "mllm_video", [0, 1], "video-v1:z@s"),
    ]
    a = core.analyze_tables(
        _inputs(caps, feats, topics=pd.Series({"1": "cars", "2": "cars", "3": "boats"})), AnalyzeConfig(knn=1)
    )
    q = a.quality.set_index(["kind", "captioner_version"])
    v1 = q.loc[("video", "video-v1")]
    assert (v1["rows"], v1["ok"], v1["error"], v1["synthetic"]) == (3, 3, 0, True)
    assert v1["exact_duplicates"] == pytest.approx(2 / 3) and v1["distinct_1"] == pytest.approx(5 / 9)
    assert (
        v1["vectors"] == 3 and v1["near_duplicates"] == pytest.approx(2 / 3) and v1["purity_1"] == pytest.approx(2 / 3)
    )
    v2 = q.loc[("video", "video-v2")]
    assert (v2["ok"], v2["error"], v2["ok_without_text"], v2["words_mean"]) == (2, 1, 1, 4)
    assert math.isnan(v2["vectors"])  # no vectors were embedded from v2
    assert q.loc[("audio", "audio-v1"), "feature_set"] == "mllm_audio"
    assert a.synthetic_kinds == ["video"]
    assert any("status ok but no text" in n and "3/video" in n for n in a.notes["quality"])


def test_bad_inputs_are_notes_not_crashes():
    cfg, rc = AnalyzeConfig(), load_report_config()
    # nothing at all: no items, no captions, no vectors, no runs
    a = core.analyze(
        _inputs([], [], items=pd.DataFrame(columns=["item_id", "title", "has_audio", "probe_status"])), None, cfg, rc
    )
    assert a.quality.empty and a.vectors.empty and a.grounding.empty and a.class_metrics.empty and a.win_loss.empty
    assert any("no grid run to read" in n for n in a.notes["runs"])
    assert any("no topic labels" in n for n in a.notes["vectors"])
    from captionrec.report.sections import ReportContext, build_sections

    built = build_sections(
        ReportContext(rc, None, [], {"analysis": a}), ("quality", "grounding", "audio_classes", "win_loss")
    )
    assert [b.key for b in built] == ["quality", "grounding", "audio_classes", "win_loss"]
    assert "_(none)_" in built[0].markdown and "no grid run to read" in built[3].markdown
    assert (
        build_sections(ReportContext(rc, None, [], {}), ("quality", "win_loss")) == []
    )  # no store, no analysis: left out
    # items with captions but no vectors, empty captions: rows with NaN vector columns
    caps = [
        cap("1", "video", ""),
        cap("2", "video", None, status="error"),
        cap("1", "audio", None, status="skipped", reason=C.SILENT),
    ]
    a = core.analyze(_inputs(caps, []), None, cfg, rc)
    q = a.quality.set_index("kind")
    assert (
        q.loc["video", "ok_without_text"] == 1
        and math.isnan(q.loc["video", "words_mean"])
        and math.isnan(q.loc["video", "vectors"])
    )
    assert a.audio_classes.set_index("item_id")["audio_class"].to_dict() == {"1": "silent", "2": "unknown"}
    # labels that match none of the analysed items
    a = core.analyze_tables(
        _inputs([], [feat("1", "title", [1, 0]), feat("2", "title", [0, 1])], topics=pd.Series({"9": "x"})), cfg
    )
    assert any("none of the analysed items has a topic label" in n for n in a.notes["vectors"])
    with pytest.raises(ValueError, match="lacks column"):
        parse_labels(b"id,label\n1,x\n", "topics.csv")
    assert parse_labels(b'{"items": {"1": {"topic": "cars"}, "2": {"topic": null}}}', "manifest.json").to_dict() == {
        "1": "cars"
    }


def test_topic_labels(tmp_path, sample_dir):
    topics, note = load_labels("auto", str(sample_dir))  # the sample's manifest: every item has a topic
    assert len(topics) == 205 and topics["1"] == "cars" and note.endswith("(analyze.labels=auto)")
    assert load_labels("auto", str(tmp_path))[0] is None and "does not exist" in load_labels("auto", str(tmp_path))[1]
    assert load_labels("none", "")[0] is None
    (tmp_path / "t.json").write_text('{"a": "x", "b": "y"}')
    assert load_labels(str(tmp_path / "t.json"), "")[0].to_dict() == {"a": "x", "b": "y"}
    with pytest.raises(ValueError, match="analyze.labels=.*missing.csv: cannot read"):
        load_labels(str(tmp_path / "missing.csv"), "")
    (tmp_path / "manifest.json").write_text("[1, 2]")  # auto: an unreadable manifest is a note, not an error
    topics, note = load_labels("auto", str(tmp_path))
    assert topics is None and "could not be read" in note


def load_report_config(*overrides):
    from captionrec.config import load_config

    return load_config("local", ["report.bootstrap_samples=200", *overrides]).report


def test_config_checks():
    from captionrec.config import ConfigError, load_config

    assert load_config("local", ["analyze.knn=3"]).analyze.knn == 3
    with pytest.raises(ConfigError, match="unknown feature set"):
        load_config("local", ["analyze.win_loss=[mllm_video vs clip]"])
    with pytest.raises(ConfigError, match="near_duplicate"):
        load_config("local", ["analyze.near_duplicate=1.5"])
