"""The report: its numbers recomputed independently from the runs it read (a real MLflow sqlite store holding
contract-shaped runs), the paired bootstrap, the written files, the gallery over real sample videos."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from report_fixtures import WINDOWS, caption_rows, run_cases, shared_grid

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.report import build, gallery, stats


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return shared_grid(tmp_path_factory)


def _report_cfg(grid, tmp, *overrides):
    return load_config("local", [f"tracking.tracking_uri={grid.tracking_uri}", "tracking.experiment=report-tests",
                                 f"report.out_dir={tmp}", "report.bootstrap_samples=400", *overrides])


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
        assert row.runs == len(ids) == 2 and row.windows == len(WINDOWS)
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
        def side(fs):
            frames = [run_cases(fs, s, w) for s in seeds]
            ranks = np.mean([[float(r <= 10) for r in f["rank"]] if "hr" in metric else
                             [1 / math.log2(r + 1) if r <= 10 else 0.0 for r in f["rank"]] for f in frames], axis=0)
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
        row = g[(g["comparison"] == "mllm_video vs videomae") & (g["model"] == "sasrec") & (g["metric"] == metric)].iloc[0]
        rel, diff = _independent_gain("mllm_video", "videomae", "sasrec", metric)
        assert row["gain"] == pytest.approx(rel, rel=1e-9) and row["diff"] == pytest.approx(diff, abs=1e-12)
        assert row["gain_lo"] < row["gain"] < row["gain_hi"] and row["significant"]  # a planted, large effect
        assert row["cases"] == 3 * 300 if metric != "cold_hr@10" else row["cases"] < 300
    same = g[(g["comparison"] == "mllm_audio vs audio_raw") & (g["metric"] == "hr@10")]
    assert (same["diff"] == 0).all() and (same["diff_lo"] == 0).all() and not same["significant"].any()
    missing = g[g["comparison"] == "mllm_av vs title"]
    assert missing["note"].str.contains("no finished run of mllm_av").all() and missing["gain"].isna().all()


def test_bootstrap_interval_matches_the_normal_approximation():
    """Paired, stratified: for a large sample the 95% interval of a difference of means is ~ +-1.96 se."""
    rng = np.random.default_rng(5)
    n = 4000
    b = (rng.random(n) < 0.2).astype(float)
    a = np.where(rng.random(n) < 0.1, 1.0 - b, b)  # a flips 10% of b's outcomes: paired, correlated
    strata = np.repeat([0, 1], n // 2)
    out = stats.paired_bootstrap(a, b, strata, samples=2000, seed=1)
    d = a - b
    se = np.sqrt(sum(d[strata == s].var(ddof=1) / (n // 2) for s in (0, 1))) / 2
    assert out["diff"] == pytest.approx(np.mean([d[strata == s].mean() for s in (0, 1)]))
    assert (out["diff_hi"] - out["diff_lo"]) == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert out["rel"] == pytest.approx(out["a"] / out["b"] - 1)
    # identical sides: a zero-width interval at 0; a shift by a constant: the same shift everywhere
    same = stats.paired_bootstrap(b, b, strata, samples=200)
    assert same["diff_lo"] == same["diff_hi"] == 0.0
    with pytest.raises(ValueError, match="no cases"):
        stats.paired_bootstrap(np.array([]), np.array([]), np.array([]))


def test_case_values_and_metric_names():
    ranks = np.array([1, 3, 10, 11, 400])
    assert list(stats.case_values(ranks, "hr@10")) == [1, 1, 1, 0, 0]
    assert stats.case_values(ranks, "ndcg@10")[1] == pytest.approx(1 / math.log2(4))
    assert stats.case_values(ranks, "cold_mrr")[4] == pytest.approx(1 / 400)
    with pytest.raises(ValueError, match="unknown metric"):
        stats.parse_metric("recall@10")


def test_report_files_html_md_and_plots(written):
    runset, _, files = written
    html = files.html.read_text()
    assert html.count('<tr class="run">') == len(runset.finished)
    assert "src=\"data:image/png;base64," in html and "<img" in html and "http" not in html.split("<body>")[1]
    for name in ("bars_hr_10", "bars_ndcg_10", "bars_cold_hr_10", "windows_hr_10", "cold_warm_hr_10", "gains_hr_10"):
        png = files.plots[name].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    md = files.markdown.read_text()
    assert "| mllm_video | sasrec |" in md and "±" in md
    assert "Captions come from tiny random models" in md
    assert "Differences larger than their interval: mllm_video vs videomae (sasrec, hr@10)" in md


def test_filter_mode_and_missing_runs(grid, tmp_path):
    cfg = _report_cfg(grid, tmp_path, "report.filter=params.`train.model` = 'two_tower'")
    runset = build.load(cfg.tracking, cfg.report)
    assert set(runset.runs["model"]) == {"two_tower"} and runset.parent is None
    assert build.out_folder(tmp_path, runset, cfg.report).name.startswith("filter-")
    from captionrec.report.runs import RunsNotFound

    with pytest.raises(RunsNotFound, match="no MLflow experiment 'nope'"):
        build.load(load_config("local", [f"tracking.tracking_uri={grid.tracking_uri}", "tracking.experiment=nope"]).tracking, cfg.report)
    with pytest.raises(RunsNotFound, match="no train runs"):
        build.load(cfg.tracking, load_config("local", ["report.filter=params.`train.model` = 'x'"]).report)


def test_gallery_frames_are_the_captioners(sample_dir):
    """Thumbnails decoded at the caption row's frame times, text escaped, synthetic marked, failures explained."""
    items, caps = caption_rows(sample_dir, ["1", "20", "38"])
    caps.loc[(caps["item_id"] == "38") & (caps["kind"] == "video"), ["status", "reason", "frame_times_s"]] = ["skipped", "corrupt", None]
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

    assert cli.PIPELINE["all"] == ("ingest", "caption", "embed", "experiment", "report")
    assert {"experiment", "report"} <= set(cli.STAGES) and cli._parser().parse_args(["report", "--json"]).json
    text = cli.format_summary({"stage": "ingest", "seconds": 3.2, "items": {"ok": 200, "bad": 5}, "ids": list(range(10))})
    assert text.splitlines()[0] == "ingest done in 3 s"
    assert "  items: ok=200, bad=5" in text and "... 10 items]" in text and len(text.splitlines()) <= 40
    summary = {"stage": "experiment", "seconds": 12.0, "experiment": "e", "parent_run_id": "p1", "children": 2,
               "ran": 1, "reused": 0, "failed": 1, "tracking_uri": "sqlite:///x.db",
               "skipped_feature_sets": {"mllm_av": "no vectors for mllm_av in item_features"},
               "runs": [{"status": "ran", "model": "sasrec", "features": "id", "seed": 1, "hr_10": 0.1234},
                        {"status": "failed", "model": "sasrec", "features": "title", "seed": 1, "hr_10": float("nan"),
                         "error": "ValueError: boom"}]}
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
