"""A FAISS inner-product index over a model's item vectors, with its id map (ANN retrieval).

`ItemIndex.build(vectors, item_ids, kind="auto")` picks the index type by catalogue size n:

    n <  EXACT_MAX_ITEMS (50,000)        "exact"  IndexFlatIP: brute force, exact (a user costs n * d flops)
    otherwise                            "ivf"    IndexIVFFlat, inner product (nlist = 4 sqrt(n), nprobe calibrated
                                                  from nlist / 4 up, and at least a share 20 k / n of the lists)
    forced only                          "hnsw"   IndexHNSWFlat (M=32, efConstruction=200, efSearch calibrated)

Why IVF and not HNSW above 50k (bench/bench_ann.py, clustered d=64 vectors, recall@100, one user at a time,
2-core machine, 2026-12-07): IVF at 200k items 0.9999 at 0.25x the exact time per user, built in 5 s; HNSW at
200k 0.9585 at 3.9x the exact time (efSearch 4096), built in 143 s; at 20k both reach 0.9995+, IVF at 0.6x exact,
HNSW at 2.0x. HNSW_MAX_ITEMS is kept at 0: "hnsw" is there to be forced (and measured).

Exact and IVF search the inner product directly (METRIC_INNER_PRODUCT). HNSW's recall on inner products
depends on the catalogue: the MIPS-to-L2 reduction (an extra coordinate sqrt(R^2 - |v|^2), Bachrach et al.
2014) was much better on some catalogues (20k items, efSearch 256: 0.998 against 0.912) and much worse on
others (0.899 against 0.994). So `build` tries both metrics on a METRIC_SUBSAMPLE (10k) subsample and keeps
the one that reaches the proxy recall with the smaller efSearch, then calibrates efSearch on the full
graph: proxy queries (CALIBRATION_QUERIES item vectors plus noise) against their exact top 100, efSearch
doubled from 256 until recall@100 reaches CALIBRATION_RECALL (0.99) or 4096 (a warning and
`calibration_ok: False` in `params` when it does not; the 200k bench catalogue is such a case: the
subsample's density misled the metric choice). A search uses max(efSearch, 2k).

IVF's nprobe is calibrated at build time the same way: the smallest of IVF_PROBE_SHARES (a quarter of the lists,
3/8, 1/2, 3/4, all of them) whose recall@100 against the exact top 100 reaches CALIBRATION_RECALL. On what
queries matters: pass the queries the index will serve (`build(..., queries=)`: the recommend stage gives a
sample of its users' states); without them, proxy queries (item vectors plus noise). A model's user states are
not item vectors: on bench_ann's 200k stress catalogue (the sample's SASRec items + random distractors) a quarter
of the lists reaches recall@100 0.9999 on proxies but 0.77 on the users' states, and 3/4 of them 0.99. `params`
records `nprobe`, `calibration_recall`, `calibration_ok` and `calibration_queries` ("given" or "proxy").
Where `auto` chose IVF and the calibration needs more than IVF_MAX_PROBE_SHARE of the lists, IVF costs about
what brute force does for answers that are still not exact (bench_ann, 200k stress catalogue: 3/4 of the lists
took 0.98-1.42x exact's time per user in two runs and changed 2 of 2,320 HR@10 cases; a quarter 0.25-0.29x), so
`auto` builds the exact index instead and says why
(`params["fallback"]`: the IVF calibration and the reason); a forced "ivf" stays IVF.

The item ids are kept as given: the project's item_id is a string, tests and benchmarks use ints. Integer
ids come back as an int64 array padded with -1, any other ids as an object array padded with None; the
score of a padding slot is -inf (fewer than k items). `search_positions` gives catalogue positions
(int64, -1 padded) whatever the ids are.

GPU: `device` picks where the exact and IVF indexes search: "auto" (the default) GPU 0 where faiss was built
with GPU support and `faiss.get_num_gpus() > 0`; an ordinal (2, "cuda:2", "2": what the model-map gives a
task) that GPU; "cpu" or None the CPU. HNSW has no GPU version and stays on the CPU. `self.device` says where
it searches ("cpu" or "gpu:<n>"); nothing claims a GPU it did not use (an ordinal faiss has no GPU for stays
on the CPU, logged). `save`/`load` write the CPU index (`index.faiss`) and `id_map.json` (ids as plain JSON
ints or strings, numpy ids included); `to_bytes`/`from_bytes` carry the same pair in one blob.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("exact", "hnsw", "ivf")
EXACT_MAX_ITEMS = 50_000
HNSW_MAX_ITEMS = 0  # auto never picks HNSW (see the module docstring)
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH_MIN = 256
HNSW_EF_SEARCH_MAX = 4096
CALIBRATION_QUERIES = 200
CALIBRATION_RECALL = 0.99
CALIBRATION_K = 100
METRIC_SUBSAMPLE = 10_000
IVF_PROBE_PER_K = 20
IVF_PROBE_SHARES = (0.25, 0.375, 0.5, 0.75, 1.0)
IVF_MAX_PROBE_SHARE = 0.5  # auto: an IVF that needs more lists than this for the recall is slower than exact
INDEX_FILE = "index.faiss"
ID_MAP_FILE = "id_map.json"


def choose_kind(n: int) -> str:
    """The index type "auto" builds for a catalogue of n items (thresholds in the module docstring)."""
    if n < EXACT_MAX_ITEMS:
        return "exact"
    return "hnsw" if n < HNSW_MAX_ITEMS else "ivf"  # HNSW_MAX_ITEMS = 0: IVF


def _as_f32(a: np.ndarray, what: str) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, d), got shape {a.shape}")
    return a


def is_int_ids(item_ids: Sequence[Any]) -> bool:
    """True when every id is an integer (Python or numpy; bools are not): such ids search as int64."""
    return all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in item_ids)


def plain_ids(item_ids: Sequence[Any]) -> list[Any]:
    """The ids as plain Python values (JSON-ready): ints when all are integers (numpy ones too), else strings."""
    if is_int_ids(item_ids):
        return [int(i) for i in item_ids]
    return [str(i) for i in item_ids]


def _plain(value: Any) -> Any:
    """json.dumps default: numpy scalars and arrays as Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def gpu_ordinal(device: Any) -> int | None:
    """The GPU a device names: an int, "3", "cuda:3" or "gpu:3" -> 3; "cuda" / "gpu" -> 0; "cpu" / None -> None."""
    if device is None or isinstance(device, bool):
        return None
    if isinstance(device, (int, np.integer)):
        return int(device)
    text = str(device).strip().lower()
    if text in ("cpu", ""):
        return None
    if text in ("cuda", "gpu"):
        return 0
    head, _, tail = text.rpartition(":")
    if head in ("", "cuda", "gpu") and tail.isdigit():
        return int(tail)
    raise ValueError(f"device {device!r}: want 'auto', 'cpu', a GPU ordinal or 'cuda:<n>'")


