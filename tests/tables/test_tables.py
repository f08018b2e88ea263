"""Contract tests of `captionrec.tables`: one suite, run against every backend the session can run.

delta-spark needs Delta's jars on the Spark classpath: the param skips (with the reason) on a session
without them, e.g. here, where Maven is unreachable. With Maven (or the jars in ~/.ivy2) run the same tests
against Delta: `make test-delta-spark` (PYSPARK_SUBMIT_ARGS with the package and SQL settings of
conf/spark-gpu.conf).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from captionrec.config.schema import StorageConfig
from captionrec.tables import (
    DeltaSparkStore,
    DeltaUnavailableError,
    MergeResult,
    TableNotFoundError,
    has_delta,
    open_store,
)

UTC = dt.UTC
T0 = dt.datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
T1 = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)

SKIP_DELTA_SPARK = (
    "Delta jars not on the Spark classpath (spark.sql.extensions lacks DeltaSparkSessionExtension and this is "
    "not Databricks); run `make test-delta-spark` where Maven is reachable"
)


def _schema():
    from pyspark.sql.types import ArrayType, DoubleType, FloatType, StringType, StructField, StructType, TimestampType

    return StructType(
        [
            StructField("item_id", StringType()),
            StructField("title", StringType()),
            StructField("score", DoubleType()),
            StructField("vector", ArrayType(FloatType())),
            StructField("ts", TimestampType()),
        ]
    )


def _df(spark, rows):
    """rows: (item_id, title, score) tuples, or full 5-tuples."""
    full = [r if len(r) == 5 else (*r, [float(len(r[0] or "")), 0.5], T0) for r in rows]
    return spark.createDataFrame(full, _schema())


def _rows(df, cols=("item_id", "title", "score")):
    return sorted(tuple(r) for r in df.select(*cols).collect())


@pytest.fixture(params=["delta-rs", "delta-spark"])
def store(request, spark, tmp_path):
    if request.param == "delta-spark" and not has_delta(spark):
        pytest.skip(SKIP_DELTA_SPARK)
    return open_store(spark, StorageConfig(backend=request.param, root=str(tmp_path / "lake")))


# -- create / read / append / overwrite --------------------------------------------------------


def test_append_creates_table_and_reads_back(store, spark):
    assert not store.exists("items") and store.version("items") is None
    v = store.append("items", _df(spark, [("a", "A", 1.0), ("b", "B", 2.0)]))
    assert v == 0 and store.exists("items") and store.version("items") == 0
    assert _rows(store.read("items")) == [("a", "A", 1.0), ("b", "B", 2.0)]
    assert store.count("items") == 2


def test_append_adds_a_version_and_history(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    v = store.append("items", _df(spark, [("b", "B", 2.0)]))
    assert v == 1 == store.version("items")
    assert _rows(store.read("items")) == [("a", "A", 1.0), ("b", "B", 2.0)]
    hist = store.history("items")
    assert [h["version"] for h in hist] == [1, 0]  # newest first
    assert all(h["operation"] for h in hist)
    assert all(isinstance(h["timestamp"], dt.datetime) and h["timestamp"].tzinfo for h in hist)
    assert [h["version"] for h in store.history("items", limit=1)] == [1]


def test_overwrite_replaces_rows_and_schema(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0), ("b", "B", 2.0)]))
    v = store.overwrite("items", _df(spark, [("c", "C", 3.0)]))
    assert v == 1
    assert _rows(store.read("items")) == [("c", "C", 3.0)]
    v = store.overwrite("items", spark.createDataFrame([("x", 7)], "item_id string, n long"))
    assert v == 2
    got = store.read("items")
    assert got.columns == ["item_id", "n"] and [tuple(r) for r in got.collect()] == [("x", 7)]


def test_append_schema_mismatch_is_a_clear_error(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    extra = _df(spark, [("b", "B", 2.0)]).withColumnRenamed("title", "name")
    with pytest.raises(ValueError, match="columns don't match table 'items'.*missing \\['title'\\]"):
        store.append("items", extra)
    wrong = spark.createDataFrame(
        [("b", "B", "high", [1.0], T0)], "item_id string, title string, score string, vector array<float>, ts timestamp"
    )
    with pytest.raises(ValueError, match="score: string vs table double"):
        store.append("items", wrong)
    assert store.version("items") == 0


def test_append_widens_types_and_reorders_columns(store, spark):
    from pyspark.sql import functions as F

    store.append("counts", spark.createDataFrame([("a", 1)], "k string, n long"))
    narrow = spark.createDataFrame([(2, "b")], "n int, k string")
    store.append("counts", narrow.select("n", "k"))
    got = store.read("counts")
    assert dict(got.dtypes) == {"k": "string", "n": "bigint"}
    assert sorted(tuple(r) for r in got.orderBy(F.col("k")).collect()) == [("a", 1), ("b", 2)]


# -- MERGE -------------------------------------------------------------------------------------


def test_upsert_creates_missing_table(store, spark):
    res = store.upsert("items", _df(spark, [("a", "A", 1.0), ("b", "B", 2.0)]), keys=["item_id"])
    assert res == MergeResult(inserted=2, updated=0, version=0)
    assert _rows(store.read("items")) == [("a", "A", 1.0), ("b", "B", 2.0)]


def test_upsert_updates_matched_and_inserts_new(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0), ("b", "B", 2.0)]))
    res = store.upsert("items", _df(spark, [("b", "B2", 20.0), ("c", "C", 3.0)]), keys=["item_id"])
    assert res == MergeResult(inserted=1, updated=1, version=1)
    got = store.read("items")
    assert _rows(got) == [("a", "A", 1.0), ("b", "B2", 20.0), ("c", "C", 3.0)]
    # strings written by a MERGE (Arrow string_view in delta-rs' files) read back as plain strings
    assert dict(got.dtypes)["title"] == "string"
    assert got.filter("title = 'B2'").count() == 1
    assert store.history("items")[0]["operation"] == "MERGE"


def test_upsert_on_composite_keys(store, spark):
    schema = "user_id string, item_id string, ts timestamp, w double"
    store.upsert(
        "inter", spark.createDataFrame([("u", "i", T0, 1.0), ("u", "j", T0, 1.0)], schema), ["user_id", "item_id", "ts"]
    )
    res = store.upsert(
        "inter", spark.createDataFrame([("u", "i", T0, 5.0), ("u", "i", T1, 1.0)], schema), ["user_id", "item_id", "ts"]
    )
    assert (res.inserted, res.updated) == (1, 1)
    assert store.count("inter") == 3


def test_insert_missing_is_idempotent(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    src = _df(spark, [("a", "A-new", 9.0), ("b", "B", 2.0)])
    res = store.insert_missing("items", src, keys=["item_id"])
    assert (res.inserted, res.updated, res.version) == (1, 0, 1)
    again = store.insert_missing("items", src, keys=["item_id"])
    assert (again.inserted, again.updated) == (0, 0)
    assert store.count("items") == 2
    # existing rows are never touched by insert_missing
    assert _rows(store.read("items")) == [("a", "A", 1.0), ("b", "B", 2.0)]


def test_insert_missing_creates_missing_table(store, spark):
    res = store.insert_missing("items", _df(spark, [("a", "A", 1.0)]), keys="item_id")
    assert res == MergeResult(inserted=1, updated=0, version=0)


def test_duplicate_keys_in_source_last_row_wins(store, spark):
    # one partition: the DataFrame's order is the list's order
    dup = _df(spark, [("a", "first", 1.0), ("b", "B", 2.0), ("a", "last", 3.0)]).coalesce(1)
    res = store.upsert("items", dup, keys=["item_id"])
    assert res.inserted == 2
    assert _rows(store.read("items")) == [("a", "last", 3.0), ("b", "B", 2.0)]
    res = store.upsert("items", _df(spark, [("b", "x", 0.0), ("b", "y", 1.0)]).coalesce(1), keys=["item_id"])
    assert (res.inserted, res.updated) == (0, 1)
    assert _rows(store.read("items")) == [("a", "last", 3.0), ("b", "y", 1.0)]


def test_merge_rejects_null_and_missing_keys(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    with pytest.raises(ValueError, match="null key"):
        store.upsert("items", _df(spark, [(None, "N", 0.0)]), keys=["item_id"])
    with pytest.raises(ValueError, match="key column.*nope"):
        store.insert_missing("items", _df(spark, [("b", "B", 0.0)]), keys=["nope"])
    assert store.version("items") == 0


def test_merge_with_empty_source_changes_nothing(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    res = store.upsert("items", _df(spark, []), keys=["item_id"])
    assert (res.inserted, res.updated) == (0, 0)
    assert store.count("items") == 1


# -- versions, live files, empty tables, missing tables ----------------------------------------


def test_time_travel_reads_old_versions(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    store.upsert("items", _df(spark, [("a", "A2", 2.0), ("b", "B", 3.0)]), keys=["item_id"])
    store.overwrite("items", _df(spark, [("z", "Z", 0.0)]))
    assert _rows(store.read("items", version=0)) == [("a", "A", 1.0)]
    assert _rows(store.read("items", version=1)) == [("a", "A2", 2.0), ("b", "B", 3.0)]
    assert _rows(store.read("items")) == [("z", "Z", 0.0)]
    with pytest.raises(Exception):  # noqa: B017 -- each backend raises its own error type for a missing version
        store.read("items", version=99).collect()


def test_read_sees_only_live_files_after_merge(store, spark):
    store.append("items", _df(spark, [("a", "A", 1.0), ("b", "B", 2.0)]))
    store.upsert("items", _df(spark, [("b", "B2", 20.0), ("c", "C", 3.0)]), keys=["item_id"])
    live = store.read("items")
    assert live.count() == 3
    # a plain parquet read of the folder also returns the file the MERGE replaced: stale rows
    naive = spark.read.parquet(store.location("items"))
    assert naive.count() > 3
    assert naive.filter("item_id = 'b'").count() == 2
    assert live.filter("item_id = 'b'").count() == 1


def test_empty_table_read_keeps_schema(store, spark):
    v = store.append("items", _df(spark, []))
    assert v == 0 and store.exists("items")
    got = store.read("items")
    assert got.count() == 0 and store.count("items") == 0
    assert [(f.name, f.dataType) for f in got.schema.fields] == [(f.name, f.dataType) for f in _schema().fields]


def test_missing_table_raises_with_its_name(store):
    with pytest.raises(TableNotFoundError, match="'ghost'") as err:
        store.read("ghost")
    assert err.value.name == "ghost" and err.value.location == store.location("ghost")
    with pytest.raises(TableNotFoundError):
        store.history("ghost")
    assert store.version("ghost") is None and not store.exists("ghost")


def test_array_float_and_timestamp_round_trip(store, spark):
    from pyspark.sql.types import ArrayType, FloatType, TimestampType

    rows = [("a", "A", 1.0, [0.5, -1.25, 3.0], T0), ("b", "B", 2.0, [], T1), ("c", "C", None, None, None)]
    store.upsert("feat", spark.createDataFrame(rows, _schema()), keys=["item_id"])
    got = store.read("feat")
    types = {f.name: f.dataType for f in got.schema.fields}
    assert types["vector"] == ArrayType(FloatType(), True) and types["ts"] == TimestampType()
    by_id = {r.item_id: r for r in got.collect()}
    assert by_id["a"].vector == [0.5, -1.25, 3.0] and by_id["b"].vector == []
    assert by_id["a"].ts.timestamp() == T0.timestamp() and by_id["b"].ts.timestamp() == T1.timestamp()
    assert by_id["c"].vector is None and by_id["c"].ts is None and by_id["c"].score is None


def test_timestamp_ntz_is_stored_as_utc_timestamp(store, spark):
    from pyspark.sql.types import TimestampType

    df = spark.sql("SELECT 'a' AS k, TIMESTAMP_NTZ'2025-01-02 03:04:05' AS ts")
    store.append("ntz", df)
    got = store.read("ntz")
    assert got.schema["ts"].dataType == TimestampType()
    assert got.first().ts.timestamp() == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()


# -- delta-rs specifics ------------------------------------------------------------------------


def test_protocol_stays_reader1_writer2(store, spark):
    if store.backend != "delta-rs":
        pytest.skip("delta-spark's table protocol follows the cluster's defaults (e.g. deletion vectors)")
    from deltalake import DeltaTable

    store.append("items", _df(spark, [("a", "A", 1.0)]))
    store.upsert("items", _df(spark, [("a", "A2", 1.0), ("b", "B", 2.0)]), keys=["item_id"])
    store.insert_missing("items", _df(spark, [("c", "C", 3.0)]), keys=["item_id"])
    store.append("items", spark.createDataFrame([("d", "D", 4.0, [1.0], dt.datetime(2025, 1, 1))], _schema()))
    table = DeltaTable(store.location("items"))
    proto = table.protocol()
    assert (proto.min_reader_version, proto.min_writer_version) == (1, 2)
    assert not proto.reader_features and not proto.writer_features
    fields = {f["name"]: f for f in json.loads(table.schema().to_json())["fields"]}
    assert fields["title"]["type"] == "string" and fields["ts"]["type"] == "timestamp"
    assert fields["vector"]["type"] == {"type": "array", "elementType": "float", "containsNull": True}


def test_delta_rs_reads_partitioned_tables(spark, tmp_path):
    import pyarrow as pa
    from deltalake import write_deltalake

    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path)))
    tbl = pa.table({"k": ["a", "b", "c"], "part": ["x", "y", "x"], "n": pa.array([1, 2, 3], pa.int64())})
    write_deltalake(store.location("parted"), tbl, partition_by=["part"])
    got = store.read("parted")
    assert set(got.columns) == {"k", "part", "n"}
    assert sorted(tuple(r) for r in got.select("k", "part", "n").collect()) == [
        ("a", "x", 1),
        ("b", "y", 2),
        ("c", "x", 3),
    ]


# -- backend selection and locations -----------------------------------------------------------


def test_auto_backend_follows_the_session(spark, tmp_path):
    store = open_store(spark, StorageConfig(backend="auto", root=str(tmp_path)))
    assert store.backend == ("delta-spark" if has_delta(spark) else "delta-rs")


def test_delta_spark_without_delta_is_a_clear_error(spark, tmp_path):
    if has_delta(spark):
        pytest.skip("this session has Delta")
    with pytest.raises(DeltaUnavailableError, match="DeltaSparkSessionExtension"):
        open_store(spark, StorageConfig(backend="delta-spark", root=str(tmp_path)))


def test_bad_backend_names_and_catalog_on_delta_rs(spark, tmp_path):
    with pytest.raises(ValueError, match="storage.backend"):
        open_store(spark, StorageConfig(backend="parquet", root=str(tmp_path)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta-spark"):
        open_store(spark, StorageConfig(backend="delta-rs", catalog="main", schema="recs"))
    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path)))
    for bad in ["../etc", "a/b", "", "items;drop"]:
        with pytest.raises(ValueError, match="table name"):
            store.location(bad)


def test_relative_root_resolves_to_absolute(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = open_store(spark, StorageConfig(backend="delta-rs", root="my lake"))  # a space survives too
    assert store.location("items") == str(tmp_path / "my lake" / "items")
    store.append("items", _df(spark, [("a", "A", 1.0)]))
    store.upsert("items", _df(spark, [("a", "A2", 1.0)]), keys=["item_id"])
    monkeypatch.chdir("/")  # later reads don't depend on the working directory
    assert (tmp_path / "my lake" / "items" / "_delta_log").is_dir()
    assert _rows(store.read("items")) == [("a", "A2", 1.0)] and store.count("items") == 1
    with pytest.raises(ValueError, match="without"):
        open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path / "lake[1]")))


def test_uri_roots(spark, tmp_path):
    s3 = open_store(
        spark, StorageConfig(backend="delta-rs", root="s3://bucket/prefix/", options={"AWS_REGION": "eu-west-1"})
    )
    assert s3.location("items") == "s3://bucket/prefix/items"
    assert s3.storage_options == {"AWS_REGION": "eu-west-1"}
    uri = open_store(spark, StorageConfig(backend="delta-rs", root=f"file://{tmp_path}/lake"))
    assert uri.location("items") == f"file://{tmp_path}/lake/items"
    uri.upsert("items", _df(spark, [("a", "A", 1.0)]), keys=["item_id"])
    uri.upsert("items", _df(spark, [("a", "A2", 1.0)]), keys=["item_id"])
    assert _rows(uri.read("items")) == [("a", "A2", 1.0)]


def test_delta_spark_catalog_naming(spark, tmp_path):
    # Naming only: constructing the store needs no Delta.
    assert DeltaSparkStore(spark, catalog="main", schema="recs").location("items") == "main.recs.items"
    assert DeltaSparkStore(spark, schema="recs").location("items") == "recs.items"
    assert DeltaSparkStore(spark, root=str(tmp_path)).location("items") == f"{tmp_path}/items"
    with pytest.raises(ValueError, match="needs storage.schema"):
        DeltaSparkStore(spark, catalog="main")


# -- the Spark-side helpers the delta-spark backend uses (runnable without Delta) ---------------


def test_spark_side_dedupe_keeps_last_row_and_rejects_null_keys(spark):
    from captionrec.tables.base import dedupe_last

    df = _df(spark, [("a", "first", 1.0), ("b", "B", 2.0), ("a", "mid", 2.0), ("a", "last", 3.0)]).repartition(1)
    assert _rows(dedupe_last(df, ["item_id"])) == [("a", "last", 3.0), ("b", "B", 2.0)]
    assert dedupe_last(df, ["item_id"]).columns == df.columns
    with pytest.raises(ValueError, match="null key"):
        dedupe_last(_df(spark, [("a", None, 1.0)]), ["item_id", "title"])


def test_align_to_schema_widens_and_rejects(spark):
    from captionrec.tables.base import align_to_schema

    target = spark.createDataFrame([], "k string, n long, x double").schema
    got = align_to_schema(spark.createDataFrame([(1.5, 2, "a")], "x float, n int, k string"), target, "t")
    assert got.dtypes == [("k", "string"), ("n", "bigint"), ("x", "double")]
    with pytest.raises(ValueError, match="n: string vs table bigint"):
        align_to_schema(spark.createDataFrame([("a", "2", 1.0)], "k string, n string, x double"), target, "t")
    with pytest.raises(ValueError, match="not in table \\['y'\\]"):
        align_to_schema(spark.createDataFrame([("a", 2, 1.0, 0)], "k string, n long, x double, y int"), target, "t")


# -- concurrent writers, commit retries, OPTIMIZE ---------------------------------------------------------


def _merge_in_process(root: str, barrier, queue, writer: int) -> None:
    """A second process (spawned: delta-rs' runtime does not survive fork) MERGEing into a new table."""
    import pyarrow as pa

    from captionrec.tables import DeltaRsStore

    class RacingStore(DeltaRsStore):
        """Holds its first exclusive create until the other process reaches its own: both have seen no table,
        so the race the test is about happens on every run (not only when the scheduler happens to allow it)."""

        held = False

        def _write(self, name, tbl, mode="append", **kw):
            if mode == "error" and not self.held:
                self.held = True
                barrier.wait(timeout=120)
            return super()._write(name, tbl, mode=mode, **kw)

    store = RacingStore(None, root, retry_backoff_s=0.05)
    tbl = pa.table({"item_id": ["a", "b", "c"], "writer": [writer] * 3})
    try:
        res = store.merge_arrow("items", tbl, keys=["item_id"], update=False)
        queue.put((writer, res.inserted, store.conflicts, None))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put((writer, None, store.conflicts, repr(exc)))


def test_delta_rs_two_processes_merge_into_a_new_table(tmp_path):
    """Two processes start a MERGE into the same missing table at once: one creates it, the other loses the
    exclusive create, retries and MERGEs into the winner's table. Keys stay unique. (Before: both created
    it, delta-rs rebased the second create into an append, and every key was there twice.)"""
    import multiprocessing as mp

    from deltalake import DeltaTable

    ctx = mp.get_context("spawn")
    for trial in range(2):
        root = str(tmp_path / f"lake{trial}")
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_merge_in_process, args=(root, barrier, queue, w)) for w in range(2)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=180) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(r[3] is None for r in results), results
        assert sorted(r[1] for r in results) == [0, 3]  # one writer inserted everything, the other nothing
        # the race happened (both writers saw no table): the loser's create conflicted and was retried as a MERGE
        assert sorted(r[2] for r in results) == [0, 1], results
        rows = DeltaTable(f"{root}/items").to_pyarrow_table().to_pylist()
        assert sorted(r["item_id"] for r in rows) == ["a", "b", "c"]
        assert len({r["writer"] for r in rows}) == 1  # all rows from the one writer that created the table


