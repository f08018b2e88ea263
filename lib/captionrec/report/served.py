"""What the recommend stage serves, read back: the report's "new items served" section and `captionrec served`.

The section ("served" in `report.sections`) answers the cold-start question the captions exist for: of the items
the serving model never trained on, how many reach at least one user's top 10 in the `recommendations` table,
out of how many such items exist. It reads the table's newest write (its `run_id`: the model that scored; users
no longer active keep older rows, which are not counted), the model run in MLflow and the Delta tables:

- an item is *new to the model* when the model never trained on it: it is not in the run's item index
  (`item_index.json`: the items of the interactions snapshot it trained on, so items ingested or first interacted
  after that snapshot), or its first interaction is at or after the run's training cutoff (`train.split.start`:
  the recommend stage's refit sets it 1 ms after the newest interaction it saw and trains on those before it);
- the items that exist: the `items` table (ingested) and every item of `interactions`;
- "with a vector": the item has a vector of each of the model's feature sets in `item_features` (a feature-based
  model can score it without retraining; an ID-only model serves only items seen in training).

Without a `recommendations` table the section is one sentence saying there are none yet. `show` is what
`captionrec served` (and the end of `make demo`) prints: a few rows of `recommendations` and `similar_items`, their
row counts and versions, the registered model (name, version, alias, URI) and the same new-items line.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from captionrec import contracts as C
from captionrec.report.render import esc, html_table, md_table
from captionrec.report.sections import ReportContext, Section, section

if TYPE_CHECKING:
    from captionrec.tables import TableStore

TOP = 10  # "reaches a user's top 10"
NEW_ITEM_COLUMNS = (
    "item_id",
    "first_interaction",
    "ingested_at",
    "in_training_index",
    "has_vector",
    "users",
    "best_rank",
)


@dataclass
class NewItemsServed:
    """The section's numbers for one recommendations table version."""

    table_version: int | None
    run_id: str
    model_name: str | None
    model_version: str | None
    feature_set: str
    created_at: Any
    users: int  # users with rows from run_id
    cutoff: str | None  # the model's training cutoff (ISO), None: its whole item index counts as trained
    trained_items: int  # items of the model's item index before the cutoff
    items: pd.DataFrame  # one row per item new to the model (NEW_ITEM_COLUMNS)

    @property
    def new_items(self) -> int:
        return len(self.items)

    @property
    def with_vector(self) -> int:
        return int(self.items["has_vector"].sum()) if len(self.items) else 0

    @property
    def served(self) -> int:
        return int((self.items["users"] > 0).sum()) if len(self.items) else 0

    def line(self) -> str:
        model = f"{self.model_name} v{self.model_version}" if self.model_version else "unregistered"
        cutoff = f"trained on interactions before {self.cutoff}" if self.cutoff else "trained on its item index"
        where = f"recommendations Delta version {self.table_version}, run {self.run_id} ({model}, {cutoff})"
        if not self.new_items:
            return f"none: the serving model trained on every item that exists ({self.users} user(s)); {where}"
        return (
            f"{self.served} of {self.new_items} item(s) the serving model never trained on appear in at least one "
            f"user's top {TOP} ({self.with_vector} of them have a {self.feature_set} vector; {self.users} user(s)); "
            f"{where}"
        )


def new_items_frame(
    items: pd.DataFrame, trained_ids: set[str], cutoff_ms: int | None, with_vector: set[str], top: pd.DataFrame
) -> pd.DataFrame:
    """One row per item new to the model (NEW_ITEM_COLUMNS), most-served first.

    items: item_id, first_ms (first interaction, NaN: none), ingested_at (NaT: not in `items`); top: item_id,
    users (distinct users with it in their top 10), best_rank."""
    df = items.assign(item_id=items["item_id"].astype(str))
    df["in_training_index"] = df["item_id"].isin(trained_ids)
    late = df["first_ms"].notna() & (df["first_ms"] >= cutoff_ms) if cutoff_ms is not None else False
    df = df[~df["in_training_index"] | late].copy()
    df["has_vector"] = df["item_id"].isin(with_vector)
    df = df.merge(top.assign(item_id=top["item_id"].astype(str)), on="item_id", how="left")
    df["users"] = df["users"].fillna(0).astype(int)
    df["first_interaction"] = pd.to_datetime(df["first_ms"], unit="ms", utc=True)
    df = df.sort_values(["users", "best_rank", "item_id"], ascending=[False, True, True], na_position="last")
    return df[list(NEW_ITEM_COLUMNS)].reset_index(drop=True)


