"""The report: its numbers recomputed independently from the runs it read (a real MLflow sqlite store holding
contract-shaped runs), the paired bootstrap, the written files, the gallery over real sample videos."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.evaluation import bootstrap, metrics
from captionrec.report import build, gallery
from report_fixtures import WINDOWS, caption_rows, run_cases, shared_grid


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return shared_grid(tmp_path_factory)


def _report_cfg(grid, tmp, *overrides):
    return load_config(
        "local",
        [
            f"tracking.tracking_uri={grid.tracking_uri}",
            "tracking.experiment=report-tests",
            f"report.out_dir={tmp}",
            "report.bootstrap_samples=400",
            *overrides,
        ],
    )


@pytest.fixture(scope="module")
def written(grid, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = _report_cfg(grid, tmp)
    runset = build.load(cfg.tracking, cfg.report)
    ctx = build.context(runset, cfg.report, synthetic_captions=["video", "audio"])
    files = build.write_report(ctx, build.out_folder(tmp, runset, cfg.report))
    return runset, ctx, files


def _history(client, run_id, key):
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_table_recomputed_from_logged_per_window_metrics(grid, written):
    """Every mean / std in report.csv equals the one recomputed here from the runs' metric histories."""
    from mlflow.tracking import MlflowClient

    runset, ctx, files = written
    client = MlflowClient(grid.tracking_uri)
    table = pd.read_csv(files.csv)
    groups: dict[tuple[str, str], list[str]] = {}
    for (features, model, _seed), run_id in grid.finished.items():
        groups.setdefault((features, model), []).append(run_id)
    assert len(table) == len(groups) == 12
    for row in table.itertuples():
        ids = groups[(row.features, row.model)]
        assert row.runs == row.seeds == len(ids) == 2 and row.windows == len(WINDOWS)
        for key in ("hr_10", "ndcg_10", "cold_hr_10", "popularity_hr_10", "random_ndcg_10"):
            values = [v for r in ids for v in _history(client, r, f"test_{key}").values()]
            assert len(values) == 2 * len(WINDOWS)
            assert getattr(row, f"{key}_mean") == pytest.approx(np.mean(values), abs=1e-12)
            assert getattr(row, f"{key}_std") == pytest.approx(np.std(values, ddof=1), abs=1e-12)
    # the logged `_mean` summaries (deliberately off by 0.5) are not what the report shows
    assert table["hr_10_mean"].max() < 0.5


def test_runs_selected_per_child(grid, written):
    """Finished runs (incl. one reused from another grid), the failed child with its error; a failed attempt
    superseded by a finished run of the same child is not shown."""
    runset, _, files = written
    assert set(runset.finished["run_id"]) == set(grid.finished.values())
    failed = runset.failed
    assert list(failed["run_id"]) == list(grid.failed.values())
    assert failed.iloc[0]["error"].startswith("ValueError")
    runs_csv = pd.read_csv(files.tables["runs"])
    assert len(runs_csv) == len(grid.finished) + len(grid.failed)
    md = files.markdown.read_text()
    assert "mllm_av" in md and "no vectors for mllm_av" in md  # the skipped feature set, with its reason


def _independent_gain(feature, baseline, model, metric, seeds=(1, 2)):
    """Mean over windows of per-window case means, each side averaged over seeds, from the cases directly."""
    a_w, b_w = [], []
    for w in WINDOWS:

        def side(fs, w=w):
            frames = [run_cases(fs, s, w) for s in seeds]
            ranks = np.mean(
                [
                    [float(r <= 10) for r in f["rank"]]
                    if "hr" in metric
                    else [1 / math.log2(r + 1) if r <= 10 else 0.0 for r in f["rank"]]
                    for f in frames
                ],
                axis=0,
            )
            cold = frames[0]["cold"].to_numpy().astype(bool)
            return ranks[cold] if metric.startswith("cold_") else ranks

        a_w.append(side(feature).mean())
        b_w.append(side(baseline).mean())
    return np.mean(a_w) / np.mean(b_w) - 1, np.mean(a_w) - np.mean(b_w)