def test_two_threads_upsert_into_a_new_table(store, spark):
    """The DataFrame API under concurrency (threads sharing one session): a missing table, two first writers."""
    import threading

    frames = [_df(spark, [("a", f"A{w}", float(w)), ("b", f"B{w}", float(w)), (f"only{w}", "x", 0.0)]) for w in (0, 1)]
    barrier, results, errors = threading.Barrier(2), [None, None], []

    def write(w):
        barrier.wait(timeout=60)
        try:
            results[w] = store.upsert("items", frames[w], keys=["item_id"])
        except Exception as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    rows = _rows(store.read("items"))
    assert sorted(r[0] for r in rows) == ["a", "b", "only0", "only1"]  # every key once
    assert sum(r.inserted for r in results) == 4
    print(f"{store.backend}: commits retried after a lost race: {store.conflicts}")


def test_commit_conflicts_are_retried_with_backoff_then_fail_clearly(spark, tmp_path):
    """Real delta-rs conflicts (a MERGE from a stale snapshot after another writer committed) through the
    store's retry loop: retried with exponential backoff, and a clear error once the retries are spent."""
    import pyarrow as pa
    from deltalake import DeltaTable, write_deltalake

    from captionrec.tables import CommitConflictError, DeltaRsStore

    store = DeltaRsStore(spark, str(tmp_path), commit_retries=3, retry_backoff_s=0.1)
    loc = store.location("t")
    write_deltalake(loc, pa.table({"k": ["a"], "v": [0]}))
    sleeps: list[float] = []
    calls = {"n": 0}

    def stale_merge(conflicting_attempts: int, key: str):
        def attempt():
            calls["n"] += 1
            dt = DeltaTable(loc)  # this attempt's snapshot
            if calls["n"] <= conflicting_attempts:  # another writer commits before this attempt does
                write_deltalake(loc, pa.table({"k": [f"other{calls['n']}"], "v": [1]}), mode="append")
            merger = dt.merge(pa.table({"k": [key], "v": [9]}), "t.k = s.k", source_alias="s", target_alias="t")
            return merger.when_not_matched_insert_all().execute()

        return attempt

    metrics = store.with_retries("t", "MERGE", stale_merge(2, "z"), sleep=sleeps.append)
    assert metrics["num_target_rows_inserted"] == 1 and calls["n"] == 3 and store.conflicts == 2
    assert len(sleeps) == 2 and 0.05 <= sleeps[0] <= 0.1 and 0.1 <= sleeps[1] <= 0.2  # 0.1 * 2^attempt, jittered
    keys = DeltaTable(loc).to_pyarrow_table()["k"].to_pylist()
    assert keys.count("z") == 1

    calls["n"], sleeps[:] = 0, []
    with pytest.raises(CommitConflictError, match="storage.commit_retries"):
        store.with_retries("t", "MERGE", stale_merge(99, "y"), sleep=sleeps.append)
    assert calls["n"] == 4 and len(sleeps) == 3  # 1 + commit_retries attempts
    # anything that is not a commit conflict is not retried
    calls["n"] = 0

    def bad():
        calls["n"] += 1
        raise ValueError("not a conflict")

    with pytest.raises(ValueError, match="not a conflict"):
        store.with_retries("t", "MERGE", bad, sleep=sleeps.append)
    assert calls["n"] == 1


