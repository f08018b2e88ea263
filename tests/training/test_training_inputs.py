"""Training inputs (issue 19, item 2): ranks read only rows the driver materialised through Spark, never a
table's own files; the materialisation is keyed by the input tables' Delta versions and the split/sequence
settings, reused while they are unchanged, and used only once complete.

Real local Spark, real Delta tables (delta-rs) in tmp_path, real training (TorchDistributor with 2 processes
for the process-boundary check).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from captionrec.config import load_config
from captionrec.config.schema import StorageConfig
from captionrec.pipeline import train as train_stage
from captionrec.training.synthetic import make_interactions
from captionrec.training.windows import FIT, TEST, VALID
from captionrec.transforms.train_inputs import MANIFEST, inputs_dir_for, materialise

SMALL = [
    "dim=16",
    "max_seq_len=8",
    "layers=1",
    "heads=2",
    "batch_size=32",
    "epochs=1",
    "steps_per_epoch=2",
    "split.num_windows=2",
    "negatives.num_uniform=16",
    "eval_batch_size=256",
    "torch_threads=1",
    "log_model=false",
    "retrain=false",
    "features=id",
    "model=sasrec",
]


def _cfg(tmp: Path, inputs_dir: Path, *overrides):
    return load_config(
        "local",
        [
            f"storage.root={tmp}/lake",
            f"tracking.tracking_uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.artifact_location={tmp}/mlartifacts",
            "tracking.experiment=captionrec-inputs",
            f"train.inputs_dir={inputs_dir}",
            *SMALL,
            *overrides,
        ],
        stage="train",
    )


@pytest.fixture(scope="module")
def store(spark, tmp_path_factory):
    from captionrec.tables import open_store

    data = make_interactions(n_users=120, n_items=60, n_topics=4, days=35, per_user=(8, 12), seed=5)
    st = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path_factory.mktemp("lake"))))
    st.overwrite("interactions", spark.createDataFrame(data.interactions))
    st.overwrite("items", spark.createDataFrame(data.items[["item_id"]]))  # split.candidates=catalogue
    return st


def _prepare(cfg, store):
    """What `train.run` does before training: pin the interactions' version, build and write the sequences."""

    def persist(df):
        store.overwrite("train_sequences", df)
        return store.read("train_sequences")

    interactions, items, inputs = train_stage.read_sequence_inputs(store, cfg.train)
    return train_stage.prepare(cfg, interactions, None, persist, inputs=inputs, items=items)


def _files(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _table_rows(store, window, role, columns):
    """The same rows read straight from the table (the test may; ranks may not)."""
    from captionrec.training.loaders import read_rows

    return read_rows(store.read("train_sequences").inputFiles(), window, [role], columns)


def test_ranks_read_only_materialised_inputs(spark, store, tmp_path, monkeypatch):
    """Training reads every row from the inputs folder: in-process every path the loader opens is under it,
    and with the sequences and interactions tables moved away two TorchDistributor ranks still train on the
    reused inputs, to the same metrics."""
    import pyarrow.dataset as ds

    from captionrec.training import loaders

    inputs_dir = tmp_path / "inputs"
    cfg = _cfg(tmp_path, inputs_dir, "num_processes=1")
    prepared = _prepare(cfg, store)

    opened: list[str] = []
    real_dataset = ds.dataset

    def recording_dataset(source, *args, **kwargs):  # a spy: records the paths, then the real pyarrow reads them
        opened.extend([source] if isinstance(source, str) else list(source))
        return real_dataset(source, *args, **kwargs)

    monkeypatch.setattr(ds, "dataset", recording_dataset)
    first = train_stage.train_prepared(cfg, prepared)
    monkeypatch.setattr(ds, "dataset", real_dataset)
    assert not first["inputs_reused"] and Path(first["inputs_folder"]).parent == inputs_dir
    assert opened, "the loader opened nothing"
    outside = [p for p in opened if not os.path.abspath(p).startswith(first["inputs_folder"] + os.sep)]
    assert not outside, f"the loader opened files outside the materialised inputs: {outside[:3]}"
    table_dir = store.location("train_sequences")
    assert not any(p.startswith(table_dir) for p in opened)

    # The materialised rows are the table's rows, in the order every rank reads them.
    for role, cols in (
        (FIT, ("user_idx", "seq", "new_targets")),
        (TEST, ("user_idx", "chunk", "seq", "target", "cold", "repeat", "seen")),
    ):
        inputs = materialise(prepared.sequences, str(inputs_dir), train_stage.rows_identity(cfg.train, prepared.inputs))
        assert inputs.reused
        got = loaders.read_part(inputs.parts[(0, role)], cols)
        want = _table_rows(store, 0, role, cols)
        for c in cols:
            np.testing.assert_array_equal(got[c], want[c], err_msg=f"{c} of role {role}")

    # Move the tables away: ranks in their own processes can't open them, and needn't.
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("train_sequences", "interactions"):
        shutil.move(store.location(name), moved / name)
    try:
        cfg2 = _cfg(tmp_path, inputs_dir, "num_processes=2")
        second = train_stage.train_prepared(cfg2, prepared)
    finally:
        for name in ("train_sequences", "interactions"):
            shutil.move(moved / name, store.location(name))
    assert second["inputs_reused"] and second["inputs_folder"] == first["inputs_folder"]
    assert [w["test"]["cases"] for w in second["windows"]] == [w["test"]["cases"] for w in first["windows"]]


def test_reused_while_versions_are_unchanged_new_folder_for_a_new_version(spark, store, tmp_path):
    inputs_dir = tmp_path / "inputs"
    cfg = _cfg(tmp_path, inputs_dir)
    prepared = _prepare(cfg, store)
    identity = train_stage.rows_identity(cfg.train, prepared.inputs)
    assert identity["inputs"]["interactions"]["version"] == store.version("interactions")

    first = materialise(prepared.sequences, str(inputs_dir), identity)
    assert not first.reused
    assert {(w, r) for w, r in first.parts} >= {(0, FIT), (0, VALID), (0, TEST), (1, FIT)}
    before = _files(inputs_dir)

    # Same versions, same settings (a fresh prepare, as a second run would do): nothing is written.
    again = materialise(_prepare(cfg, store).sequences, str(inputs_dir), identity)
    assert again.reused and again.folder == first.folder and again.parts == first.parts
    assert _files(inputs_dir) == before

    # Settings that change the rows make another folder; so does a new Delta version of the input.
    other = train_stage.rows_identity(_cfg(tmp_path, inputs_dir, "max_seq_len=6").train, prepared.inputs)
    assert other != identity
    own = _own_store(spark, store, tmp_path)
    cfg_own = _cfg(tmp_path, inputs_dir)
    p1 = _prepare(cfg_own, own)
    a = materialise(p1.sequences, str(inputs_dir), train_stage.rows_identity(cfg_own.train, p1.inputs))
    extra = own.read("interactions").limit(40).toPandas()
    extra["user_id"] = extra["user_id"] + "-new"
    own.append("interactions", spark.createDataFrame(extra))
    p2 = _prepare(cfg_own, own)
    assert p2.inputs["interactions"]["version"] == p1.inputs["interactions"]["version"] + 1
    b = materialise(p2.sequences, str(inputs_dir), train_stage.rows_identity(cfg_own.train, p2.inputs))
    assert not b.reused and b.folder != a.folder
    assert Path(a.folder, MANIFEST).is_dir()  # the older version's inputs stay as they were


def _own_store(spark, store, tmp_path):
    from captionrec.tables import open_store

    own = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path / "own")))
    own.overwrite("interactions", store.read("interactions"))
    own.overwrite("items", store.read("items"))
    return own


