"""Serving (captionrec.serving): the FAISS item index against the exact ranking, the pyfunc recommender in a
real MLflow sqlite store (logged, loaded, registered, promoted) and served over HTTP by `mlflow models serve`.

The recommender is a real SASRec trained for a few full-softmax steps on synthetic topic-structured histories
(captionrec.training.synthetic); item ids are the project's strings ("i00012").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from captionrec.serving.index import ItemIndex, choose_kind, exact_topk

L = 8  # history length the model reads


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch / faiss thread: on a shared 2-core machine more threads than cores make small models crawl."""
    import faiss

    threads = (torch.get_num_threads(), faiss.omp_get_max_threads())
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    yield
    torch.set_num_threads(threads[0])
    faiss.omp_set_num_threads(threads[1])


def _catalogue(n: int, d: int = 32, clusters: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item vectors with varied norms (like a trained model's) and queries near the clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    items = centres[rng.integers(0, clusters, n)] * 0.5 + rng.normal(size=(n, d)) * 0.5
    items *= rng.uniform(0.5, 1.5, (n, 1))
    queries = centres[rng.integers(0, clusters, 200)] + rng.normal(size=(200, d)) * 0.5
    return items.astype(np.float32), queries.astype(np.float32)


def _recall(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want)]))


# -- the index -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_ann_recall_at_100_against_exact(kind, tmp_path):
    """Each index kind finds >= 98% of the exact top 100 on a seeded clustered catalogue, and a saved index
    loads back to the same answers."""
    vectors, queries = _catalogue(4000)
    ids = list(range(10_000, 14_000))
    want_ids, want_scores = exact_topk(queries, vectors, ids, 100)
    index = ItemIndex.build(vectors, ids, kind=kind, seed=0)
    assert index.kind == kind and index.device == "cpu"  # faiss-cpu here: no GPU is claimed
    got_ids, got_scores = index.search(queries, 100)
    assert got_ids.dtype == np.int64 and got_ids.shape == (200, 100) and got_scores.dtype == np.float32
    recall = _recall(got_ids, want_ids)
    assert recall >= 0.98, f"{kind}: recall@100 {recall:.4f}"
    assert np.all(np.diff(got_scores, axis=1) <= 1e-6)  # best first
    # a returned score is the item's true inner product
    pos = {item: i for i, item in enumerate(ids)}
    true = np.einsum("d,kd->k", queries[0], vectors[[pos[int(i)] for i in got_ids[0]]])
    np.testing.assert_allclose(got_scores[0], true, rtol=1e-4, atol=1e-4)
    if kind == "exact":
        np.testing.assert_array_equal(got_ids[:, :10], want_ids[:, :10])
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4)

    loaded = ItemIndex.load(index.save(tmp_path / "idx"))
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["id_map.json", "index.faiss"]
    assert loaded.kind == kind and loaded.item_ids == ids and loaded.params == index.params
    again_ids, again_scores = loaded.search(queries, 100)
    np.testing.assert_array_equal(again_ids, got_ids)
    np.testing.assert_allclose(again_scores, got_scores)


