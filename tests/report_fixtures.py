"""Helpers for the report tests: a grid of runs shaped like the MLflow run contract (captionrec.contracts),
logged into a real MLflow sqlite store, and a small captions table over real sample videos.

Each run's per-window metrics are computed from its own cases (so they agree with its cases artifact the
way a train stage's do); the tests then recompute the report's numbers independently.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from captionrec import contracts as C

N_ITEMS = 400
WINDOWS = (0, 1, 2)
ITEM_IDS = [str(j) for j in range(1, N_ITEMS + 1)]  # item_idx j -> item id str(j) (contracts.ITEM_INDEX_ARTIFACT)
# Mean rank scale per feature set: smaller is better (mllm_video clearly beats videomae; mllm_audio and
# audio_raw get identical ranks, so their difference is exactly 0).
QUALITY = {
    "id": 60.0,
    "title": 45.0,
    "videomae": 70.0,
    "mllm_video": 25.0,
    "audio_raw": 55.0,
    "mllm_audio": 55.0,
    "id+mllm_video": 22.0,
}


def make_cases(window: int, n: int = 300) -> pd.DataFrame:
    """The test cases of a window (the same for every run): keys, target, cold, baseline ranks."""
    rng = np.random.default_rng(1000 + window)
    users = rng.choice(np.arange(1, 200), size=n)
    chunk = pd.Series(users).groupby(users).cumcount().to_numpy()
    return pd.DataFrame(
        {
            "window": window,
            "user_idx": users,
            "chunk": chunk,
            "target": rng.integers(1, N_ITEMS, n),
            "cold": (rng.random(n) < 0.3).astype(np.int64),
            "rank_random": rng.integers(1, N_ITEMS + 1, n),
            "rank_popularity": rng.geometric(1 / 80.0, n).clip(1, N_ITEMS),
            "candidates": N_ITEMS,  # every item ranked (the fixture has no seen items to exclude)
        }
    )


def run_cases(features: str, seed: int, window: int) -> pd.DataFrame:
    cases = make_cases(window)
    q = QUALITY[features]
    # identical ranks for feature sets of equal quality and the same seed (a zero difference)
    rng = np.random.default_rng(int(q * 1000) + 17 * seed + window)
    cases["rank"] = rng.geometric(1 / q, len(cases)).clip(1, N_ITEMS)
    return cases[list(C.CASE_COLUMNS)]


def window_metrics(ranks: np.ndarray, cold: np.ndarray) -> dict[str, float]:
    r = ranks.astype(float)
    hr, ndcg = (r <= 10).astype(float), np.where(r <= 10, 1 / np.log2(r + 1), 0.0)
    c = cold.astype(bool)
    return {
        "hr_10": hr.mean(),
        "ndcg_10": ndcg.mean(),
        "cold_hr_10": hr[c].mean() if c.any() else np.nan,
        "cold_ndcg_10": ndcg[c].mean() if c.any() else np.nan,
    }


@dataclass
class LoggedGrid:
    tracking_uri: str
    experiment_id: str
    parent_id: str
    finished: dict[tuple[str, str, int], str]  # (features, model, seed) -> run id
    failed: dict[tuple[str, str, int], str]


def log_child(
    client,
    exp_id: str,
    parent_id: str,
    features: str,
    model: str,
    seed: int,
    status: str = "FINISHED",
    error: str = "",
    key: str = "",
) -> str:
    from mlflow.entities import Metric, Param

    tags = {
        C.TAG_KIND: C.CHILD_RUN,
        C.TAG_CHILD_KEY: key or f"{features}/{model}/{seed}",
        "mlflow.parentRunId": parent_id,
        "git_commit": "test",
        "delta_version.interactions": "3",
    }
    if status != "FINISHED":
        tags[C.TAG_ERROR] = error
    rid = client.create_run(exp_id, run_name=f"{model}-{features}", tags=tags).info.run_id
    params = [
        Param(k, v) for k, v in {"train.features": features, "train.model": model, "train.seed": str(seed)}.items()
    ]
    if status != "FINISHED":
        client.log_batch(rid, params=params)
        client.set_terminated(rid, status)
        return rid
    metrics, per_window = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in WINDOWS:
            cases = run_cases(features, seed, w)
            cases.to_parquet(Path(tmp) / f"test_w{w}.parquet", index=False)
            for series, col in (("", "rank"), ("random_", "rank_random"), ("popularity_", "rank_popularity")):
                for name, v in window_metrics(cases[col].to_numpy(), cases["cold"].to_numpy()).items():
                    metrics.append(Metric(f"test_{series}{name}", float(v), 0, w))
                    per_window.setdefault(f"test_{series}{name}", []).append(float(v))
        client.log_artifacts(rid, tmp, "cases")
        # the train stage's item index: item_idx j (a case's target) is the sample item id str(j)
        client.log_dict(rid, {"item_ids": ITEM_IDS}, C.ITEM_INDEX_ARTIFACT)
    # the summaries a train stage logs, deliberately off by 0.5 (the report must recompute, not copy them)
    metrics += [Metric(f"{name}_mean", float(np.mean(v)) + 0.5, 0, 0) for name, v in per_window.items()]
    client.log_batch(rid, metrics=metrics, params=params)
    client.set_terminated(rid, "FINISHED")
    return rid


def log_grid(tracking_uri: str, experiment: str = "report-tests", seeds=(1, 2)) -> LoggedGrid:
    """A grid: 5 feature sets x 2 models x seeds finished, one FAILED child (and a failed attempt superseded by
    a finished one), one child reused from another grid, one skipped feature set."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    art = Path(tracking_uri.replace("sqlite:///", "")).parent / "artifacts"
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=art.as_uri())
    other = client.create_run(
        exp_id, run_name="grid-old", tags={C.TAG_KIND: C.GRID_RUN, C.TAG_GRID_KEY: "g0"}, start_time=1_700_000_000_000
    )
    parent = client.create_run(
        exp_id,
        run_name="grid-test",
        tags={C.TAG_KIND: C.GRID_RUN, C.TAG_GRID_KEY: "g1", "git_commit": "test", "delta_version.interactions": "3"},
    )
    pid = parent.info.run_id
    finished, failed, plan = {}, {}, []
    for model in ("sasrec", "two_tower"):
        for features in ("id", "title", "videomae", "mllm_video", "audio_raw", "mllm_audio"):
            for seed in seeds:
                key = (features, model, seed)
                if key == ("title", "two_tower", 1):  # a failed attempt, then a finished one: only the latter counts
                    log_child(client, exp_id, pid, *key, status="FAILED", error="RuntimeError: flaky")
                host = other.info.run_id if key == ("audio_raw", "two_tower", 1) else pid
                finished[key] = log_child(client, exp_id, host, *key)
                plan.append(
                    {
                        "features": features,
                        "model": model,
                        "seed": seed,
                        "run_id": finished[key],
                        "status": "reused" if host != pid else "ran",
                    }
                )
    key = ("id+mllm_video", "sasrec", 1)
    failed[key] = log_child(
        client, exp_id, pid, *key, status="FAILED", error="ValueError: vectors of different lengths"
    )
    plan.append({"features": key[0], "model": key[1], "seed": 1, "run_id": failed[key], "status": "failed"})
    skipped = [{"features": "mllm_av", "reason": "no vectors for mllm_av in item_features"}]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        path.write_text(json.dumps({"grid_key": "g1", "children": plan, "skipped": skipped}))
        client.log_artifact(pid, str(path), "grid")
    client.set_terminated(pid, "FINISHED")
    client.set_terminated(other.info.run_id, "FINISHED")
    return LoggedGrid(tracking_uri, exp_id, pid, finished, failed)