def _ids_of(positions: np.ndarray, item_ids: Sequence[Any], int_ids: bool) -> np.ndarray:
    """(m, k) positions (-1 = padding) -> item ids: int64 (-1 padding) or object (None padding)."""
    if int_ids:
        table = np.asarray(list(item_ids) + [-1], dtype=np.int64)  # position -1 -> the appended -1
        return table[positions]
    table = np.empty(len(item_ids) + 1, dtype=object)
    table[:-1] = list(item_ids)
    table[-1] = None
    return table[positions]


def exact_topk(
    queries: np.ndarray, vectors: np.ndarray, item_ids: Sequence[Any], k: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """The exact reference: top-k inner products of each query over all vectors (numpy, in query blocks).

    Returns (ids (m, k), scores (m, k) float32) like `ItemIndex.search`, best first; ties go to the lower
    position; padding id -1 (None for non-integer ids) and score -inf when k > n.
    """
    pos, scores = exact_topk_positions(queries, vectors, k, block)
    return _ids_of(pos, item_ids, is_int_ids(item_ids)), scores


def exact_topk_positions(
    queries: np.ndarray, vectors: np.ndarray, k: int, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """`exact_topk` with catalogue positions (int64, -1 padding) instead of ids."""
    q, v = _as_f32(queries, "queries"), _as_f32(vectors, "vectors")
    m, n = q.shape[0], v.shape[0]
    kk = min(k, n)
    pos = np.full((m, k), -1, dtype=np.int64)
    out = np.full((m, k), -np.inf, dtype=np.float32)
    for s in range(0, m, block):
        sc = q[s : s + block] @ v.T  # (b, n)
        top = np.argpartition(-sc, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (sc.shape[0], 1))
        top_sc = np.take_along_axis(sc, top, axis=1)
        order = np.lexsort((top, -top_sc), axis=1)  # score descending, then position ascending
        pos[s : s + block, :kk] = np.take_along_axis(top, order, axis=1)
        out[s : s + block, :kk] = np.take_along_axis(top_sc, order, axis=1)
    return pos, out


def _augment(v: np.ndarray, r2: float) -> np.ndarray:
    """MIPS -> L2 (Bachrach et al. 2014): items get sqrt(R^2 - |v|^2), queries (r2 = None) get 0."""
    extra = np.zeros(v.shape[0]) if r2 is None else np.sqrt(np.maximum(r2 - (v.astype(np.float64) ** 2).sum(1), 0))
    return np.ascontiguousarray(np.hstack([v, extra[:, None]]), dtype=np.float32)


def _hnsw(v: np.ndarray, params: dict[str, Any]):
    """An HNSW graph over v: inner product (metric "ip") or L2 over the augmented vectors ("l2aug")."""
    import faiss

    if params["metric"] == "ip":
        index, data = faiss.IndexHNSWFlat(v.shape[1], params["M"], faiss.METRIC_INNER_PRODUCT), v
    else:
        index, data = faiss.IndexHNSWFlat(v.shape[1] + 1, params["M"], faiss.METRIC_L2), _augment(v, params["r2"])
    index.hnsw.efConstruction = params["efConstruction"]
    index.add(data)
    return index


def _build_hnsw(v: np.ndarray, seed: int, params: dict[str, Any]):
    """Metric chosen on a subsample (the one reaching the proxy recall with the smaller efSearch), then the
    full graph and its efSearch calibration."""
    params["r2"] = float((v.astype(np.float64) ** 2).sum(1).max())
    if params.get("metric", "auto") == "auto":
        rng = np.random.default_rng(seed + 2)
        sub = v[np.sort(rng.choice(len(v), size=min(len(v), METRIC_SUBSAMPLE), replace=False))]
        tried = {}
        for metric in ("ip", "l2aug"):
            trial = {**params, "metric": metric, "r2": float((sub.astype(np.float64) ** 2).sum(1).max())}
            tried[metric] = _calibrate_ef(_hnsw(sub, trial), sub, seed, trial)
        params["metric"] = min(tried, key=lambda m: (tried[m]["efSearch"], -tried[m]["calibration_recall"]))
        params["metric_trial"] = tried
    index = _hnsw(v, params)
    params.update(_calibrate_ef(index, v, seed, params))
    return index


def _build_faiss(kind: str, v: np.ndarray, seed: int, params: dict[str, Any], queries: np.ndarray | None = None):
    import faiss

    n, d = v.shape
    if kind == "hnsw":
        return _build_hnsw(v, seed, params)
    if kind == "exact":
        index = faiss.IndexFlatIP(d)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, params["nlist"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.nprobe = params["nprobe"]
        rng = np.random.default_rng(seed)
        index.train(v[np.sort(rng.choice(n, size=min(n, params["nlist"] * 64), replace=False))])
    index.add(v)
    if kind == "ivf":
        params.update(_calibrate_nprobe(index, v, seed, params, queries))
        index.nprobe = params["nprobe"]
    return index


def _proxy_queries(v: np.ndarray, seed: int) -> np.ndarray:
    """CALIBRATION_QUERIES item vectors plus noise: what calibration uses when no served queries are given."""
    rng = np.random.default_rng(seed + 1)
    n, d = v.shape
    pick = rng.choice(n, size=min(CALIBRATION_QUERIES, n), replace=False)
    scale = float(np.median(np.linalg.norm(v, axis=1))) / math.sqrt(d)
    return (v[pick] + rng.normal(0.0, 0.5 * scale, size=(len(pick), d))).astype(np.float32)


def _calibration_queries(v: np.ndarray, seed: int, queries: np.ndarray | None) -> tuple[np.ndarray, str]:
    if queries is None or len(queries) == 0:
        return _proxy_queries(v, seed), "proxy"
    q = _as_f32(queries, "calibration queries")
    if q.shape[1] != v.shape[1]:
        raise ValueError(f"calibration queries have dim {q.shape[1]}, the vectors {v.shape[1]}")
    bad = int((~np.isfinite(q).all(axis=1)).sum())
    if bad:  # the model's states are broken: whatever is served from them would be too
        raise ValueError(f"{bad} of {len(q)} calibration queries are not finite (NaN or inf): check the model's states")
    if len(q) > CALIBRATION_QUERIES:
        q = q[np.sort(np.random.default_rng(seed + 1).choice(len(q), CALIBRATION_QUERIES, replace=False))]
    return q, "given"


def _recall_at(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g.tolist()) & set(w.tolist())) / len(w) for g, w in zip(got, want)]))


