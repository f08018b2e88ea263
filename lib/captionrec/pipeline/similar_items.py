"""The recommend stage's `similar_items` step (run after the recommendations are written; not a stage of its own).

Per caption feature set (`recommend.similar_feature_sets`, its newest embedding model), the top
`recommend.similar_k` cosine neighbours of every item in `item_features` (`transforms.similar_items`). Incremental:
only items new or re-embedded since the set's last write, and the items whose list they now enter, are rewritten;
one MERGE on (item_id, feature_set, rank) for every set; nothing new writes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np

from captionrec import contracts as C

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from captionrec.config import Config
    from captionrec.tables import TableStore


def run(cfg: "Config", store: "TableStore") -> dict[str, Any]:
    """Rewrite the similar_items rows that changed; returns per feature set {model_id, items, rewritten} and the
    table's version when something was written."""
    import pandas as pd
    from pyspark.sql import functions as F

    from captionrec.transforms.similar_items import similar_rows

    rc, table = cfg.recommend, cfg.recommend.similar_items_table
    if not store.exists(C.ITEM_FEATURES):
        return {}
    version = store.version(C.ITEM_FEATURES)
    feats = store.read(C.ITEM_FEATURES, version=version).where(
        F.col("vector").isNotNull() & F.col("feature_set").isin(list(rc.similar_feature_sets))
    )
    prev = store.read(table) if store.exists(table) else None
    frames, out = [], {}
    for fs in sorted(r["feature_set"] for r in feats.select("feature_set").distinct().collect()):
        rows = feats.where(F.col("feature_set") == fs).select("item_id", "model_id", "vector", "created_at").collect()
        model_id = max(rows, key=lambda r: (r["created_at"], r["model_id"]))["model_id"]
        rows = [r for r in rows if r["model_id"] == model_id]
        vectors = {r["item_id"]: np.asarray(r["vector"], dtype=np.float32) for r in rows}
        kth, changed = _state(store, prev, fs, model_id, rc.similar_k, rows)
        got, n = similar_rows(vectors, changed, kth, rc.similar_k, rc.similar_batch_size)
        out[fs] = {"model_id": model_id, "items": len(vectors), "rewritten": n}
        if got:
            frames.append(
                pd.DataFrame(got, columns=["item_id", "rank", "neighbor_id", "score"]).assign(
                    feature_set=fs, model_id=model_id
                )
            )
    if not frames:
        return out
    pdf = pd.concat(frames, ignore_index=True)
    df = store.spark.createDataFrame(
        pdf, "item_id string, rank int, neighbor_id string, score float, feature_set string, model_id string"
    )
    df = df.withColumn("item_features_version", F.lit(version).cast("long")).withColumn(
        "created_at", F.lit(dt.datetime.now(dt.UTC))
    )
    res = store.upsert(table, df, C.KEYS[C.SIMILAR_ITEMS])
    out["version"] = res.version
    return out


def _state(
    store: "TableStore", prev: "DataFrame" | None, fs: str, model_id: str, k: int, rows: list
) -> tuple[dict[str, float], set[str]]:
    """(each written item's k-th score, the items new or re-embedded since the set's last write)."""
    from pyspark.sql import functions as F

    if prev is None:
        return {}, set()
    mine = prev.where((F.col("feature_set") == fs) & (F.col("model_id") == model_id))
    state = mine.agg(F.max("rank").alias("k"), F.max("item_features_version").alias("v")).first()
    if state["k"] is None or state["k"] != k:
        return {}, set()
    kth = {
        r["item_id"]: (float("-inf") if r["score"] is None else float(r["score"]))
        for r in mine.where(F.col("rank") == k).select("item_id", "score").collect()
    }
    old = (
        store.read(C.ITEM_FEATURES, version=int(state["v"]))
        .where((F.col("feature_set") == fs) & (F.col("model_id") == model_id))
        .select("item_id", "created_at")
        .collect()
    )
    before = {(r["item_id"], r["created_at"]) for r in old}
    return kth, {r["item_id"] for r in rows if (r["item_id"], r["created_at"]) not in before}