def test_gains_recomputed_from_cases(written):
    _, ctx, files = written
    g = pd.read_csv(files.tables["gains"])
    assert set(g["comparison"]) == set(ctx.config.comparisons)
    for metric in ("hr@10", "ndcg@10", "cold_hr@10"):
        row = g[
            (g["comparison"] == "mllm_video vs videomae") & (g["model"] == "sasrec") & (g["metric"] == metric)
        ].iloc[0]
        rel, diff = _independent_gain("mllm_video", "videomae", "sasrec", metric)
        assert row["gain"] == pytest.approx(rel, rel=1e-9) and row["diff"] == pytest.approx(diff, abs=1e-12)
        assert row["gain_lo"] < row["gain"] < row["gain_hi"] and row["significant"]  # a planted, large effect
        assert row["cases"] == 3 * 300 if metric != "cold_hr@10" else row["cases"] < 300
    # identical ranks seed by seed: a zero difference; the interval still holds the seeds' spread (each side's
    # seeds are resampled independently: a seed number does not make two feature sets' runs one model)
    same = g[(g["comparison"] == "mllm_audio vs audio_raw") & (g["metric"] == "hr@10")]
    assert (same["diff"] == 0).all() and (same["diff_lo"] < 0).all() and (same["diff_hi"] > 0).all()
    assert not same["significant"].any() and not same["holm_significant"].any()
    assert (same["verdict"] == "no difference shown").all() and (same["feature_seed_std"] > 0).all()
    missing = g[g["comparison"] == "mllm_av vs title"]
    assert missing["note"].str.contains("no finished run of mllm_av").all() and missing["gain"].isna().all()
    assert missing["p_holm"].isna().all() and (missing["verdict"].fillna("") == "").all()


def test_gains_refuse_runs_that_tested_other_targets():
    """Issue 20.4: two rows whose cases share (window, user, chunk) but not the target are not comparable: the
    report stops with an error naming both runs and how many cases differ."""
    from captionrec.evaluation.bootstrap import PairingError
    from captionrec.report import compare

    runs = pd.DataFrame(
        {"run_id": ["a1", "b1"], "status": "FINISHED", "features": ["mllm_video", "videomae"], "model": "sasrec"}
    )
    cases = {"a1": run_cases("mllm_video", 1, 0), "b1": run_cases("videomae", 1, 0)}
    assert compare.gains(["mllm_video vs videomae"], runs, cases.get, ["hr@10"], 100, 0.95, 0)[0].cases == 300
    cases["b1"].loc[:4, "target"] += 1
    with pytest.raises(PairingError, match=r"between run a1 \(mllm_video\) and run b1 \(videomae\): 5 of 300"):
        compare.gains(["mllm_video vs videomae"], runs, cases.get, ["hr@10"], 100, 0.95, 0)


def test_holm_over_the_summarys_comparisons(written):
    """Holm's family is exactly the gains with an interval (the rows of the summary's table); adjusted p-values
    recomputed here from each gain's difference and standard error; corrected interval and verdict agree."""
    from statistics import NormalDist

    _, ctx, files = written
    g = pd.read_csv(files.tables["gains"])
    fam = g[g["cases"] > 0].reset_index(drop=True)
    assert fam["p_holm"].notna().all() and g.loc[g["cases"] == 0, "p_holm"].isna().all()
    m = len(fam)
    assert m == 4 * 2 * 3  # 4 comparisons with runs x 2 models x 3 metrics
    p = np.array(
        [2 * (1 - NormalDist().cdf(abs(d) / s)) if s > 0 else 1.0 for d, s in zip(fam["diff"], fam["diff_se"])]
    )
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1, (m - np.arange(m)) * p[order]))
    assert fam["p_holm"].to_numpy()[order] == pytest.approx(adjusted, abs=1e-9)
    assert (fam["holm_significant"] == (fam["p_holm"] < 0.05)).all()
    excludes = (fam["holm_lo"] > 0) | (fam["holm_hi"] < 0)
    assert (excludes == fam["holm_significant"]).all()
    assert (fam["holm_lo"] <= fam["diff_lo"]).all() and (fam["holm_hi"] >= fam["diff_hi"]).all()  # wider than 95%
    md = files.markdown.read_text()
    summary = md[md.index("## Summary") : md.index("## Results")]
    assert f"after Holm's correction over the {m} comparisons below" in summary
    assert summary.count("| no difference shown |") + summary.count("| higher |") + summary.count("| lower |") == m
    assert "Not tested: id+mllm_av vs id (sasrec): no finished run of id+mllm_av" in summary


