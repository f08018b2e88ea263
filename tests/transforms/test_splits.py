"""Leakage-proof splits and the sequences table (real Spark, DataFrames built in the test): the train
stage's Spark transforms (captionrec.transforms)."""

from __future__ import annotations

import datetime as dt

import pytest

from captionrec.training.windows import DAY_MS, FIT, REFIT, TEST, VALID, rolling_windows
from captionrec.transforms.sequences import (
    SEQUENCE_COLUMNS,
    build_item_index,
    build_sequences,
    build_user_index,
    item_counts,
)
from captionrec.transforms.splits import split_interactions, split_report

T0 = int(dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp() * 1000)


def _day(d: float) -> int:
    return T0 + int(d * DAY_MS)


def _df(spark, rows):
    import pandas as pd

    pdf = pd.DataFrame(rows, columns=["user_id", "item_id", "ts_ms"])
    pdf["ts"] = pd.to_datetime(pdf["ts_ms"], unit="ms", utc=True)
    return spark.createDataFrame(pdf[["user_id", "item_id", "ts", "ts_ms"]])


@pytest.fixture(scope="module")
def weeks(spark):
    """Three users over 5 weeks; item c first appears in the last week (cold there), d only in week 4."""
    rows = [
        ("u1", "a", _day(0)),
        ("u1", "b", _day(8)),
        ("u1", "c", _day(29)),
        ("u1", "a", _day(30)),
        ("u2", "b", _day(1)),
        ("u2", "a", _day(15)),
        ("u2", "d", _day(22)),
        ("u2", "c", _day(33)),
        ("u3", "a", _day(2)),
        ("u3", "b", _day(3)),
        ("u3", "e", _day(20)),
        ("u3", "b", _day(34.9)),
    ]
    return _df(spark, rows)


def test_rolling_windows_end_at_the_data_end():
    ws = rolling_windows(_day(0), _day(35) - 1, num_windows=2, window_days=7)
    assert [w.test_end_ms for w in ws] == [_day(28), _day(35)]
    assert [w.test_start_ms for w in ws] == [_day(21), _day(28)]
    assert [w.valid_start_ms for w in ws] == [_day(14), _day(21)]
    assert ws[0].as_dict()["test_start"].startswith("2024-01-22")
    explicit = rolling_windows(_day(0), _day(35), 1, 7, start="2024-01-22")
    assert explicit[0].test_start_ms == _day(21)


def test_too_many_windows_is_a_clear_error():
    with pytest.raises(ValueError, match="need more history"):
        rolling_windows(_day(0), _day(20), num_windows=3, window_days=7)
    with pytest.raises(ValueError, match="starts after the newest"):
        rolling_windows(_day(0), _day(20), 1, 7, start="2024-03-01")


def test_rolling_split_has_no_leakage(weeks):
    split, windows = split_interactions(weeks, "rolling", num_windows=2, window_days=7)
    assert len(windows) == 2
    rows = split.select("window", "role", "ts_ms").collect()
    all_ts = [r["ts_ms"] for r in weeks.select("ts_ms").collect()]
    for w in windows:
        part = [r for r in rows if r["window"] == w.index]
        by_role = {role: [r["ts_ms"] for r in part if r["role"] == role] for role in (FIT, VALID, TEST)}
        # no training interaction at or after t_k (nor in the validation week carved out before it)
        assert by_role[FIT] and max(by_role[FIT]) < w.valid_start_ms < w.test_start_ms
        assert all(w.valid_start_ms <= t < w.test_start_ms for t in by_role[VALID])
        assert by_role[TEST] and all(w.test_start_ms <= t < w.test_end_ms for t in by_role[TEST])
        # every interaction before the test end is in exactly one role, nothing after it
        assert sorted(r["ts_ms"] for r in part) == sorted(t for t in all_ts if t < w.test_end_ms)


def test_split_report_counts_cold_test_items(weeks):
    split, _ = split_interactions(weeks, "rolling", num_windows=2, window_days=7)
    rep = {r["window"]: r for r in split_report(split)}
    # window 1: fit < day 21 has a, b, e; test [28, 35) has c, a, c, b -> items {a, b, c}; c is cold
    assert rep[1]["test_items"] == 3 and rep[1]["cold_test_items"] == 1
    assert rep[1]["max_fit_ts_ms"] < _day(21)
    # window 0: fit < day 14 has a, b; test [21, 28) has d only -> cold
    assert rep[0]["test"] == 1 and rep[0]["cold_test_items"] == 1
    print("cold test items per window:", {k: (v["cold_test_items"], v["test_items"]) for k, v in rep.items()})