def test_ivf_nprobe_calibrated_on_the_served_queries():
    """IVF's nprobe is calibrated on the queries it will serve when given: users whose states point away from the
    item clusters (here: random directions, whose top 100 are the unclustered items) need more lists than
    proxies near the items say. Held-out queries of the same kind measure what each calibration serves."""
    rng = np.random.default_rng(0)
    n, d, clustered = 10_000, 32, 2_000
    centres = rng.normal(size=(10, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    items = np.vstack(
        [
            centres[rng.integers(0, 10, clustered)] * 4 + rng.normal(0, 0.3, (clustered, d)),
            rng.normal(size=(n - clustered, d)) / np.sqrt(d),
        ]
    ).astype(np.float32)
    users = rng.normal(size=(400, d)).astype(np.float32)
    served, held_out = users[:200], users[200:]
    want, _ = exact_topk(held_out, items, list(range(n)), 100)
    proxy = ItemIndex.build(items, list(range(n)), kind="ivf", seed=0)
    given = ItemIndex.build(items, list(range(n)), kind="ivf", seed=0, queries=served)
    assert proxy.params["calibration_queries"] == "proxy" and given.params["calibration_queries"] == "given"
    assert given.params["calibration_ok"] and given.params["calibration_recall"] >= 0.99
    assert given.params["nprobe"] > proxy.params["nprobe"] >= given.params["nlist"] / 4
    recall_proxy = _recall(proxy.search(held_out, 100)[0], want)
    recall_given = _recall(given.search(held_out, 100)[0], want)
    assert recall_given >= 0.99 > recall_proxy, (recall_given, recall_proxy)
    # the calibrated nprobe is what a saved index searches with
    assert ItemIndex.from_bytes(given.to_bytes()).params["nprobe"] == given.params["nprobe"]
    with pytest.raises(ValueError, match="dim"):
        ItemIndex.build(items, list(range(n)), kind="ivf", queries=served[:, :8])
    # no served queries (an empty sample) calibrates on proxies and says so; broken states are an error
    empty = ItemIndex.build(items, list(range(n)), kind="ivf", seed=0, queries=np.zeros((0, d), np.float32))
    assert empty.params["calibration_queries"] == "proxy" and empty.params["nprobe"] == proxy.params["nprobe"]
    broken = served.copy()
    broken[3, 0], broken[7, 1] = np.nan, np.inf
    with pytest.raises(ValueError, match="2 of 200 calibration queries are not finite"):
        ItemIndex.build(items, list(range(n)), kind="ivf", queries=broken)


def test_auto_serves_exact_where_ivf_would_scan_most_lists():
    """auto at 50k items: IVF where it reaches the recall on a fraction of the lists (clustered items, queries
    near them); exact, with the reason, where it would need more than half of them (items and queries in random
    directions: no structure to prune by), which is slower than brute force for the same answers."""
    rng = np.random.default_rng(1)
    n, d = 50_000, 64
    clustered, near = _catalogue(n, d=d, clusters=200, seed=1)
    ivf = ItemIndex.build(clustered, list(range(n)), seed=0, queries=near)
    assert ivf.kind == "ivf" and ivf.params["nprobe"] <= ivf.params["nlist"] / 2 and "fallback" not in ivf.params
    noise = rng.normal(size=(n, d)).astype(np.float32)
    users = rng.normal(size=(200, d)).astype(np.float32)
    flat = ItemIndex.build(noise, list(range(n)), seed=0, queries=users)
    assert flat.kind == "exact", flat.params
    fb = flat.params["fallback"]
    assert fb["from"] == "ivf" and fb["ivf"]["nprobe"] > fb["ivf"]["nlist"] / 2 and "brute force" in fb["reason"]
    want, _ = exact_topk(users, noise, list(range(n)), 100)
    np.testing.assert_array_equal(flat.search(users, 100)[0][:, :10], want[:, :10])
    forced = ItemIndex.build(noise, list(range(n)), kind="ivf", seed=0, queries=users)
    assert forced.kind == "ivf" and forced.params["nprobe"] == fb["ivf"]["nprobe"]  # forced stays what was asked


def test_index_kind_by_size_padding_and_string_ids():
    assert [choose_kind(n) for n in (1_000, 49_999, 50_000, 200_000, 5_000_000)] == [
        "exact",
        "exact",
        "ivf",
        "ivf",
        "ivf",
    ]
    vectors, queries = _catalogue(5, d=4)
    index = ItemIndex.build(vectors, [7, 8, 9, 10, 11])
    assert index.kind == "exact" and index.describe()["thresholds"] == {"exact_below": 50_000, "hnsw_below": 0}
    ids, scores = index.search(queries[:3], 8)  # more than the catalogue holds
    assert ids.shape == (3, 8) and np.all(ids[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))
    assert sorted(ids[0, :5].tolist()) == [7, 8, 9, 10, 11]
    named = ItemIndex.build(vectors, ["a", "b", "c", "d", "e"], kind="hnsw")
    sids, _ = named.search(queries[:1], 6)
    assert sorted(sids[0, :5].tolist()) == ["a", "b", "c", "d", "e"] and sids[0, 5] is None
    ref, _ = exact_topk(queries[:1], vectors, ["a", "b", "c", "d", "e"], 5)
    assert sids[0, :5].tolist() == ref[0].tolist()
    with pytest.raises(ValueError, match="unique"):
        ItemIndex.build(vectors, [1, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="kind"):
        ItemIndex.build(vectors, [1, 2, 3, 4, 5], kind="lsh")


# -- a trained recommender in a real MLflow store ------------------------------------------------------
def _train_recommender():
    """A 1-layer SASRec, full softmax, ~80 steps on synthetic topic histories; returns (model, item_ids, histories)."""
    from captionrec.models import ItemRepresentation, NextItemObjective, SASRec
    from captionrec.training.synthetic import make_interactions

    syn = make_interactions(n_users=150, n_items=60, n_topics=4, days=20, per_user=(8, 12), seed=5)
    item_ids = sorted(syn.items["item_id"])
    idx = {item: i + 1 for i, item in enumerate(item_ids)}
    histories = [list(g.sort_values("ts_ms")["item_id"]) for _, g in syn.interactions.groupby("user_id")]
    rows = np.zeros((len(histories), L + 1), dtype=np.int64)
    for r, h in enumerate(histories):
        tail = [idx[i] for i in h][-(L + 1) :]
        rows[r, -len(tail) :] = tail
    torch.manual_seed(0)
    model = SASRec(ItemRepresentation(len(item_ids), 32, "id"), max_seq_len=L, dim=32, layers=1, heads=2, dropout=0.0)
    model.set_objective(NextItemObjective(torch.ones(len(item_ids) + 1, dtype=torch.bool), mode="full"))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    batch = {"seq": torch.from_numpy(rows)}
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss, _ = model.calculate_loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]  # it learned something
    return model.eval(), item_ids, histories


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """A real MLflow sqlite store (tracking + registry) with its artifacts in tmp, and a trained model."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    exp = mlflow.create_experiment("captionrec-serving-tests", artifact_location=(root / "artifacts").as_uri())
    model, item_ids, histories = _train_recommender()
    yield {"uri": uri, "experiment": exp, "model": model, "item_ids": item_ids, "histories": histories}
    mlflow.set_tracking_uri(before[0])
    mlflow.set_registry_uri(before[1])


def _reference(model, item_ids, history, k):
    """The model's own full-catalogue ranking of one history, seen items excluded."""
    idx = {item: i + 1 for i, item in enumerate(item_ids)}
    seq = [idx[i] for i in history][-L:]
    hist = torch.zeros((1, L), dtype=torch.long)
    hist[0, -len(seq) :] = torch.tensor(seq)
    with torch.no_grad():
        scores = model.score_all(hist)[0]
    scores[[idx[i] for i in history]] = float("-inf")
    top = torch.topk(scores, k)
    return [item_ids[i - 1] for i in top.indices.tolist()], top.values.tolist()


@pytest.fixture(scope="module")
def logged(registry):
    """The recommender logged twice in one run: exact retrieval, and through a forced HNSW index."""
    import mlflow

    from captionrec.serving.pyfunc import log_recommender

    model, item_ids = registry["model"], registry["item_ids"]
    with torch.no_grad():
        vectors = model.item_vectors()[1:].numpy()
    hnsw = ItemIndex.build(vectors, item_ids, kind="hnsw")
    with mlflow.start_run(experiment_id=registry["experiment"]) as run:
        exact_uri = log_recommender(model, item_ids, feature_set="id", model_name="sasrec", history_len=L)
        ann_uri = log_recommender(
            model,
            item_ids,
            feature_set="id",
            model_name="sasrec",
            history_len=L,
            index=hnsw,
            artifact_path="recommender_ann",
        )
        info = hnsw.log_artifact("ann_index")
    assert info["kind"] == "hnsw" and info["n_items"] == len(item_ids)
    return {"exact": exact_uri, "ann": ann_uri, "run_id": run.info.run_id}


def test_pyfunc_round_trip_equals_the_models_own_ranking(registry, logged):
    import mlflow
    import pandas as pd

    model, item_ids, histories = registry["model"], registry["item_ids"], registry["histories"]
    info = mlflow.models.get_model_info(logged["exact"])
    assert [c["name"] for c in info.signature.inputs.to_dict()] == ["history", "k"]
    assert [c["name"] for c in info.signature.outputs.to_dict()] == ["item_ids", "scores"]
    pyfunc = mlflow.pyfunc.load_model(logged["exact"])
    hist = [histories[0], histories[1][:3], histories[2], ["not-an-item"]]
    out = pyfunc.predict(pd.DataFrame({"history": hist, "k": [10, 5, 30, 4]}))
    assert list(out.columns) == ["item_ids", "scores"] and len(out) == 4
    for r, k in enumerate([10, 5, 30]):
        got_ids, got_scores = list(out["item_ids"][r]), list(out["scores"][r])
        assert len(got_ids) == k and not set(got_ids) & set(hist[r])  # k respected, seen items excluded
        want_ids, want_scores = _reference(model, item_ids, hist[r], k)
        assert got_ids == want_ids
        np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    assert list(out["item_ids"][3]) == [] and list(out["scores"][3]) == []  # nothing the model knows
    default_k = pyfunc.predict(pd.DataFrame({"history": [histories[0]]}))
    assert len(default_k["item_ids"][0]) == 10  # k defaults to 10

    ann = mlflow.pyfunc.load_model(logged["ann"]).predict(pd.DataFrame({"history": hist[:3], "k": [10, 5, 30]}))
    for r in range(3):  # 60 items: the HNSW graph finds the exact top k
        assert list(ann["item_ids"][r]) == list(out["item_ids"][r])
    local = mlflow.artifacts.download_artifacts(logged["ann"])  # the index travels inside the model
    id_map = json.loads(open(os.path.join(local, "artifacts", "index", "id_map.json")).read())
    assert id_map["kind"] == "hnsw" and id_map["item_ids"] == item_ids
    run_files = {f.path for f in mlflow.artifacts.list_artifacts(run_id=logged["run_id"], artifact_path="ann_index")}
    assert run_files == {"ann_index/index.faiss", "ann_index/id_map.json"}  # the index as a run artifact too
    folder = mlflow.artifacts.download_artifacts(run_id=logged["run_id"], artifact_path="ann_index")
    assert ItemIndex.load(folder).kind == "hnsw"


def test_champion_moves_only_on_a_better_validation_metric(registry, logged):
    from mlflow.tracking import MlflowClient

    from captionrec.serving.pyfunc import METRIC_VALUE_TAG, promote_if_better, register_recommender

    name = "captionrec_recommender_promotion"
    v1, v2, v3, v4 = (register_recommender(logged["exact"], name) for _ in range(4))
    first = promote_if_better(name, v1, "val_ndcg_10", 0.30)
    assert first["promoted"] and first["champion_before"] is None and "no champion" in first["reason"]
    worse = promote_if_better(name, v2, "val_ndcg_10", 0.25)
    assert not worse["promoted"] and worse["champion_before"] == 0.30 and worse["new"] == 0.25
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(name, "champion").version) == v1
    tie = promote_if_better(name, v3, "val_ndcg_10", 0.30)  # equal is not better
    assert not tie["promoted"] and str(client.get_model_version_by_alias(name, "champion").version) == v1
    better = promote_if_better(name, v4, "val_ndcg_10", 0.31)
    assert better["promoted"] and better["champion_before"] == 0.30 and better["champion_version_before"] == v1
    assert "0.31 beats champion" in better["reason"] and better["rule"].startswith("champion moves")
    assert str(client.get_model_version_by_alias(name, "champion").version) == v4
    assert float(client.get_model_version(name, v2).tags[METRIC_VALUE_TAG]) == 0.25
    other = promote_if_better(name, v2, "val_hr_10", 0.99)  # another metric: not comparable, champion kept
    assert not other["promoted"] and str(client.get_model_version_by_alias(name, "champion").version) == v4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_ping(proc, url: str, deadline_s: float, server_log) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"scoring server exited with {proc.returncode}: {server_log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"no /ping answer within {deadline_s:.0f} s: {server_log.read_text()[-3000:]}")


def _stop(proc) -> None:
    """SIGTERM the server's process group (uvicorn and its worker), SIGKILL after 20 s."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def test_http_round_trip_through_the_champion(registry, logged, tmp_path):
    """`mlflow models serve -m models:/<name>@champion` on 127.0.0.1: POST a history, get the top k back."""
    from captionrec.serving.pyfunc import promote_if_better, register_recommender

    name = "captionrec_recommender"
    version = register_recommender(logged["exact"], name)
    assert promote_if_better(name, version, "val_ndcg_10", 0.2)["promoted"]
    port = _free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry["uri"],
        "MLFLOW_REGISTRY_URI": registry["uri"],
        "OMP_NUM_THREADS": "1",
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]),
    }
    # (the venv's bin first: mlflow starts `uvicorn` from PATH)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{name}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    server_log = tmp_path / "server.log"  # a file, not a pipe: nobody reads a pipe while waiting for /ping
    with open(server_log, "w") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_ping(proc, f"http://127.0.0.1:{port}/ping", 120, server_log)
        history = registry["histories"][0]
        body = json.dumps({"dataframe_records": [{"history": history, "k": 5}]}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            predictions = json.loads(resp.read())["predictions"]
    finally:
        _stop(proc)
    assert len(predictions) == 1
    assert server_log.stat().st_size > 0  # the server's output went to the file
    want_ids, want_scores = _reference(registry["model"], registry["item_ids"], history, 5)
    assert predictions[0]["item_ids"] == want_ids
    np.testing.assert_allclose(predictions[0]["scores"], want_scores, rtol=1e-5, atol=1e-6)


# -- the logged model carries captionrec; numpy ids; device ordinals; forced promotion ---------------------
_NO_CAPTIONREC = """
import json, os, sys
import importlib.util
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "captionrec"))]
assert importlib.util.find_spec("captionrec") is None, "captionrec is still importable"
import mlflow.pyfunc
import pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
out = model.predict(pd.DataFrame({"history": [json.loads(sys.argv[3])], "k": [5]}))
import captionrec
print(json.dumps({"item_ids": list(out["item_ids"][0]), "captionrec": captionrec.__file__}))
"""


def test_logged_model_loads_where_captionrec_is_not_installed(registry, logged, tmp_path):
    """The pyfunc carries the captionrec package (code/captionrec, sources only): a Python in which captionrec
    cannot be imported (the editable install's finder and every path holding it removed) loads and scores it."""
    import mlflow

    local = mlflow.artifacts.download_artifacts(logged["exact"], dst_path=str(tmp_path / "model"))
    code = os.path.join(local, "code", "captionrec")
    assert os.path.isfile(os.path.join(code, "models", "sasrec.py"))
    assert os.path.isfile(os.path.join(code, "serving", "pyfunc.py"))
    assert not [d for d, _, _ in os.walk(code) if d.endswith("__pycache__")]
    history = registry["histories"][0]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", _NO_CAPTIONREC, registry["uri"], logged["exact"], json.dumps(history)],
        cwd=tmp_path,
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert f"{os.sep}code{os.sep}captionrec{os.sep}" in got["captionrec"]  # imported from the model's code/
    assert got["item_ids"] == _reference(registry["model"], registry["item_ids"], history, 5)[0]


def test_numpy_ids_save_log_and_travel_as_bytes(registry, tmp_path):
    """numpy integer ids (np.arange) save, log and load back as plain ints; the bytes blob round-trips."""
    import mlflow

    vectors, queries = _catalogue(50, d=8)
    index = ItemIndex.build(vectors, np.arange(100, 150), seed=np.int64(3))
    loaded = ItemIndex.load(index.save(tmp_path / "idx"))
    assert loaded.item_ids == list(range(100, 150)) and all(type(i) is int for i in loaded.item_ids)
    ids, _ = loaded.search(queries[:2], 5)
    assert ids.dtype == np.int64 and set(ids.ravel()) <= set(range(100, 150))
    with mlflow.start_run(experiment_id=registry["experiment"]) as run:
        info = index.log_artifact("idx/np")
    assert info["artifact_uri"] == f"runs:/{run.info.run_id}/idx/np"
    assert ItemIndex.load(mlflow.artifacts.download_artifacts(info["artifact_uri"])).item_ids == list(range(100, 150))
    names = {f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="idx")}
    assert names == {"idx/np", "idx/np_info.json"}
    again = index.log_artifact("later", run_id=run.info.run_id)  # onto a finished run: it stays finished
    assert mlflow.get_run(run.info.run_id).info.status == "FINISHED" and again["artifact_uri"].endswith("/later")
    blob = ItemIndex.from_bytes(index.to_bytes())
    assert blob.item_ids == list(range(100, 150)) and blob.kind == index.kind
    np.testing.assert_array_equal(blob.search(queries, 7)[0], index.search(queries, 7)[0])
    named = ItemIndex.build(vectors[:3], np.array(["a", "b", "c"]))
    assert ItemIndex.load(named.save(tmp_path / "named")).item_ids == ["a", "b", "c"]