def test_case_level_bootstrap_matches_the_normal_approximation():
    """The case-level bootstrap (kept for one-case-per-user data): paired, stratified; for a large sample the 95%
    interval of a difference of means is ~ +-1.96 se."""
    rng = np.random.default_rng(5)
    n = 4000
    b = (rng.random(n) < 0.2).astype(float)
    a = np.where(rng.random(n) < 0.1, 1.0 - b, b)  # a flips 10% of b's outcomes: paired, correlated
    strata = np.repeat([0, 1], n // 2)
    out = bootstrap.case_bootstrap(a, b, strata, samples=2000, seed=1)
    d = a - b
    se = np.sqrt(sum(d[strata == s].var(ddof=1) / (n // 2) for s in (0, 1))) / 2
    assert out["diff"] == pytest.approx(np.mean([d[strata == s].mean() for s in (0, 1)]))
    assert (out["diff_hi"] - out["diff_lo"]) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert out["rel"] == pytest.approx(out["a"] / out["b"] - 1)
    # identical sides: a zero-width interval at 0; a shift by a constant: the same shift everywhere
    same = bootstrap.case_bootstrap(b, b, strata, samples=200)
    assert same["diff_lo"] == same["diff_hi"] == 0.0
    with pytest.raises(ValueError, match="no cases"):
        bootstrap.case_bootstrap(np.array([]), np.array([]), np.array([]))


def test_case_values_and_metric_names():
    ranks = np.array([1, 3, 10, 11, 400])
    assert list(metrics.case_values(ranks, "hr@10")) == [1, 1, 1, 0, 0]
    assert metrics.case_values(ranks, "ndcg@10")[1] == pytest.approx(1 / math.log2(4))
    assert metrics.case_values(ranks, "cold_mrr")[4] == pytest.approx(1 / 400)
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.parse_metric("recall@10")


def test_report_files_html_md_and_plots(written):
    runset, _, files = written
    html = files.html.read_text()
    assert html.count('<tr class="run">') == len(runset.finished)
    assert 'src="data:image/png;base64,' in html and "<img" in html and "http" not in html.split("<body>")[1]
    for name in ("bars_hr_10", "bars_ndcg_10", "bars_cold_hr_10", "windows_hr_10", "cold_warm_hr_10", "gains_hr_10"):
        png = files.plots[name].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = files.markdown.read_text()
    assert "| mllm_video | sasrec |" in md and "±" in md
    assert "Captions come from tiny random models" in md
    assert "| mllm_video vs videomae | sasrec | HR@10 | +0.1867 (+130.2%) | [+0." in md and "| higher |" in md
    assert "**seeds per row**: 2 (every row)" in md and "| feature set | model | seeds | windows |" in md


def test_filter_mode_and_missing_runs(grid, tmp_path):
    cfg = _report_cfg(grid, tmp_path, "report.filter=params.`train.model` = 'two_tower'")
    runset = build.load(cfg.tracking, cfg.report)
    assert set(runset.runs["model"]) == {"two_tower"} and runset.parent is None
    assert build.out_folder(tmp_path, runset, cfg.report).name.startswith("filter-")
    from captionrec.report.runs import RunsNotFound

    with pytest.raises(RunsNotFound, match="no MLflow experiment 'nope'"):
        build.load(
            load_config("local", [f"tracking.tracking_uri={grid.tracking_uri}", "tracking.experiment=nope"]).tracking,
            cfg.report,
        )
    with pytest.raises(RunsNotFound, match="no train runs"):
        build.load(cfg.tracking, load_config("local", ["report.filter=params.`train.model` = 'x'"]).report)


def test_gallery_frames_are_the_captioners(sample_dir):
    """Thumbnails decoded at the caption row's frame times, text escaped, synthetic marked, failures explained."""
    items, caps = caption_rows(sample_dir, ["1", "20", "38"])
    caps.loc[(caps["item_id"] == "38") & (caps["kind"] == "video"), ["status", "reason", "frame_times_s"]] = [
        "skipped",
        "corrupt",
        None,
    ]
    cfg = load_config("local", ["report.gallery.items=2"]).report.gallery
    entries = gallery.gallery_entries(items, caps, cfg)
    assert [e.item_id for e in entries] == ["1", "38"]  # spread over the sorted ids
    assert len(entries[0].frames) == 6 and all(jpg[:2] == b"\xff\xd8" for _, jpg in entries[0].frames)
    assert [t for t, _ in entries[0].frames] == pytest.approx(caps.iloc[0]["frame_times_s"], abs=1e-3)
    assert entries[1].frames == [] and "corrupt" in entries[1].frame_note
    page = gallery.render_gallery(entries)
    assert "a video &lt;1&gt; &amp; more" in page and "synthetic video and audio caption" in page
    assert "Speech 0.90, Music 0.10" in page and "item 1 speaks" in page and "video-test" in page


def test_unknown_section_and_bad_config():
    from captionrec.config import ConfigError
    from captionrec.report.sections import ReportContext, build_sections

    with pytest.raises(ValueError, match="unknown section"):
        build_sections(ReportContext(config=None, runset=None, order=[]), ("nope",))
    with pytest.raises(ConfigError, match="not '<feature set> vs <baseline>'"):
        load_config("local", ["report.comparisons=[mllm_video:videomae]"])
    with pytest.raises(ConfigError, match="unknown feature set"):
        load_config("local", ["experiment.feature_sets=[id,clip]"])
    assert C.metric_name("cold_hr@10") == "cold_hr_10"


def test_cli_stages_and_one_screen_summaries():
    from captionrec import cli

    assert cli.PIPELINE["all"] == ("ingest", "caption", "embed", "experiment", "recommend", "report")
    assert {"experiment", "report"} <= set(cli.STAGES) and cli._parser().parse_args(["report", "--json"]).json
    text = cli.format_summary(
        {"stage": "ingest", "seconds": 3.2, "items": {"ok": 200, "bad": 5}, "ids": list(range(10))}
    )
    assert text.splitlines()[0] == "ingest done in 3 s"
    assert "  items: ok=200, bad=5" in text and "... 10 items]" in text and len(text.splitlines()) <= 40
    summary = {
        "stage": "experiment",
        "seconds": 12.0,
        "experiment": "e",
        "parent_run_id": "p1",
        "children": 2,
        "ran": 1,
        "reused": 0,
        "failed": 1,
        "tracking_uri": "sqlite:///x.db",
        "skipped_feature_sets": {"mllm_av": "no vectors for mllm_av in item_features"},
        "runs": [
            {
                "status": "ran",
                "model": "sasrec",
                "features": "id",
                "seed": 1,
                "hr_10": 0.1234,
                "trial": 0,
                "chosen": True,
            },
            {
                "status": "failed",
                "model": "sasrec",
                "features": "title",
                "seed": 1,
                "hr_10": float("nan"),
                "error": "ValueError: boom",
            },
        ],
    }
    text = cli.format_summary(summary)
    assert "1 trained, 0 reused, 1 failed" in text and "HR@10 0.1234" in text and "ValueError: boom" in text
    assert "skipped mllm_av: no vectors" in text and "captionrec report parent_run_id=p1" in text


def test_all_reports_the_grid_it_just_ran():
    from captionrec import cli

    cfg = load_config("local")
    assert cli._follow("report", cfg, {"parent_run_id": "abc"}).report.parent_run_id == "abc"
    assert cli._follow("report", cfg, {}).report.parent_run_id is None
    pinned = load_config("local", ["report.parent_run_id=xyz"])
    assert cli._follow("report", pinned, {"parent_run_id": "abc"}).report.parent_run_id == "xyz"
    assert cli._follow("embed", cfg, {"parent_run_id": "abc"}) is cfg


# ------------------------------------------------------------------------ caption-quality sections (issue 13)
AUDIO_RULE = {0: "speech", 1: "music", 2: "other", 3: "silent"}  # item j's audio class: AUDIO_RULE[j % 4]


def _analysis_inputs():
    """Analysis inputs for the fixture grid's 400 items: audio caption rows whose class follows AUDIO_RULE,
    video captions, topic j % 5, mllm_video vectors on their topic's axis, videomae vectors that ignore it."""
    from captionrec.analysis.inputs import Inputs

    ids = [str(j) for j in range(1, 401)]
    caps, feats = [], []
    rng = np.random.default_rng(3)
    base = {"error": None, "synthetic": False, "created_at": pd.Timestamp("2026-01-01", tz="UTC")}
    for j, i in zip(range(1, 401), ids):
        cls = AUDIO_RULE[j % 4]
        transcript = {"speech": f"the host explains part {j} of the engine"}.get(cls, "")
        tags = {"music": [{"label": "Guitar", "score": 0.8}], "other": [{"label": "Engine", "score": 0.6}]}.get(cls, [])
        status, reason = ("skipped", C.NO_AUDIO_STREAM) if cls == "silent" else ("ok", None)
        caps.append(
            {
                **base,
                "item_id": i,
                "kind": "audio",
                "captioner_version": "audio-v1",
                "status": status,
                "reason": reason,
                "text": None if cls == "silent" else f"{cls} sounds of item {j}",
                "transcript": transcript,
                "sound_tags": tags,
            }
        )
        caps.append(
            {
                **base,
                "item_id": i,
                "kind": "video",
                "captioner_version": "video-v1",
                "status": "ok",
                "reason": None,
                "text": f"a clip about topic{j % 5} with a dog",
                "transcript": None,
                "sound_tags": None,
            }
        )
        axis = np.eye(5)[j % 5]
        feats.append(
            {
                "item_id": i,
                "feature_set": "mllm_video",
                "model_id": "m",
                "source_version": "video-v1:h@s",
                "vector": axis,
            }
        )
        feats.append(
            {
                "item_id": i,
                "feature_set": "videomae",
                "model_id": "v",
                "source_version": "",
                "vector": rng.normal(size=5),
            }
        )
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"topic{j % 5} title {j}" for j in range(1, 401)],
            "has_audio": True,
            "probe_status": "ok",
        }
    )
    caps = pd.DataFrame(caps).reindex(columns=list(C.columns(C.CAPTIONS)))
    topics = pd.Series({i: f"t{j % 5}" for j, i in zip(range(1, 401), ids)})
    return Inputs(items, caps, pd.DataFrame(feats), topics, "test topics", len(ids))


@pytest.fixture(scope="module")
def analysed(grid, tmp_path_factory):
    from captionrec.analysis import core

    tmp = tmp_path_factory.mktemp("analysis-report")
    cfg = _report_cfg(grid, tmp)
    runset = build.load(cfg.tracking, cfg.report)
    a = core.analyze(_analysis_inputs(), runset, cfg.analyze, cfg.report)
    ctx = build.context(runset, cfg.report, analysis=a)
    return a, build.write_report(ctx, build.out_folder(tmp, runset, cfg.report))


def _hits(features, seeds=(1, 2)):
    """Per case of every window (keys, target): the mean over seeds of hr@10 and the median rank, from the cases."""
    out = []
    for w in WINDOWS:
        frames = [run_cases(features, s, w) for s in seeds]
        f = frames[0][["window", "user_idx", "chunk", "target"]].copy()
        ranks = np.stack([fr["rank"].to_numpy() for fr in frames])
        f["hr"], f["median_rank"] = (ranks <= 10).mean(axis=0), np.median(ranks, axis=0)
        out.append(f)
    return pd.concat(out, ignore_index=True)


def test_quality_sections_in_the_report(analysed):
    a, files = analysed
    md, html = files.markdown.read_text(), files.html.read_text()
    for title in ("## Caption quality", "## Caption grounding", "## Audio-heavy subsets", "## Win / loss cases"):
        assert title in md
    for key in ("quality", "grounding", "audio_classes", "win_loss"):
        assert f'<section id="{key}">' in html
    v = pd.read_csv(files.tables["vectors"]).set_index("feature_set")
    assert v.loc["mllm_video", "purity_1"] == 1.0 and v.loc["mllm_video", "near_duplicates"] == 1.0  # on its topic axis
    assert v.loc["videomae", "purity_1"] < 0.5 and v.loc["mllm_video", "chance"] == pytest.approx(79 / 399)
    counts = pd.read_csv(files.tables["audio_classes"])["audio_class"].value_counts()
    assert counts.to_dict() == {"speech": 100, "music": 100, "other": 100, "silent": 100}
    low = pd.read_csv(files.tables["grounding_review"])
    assert set(low["kind"]) == {"audio", "video"} and len(low) == 2 * a.config.review_items


def test_audio_class_metrics_recomputed_from_cases(analysed):
    """HR@10 per audio class of the target: the cases' own ranks, mapped through the logged item index."""
    _, files = analysed
    m = pd.read_csv(files.tables["audio_class_metrics"])
    for features in ("mllm_video", "audio_raw"):
        h = _hits(features)
        h["cls"] = h["target"].map(lambda t: AUDIO_RULE[t % 4])
        for cls in ("speech", "music", "all"):
            sel = h if cls == "all" else h[h["cls"] == cls]
            row = m[(m["features"] == features) & (m["model"] == "sasrec") & (m["audio_class"] == cls)].iloc[0]
            assert row["cases"] == len(sel) and row["hr_10"] == pytest.approx(sel["hr"].mean(), abs=1e-12)
    g = pd.read_csv(files.tables["audio_class_gains"])
    same = g[(g["comparison"] == "mllm_audio vs audio_raw") & (g["metric"] == "hr@10")]
    assert set(same["audio_class"]) == {"all", "speech", "music", "other", "silent"} and (same["diff"] == 0).all()


def test_win_loss_recomputed_from_cases(analysed, sample_dir):
    a, files = analysed
    wl = pd.read_csv(files.tables["win_loss"]).set_index(["comparison", "model"])
    f, b = _hits("mllm_video"), _hits("videomae")
    hit_f, hit_b = f["median_rank"] <= 10, b["median_rank"] <= 10
    row = wl.loc[("mllm_video vs videomae", "sasrec")]
    assert (row["win"], row["loss"], row["both"]) == (
        (hit_f & ~hit_b).sum(),
        (hit_b & ~hit_f).sum(),
        (hit_f & hit_b).sum(),
    )
    assert row["win"] > row["loss"]  # the planted effect
    same = wl.loc[("mllm_audio vs audio_raw", "sasrec")]
    assert same["win"] == same["loss"] == 0  # identical ranks
    assert "mllm_av vs title: no run with cases" not in files.markdown.read_text()
    assert any("mllm_av" in n for n in a.notes["win_loss"])
    # the gallery page: the picked items with their captions, transcript and title beside the win / loss note
    from captionrec.analysis.core import gallery_picks

    picks = gallery_picks(a, 2)
    heading, ids, notes = picks[0]
    assert heading == "mllm_video vs videomae: items the caption feature wins most" and len(ids) == 2
    items, caps = _borrowed_rows(sample_dir, ids)
    page = gallery.render_gallery(
        [], groups=[(heading, gallery.gallery_entries(items, caps, _gallery_cfg(ids), extra=notes))]
    )
    assert heading in page and f'id="group-0-item-{ids[0]}"' in page
    assert f"item {ids[0]} speaks" in page and f"title of {ids[0]}" in page and "case(s) won" in page
    assert page.count("data:image/jpeg;base64,") == 12  # each item's 6 frames beside its captions


def _gallery_cfg(ids):
    return load_config("local", ["report.gallery.item_ids=[" + ",".join(ids) + "]"]).report.gallery


def _borrowed_rows(sample_dir, ids):
    """caption_rows over sample videos 1, 2, ... renamed to the given item ids (the fixture grid's items go up
    to 400; the sample's videos stop at 205)."""
    items, caps = caption_rows(sample_dir, [str(j) for j in range(1, len(ids) + 1)])
    rename = dict(zip([str(j) for j in range(1, len(ids) + 1)], ids))
    items["item_id"], caps["item_id"] = items["item_id"].map(rename), caps["item_id"].map(rename)
    items["title"] = [f"title of {i}" for i in items["item_id"]]
    audio = caps["kind"] == "audio"
    caps.loc[audio, "transcript"] = [f"item {i} speaks" for i in caps.loc[audio, "item_id"]]
    return items, caps


def test_report_stage_reads_the_tables_for_the_analysis(spark, grid, analysed, sample_dir, tmp_path):
    """`captionrec report` on a Delta lake: the analysis reads items, captions and item_features through the
    store, topics from a labels CSV, and the gallery gets the win / loss items beside their captions."""
    from captionrec.analysis.core import gallery_picks
    from captionrec.pipeline import report as report_stage
    from captionrec.tables import open_store
    from captionrec.training.synthetic import feature_rows

    a, _ = analysed
    ids = sorted({i for _, picked, _ in gallery_picks(a, 1) for i in picked})
    items, caps = _borrowed_rows(sample_dir, ids)
    items = items.assign(has_audio=True, probe_status="ok")
    caps["sound_tags"] = caps["sound_tags"].map(lambda v: v if isinstance(v, list) else [])
    vecs = np.eye(len(ids) + 1)[: len(ids)]
    vecs[-1] = vecs[0]  # two near-duplicate caption vectors of the same topic
    feats = feature_rows(items, vecs, "mllm_video").assign(source_version="video-test:abc@s")
    labels = tmp_path / "topics.csv"
    pd.DataFrame({"item_id": ids, "topic": ["a"] * (len(ids) - 1) + ["a"]}).to_csv(labels, index=False)
    cfg = _report_cfg(
        grid,
        tmp_path / "out",
        f"storage.root={tmp_path}/lake",
        f"analyze.labels={labels}",
        "analyze.gallery_items=1",
        "report.gallery.items=1",
        "report.log_artifacts=false",
        "analyze.class_comparisons=[mllm_video vs videomae]",
        "report.sections=[summary,quality,win_loss]",
    )
    store = open_store(spark, cfg.storage)
    store.overwrite(C.ITEMS, spark.createDataFrame(items))
    store.overwrite(C.CAPTIONS, spark.createDataFrame(caps.drop(columns=["model_ids"])))
    store.overwrite(C.ITEM_FEATURES, spark.createDataFrame(feats))
    out = report_stage.run(cfg, spark, store)
    md = open(out["files"]["markdown"]).read()
    assert "## Caption quality" in md and "## Win / loss cases" in md
    q = pd.read_csv(f"{out['out_dir']}/quality.csv").set_index("kind")
    assert q.loc["video", "vectors"] == len(ids) and q.loc["video", "near_duplicates"] == pytest.approx(2 / len(ids))
    assert q.loc["video", "purity_1"] == 1.0 and q.loc["video", "exact_duplicates"] == 0.0
    text = report_stage.format_summary({**out, "seconds": 0})
    assert (
        "caption quality" in text
        and re.search(r"\n  mllm_video +1\.000 vs", text)
        and "mllm_video vs videomae (sasrec): " in text
    )
    page = open(out["files"]["gallery"]).read()
    assert "mllm_video vs videomae: items the caption feature wins most" in page and "case(s) won" in page
    assert f"item {ids[0]} speaks" in page and out["gallery_items"] == 1 + len(gallery_picks(a, 1))
