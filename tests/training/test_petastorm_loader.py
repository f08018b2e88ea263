"""The petastorm loader path (make_spark_converter -> make_torch_dataloader), in its own pinned environment.

Run by .ci/petastorm.sh in .venv-petastorm (pyspark 4.0.5, pyarrow 14.0.2, petastorm 0.13.1; see
constraints/petastorm.txt). Everywhere else petastorm does not import and these tests skip.
The sequences DataFrame is built here directly (ints only), as the training table would hold it.
"""

from __future__ import annotations

import numpy as np
import pytest

# petastorm 0.13.1 on pyarrow 14 warns about pyarrow APIs it still uses: not ours to fix.
pytestmark = [
    pytest.mark.petastorm,
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]

from captionrec.training.loaders import petastorm_available  # noqa: E402

if not petastorm_available():
    pytest.skip("petastorm does not import here (needs pyarrow <= 14: run .ci/petastorm.sh)", allow_module_level=True)

L = 5
N_ITEMS = 40


def _sequences_pdf(n_users: int = 64, seed: int = 0):
    """A sequences-table-shaped pandas frame: fit rows plus validation/test cases for window 0."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        topic = u % 4
        items = [int(x) for x in rng.choice(np.arange(1 + topic * 10, 11 + topic * 10), L + 3, replace=False)]
        fit = items[: L + 1]
        rows.append((0, 0, u, 0, fit, L + 1, L, fit[-1], 0, 0, []))
        for role, pos in ((1, L + 1), (2, L + 2)):
            hist = items[:pos][-L:]
            rows.append((0, role, u, 0, hist + [items[pos]], L + 1, 1, items[pos], 0, 0, items[:pos]))
    cols = ["window", "role", "user_idx", "chunk", "seq", "seq_len", "new_targets", "target", "cold", "repeat", "seen"]
    return pd.DataFrame(rows, columns=cols)


@pytest.fixture(scope="module")
def sequences(spark, tmp_path_factory):
    """A sequences table: written as parquet, read back (training materialises its rows before reading them)."""
    from pyspark.sql import types as T

    schema = T.StructType(
        [
            *[T.StructField(c, T.IntegerType()) for c in ("window", "role", "user_idx", "chunk")],
            T.StructField("seq", T.ArrayType(T.IntegerType())),
            *[T.StructField(c, T.IntegerType()) for c in ("seq_len", "new_targets", "target", "cold", "repeat")],
            T.StructField("seen", T.ArrayType(T.IntegerType())),
        ]
    )
    path = str(tmp_path_factory.mktemp("seqs") / "train_sequences")
    spark.createDataFrame(_sequences_pdf(), schema).repartition(2).write.parquet(path)
    return spark.read.parquet(path)


def test_auto_picks_petastorm_here():
    from captionrec.training.loaders import resolve_loader

    assert resolve_loader("auto") == "petastorm"
    assert resolve_loader("pyarrow") == "pyarrow"


def test_petastorm_batches_are_sharded(sequences, tmp_path):
    from captionrec.training.loaders import train_batches
    from captionrec.training.windows import FIT
    from captionrec.transforms.train_inputs import make_source

    source = make_source(
        sequences,
        [(0, FIT)],
        str(tmp_path / "inputs"),
        {"rows": "petastorm test"},
        loader="petastorm",
        world=2,
        cache_dir=f"file://{tmp_path}/cache",
    )
    try:
        assert source.loader == "petastorm" and (0, FIT) in source.converters
        seen = {}
        for rank in (0, 1):
            it = train_batches(source, 0, FIT, rank, 2, batch_size=8, seed=1)
            users = set()
            # Enough draws that every row of the shard leaves the shuffling queue (capacity 4 x batch):
            # ~5 passes over a shard of up to 64 rows.
            for _ in range(40):
                b = next(it)
                assert b["seq"].shape == (8, L + 1) and str(b["seq"].dtype) == "torch.int64"
                assert b["user_idx"].shape == (8,) and b["new_targets"].tolist() == [L] * 8  # every target of a fit row
                assert int(b["seq"].min()) >= 0 and int(b["seq"].max()) <= N_ITEMS
                users |= set(b["user_idx"].tolist())
            it.close()
            seen[rank] = users
        assert seen[0] and seen[1] and not (seen[0] & seen[1])  # disjoint shards
        assert seen[0] | seen[1] == set(range(1, 65))  # together: every training row
    finally:
        source.close()


def _job(sequences, tmp_path, world: int):
    from captionrec.config.train import SplitConfig, TrainConfig
    from captionrec.training.loop import TrainJob
    from captionrec.training.windows import FIT, loo_window
    from captionrec.transforms.train_inputs import make_source

    cfg = TrainConfig(
        model="sasrec",
        features="id",
        max_seq_len=L,
        dim=16,
        layers=1,
        heads=2,
        epochs=3,
        steps_per_epoch=4,
        batch_size=16,
        num_processes=world,
        loader="petastorm",
        log_model=False,
        retrain=False,
        split=SplitConfig(protocol="loo"),
    )
    source = make_source(
        sequences,
        [(0, FIT)],
        str(tmp_path / "inputs"),
        {"rows": "petastorm test"},
        loader="petastorm",
        world=world,
        cache_dir=f"file://{tmp_path}/cache",
    )
    counts = np.ones(N_ITEMS + 1, dtype=np.int64)
    counts[0] = 0
    job = TrainJob(
        cfg=cfg,
        num_items=N_ITEMS,
        num_users=64,
        windows=[loo_window()],
        source=source,
        steps={(0, FIT): 4},
        item_available_ms=np.zeros(N_ITEMS + 1, dtype=np.int64),
        counts={0: {"fit": counts, "prior": counts}},
    )
    return job, source


def test_training_in_process_with_petastorm(sequences, tmp_path):
    from captionrec.training.loop import run_rank

    job, source = _job(sequences, tmp_path, world=1)
    try:
        out = run_rank(job)
    finally:
        source.close()
    test = out["windows"][0]["test"]
    assert test["cases"] == 64 and 0.0 <= test["hr@10"] <= 1.0
    print("petastorm in-process: test", {k: round(v, 3) for k, v in test.items()})


def test_training_under_torch_distributor_with_petastorm(spark, sequences, tmp_path):
    """Sharded petastorm loading inside TorchDistributor(num_processes=2, local_mode=True), gloo."""
    from captionrec.training.distributed import launch
    from captionrec.training.loop import run_rank

    job, source = _job(sequences, tmp_path, world=2)
    try:
        out = launch(run_rank, job, num_processes=2, local_mode=True, use_gpu=False)
    finally:
        source.close()
    assert out["rank_world"] == 2
    assert out["windows"][0]["test"]["cases"] == 64  # both ranks' cases gathered