def test_index_device_ordinal():
    """A device names the GPU to search on (the model-map's task device); faiss-cpu has none: the CPU, said so."""
    from captionrec.serving.index import gpu_ordinal

    assert [gpu_ordinal(d) for d in (None, "cpu", "cuda", "cuda:2", "gpu:1", "3", 4)] == [None, None, 0, 2, 1, 3, 4]
    with pytest.raises(ValueError, match="device"):
        gpu_ordinal("tpu:0")
    vectors, queries = _catalogue(40, d=8)
    for device in ("auto", "cpu", "cuda:1", 0):
        index = ItemIndex.build(vectors, list(range(40)), device=device)
        assert index.device == "cpu"
        assert ItemIndex.from_bytes(index.to_bytes(), device=device).device == "cpu"


def test_force_promote_rebaselines_a_champion_of_another_metric(registry, logged):
    """A champion recorded under another metric is kept by the normal rule; force moves the alias (logged as
    forced) and the next versions compare against the new baseline."""
    from mlflow.tracking import MlflowClient

    from captionrec.serving.pyfunc import promote_if_better, register_recommender

    name = "captionrec_recommender_force"
    v1, v2, v3, v4 = (register_recommender(logged["exact"], name) for _ in range(4))
    client = MlflowClient()
    assert promote_if_better(name, v1, "val_hr_10", 0.9)["promoted"]
    kept = promote_if_better(name, v2, "val_ndcg_10", 0.2)
    assert not kept["promoted"] and not kept["forced"] and "not comparable" in kept["reason"]
    forced = promote_if_better(name, v2, "val_ndcg_10", 0.2, force=True)
    assert forced["promoted"] and forced["forced"] and "re-baselined" in forced["reason"]
    assert forced["champion_version_before"] == v1
    assert str(client.get_model_version_by_alias(name, "champion").version) == v2
    assert not promote_if_better(name, v3, "val_ndcg_10", 0.19)["promoted"]  # compared with the new baseline
    assert promote_if_better(name, v4, "val_ndcg_10", 0.21)["promoted"]
    assert not promote_if_better(name, v3, "val_ndcg_10", float("nan"), force=True)["promoted"]  # NaN: never