_SHARED: dict[str, LoggedGrid] = {}


def shared_grid(tmp_path_factory) -> LoggedGrid:
    """One logged grid per test session (MLflow store creation is slow on a busy machine): every test module
    that asks gets the same one (read-only)."""
    if "grid" not in _SHARED:
        root = tmp_path_factory.getbasetemp() / "shared-grid"
        root.mkdir(exist_ok=True)
        _SHARED["grid"] = log_grid(f"sqlite:///{root}/mlflow.db")
    return _SHARED["grid"]


def caption_rows(sample_dir: Path, item_ids: list[str], synthetic: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """items and captions frames for a few sample videos; the video rows carry the frame times a real
    decode (captionrec.media.sample_frames, the caption stage's settings) returns."""
    from captionrec.media import sample_frames

    settings = {"kind": "video", "num_frames": 6, "fps": None, "window_s": 30.0, "max_pixels": 50176}
    items, caps = [], []
    for i in item_ids:
        path = (sample_dir / "videos" / f"{i}.mp4").resolve().as_uri()
        items.append({"item_id": i, "title": f"title of {i}", "video_path": path})
        times = [round(float(t), 4) for t in sample_frames(path, num_frames=6, window_s=30.0, max_pixels=50176).times_s]
        base = {
            "item_id": i,
            "status": "ok",
            "reason": None,
            "error": None,
            "synthetic": synthetic,
            "created_at": pd.Timestamp("2026-01-01", tz="UTC"),
        }
        caps.append(
            {
                **base,
                "kind": "video",
                "captioner_version": "video-test",
                "text": f"a video <{i}> & more",
                "model_ids": {"vlm": "tiny:qwen2_5_vl"},
                "prompt_version": "video_v1",
                "frame_times_s": times,
                "settings": json.dumps(settings),
                "transcript": None,
                "language": None,
                "sound_tags": None,
            }
        )
        caps.append(
            {
                **base,
                "kind": "audio",
                "captioner_version": "audio-test",
                "text": f"Sounds: Speech. Speech: item {i}",
                "model_ids": {"asr": "whisper"},
                "prompt_version": "template_v1",
                "frame_times_s": None,
                "settings": "{}",
                "transcript": f"item {i} speaks",
                "language": "en",
                "sound_tags": [{"label": "Speech", "score": 0.9}, {"label": "Music", "score": 0.1}],
            }
        )
    return pd.DataFrame(items), pd.DataFrame(caps)
