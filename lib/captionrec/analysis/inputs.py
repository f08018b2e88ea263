"""What the analysis reads: the items, captions and item_features tables (through the project's TableStore,
as pandas frames of at most `analyze.max_items` items) and the topic labels.

Only this module touches Spark (through the DataFrames the store returns, imported lazily); the metrics
modules take the pandas frames. A missing table is a note, never an error: the sections say what they lack.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from captionrec import contracts as C

if TYPE_CHECKING:
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)

ITEM_COLUMNS = ("item_id", "title", "has_audio", "probe_status")
FEATURE_COLUMNS = ("item_id", "feature_set", "model_id", "source_version", "vector")


@dataclass
class Inputs:
    items: pd.DataFrame  # ITEM_COLUMNS
    captions: pd.DataFrame  # the captions table's columns
    features: pd.DataFrame  # FEATURE_COLUMNS (vector: a float array per row)
    topics: pd.Series | None = None  # item_id -> topic; None: no labels
    topics_note: str = ""  # why there are no labels (or where they came from)
    total_items: int = 0  # items in the table (the frames hold at most analyze.max_items of them)
    notes: list[str] = field(default_factory=list)

    @property
    def titles(self) -> pd.Series:
        return self.items.set_index("item_id")["title"] if len(self.items) else pd.Series(dtype=object)


def empty(name: str, columns: tuple[str, ...] | None = None) -> pd.DataFrame:
    """An empty frame with a table's columns (or the given ones)."""
    return pd.DataFrame(columns=list(columns or C.columns(name)))


# ----------------------------------------------------------------------------------------------- labels


def resolve_labels(labels: str, data_source: str) -> tuple[str | None, str]:
    """analyze.labels -> (path or None, note). "auto": <data.source>/manifest.json when it exists."""
    if not labels or labels.lower() == "none":
        return None, "no topic labels (analyze.labels is none)"
    if labels == "auto":
        candidate = str(data_source).rstrip("/") + "/manifest.json"
        if _exists(candidate):
            return candidate, f"topics from {candidate} (analyze.labels=auto)"
        return None, (
            f"no topic labels: analyze.labels=auto and {candidate} does not exist (set analyze.labels to a "
            "manifest.json, a JSON {item_id: topic} or a CSV with columns item_id,topic)"
        )
    return labels, f"topics from {labels}"


def _is_uri(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path: str) -> Path:
    return Path(path[len("file://") :] if path.startswith("file://") else path)


def _exists(path: str) -> bool:
    if not _is_uri(path):
        return _local(path).is_file()
    try:
        import pyarrow.fs as pafs

        fs, p = pafs.FileSystem.from_uri(path)
        return fs.get_file_info(p).type == pafs.FileType.File
    except Exception as exc:  # an unreadable location is "no labels", said in the note by the caller
        log.warning("cannot check %s: %s", path, exc)
        return False


def _read_bytes(path: str) -> bytes:
    if not _is_uri(path):
        return _local(path).read_bytes()
    import pyarrow.fs as pafs

    fs, p = pafs.FileSystem.from_uri(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def parse_labels(data: bytes, name: str) -> pd.Series:
    """item_id -> topic from a manifest.json (items.<id>.topic), a JSON object {id: topic} or a CSV item_id,topic."""
    if name.lower().endswith(".csv"):
        df = pd.read_csv(io.BytesIO(data), dtype=str)
        missing = {"item_id", "topic"} - set(df.columns)
        if missing:
            raise ValueError(f"labels CSV {name} lacks column(s) {sorted(missing)} (needs item_id,topic)")
        df = df.dropna(subset=["item_id", "topic"])
        return pd.Series(df["topic"].to_numpy(), index=df["item_id"].astype(str).to_numpy(), name="topic")
    obj = json.loads(data)
    if isinstance(obj, dict) and isinstance(obj.get("items"), dict):
        pairs = {str(k): v.get("topic") for k, v in obj["items"].items() if isinstance(v, dict)}
    elif isinstance(obj, dict) and all(isinstance(v, str) for v in obj.values()):
        pairs = {str(k): v for k, v in obj.items()}
    else:
        raise ValueError(
            f"labels file {name}: neither a manifest (items.<id>.topic) nor a JSON object {{item_id: topic}}"
        )
    out = pd.Series({k: v for k, v in pairs.items() if v}, dtype=object, name="topic")
    if out.empty:
        raise ValueError(f"labels file {name} holds no topic")
    return out


def load_labels(labels: str, data_source: str) -> tuple[pd.Series | None, str]:
    """(item_id -> topic, note); no labels -> (None, why). A labels file named in the config that cannot be
    read is an error; with "auto", an unreadable manifest is a note (the data may simply have no topics)."""
    path, note = resolve_labels(labels, data_source)
    if path is None:
        return None, note
    try:
        return parse_labels(_read_bytes(path), path), note
    except (OSError, ValueError) as exc:
        if labels != "auto":
            raise ValueError(
                f"analyze.labels={labels}: cannot read topic labels ({type(exc).__name__}: {exc}); "
                "set analyze.labels to a readable file, auto or none"
            ) from exc
        log.warning("topic labels not read: %s", exc)
        return None, f"no topic labels: {path} could not be read ({type(exc).__name__}: {exc})"


# ----------------------------------------------------------------------------------------------- tables


def read_inputs(store: "TableStore", max_items: int, labels: str = "none", data_source: str = "") -> Inputs:
    """The analysed items (all, or `max_items` picked by xxhash64(item_id)), their captions and vectors."""
    from pyspark.sql import functions as F

    topics, topics_note = load_labels(labels, data_source)
    notes = []
    if not store.exists(C.ITEMS):
        notes.append("no items table yet (run `captionrec ingest`)")
        return Inputs(
            empty(C.ITEMS, ITEM_COLUMNS),
            empty(C.CAPTIONS),
            empty(C.ITEM_FEATURES, FEATURE_COLUMNS),
            topics,
            topics_note,
            0,
            notes,
        )
    items = store.read(C.ITEMS)
    items = items.select(*[c if c in items.columns else F.lit(None).alias(c) for c in ITEM_COLUMNS])
    total = items.count()
    if total > max_items:
        items = items.orderBy(F.xxhash64("item_id"), "item_id").limit(max_items)
        notes.append(f"{max_items} of {total} items analysed (picked by a hash of the item id; analyze.max_items)")
    items = items.cache()
    ids = items.select("item_id")
    frames = {}
    for name, cols in ((C.CAPTIONS, None), (C.ITEM_FEATURES, FEATURE_COLUMNS)):
        if not store.exists(name):
            notes.append(f"no {name} table yet (run `captionrec {'caption' if name == C.CAPTIONS else 'embed'}`)")
            frames[name] = empty(name, cols)
            continue
        df = store.read(name)
        df = df.select(*cols) if cols else df
        frames[name] = _pandas(df.join(ids, "item_id", "left_semi"))
    item_frame = _pandas(items)
    items.unpersist()
    return Inputs(item_frame, frames[C.CAPTIONS], frames[C.ITEM_FEATURES], topics, topics_note, int(total), notes)


def _pandas(df: Any) -> pd.DataFrame:
    out = df.toPandas()
    if "item_id" in out.columns:
        out["item_id"] = out["item_id"].astype(str)
    return out
