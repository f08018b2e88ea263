"""Similar items by cosine (the recommend stage's `similar_items` table; numpy / torch, Spark-free): each item's top k
neighbours among a feature set's vectors, and which items an incremental run must rewrite.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def cosine_top_k(
    queries: np.ndarray, query_ids: Sequence[str], vectors: np.ndarray, ids: Sequence[str], k: int, block: int = 2048
) -> list[tuple[str, int, str | None, float | None]]:
    """(item_id, rank, neighbor_id, score) rows: each query's top k cosine neighbours among `vectors`, itself left
    out; ranks 1..k, neighbor null past the available items."""
    import torch

    def unit(a: np.ndarray) -> "torch.Tensor":
        t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    v, where = unit(vectors), {i: n for n, i in enumerate(ids)}
    out: list[tuple[str, int, str | None, float | None]] = []
    q_all = unit(queries)
    for start in range(0, len(query_ids), block):
        q = q_all[start : start + block]
        sims = q @ v.T
        for r, item in enumerate(query_ids[start : start + block]):
            if item in where:
                sims[r, where[item]] = float("-inf")
        val, pos = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        for r, item in enumerate(query_ids[start : start + block]):
            for rank in range(1, k + 1):
                ok = rank <= val.shape[1] and not torch.isinf(val[r, rank - 1])
                out.append(
                    (item, rank, ids[int(pos[r, rank - 1])] if ok else None, float(val[r, rank - 1]) if ok else None)
                )
    return out


def similar_rows(
    vectors: dict[str, np.ndarray], changed: set[str], previous_kth: dict[str, float], k: int, block: int = 2048
) -> tuple[list, int]:
    """Rows (item_id, rank, neighbor_id, score) to (re)write for one feature set, and how many items they cover.

    changed: items new or re-embedded since the last run (everything on the first run: previous_kth empty);
    previous_kth: each written item's k-th score (-inf when it has fewer than k neighbours). An unchanged item is
    rewritten only when a changed item now beats its k-th neighbour (its list would change); the rest stay."""
    ids = sorted(vectors)
    mat = np.asarray([vectors[i] for i in ids], dtype=np.float32)
    redo = set(changed) | {i for i in ids if i not in previous_kth}
    others = [i for i in ids if i not in redo]
    if redo and others:
        ch = sorted(redo)
        sims = cosine_top_k(
            np.asarray([vectors[i] for i in others], dtype=np.float32),
            others,
            np.asarray([vectors[i] for i in ch], dtype=np.float32),
            ch,
            1,
            block,
        )
        redo |= {item for item, _, nb, s in sims if nb is not None and s > previous_kth[item]}
    query = sorted(redo)
    if not query:
        return [], 0
    rows = cosine_top_k(np.asarray([vectors[i] for i in query], dtype=np.float32), query, mat, ids, k, block)
    return rows, len(query)