def test_optimize_compacts_small_files(store, spark):
    for i in range(4):
        store.append("items", _df(spark, [(f"k{i}", "T", float(i))]).coalesce(1))
    assert store.num_files("items") == 4
    before = store.version("items")
    got = store.optimize("items")
    assert got["files_removed"] == 4 and got["files_added"] == 1 and got["version"] == before + 1
    assert store.num_files("items") == 1 and store.count("items") == 4
    assert _rows(store.read("items")) == [(f"k{i}", "T", float(i)) for i in range(4)]
    again = store.optimize("items")  # nothing left to compact: no commit
    assert again["files_removed"] == 0 and store.version("items") == before + 1


def test_optimize_after_writes_when_a_table_has_many_files(spark, tmp_path):
    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path), optimize_min_files=3))
    store.upsert("items", _df(spark, [("a", "A", 1.0)]).coalesce(1), keys=["item_id"])
    store.upsert("items", _df(spark, [("b", "B", 2.0)]).coalesce(1), keys=["item_id"])
    assert store.num_files("items") == 2 and store.version("items") == 1
    store.upsert("items", _df(spark, [("c", "C", 3.0)]).coalesce(1), keys=["item_id"])
    assert store.num_files("items") == 1 and store.version("items") == 3  # MERGE (v2) + OPTIMIZE (v3)
    assert store.history("items", limit=1)[0]["operation"] == "OPTIMIZE"
    store.insert_missing("items", _df(spark, [("c", "C", 3.0)]).coalesce(1), keys=["item_id"])  # changes nothing
    assert store.version("items") == 3
    assert _rows(store.read("items")) == [("a", "A", 1.0), ("b", "B", 2.0), ("c", "C", 3.0)]


def test_delta_spark_conflict_classification():
    """Which errors the delta-spark backend retries: Delta's conflict exceptions (Python classes, or their JVM
    names in an unconverted error) and a lost race to create a table; nothing else."""
    from delta.exceptions import base as delta_base

    from captionrec.tables.deltaspark import is_delta_conflict

    assert is_delta_conflict(delta_base.ConcurrentAppendException(message="files were added"))
    assert is_delta_conflict(delta_base.ProtocolChangedException(message="multiple writers, empty directory"))
    assert is_delta_conflict(RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added"))
    assert is_delta_conflict(RuntimeError("[DELTA_PATH_EXISTS] Cannot write to already existent path"))
    assert not is_delta_conflict(ValueError("columns don't match table 'items'"))
    assert not is_delta_conflict(RuntimeError("[DELTA_MERGE_MISSING_WHEN] no WHEN clause"))