def test_leave_one_out(spark, weeks):
    from pyspark.sql import functions as F

    short = _df(spark, [("u9", "a", _day(1)), ("u9", "b", _day(2))])  # < 3 interactions: fit only
    split, windows = split_interactions(weeks.unionByName(short), "loo")
    assert [w.index for w in windows] == [0]
    got = {(r["user_id"], r["item_id"], r["ts_ms"]): r["role"] for r in split.collect()}
    assert got[("u1", "a", _day(30))] == TEST and got[("u1", "c", _day(29))] == VALID
    assert got[("u3", "b", _day(34.9))] == TEST and got[("u3", "e", _day(20))] == VALID
    assert {got[("u9", "a", _day(1))], got[("u9", "b", _day(2))]} == {FIT}
    # no fit interaction at or after the user's test interaction
    test_ts = split.where(F.col("role") == TEST).select("user_id", F.col("ts_ms").alias("t"))
    assert split.where(F.col("role") == FIT).join(test_ts, "user_id").where(F.col("ts_ms") >= F.col("t")).count() == 0


def test_bad_input_is_a_clear_error(spark):
    bad = spark.createDataFrame([("u1", "a")], ["user_id", "item_id"])
    with pytest.raises(ValueError, match="ts_ms"):
        split_interactions(bad, "rolling")
    with pytest.raises(ValueError, match="empty"):
        split_interactions(_df(spark, [("u", "a", 1)]).limit(0), "rolling")
    with pytest.raises(ValueError, match="protocol"):
        split_interactions(_df(spark, [("u", "a", 1)]), "random")


def test_sequences_table(spark, weeks):
    import pyspark.sql.types as T

    split, _ = split_interactions(weeks, "rolling", num_windows=2, window_days=7)
    items = build_item_index(weeks)
    users = build_user_index(weeks)
    idx = {r["item_id"]: r["item_idx"] for r in items.collect()}
    assert sorted(idx.values()) == [1, 2, 3, 4, 5] and idx["a"] == 1  # 1..N by item_id, 0 = padding
    seqs = build_sequences(split, items, users, max_seq_len=2)
    assert tuple(seqs.columns) == SEQUENCE_COLUMNS
    for f in seqs.schema.fields:  # ints and int arrays only: pyarrow 14 / petastorm read it
        assert f.dataType in (
            T.IntegerType(),
            T.ArrayType(T.IntegerType(), True),
            T.ArrayType(T.IntegerType(), False),
        ), f
    rows = {(r["window"], r["role"], r["user_idx"], r["chunk"]): r.asDict() for r in seqs.collect()}
    a, b, c, d, e = (idx[x] for x in "abcde")
    # window 1 (fit < day 21): u3 = [a, b, e] with L = 2 -> one chunk of L + 1 = 3
    u3 = rows[(1, FIT, 3, 0)]
    assert u3["seq"] == [a, b, e] and u3["seq_len"] == 3 and u3["target"] == e
    # u1 fit = [a, b] -> left-padded
    assert rows[(1, FIT, 1, 0)]["seq"] == [0, a, b]
    # window 1 test cases of u1: c at day 29 (history a, b; cold), a at day 30 (a repeat of a)
    c1, c2 = rows[(1, TEST, 1, 0)], rows[(1, TEST, 1, 1)]
    assert c1["seq"] == [a, b, c] and c1["target"] == c and c1["cold"] == 1 and c1["repeat"] == 0
    assert c1["seen"] == [a, b]
    assert c2["seq"] == [b, c, a] and c2["seen"] == [a, b, c] and c2["repeat"] == 1 and c2["cold"] == 0
    # u2 in window 1: d (day 22) is validation; c (day 33) is a test case with all 3 earlier items seen
    assert rows[(1, VALID, 2, 0)]["target"] == d
    t2 = rows[(1, TEST, 2, 0)]
    assert t2["seen"] == [b, a, d] and t2["seq"] == [a, d, c]
    # no eval case without history, and nothing from after the window
    assert all(r["seq_len"] >= 2 for r in rows.values() if r["role"] != FIT)
    first_only = build_sequences(split, items, users, max_seq_len=2, test_targets="first")
    assert first_only.where("role = 2 AND chunk > 0").count() == 0