def _calibrate_nprobe(index: Any, v: np.ndarray, seed: int, params: dict[str, Any], queries: np.ndarray | None):
    """The smallest share of the lists (IVF_PROBE_SHARES, from the configured nprobe up) whose recall@100 on
    the calibration queries reaches CALIBRATION_RECALL; all the lists (exact, at IVF's cost) otherwise."""
    q, source = _calibration_queries(v, seed, queries)
    k = min(CALIBRATION_K, len(v))
    want, _ = exact_topk_positions(q, v, k)
    nlist = int(params["nlist"])
    steps = sorted({int(params["nprobe"]), *(max(1, math.ceil(nlist * s)) for s in IVF_PROBE_SHARES)})
    nprobe, recall = int(params["nprobe"]), 0.0
    for nprobe in (p for p in steps if p >= int(params["nprobe"])):
        index.nprobe = nprobe
        _, got = index.search(q, k)
        recall = _recall_at(got, want)
        if recall >= CALIBRATION_RECALL:
            break
    log.info(
        "IVF: nprobe %d of %d lists reaches recall@%d %.4f on %d %s queries", nprobe, nlist, k, recall, len(q), source
    )
    return {
        "nprobe": nprobe,
        "calibration_recall": round(recall, 4),
        "calibration_ok": recall >= CALIBRATION_RECALL,
        "calibration_queries": source,
    }


