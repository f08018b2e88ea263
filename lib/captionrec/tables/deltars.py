"""delta-rs backend: Delta tables written by `deltalake` (no JVM Delta), read by Spark.

Reads: Spark reads exactly the table version's live parquet files (`DeltaTable.file_uris()`) with the
table's schema; reading the folder as plain parquet would also return files a MERGE or overwrite
removed. Time travel opens `DeltaTable(path, version=v)`. Spark must be able to open the file URIs: on a
cluster, s3:// needs a Hadoop filesystem for that scheme (EMR has one; OSS Spark: fs.s3.impl=S3AFileSystem).
Tables with deletion vectors or column mapping (written by Delta Spark) are refused with a clear error.

Writes: one commit each, from the driver (retried when a concurrent writer wins the race, see base.py): the DataFrame is collected as Arrow (`df.toArrow()`) and
written with `write_deltalake` / `DeltaTable.merge`. The whole write passes through driver memory
(fine for this project's tables: items, interactions, captions, feature vectors of a few 100k items;
give the driver memory accordingly, or use the delta-spark backend on a cluster for bigger tables).

Tables stay on protocol (reader 1, writer 2), readable by any Delta reader: timestamps are stored as
Delta `timestamp` (UTC; naive timestamp_ntz values are taken as UTC), every column is nullable (as
Delta Spark writes them), and Arrow view/large/fixed-size types map to their plain Delta types.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import unquote

from captionrec.tables.base import (
    MergeResult,
    TableNotFoundError,
    TableStore,
    align_to_schema,
    check_keys,
    check_name,
    history_entry,
    merge_predicate,
    ntz_to_utc,
    resolve_root,
)

if TYPE_CHECKING:
    import pyarrow as pa
    from deltalake import DeltaTable
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

# Table features whose data Spark can't read correctly from the plain parquet files.
_UNREADABLE_FEATURES = {"deletionVectors", "columnMapping"}


def normalize_arrow_type(t: "pa.DataType") -> "pa.DataType":
    """Arrow type -> the type delta-rs stores as the matching plain Delta type (all nullable)."""
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_string_view(t) or pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_binary_view(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_dictionary(t):
        return normalize_arrow_type(t.value_type)
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_fixed_size_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return pa.list_(pa.field("element", normalize_arrow_type(t.value_type), nullable=True))
    if pa.types.is_map(t):
        return pa.map_(
            pa.field("key", normalize_arrow_type(t.key_type), nullable=False),
            pa.field("value", normalize_arrow_type(t.item_type), nullable=True),
        )
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, normalize_arrow_type(f.type), nullable=True) for f in t])
    return t


def normalize_arrow(tbl: "pa.Table") -> "pa.Table":
    import pyarrow as pa

    schema = pa.schema([pa.field(f.name, normalize_arrow_type(f.type), nullable=True) for f in tbl.schema])
    return tbl if schema.equals(tbl.schema) else tbl.cast(schema)


def dedupe_arrow_last(tbl: "pa.Table", keys: Sequence[str]) -> "pa.Table":
    """Reject null keys; keep the last row per key, surviving rows in their original order."""
    import pyarrow as pa
    import pyarrow.compute as pc

    nulls = [k for k in keys if tbl.column(k).null_count]
    if nulls:
        raise ValueError(f"source has rows with a null key in {nulls}: null keys never match in MERGE")
    n = tbl.num_rows
    idx = "__captionrec_row"
    g = tbl.select(list(keys)).append_column(idx, pa.array(range(n), pa.int64()))
    last = g.group_by(list(keys), use_threads=False).aggregate([(idx, "max")])[f"{idx}_max"]
    if len(last) == n:
        return tbl
    last = last.combine_chunks()
    return tbl.take(pc.take(last, pc.array_sort_indices(last)))


class DeltaRsStore(TableStore):
    """Tables at `<root>/<name>` (a local path or an s3:// / abfss:// / gs:// / file:// URI)."""

    backend = "delta-rs"

    def __init__(
        self, spark: "SparkSession", root: str, storage_options: Mapping[str, str] | None = None, **policy: int | float
    ):
        super().__init__(spark, **policy)  # type: ignore[arg-type]
        self.root = resolve_root(root)
        bad = sorted(set(self.root) & set("[]{}*?"))
        if bad:  # delta-rs rejects them in URLs, Spark would read them as glob patterns
            raise ValueError(f"storage root {self.root!r} contains {bad}: use a path without []{{}}*?")
        self.storage_options = dict(storage_options) if storage_options else None

    # -- locations and metadata ----------------------------------------------------------------
    def location(self, name: str) -> str:
        return f"{self.root}/{check_name(name)}"

    def exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.location(name), storage_options=self.storage_options)

    def _open(self, name: str, version: int | None = None, without_files: bool = False) -> "DeltaTable":
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError as _RsNotFound

        loc = self.location(name)
        if not self.exists(name):
            raise TableNotFoundError(name, loc)
        try:
            return DeltaTable(loc, version=version, storage_options=self.storage_options, without_files=without_files)
        except _RsNotFound as exc:
            raise TableNotFoundError(name, loc) from exc
        except Exception as exc:
            if version is not None:
                raise ValueError(f"table {name!r} has no version {version} (at {loc}): {exc}") from exc
            raise

    @staticmethod
    def _spark_schema(dt: "DeltaTable") -> "StructType":
        from pyspark.sql.types import StructType

        return StructType.fromJson(json.loads(dt.schema().to_json()))

    def _check_readable(self, name: str, dt: "DeltaTable") -> None:
        proto = dt.protocol()
        feats = set(proto.reader_features or []) & _UNREADABLE_FEATURES
        mode = (dt.metadata().configuration or {}).get("delta.columnMapping.mode")
        if mode and mode != "none":
            feats.add("columnMapping")
        if feats:
            raise NotImplementedError(
                f"table {name!r} uses Delta feature(s) {sorted(feats)}, which the delta-rs backend can't read "
                f"through Spark's parquet reader; use storage.backend=delta-spark"
            )

    def version(self, name: str) -> int | None:
        if not self.exists(name):
            return None
        return self._open(name, without_files=True).version()

    def history(self, name: str, limit: int | None = None) -> list[dict]:
        dt = self._open(name, without_files=True)
        return [
            history_entry(
                h["version"],
                h.get("timestamp"),
                h.get("operation"),
                h.get("operationParameters"),
                h.get("operationMetrics"),
            )
            for h in dt.history(limit)
        ]

    # -- reads ---------------------------------------------------------------------------------
    def read(self, name: str, version: int | None = None) -> "DataFrame":
        dt = self._open(name, version=version)
        self._check_readable(name, dt)
        schema = self._spark_schema(dt)
        uris = [unquote(u) for u in dt.file_uris()]  # delta-rs percent-encodes ("a b" -> "a%20b")
        if not uris:
            return self.spark.createDataFrame([], schema)
        reader = self.spark.read.schema(schema)
        if dt.metadata().partition_columns:  # values live in the paths (col=value/)
            reader = reader.option("basePath", self.location(name))
        return reader.parquet(*uris)

    def count(self, name: str) -> int:
        import pyarrow as pa

        dt = self._open(name)
        self._check_readable(name, dt)
        n = pa.table(dt.get_add_actions(flatten=True))["num_records"]
        if n.null_count == 0:  # every file has stats: no scan needed
            return int(sum(n.to_pylist()))
        return self.read(name).count()

    # -- writes --------------------------------------------------------------------------------
    def _to_arrow(self, df: "DataFrame") -> "pa.Table":
        return normalize_arrow(ntz_to_utc(df).toArrow())

    def is_conflict(self, exc: BaseException) -> bool:
        from deltalake.exceptions import CommitFailedError, DeltaError

        if isinstance(exc, CommitFailedError):
            return True
        # an exclusive create that found the table already made by a concurrent writer
        return isinstance(exc, DeltaError) and "already exists" in str(exc)

    def num_files(self, name: str) -> int:
        return len(self._open(name).file_uris())

    def optimize(self, name: str, zorder_by: Sequence[str] = ()) -> dict:
        def attempt() -> dict:
            dt = self._open(name)
            opt = dt.optimize
            m = opt.z_order(list(zorder_by)) if zorder_by else opt.compact()
            return {
                "files_removed": int(m.get("numFilesRemoved", 0)),
                "files_added": int(m.get("numFilesAdded", 0)),
                "version": dt.version(),
            }

        return self.with_retries(name, "OPTIMIZE", attempt)

    def _write(self, name: str, tbl: "pa.Table", mode: str, overwrite_schema: bool = False) -> int:
        """One commit. mode "error": create the table exclusively (a concurrent creator makes this fail
        instead of delta-rs rebasing it into an append on the winner's table)."""
        from deltalake import CommitProperties, write_deltalake

        write_deltalake(
            self.location(name),
            tbl,
            mode=mode,
            schema_mode="overwrite" if overwrite_schema else None,
            storage_options=self.storage_options,
            commit_properties=CommitProperties(max_commit_retries=0) if mode == "error" else None,
        )
        return self._open(name, without_files=True).version()

    def _prepare(self, name: str, df: "DataFrame") -> "DataFrame":
        """Existing table: the DataFrame's columns aligned to the table's schema."""
        if self.exists(name):
            dt = self._open(name, without_files=True)
            return align_to_schema(df, self._spark_schema(dt), name)
        return df

    def append(self, name: str, df: "DataFrame") -> int:
        def attempt() -> int:
            return self._write(name, self._to_arrow(self._prepare(name, df)), "append")

        version = self.with_retries(name, "append", attempt)
        self.after_write(name)
        return version

    def overwrite(self, name: str, df: "DataFrame") -> int:
        tbl = self._to_arrow(df)
        version = self.with_retries(name, "overwrite", lambda: self._write(name, tbl, "overwrite", self.exists(name)))
        self.after_write(name)
        return version

    def _merge(self, name: str, df: "DataFrame", keys: Sequence[str], update: bool) -> MergeResult:
        keys = check_keys(df, keys)

        def attempt() -> MergeResult:
            return self._merge_arrow_once(name, self._to_arrow(self._prepare(name, df)), keys, update)

        result = self.with_retries(name, "MERGE", attempt)
        if result.inserted or result.updated:
            self.after_write(name)
        return result

    def merge_arrow(self, name: str, tbl: "pa.Table", keys: Sequence[str], update: bool = True) -> MergeResult:
        """`upsert` (or, update=False, `insert_missing`) of an Arrow table, no Spark involved: for driver-side
        commits of data already in Arrow. Columns must be the table's (any order)."""
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in tbl.column_names]
        if not keys or missing:
            raise ValueError(f"key column(s) {missing or keys} not in the Arrow table (columns: {tbl.column_names})")

        def attempt() -> MergeResult:
            src = normalize_arrow(tbl)
            if self.exists(name):
                import pyarrow as pa

                target = pa.schema(self._open(name, without_files=True).schema().to_arrow())
                if set(src.column_names) != set(target.names):
                    raise ValueError(
                        f"columns don't match table {name!r}: {sorted(src.column_names)} vs {sorted(target.names)}"
                    )
                src = normalize_arrow(src.select(target.names).cast(target))
            return self._merge_arrow_once(name, src, keys, update)

        result = self.with_retries(name, "MERGE", attempt)
        if result.inserted or result.updated:
            self.after_write(name)
        return result

    def _merge_arrow_once(self, name: str, tbl: "pa.Table", keys: list[str], update: bool) -> MergeResult:
        tbl = dedupe_arrow_last(tbl, keys)
        if not self.exists(name):  # MERGE into nothing: the table is created (exclusively) with every source row
            version = self._write(name, tbl, mode="error")
            return MergeResult(inserted=tbl.num_rows, updated=0, version=version)
        dt = self._open(name)
        if tbl.num_rows == 0:
            return MergeResult(inserted=0, updated=0, version=dt.version())
        merger = dt.merge(tbl, merge_predicate(keys), source_alias="s", target_alias="t")
        if update:
            merger = merger.when_matched_update_all()
        metrics = merger.when_not_matched_insert_all().execute()
        return MergeResult(
            inserted=int(metrics.get("num_target_rows_inserted", 0)),
            updated=int(metrics.get("num_target_rows_updated", 0)),
            version=dt.version(),
        )