def test_item_feature_matrix_picks_a_model_and_standardises(spark, weeks):
    import datetime as dt2

    import numpy as np

    from captionrec.transforms.item_features import item_feature_matrix

    items = build_item_index(weeks)  # a..e -> 1..5
    old, new = dt2.datetime(2024, 1, 1), dt2.datetime(2024, 2, 1)
    rows = [(i, "title", "m-old", [9.0, 9.0], old) for i in "abcde"]
    rows += [(i, "title", "m-new", [float(k), 1.0], new) for k, i in enumerate("abcd")]  # e: failed caption
    rows += [("a", "mllm_av", "m-av", [1.0, 2.0, 3.0], new)]
    feats = spark.createDataFrame(
        rows, "item_id string, feature_set string, model_id string, vector array<float>, created_at timestamp"
    )
    f = item_feature_matrix(feats, items, ["title"], num_items=5)
    assert f.model_ids == {"title": "m-new"} and f.dims == {"title": 2}
    assert f.matrix.shape == (6, 2) and f.mask.tolist() == [False, True, True, True, True, False] and f.missing == 1
    np.testing.assert_allclose(f.matrix[1:5, 0], (np.arange(4) - 1.5) / np.arange(4).std(), rtol=1e-5)
    assert (f.matrix[5] == 0).all() and (f.matrix[:, 1] == 0).all()  # constant dim -> 0 after centring
    pinned = item_feature_matrix(feats, items, ["title"], num_items=5, model_id="m-old")
    assert pinned.model_ids == {"title": "m-old"} and pinned.missing == 0
    both = item_feature_matrix(feats, items, ["title", "mllm_av"], num_items=5)
    assert both.matrix.shape == (6, 5) and both.mask[1:].tolist() == [True, False, False, False, False]
    bad = feats.unionByName(spark.createDataFrame([("b", "mllm_av", "m-av", [1.0], new)], feats.schema))
    with pytest.raises(ValueError, match="different lengths"):
        item_feature_matrix(bad, items, ["mllm_av"], num_items=5)
    with pytest.raises(ValueError, match="no vectors for feature set 'videomae'"):
        item_feature_matrix(feats, items, ["videomae"], num_items=5)


@pytest.fixture(scope="module")
def tk(spark):
    """One window: fit < day 7, validation [7, 14), test [14, 21). Item v first appears in the validation
    week, c, n and w in the test week."""
    rows = [
        ("u1", "a", _day(1)),
        ("u1", "b", _day(2)),
        ("u1", "v", _day(8)),
        ("u1", "c", _day(15)),
        ("u1", "w", _day(17)),
        ("u2", "a", _day(1)),
        ("u2", "b", _day(3)),
        ("u2", "v", _day(15)),
        ("u3", "b", _day(2)),
        ("u3", "a", _day(4)),
        ("u3", "n", _day(16)),
    ]
    return _df(spark, rows)


def _tk_sequences(spark, tk, **kw):
    split, windows = split_interactions(tk, "rolling", num_windows=1, window_days=7, start="2024-01-15")
    items, users = build_item_index(tk), build_user_index(tk)
    idx = {r["item_id"]: r["item_idx"] for r in items.collect()}
    seqs = build_sequences(split, items, users, max_seq_len=4, **kw)
    return split, items, idx, {(r["role"], r["user_idx"], r["chunk"]): r.asDict() for r in seqs.collect()}


def test_cold_means_no_interaction_before_tk_and_refit_rows_cover_it(spark, tk):
    """Issue 10.2: the test-phase model trains on everything before t_k (refit rows), and a test target
    first seen in the validation week is not cold (it was cold relative to the fit data before)."""
    _, _, idx, rows = _tk_sequences(spark, tk, refit=True)
    a, b, c, n, v, w = (idx[x] for x in "abcnvw")
    assert rows[(FIT, 1, 0)]["seq"] == [0, 0, 0, a, b]  # fit: before the validation week
    assert rows[(REFIT, 1, 0)]["seq"] == [0, 0, a, b, v]  # refit: everything before t_k
    assert (REFIT, 2, 0) in rows and rows[(REFIT, 2, 0)]["seq"] == [0, 0, 0, a, b]
    assert all(r["seq"][-1] != c and c not in r["seq"] for k, r in rows.items() if k[0] in (FIT, REFIT))
    u2 = rows[(TEST, 2, 0)]
    assert u2["target"] == v and u2["cold"] == 0  # v: validation week only -> not cold at t_k
    assert rows[(TEST, 1, 0)]["target"] == c and rows[(TEST, 1, 0)]["cold"] == 1
    assert rows[(TEST, 3, 0)]["target"] == n and rows[(TEST, 3, 0)]["cold"] == 1
    assert rows[(VALID, 1, 0)]["target"] == v and rows[(VALID, 1, 0)]["cold"] == 1  # validation: vs fit
    without = _tk_sequences(spark, tk)[3]
    assert not any(k[0] == REFIT for k in without)