def _model_run(tracking_uri: str, run_id: str) -> tuple[set[str], str | None]:
    """(the run's item index ids, its training cutoff `train.split.start` or None)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run_id, C.ITEM_INDEX_ARTIFACT, tmp)
        ids = {str(i) for i in json.loads(Path(path).read_text())["item_ids"]}
    start = run.data.params.get("train.split.start") or None
    return ids, start


def _to_ms(iso: str) -> int:
    t = dt.datetime.fromisoformat(iso)
    return int((t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _catalogue(store: "TableStore", feature_set: str) -> tuple[pd.DataFrame, set[str]]:
    """(item_id, first_ms, ingested_at of every item in `items` or `interactions`; the items with a vector of each
    of the model's feature sets)."""
    from pyspark.sql import functions as F

    parts = [p for p in feature_set.split("+") if p != C.ID]
    first = store.read(C.INTERACTIONS).groupBy("item_id").agg(F.min("ts_ms").alias("first_ms")).toPandas()
    if store.exists(C.ITEMS):
        ingested = store.read(C.ITEMS).select("item_id", "ingested_at").toPandas()
    else:
        ingested = pd.DataFrame({"item_id": pd.Series(dtype=str), "ingested_at": pd.Series(dtype="datetime64[ns]")})
    items = ingested.merge(first, on="item_id", how="outer")
    with_vector: set[str] | None = set() if not parts or not store.exists(C.ITEM_FEATURES) else None
    if with_vector is None:
        feats = store.read(C.ITEM_FEATURES).where(F.col("vector").isNotNull())
        for part in parts:
            part_ids = feats.where(F.col("feature_set") == part).select("item_id").distinct().collect()
            ids = {r["item_id"] for r in part_ids}
            with_vector = ids if with_vector is None else with_vector & ids
    return items, with_vector or set()


def new_items_served(store: "TableStore", tracking_uri: str, table: str = C.RECOMMENDATIONS) -> NewItemsServed | None:
    """The section's numbers from the table's current version and its newest write's model run (None: no table or
    no rows). Raises when the model run or its item index cannot be read (the numbers would be meaningless)."""
    from pyspark.sql import functions as F

    if not store.exists(table):
        return None
    version = store.version(table)
    recs = store.read(table, version=version)
    newest = recs.orderBy(F.col("created_at").desc()).first()
    if newest is None:
        return None
    mine = recs.where(F.col("run_id") == newest["run_id"])
    users = mine.select("user_id").distinct().count()
    top = (
        mine.where((F.col("rank") <= TOP) & F.col("item_id").isNotNull())
        .groupBy("item_id")
        .agg(F.countDistinct("user_id").alias("users"), F.min("rank").alias("best_rank"))
        .toPandas()
    )
    trained, cutoff = _model_run(tracking_uri, newest["run_id"])
    items, with_vector = _catalogue(store, newest["feature_set"])
    cutoff_ms = _to_ms(cutoff) if cutoff else None
    frame = new_items_frame(items, trained, cutoff_ms, with_vector, top)
    n_trained = len(trained) - int(frame["in_training_index"].sum())
    return NewItemsServed(
        version,
        newest["run_id"],
        newest["model_name"],
        newest["model_version"],
        newest["feature_set"],
        newest["created_at"],
        users,
        cutoff,
        n_trained,
        frame,
    )


@section("served")
def served_section(ctx: ReportContext) -> Section | None:
    """New items served (module docstring). Left out when the caller handed in no TableStore."""
    store = ctx.extras.get("store")
    if store is None:
        return None
    table = ctx.extras.get("recommendations_table", C.RECOMMENDATIONS)
    got = new_items_served(store, ctx.runset.tracking_uri, table)
    title = "New items served"
    if got is None:
        text = f"No recommendations yet: the `{table}` table does not exist or is empty (run `captionrec recommend`)."
        return Section("served", title, text + "\n", f"<p>{esc(text)}</p>")
    facts = [
        ("new items served", got.line()),
        ("model", f"{got.feature_set}; trained on {got.trained_items} item(s)"),
        ("written", str(got.created_at)),
    ]
    shown = got.items.head(20)
    md = "".join(f"- **{k}**: {v}\n" for k, v in facts)
    html = "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts) + "</dl>"
    if len(shown):
        header = list(NEW_ITEM_COLUMNS)
        rows = [[str(v) for v in r] for r in shown.itertuples(index=False)]
        note = f"The items new to the model, most-served first ({len(shown)} of {got.new_items}; all in served.csv)."
        md += f"\n{note}\n\n" + md_table(header, rows)
        html += f"<p>{esc(note)}</p>" + html_table(header, rows)
    return Section("served", title, md, html, tables={"served": got.items})


# ------------------------------------------------------------------------------------ `captionrec served`


def registered_model(tracking_uri: str, registry_uri: str | None, name: str, alias: str) -> dict[str, Any] | None:
    """The alias' version of the registered model (else its newest version, alias None): name, version, alias,
    uri (what `mlflow models serve -m` takes), source, run_id, its recorded validation metric; None when the name
    is not registered."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from captionrec.serving.pyfunc import METRIC_NAME_TAG, METRIC_VALUE_TAG

    client = MlflowClient(tracking_uri, registry_uri or tracking_uri)  # unset: this store's, not the process's
    try:
        mv, uri = client.get_model_version_by_alias(name, alias), f"models:/{name}@{alias}"
    except MlflowException:
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            return None
        mv, alias = max(versions, key=lambda v: int(v.version)), None
        uri = f"models:/{name}/{mv.version}"
    tags, name_tag, value_tag = mv.tags or {}, METRIC_NAME_TAG, METRIC_VALUE_TAG
    metric = f"{tags[name_tag]} {float(tags[value_tag]):.4f}" if name_tag in tags and value_tag in tags else None
    return {
        "name": name,
        "version": str(mv.version),
        "alias": alias,
        "uri": uri,
        "source": mv.source,
        "run_id": mv.run_id,
        "validation": metric,
    }


def _rows(df: Any, n: int) -> str:
    return df.limit(n).toPandas().to_string(index=False, max_colwidth=40)


def _table_lines(store: "TableStore", table: str, order: list[str], columns: list[str], n: int) -> list[str]:
    from pyspark.sql import functions as F

    if not store.exists(table):
        return [f"{table}: none yet ({store.location(table)} does not exist; run `captionrec recommend`)"]
    df = store.read(table)
    count = df.count()
    lines = [f"{table}: {count} rows, Delta version {store.version(table)} ({store.location(table)})"]
    if count:
        first = df.orderBy(*order).select(order[0]).first()[0]  # one key's first rows: a readable slice
        part = df.where(F.col(order[0]) == first).orderBy(*order).select(*columns)
        lines += ["  " + line for line in _rows(part, n).splitlines()]
    return lines


def show(cfg: Any, store: "TableStore", n: int = 5) -> str:
    """What `captionrec served` prints (cfg: Config): both tables (row counts, versions, a few rows), the
    registered model (name, version, alias, URI) and the new-items line."""
    from captionrec.tracking.mlflow_utils import _absolute_uri

    rc, uri = cfg.recommend, _absolute_uri(cfg.tracking.tracking_uri)
    lines = _table_lines(
        store, rc.recommendations_table, ["user_id", "rank"], ["user_id", "rank", "item_id", "score", "run_id"], n
    )
    lines += _table_lines(
        store,
        rc.similar_items_table,
        ["item_id", "feature_set", "rank"],
        ["item_id", "feature_set", "rank", "neighbor_id", "score"],
        n,
    )
    model = registered_model(uri, cfg.tracking.registry_uri, rc.registered_model, rc.alias)
    if model is None:
        lines.append(f"registered model: {rc.registered_model} is not registered yet (run `captionrec recommend`)")
    else:
        alias = f"alias {model['alias']}" if model["alias"] else f"no {rc.alias} alias yet: newest version"
        lines += [
            f"registered model: {model['name']} version {model['version']} ({alias}); URI {model['uri']}",
            f"  source {model['source']} (run {model['run_id']}); validation {model['validation'] or 'not recorded'}",
        ]
    got = new_items_served(store, uri, rc.recommendations_table) if store.exists(rc.recommendations_table) else None
    if got is not None:
        lines.append(f"new items served: {got.line()}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the notebook's view


def user_view(
    store: "TableStore", user_id: str | None = None, n_history: int = 5, n_top: int = 5, table: str = C.RECOMMENDATIONS
) -> dict[str, Any] | None:
    """One user's recent history beside their top recommendations (notebooks/experiments.ipynb): {user_id,
    history: item ids, oldest first, top: item ids by rank, scores, run_id}. user_id None: of the users the
    newest write scored, the one with the most interactions (ties: the smallest id). None when there is no
    recommendations table, it has no rows, or the user has none."""
    from pyspark.sql import functions as F

    if not store.exists(table) or not store.exists(C.INTERACTIONS):
        return None
    recs = store.read(table)
    newest = recs.orderBy(F.col("created_at").desc()).select("run_id").first()
    if newest is None:
        return None
    recs = recs.where(F.col("item_id").isNotNull())
    inter = store.read(C.INTERACTIONS)
    if user_id is None:
        scored = recs.where(F.col("run_id") == newest["run_id"]).select("user_id").distinct()
        pick = inter.join(scored, "user_id").groupBy("user_id").count().orderBy(F.desc("count"), "user_id").first()
        if pick is None:
            return None
        user_id = pick["user_id"]
    top = recs.where(F.col("user_id") == str(user_id)).orderBy("rank").limit(n_top).collect()
    if not top:
        return None
    history = (
        inter.where(F.col("user_id") == str(user_id)).orderBy(F.desc("ts_ms"), "item_id").limit(n_history).collect()
    )
    return {
        "user_id": str(user_id),
        "history": [r["item_id"] for r in reversed(history)],
        "top": [r["item_id"] for r in top],
        "scores": [float(r["score"]) for r in top],
        "run_id": top[0]["run_id"],
    }
