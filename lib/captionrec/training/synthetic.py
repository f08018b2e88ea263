"""Topic-structured synthetic interactions and item vectors, for tests and benchmarks (numpy + pandas).

Items belong to topics and are released over time; each user follows one topic (with some noise). A
feature set that carries the topic (`topic_features`) lets a model place items it never saw in training
(cold items); a learned id embedding can't. `noise_features` are vectors of the same size without the topic.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd

DAY_MS = 86_400_000


@dataclass
class Synthetic:
    interactions: pd.DataFrame  # user_id, item_id, ts (UTC), ts_ms
    items: pd.DataFrame  # item_id, topic, release_ms
    start_ms: int


def make_interactions(
    n_users: int = 300,
    n_items: int = 200,
    n_topics: int = 8,
    days: int = 56,
    per_user: tuple[int, int] = (12, 24),
    on_topic: float = 0.9,
    seed: int = 0,
    start: str = "2024-01-01",
) -> Synthetic:
    rng = np.random.default_rng(seed)
    start_ms = int(dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC).timestamp() * 1000)
    span = days * DAY_MS
    topic = np.arange(n_items) % n_topics
    # a third of the items exist from the start, the rest are released uniformly over the period
    release = np.where(rng.random(n_items) < 0.33, 0, rng.integers(0, span - DAY_MS, n_items))
    popularity = rng.pareto(1.5, n_items) + 1.0
    rows = []
    for u in range(n_users):
        t_user = rng.integers(n_topics)
        n = int(rng.integers(per_user[0], per_user[1] + 1))
        times = np.sort(rng.integers(0, span, n))
        seen: set[int] = set()
        for t in times:
            pool = (release <= t) & ~np.isin(np.arange(n_items), list(seen))
            if rng.random() < on_topic:
                pool &= topic == t_user
            cand = np.nonzero(pool)[0]
            if len(cand) == 0:
                continue
            w = popularity[cand] / popularity[cand].sum()
            i = int(rng.choice(cand, p=w))
            seen.add(i)
            rows.append((f"u{u:05d}", f"i{i:05d}", start_ms + int(t)))
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms"])
    df["ts"] = pd.to_datetime(df["ts_ms"], unit="ms", utc=True)
    items = pd.DataFrame(
        {"item_id": [f"i{i:05d}" for i in range(n_items)], "topic": topic, "release_ms": start_ms + release}
    )
    return Synthetic(df[["user_id", "item_id", "ts", "ts_ms"]], items, start_ms)


def topic_features(items: pd.DataFrame, dim: int = 16, noise: float = 0.3, seed: int = 1) -> np.ndarray:
    """(n_items, dim): the topic one-hot in the first dims, plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    n_topics = int(items["topic"].max()) + 1
    if dim < n_topics:
        raise ValueError(f"dim {dim} < {n_topics} topics")
    v = rng.normal(0.0, noise, (len(items), dim)).astype(np.float32)
    v[np.arange(len(items)), items["topic"].to_numpy()] += 1.0
    return v


def noise_features(items: pd.DataFrame, dim: int = 16, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (len(items), dim)).astype(np.float32)


def feature_rows(
    items: pd.DataFrame, vectors: np.ndarray, feature_set: str, model_id: str = "synthetic-v1"
) -> pd.DataFrame:
    """item_features-shaped rows (item_id, feature_set, model_id, dim, vector, source_version, created_at)."""
    return pd.DataFrame(
        {
            "item_id": items["item_id"].to_numpy(),
            "feature_set": feature_set,
            "model_id": model_id,
            "dim": vectors.shape[1],
            "vector": [v.astype(np.float32).tolist() for v in vectors],
            "source_version": "synthetic",
            "created_at": pd.Timestamp("2024-03-01", tz="UTC"),
        }
    )