def test_test_history_rolling_or_frozen_at_tk(spark, tk):
    """Issue 10.2: which history a test case sees is a config choice."""
    _, _, idx, rolling = _tk_sequences(spark, tk, test_history="rolling")
    _, _, _, frozen = _tk_sequences(spark, tk, test_history="frozen")
    a, b, c, v, w = (idx[x] for x in "abcvw")
    assert rolling[(TEST, 1, 1)]["target"] == w and rolling[(TEST, 1, 1)]["seen"] == [a, b, v, c]
    assert frozen[(TEST, 1, 1)]["target"] == w and frozen[(TEST, 1, 1)]["seen"] == [a, b, v]
    assert frozen[(TEST, 1, 1)]["seq"] == [0, a, b, v, w]
    assert frozen[(TEST, 1, 0)] == rolling[(TEST, 1, 0)]  # the first test case is the same either way
    assert frozen[(VALID, 1, 0)] == rolling[(VALID, 1, 0)]
    with pytest.raises(ValueError, match="test_history"):
        _tk_sequences(spark, tk, test_history="future")


def test_item_counts_per_window(spark, tk):
    split, items, idx, _ = _tk_sequences(spark, tk)
    counts = item_counts(split, items, [0], num_items=len(idx))[0]
    assert counts["fit"][idx["a"]] == 3 and counts["fit"][idx["v"]] == 0 and counts["fit"][0] == 0
    assert counts["prior"][idx["v"]] == 1 and counts["prior"][idx["c"]] == 0 and counts["prior"][idx["b"]] == 3