def _calibrate_ef(index: Any, v: np.ndarray, seed: int, params: dict[str, Any]) -> dict[str, Any]:
    """The smallest efSearch (256, 512, ... 4096) whose recall@100 on proxy queries reaches 0.99."""
    n = len(v)
    k = min(CALIBRATION_K, n)
    proxies = _proxy_queries(v, seed)
    want, _ = exact_topk_positions(proxies, v, k)
    queries = proxies if params["metric"] == "ip" else _augment(proxies, None)
    ef, recall = int(params["efSearch"]), 0.0
    while True:
        index.hnsw.efSearch = max(ef, k)
        _, got = index.search(queries, k)
        recall = _recall_at(got, want)
        if recall >= CALIBRATION_RECALL or ef >= HNSW_EF_SEARCH_MAX:
            break
        ef *= 2
    index.hnsw.efSearch = ef
    if recall < CALIBRATION_RECALL:
        log.warning(
            "HNSW (%s) reaches recall@%d %.4f on proxy queries at efSearch %d, under %.2f: prefer ivf",
            params["metric"],
            k,
            recall,
            ef,
            CALIBRATION_RECALL,
        )
    return {"efSearch": ef, "calibration_recall": round(recall, 4), "calibration_ok": recall >= CALIBRATION_RECALL}


def _default_params(kind: str, n: int) -> dict[str, Any]:
    if kind == "hnsw":
        return {"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION, "efSearch": HNSW_EF_SEARCH_MIN, "metric": "auto"}
    if kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))  # faiss wants >= 39 training points per list
        return {"nlist": nlist, "nprobe": max(1, min(nlist, math.ceil(nlist / 4)))}
    return {}


def _ivf_nprobe(nprobe: int, nlist: int, k: int, n: int) -> int:
    """At least the configured lists, and at least a share 20 k / n of them: a top k that is a large part of a
    small catalogue spreads over many lists (4,000 items, k=100: a quarter of the lists finds 96%, half 99%)."""
    return int(min(nlist, max(nprobe, math.ceil(nlist * min(1.0, IVF_PROBE_PER_K * k / max(n, 1))))))