def test_an_incomplete_folder_is_not_reused(spark, store, tmp_path):
    from captionrec.training.loaders import read_part

    inputs_dir = tmp_path / "inputs"
    cfg = _cfg(tmp_path, inputs_dir)
    prepared = _prepare(cfg, store)
    identity = train_stage.rows_identity(cfg.train, prepared.inputs)
    first = materialise(prepared.sequences, str(inputs_dir), identity)
    old_data = {Path(f).relative_to(first.folder).parts[0] for files in first.parts.values() for f in files}
    assert len(old_data) == 1

    # A write killed before its manifest: the data is there, the manifest is not.
    shutil.rmtree(Path(first.folder, MANIFEST))
    second = materialise(prepared.sequences, str(inputs_dir), identity)
    assert not second.reused and second.folder == first.folder
    new_data = {Path(f).relative_to(second.folder).parts[0] for files in second.parts.values() for f in files}
    assert len(new_data) == 1 and new_data != old_data

    # A manifest write killed midway (Spark's _temporary only, no committed file): not reused either.
    shutil.rmtree(Path(second.folder, MANIFEST))
    Path(second.folder, MANIFEST, "_temporary", "0").mkdir(parents=True)
    third = materialise(prepared.sequences, str(inputs_dir), identity)
    assert not third.reused
    rows = read_part(third.parts[(0, FIT)], ("user_idx", "seq"))
    assert len(rows["user_idx"]) == len(read_part(first.parts[(0, FIT)], ("user_idx",))["user_idx"]) > 0
    assert materialise(prepared.sequences, str(inputs_dir), identity).reused


def test_where_inputs_are_materialised():
    local = StorageConfig(root="lakehouse")
    assert inputs_dir_for("local[2]", None, local) == os.path.abspath("lakehouse") + "/_train_inputs"
    assert inputs_dir_for("local[2]", "/x/in", local) == "/x/in"
    assert inputs_dir_for("spark://h:7077", "s3a://b/in", local) == "s3a://b/in"
    shared = StorageConfig(root="s3a://bucket/lake")
    assert inputs_dir_for("spark://h:7077", None, shared) == "s3a://bucket/lake/_train_inputs"
    assert (
        inputs_dir_for("spark://h:7077", None, StorageConfig(root="/mnt/shared/lake"))
        == "/mnt/shared/lake/_train_inputs"
    )
    with pytest.raises(ValueError, match="train.inputs_dir"):  # a relative root is the driver's disk
        inputs_dir_for("spark://h:7077", None, local)
    catalog = StorageConfig(backend="delta-spark", catalog="main", schema="captionrec")
    with pytest.raises(ValueError, match="train.inputs_dir or storage.cache_dir"):
        inputs_dir_for("local[2]", None, catalog)
    vol = StorageConfig(
        backend="delta-spark", catalog="main", schema="captionrec", cache_dir="/Volumes/main/captionrec/cache"
    )
    assert inputs_dir_for("spark://h:7077", None, vol) == "/Volumes/main/captionrec/cache/train_inputs"
    db = load_config("databricks")
    assert db.train.inputs_dir == f"{db.storage.cache_dir}/train_inputs" and db.train.inputs_dir.startswith("/Volumes/")