@pytest.mark.parametrize("stride", [None, 4, 2, 1])
def test_overlapping_training_rows_train_every_target_once_with_more_history(spark, stride):
    """train_stride: rows every `stride` items overlap, and each row trains only its newest `new_targets`
    targets, so every target of a user's fit history is trained exactly once, with at least
    L - stride + 1 items of history (all it has when fewer). stride None = L: today's rows."""
    L = 4
    n_fit = {"u1": 11, "u2": 5, "u3": 2}  # + validation and test item each (leave-one-out)
    rows = [(u, f"i{u}_{k}", _day(k)) for u, n in n_fit.items() for k in range(n + 2)]
    interactions = _df(spark, rows)
    split, _ = split_interactions(interactions, "loo")
    items, users = build_item_index(interactions), build_user_index(interactions)
    seqs = build_sequences(split, items, users, max_seq_len=L, stride=stride).where(f"role = {FIT}").collect()
    S = L if stride is None else stride
    trained: dict[int, list[tuple[int, int]]] = {}  # user -> (target item, history it saw)
    for r in seqs:
        seq, k = r["seq"], r["new_targets"]
        real = [x for x in seq if x]
        assert len(real) == r["seq_len"] and 1 <= k <= min(S, len(real) - 1)
        for pos in range(len(seq) - k, len(seq)):  # the row's own targets: its newest k
            trained.setdefault(r["user_idx"], []).append((seq[pos], sum(1 for x in seq[:pos] if x)))
    idx = {r["item_id"]: r["item_idx"] for r in items.collect()}
    uidx = {r["user_id"]: r["user_idx"] for r in users.collect()}
    for u, n in n_fit.items():
        fit_items = [idx[f"i{u}_{k}"] for k in range(n)]
        got = sorted(trained[uidx[u]], key=lambda t: fit_items.index(t[0]))
        assert [t for t, _ in got] == fit_items[1:]  # each target once, nothing else
        history = [h for _, h in got]  # of the target at 0-based position p = 1..n-1
        ends = [n - ((n - 1 - p) // S) * S for p in range(1, n)]  # (exclusive) end of the row that trains it
        assert history == [min(p, L + 1 - (e - p)) for p, e in zip(range(1, n), ends)]
        assert all(h >= min(p, L - S + 1) for h, p in zip(history, range(1, n)))
    n_rows = sum(1 for r in seqs if r["user_idx"] == uidx["u1"])
    assert n_rows == -(-(n_fit["u1"] - 1) // S)  # ceil((n - 1) / S) rows: L / S times today's
    with pytest.raises(ValueError, match="stride"):
        build_sequences(split, items, users, max_seq_len=L, stride=L + 1)


def test_the_catalogue_index_numbers_every_item_of_the_items_table(spark, tk):
    """split.candidates=catalogue: an item nobody interacted with gets an index (so it can be ranked) and no
    first interaction; interacted items keep theirs; 1..N by item_id over both tables."""
    catalogue = spark.createDataFrame([(i,) for i in ["a", "b", "c", "m", "n", "v", "w", "z"]], "item_id string")
    got = {r["item_id"]: (r["item_idx"], r["first_ts_ms"]) for r in build_item_index(tk, catalogue).collect()}
    assert [got[i][0] for i in sorted(got)] == list(range(1, 9))
    assert got["m"][1] is None and got["z"][1] is None  # in the catalogue, never interacted
    assert got["a"][1] == _day(1) and got["c"][1] == _day(15)
    assert set(build_item_index(tk).toPandas()["item_id"]) == {"a", "b", "c", "n", "v", "w"}  # interacted only


def test_popularity_counts_never_see_the_test_week(spark, tk):
    """The popularity baseline ranks by `prior` (interactions before t_k): a test-week interaction, even of an
    item nobody had watched, changes neither it nor the fit counts."""
    catalogue = spark.createDataFrame([(i,) for i in ["a", "b", "c", "m", "n", "v", "w"]], "item_id string")
    late = tk.unionByName(_df(spark, [("u3", "m", _day(18)), ("u2", "a", _day(19)), ("u1", "b", _day(20.5))]))
    counts = []
    for data in (tk, late):
        split, _ = split_interactions(data, "rolling", num_windows=1, window_days=7, start="2024-01-15")
        items = build_item_index(data, catalogue)
        counts.append(item_counts(split, items, [0], num_items=7)[0])
    for role in ("fit", "prior"):
        assert counts[0][role].tolist() == counts[1][role].tolist(), role
    idx = {r["item_id"]: r["item_idx"] for r in build_item_index(tk, catalogue).collect()}
    assert counts[1]["prior"][idx["a"]] == 3 and counts[1]["prior"][idx["m"]] == 0


def test_feature_statistics_come_from_items_seen_before_tk(spark, tk):
    """Issue 20.5: the z-score mean / std use only the items seen before t_0 (the first window's test start):
    changing the vector of an item first seen at or after t_0 leaves every other item's standardised vector
    as it was. Without that restriction it moves them (the check can fail)."""
    import numpy as np

    from captionrec.training.candidates import NEVER, seen_before
    from captionrec.transforms.item_features import item_feature_matrix

    catalogue = spark.createDataFrame([(i,) for i in ["a", "b", "c", "m", "n", "v", "w"]], "item_id string")
    items = build_item_index(tk, catalogue)
    indexed = items.orderBy("item_idx").collect()
    first = np.array([NEVER] + [NEVER if r["first_ts_ms"] is None else r["first_ts_ms"] for r in indexed])
    before = seen_before(first, _day(14))  # a, b (fit) and v (validation week)
    idx = {r["item_id"]: r["item_idx"] for r in indexed}
    assert sorted(i for i, k in idx.items() if before[k]) == ["a", "b", "v"]

    def matrix(c_vector, stats):
        vecs = {"a": [1.0, 0.0], "b": [3.0, 2.0], "v": [2.0, 7.0], "c": c_vector, "m": [5.0, 5.0], "n": [0.0, 1.0]}
        rows = [(i, "title", "m1", v) for i, v in vecs.items()]
        feats = spark.createDataFrame(rows, "item_id string, feature_set string, model_id string, vector array<float>")
        return item_feature_matrix(feats, items, ["title"], num_items=7, stats_items=stats).matrix

    x, y = matrix([0.0, 0.0], before), matrix([1000.0, -1000.0], before)
    others = [k for i, k in idx.items() if i != "c"]
    np.testing.assert_array_equal(x[others], y[others])
    ref = np.array([[1.0, 0.0], [3.0, 2.0], [2.0, 7.0]])
    np.testing.assert_allclose(x[idx["m"]], (np.array([5.0, 5.0]) - ref.mean(0)) / ref.std(0), rtol=1e-5)
    assert not np.allclose(matrix([0.0, 0.0], None)[others], matrix([1000.0, -1000.0], None)[others])