class ItemIndex:
    """An inner-product index over item vectors and the item id of every row (see the module docstring)."""

    def __init__(
        self,
        index: Any,
        item_ids: Sequence[Any],
        kind: str,
        dim: int,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        device: Any = "auto",
    ):
        self._index = index  # a CPU faiss index; `_search_index` may be its GPU copy
        self._int_ids = is_int_ids(item_ids)
        self.item_ids = plain_ids(item_ids)
        self.kind = kind
        self.dim = int(dim)
        self.params = dict(params or {})
        self.seed = int(seed)
        self._search_index, self.device = _maybe_gpu(index, kind, device)

    # -- building ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        item_ids: Sequence[Any],
        kind: str = "auto",
        seed: int = 0,
        params: dict[str, Any] | None = None,
        device: Any = "auto",
        queries: np.ndarray | None = None,
    ) -> "ItemIndex":
        """vectors (n, d) float32, row i = item_ids[i]; kind "auto" (by n) or one of KINDS; device: see the
        module docstring ("auto", a GPU ordinal, "cpu"); queries (m, d): a sample of what the index will serve,
        IVF's nprobe is calibrated on them (else on proxies; see the module docstring)."""
        v = _as_f32(vectors, "vectors")
        if len(item_ids) != v.shape[0]:
            raise ValueError(f"{len(item_ids)} item ids for {v.shape[0]} vectors")
        if len(set(item_ids)) != len(item_ids):
            raise ValueError("item ids must be unique")
        chosen = choose_kind(v.shape[0]) if kind == "auto" else kind
        if chosen not in KINDS:
            raise ValueError(f"index kind {kind!r} is not 'auto' or one of {KINDS}")
        p = {**_default_params(chosen, v.shape[0]), **(params or {})}
        index = _build_faiss(chosen, v, seed, p, queries)
        if kind == "auto" and chosen == "ivf" and p["nprobe"] > IVF_MAX_PROBE_SHARE * p["nlist"]:
            reason = (
                f"ivf needs {p['nprobe']} of {p['nlist']} lists for recall@{CALIBRATION_K} {CALIBRATION_RECALL} on "
                f"{p['calibration_queries']} queries (more than {IVF_MAX_PROBE_SHARE:.0%}: no faster than brute force)"
            )
            log.warning("item index: exact instead of ivf over %d items: %s", v.shape[0], reason)
            chosen, p = "exact", {"fallback": {"from": "ivf", "reason": reason, "ivf": p}}
            index = _build_faiss(chosen, v, seed, p)
        log.info(
            "item index: %s over %d items (d=%d, requested %r; auto: exact below %d items, else ivf) %s",
            chosen,
            v.shape[0],
            v.shape[1],
            kind,
            EXACT_MAX_ITEMS,
            p,
        )
        return cls(index, item_ids, chosen, v.shape[1], p, seed, device)

    def __len__(self) -> int:
        return len(self.item_ids)

    def describe(self) -> dict[str, Any]:
        """What was built (for logging): kind, size, device, parameters and the auto thresholds."""
        return {
            "kind": self.kind,
            "n_items": len(self),
            "dim": self.dim,
            "device": self.device,
            "params": self.params,
            "seed": self.seed,
            "thresholds": {"exact_below": EXACT_MAX_ITEMS, "hnsw_below": HNSW_MAX_ITEMS},
        }

    # -- searching ---------------------------------------------------------------------------
    def search_positions(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, d) -> (positions (m, k) int64, -1 padded; inner products (m, k) float32, -inf padded)."""
        q = _as_f32(queries, "queries")
        if q.shape[1] != self.dim:
            raise ValueError(f"queries have dim {q.shape[1]}, the index {self.dim}")
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        m, kk = q.shape[0], min(k, len(self))
        pos = np.full((m, k), -1, dtype=np.int64)
        scores = np.full((m, k), -np.inf, dtype=np.float32)
        if m == 0 or kk == 0:
            return pos, scores
        if self.kind == "hnsw":
            self._search_index.hnsw.efSearch = max(int(self.params["efSearch"]), 2 * kk)
        elif self.kind == "ivf":
            prm = self.params
            self._search_index.nprobe = _ivf_nprobe(int(prm["nprobe"]), int(prm["nlist"]), kk, len(self))
        if self.kind == "hnsw" and self.params.get("metric") == "l2aug":
            dist, p = self._search_index.search(_augment(q, None), kk)
            # |q_aug - v_aug|^2 = |q|^2 + R^2 - 2 q.v (every augmented item has norm R)
            s = (((q.astype(np.float64) ** 2).sum(1, keepdims=True) + self.params["r2"] - dist) / 2).astype(np.float32)
        else:
            s, p = self._search_index.search(q, kk)
        p = np.asarray(p, dtype=np.int64)
        s = np.where(p < 0, -np.inf, s).astype(np.float32)
        pos[:, :kk], scores[:, :kk] = p, s
        return pos, scores

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """queries (m, d) -> (item ids (m, k), scores (m, k) float32), best first; padding -1 (None) / -inf."""
        pos, scores = self.search_positions(queries, k)
        return _ids_of(pos, self.item_ids, self._int_ids), scores

    # -- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write `index.faiss` (the CPU index) and `id_map.json` (item ids + what was built) into directory."""
        import faiss

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(d / INDEX_FILE))
        (d / ID_MAP_FILE).write_text(self._id_map())
        return d

    def _id_map(self) -> str:
        return json.dumps({**self.describe(), "item_ids": self.item_ids}, default=_plain)

    @classmethod
    def load(cls, directory: str | Path, device: Any = "auto") -> "ItemIndex":
        import faiss

        d = Path(directory)
        return cls._restore(
            faiss.read_index(str(d / INDEX_FILE)), json.loads((d / ID_MAP_FILE).read_text()), str(d), device
        )

    @classmethod
    def _restore(cls, index: Any, meta: dict[str, Any], where: str, device: Any) -> "ItemIndex":
        if index.ntotal != len(meta["item_ids"]):
            raise ValueError(f"{where}: index holds {index.ntotal} vectors, the id map {len(meta['item_ids'])} ids")
        return cls(
            index, meta["item_ids"], meta["kind"], int(meta["dim"]), meta.get("params"), meta.get("seed", 0), device
        )

    def to_bytes(self) -> bytes:
        """The CPU index and its id map in one blob (`from_bytes`): what a Spark broadcast carries."""
        import faiss

        blob = faiss.serialize_index(self._index).tobytes()
        head = self._id_map().encode()
        return len(head).to_bytes(8, "little") + head + blob

    @classmethod
    def from_bytes(cls, data: bytes, device: Any = "auto") -> "ItemIndex":
        import faiss

        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n].decode())
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8, offset=8 + n).copy())
        return cls._restore(index, meta, "index bytes", device)

    def log_artifact(self, artifact_path: str = "ann_index", run_id: str | None = None) -> dict[str, Any]:
        """Log the index and its id map as artifacts of the active MLflow run, or of `run_id` (a finished run
        stays finished), + `describe()` as `<artifact_path>_info.json`. Returns describe() and `artifact_uri`."""
        import tempfile

        import mlflow
        from mlflow.tracking import MlflowClient

        info = self.describe()
        where = PurePosixPath(artifact_path)
        parent = None if str(where.parent) == "." else str(where.parent)
        with tempfile.TemporaryDirectory(prefix="captionrec-index-") as tmp:
            self.save(Path(tmp) / "index")
            info_file = Path(tmp) / f"{where.name}_info.json"
            info_file.write_text(json.dumps(info, default=_plain))
            if run_id is None:
                mlflow.log_artifacts(str(Path(tmp) / "index"), artifact_path)
                mlflow.log_artifact(str(info_file), parent)
                run_id = mlflow.active_run().info.run_id
            else:
                MlflowClient().log_artifacts(run_id, str(Path(tmp) / "index"), artifact_path)
                MlflowClient().log_artifact(run_id, str(info_file), parent)
        return {**info, "artifact_uri": f"runs:/{run_id}/{artifact_path}"}


def _maybe_gpu(index: Any, kind: str, device: Any = "auto") -> tuple[Any, str]:
    """The copy of an exact / IVF index on the GPU `device` names ("auto": GPU 0) where faiss has that GPU;
    otherwise the CPU index itself. Returns (the index to search, "gpu:<n>" or "cpu")."""
    import faiss

    ordinal = 0 if device == "auto" else gpu_ordinal(device)
    if ordinal is None or kind == "hnsw" or not hasattr(faiss, "StandardGpuResources"):
        return index, "cpu"
    try:
        gpus = faiss.get_num_gpus()
    except (AttributeError, RuntimeError):
        return index, "cpu"
    if ordinal >= gpus:
        if device != "auto":
            log.warning("item index: device %r asked for, faiss sees %d GPU(s): searching on the CPU", device, gpus)
        return index, "cpu"
    res = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(res, ordinal, index)
    gpu_index.referenced_resources = res  # keep the resources alive as long as the index
    log.info("item index (%s) on GPU %d of %d", kind, ordinal, gpus)
    return gpu_index, f"gpu:{ordinal}"
