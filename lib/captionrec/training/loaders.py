"""Reading the training inputs inside each training process: Arrow batches -> torch tensors (no Spark).

Ranks never open a table's own files (on Unity Catalog a Python process has no credentials for managed
storage): the driver materialises the rows they need through Spark (`transforms.train_inputs`) to a folder
every rank can read and hands them its file list per (window, role) in a `SequenceSource` (pickled to
every rank). Two loaders, one interface:
- pyarrow (default, any pyarrow): a rank reads the files of one (window, role) and keeps rows `rank::world`;
  training batches come from a per-rank shuffled cycle.
- petastorm (where it imports: pyarrow <= 14, e.g. Databricks ML runtimes): the driver makes one
  `make_spark_converter` dataset per (window, training role) from the materialised rows; each rank reads
  its shard with `make_torch_dataloader` (`make_batch_reader` underneath). Evaluation rows (variable-length
  `seen`) always use pyarrow.

Training iterators are infinite: the loop takes a fixed number of steps per epoch on every rank, so
uneven shards can't leave one rank waiting in an all-reduce.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from captionrec.contracts import TRAIN_BATCH_COLUMNS

log = logging.getLogger(__name__)

EVAL_COLUMNS = ("user_idx", "chunk", "seq", "target", "cold", "repeat", "seen")
LIST_COLUMNS = ("seq", "seen")


def petastorm_available() -> bool:
    """True when petastorm's Spark converter imports (it fails on pyarrow >= 16, misbehaves on 15)."""
    try:
        import pyarrow

        if int(pyarrow.__version__.split(".")[0]) >= 15:
            return False
        from petastorm.spark import make_spark_converter  # noqa: F401  (the import is the check)
    except Exception:
        return False
    return True


def resolve_loader(requested: str) -> str:
    """auto -> petastorm when available, else pyarrow; an explicit petastorm that can't import is an error."""
    if requested == "pyarrow":
        return "pyarrow"
    ok = petastorm_available()
    if requested == "petastorm" and not ok:
        raise RuntimeError(
            "loader=petastorm but petastorm does not import here (it needs pyarrow <= 14; see "
            "constraints/petastorm.txt); use loader=pyarrow or loader=auto"
        )
    if requested not in ("auto", "petastorm"):
        raise ValueError(f"loader {requested!r} is not auto | petastorm | pyarrow")
    return "petastorm" if ok else "pyarrow"


@dataclass
class SequenceSource:
    """What a rank needs to read its training inputs. Picklable."""

    loader: str  # "pyarrow" | "petastorm"
    parts: dict[tuple[int, int], tuple[str, ...]]  # (window, role) -> materialised parquet files (paths or URIs)
    folder: str = ""  # the materialisation they belong to (<inputs_dir>/<key>)
    reused: bool = False  # True when an earlier run's materialisation was reused
    seconds: float = 0.0  # driver time spent materialising (or finding) them
    converters: dict[tuple[int, int], Any] = field(default_factory=dict)  # (window, role) -> petastorm converter

    def close(self) -> None:
        """Delete petastorm's cached copies (driver side)."""
        for conv in self.converters.values():
            try:
                conv.delete()
            except Exception as exc:  # a cache already gone is fine
                log.debug("petastorm cache cleanup: %s", exc)
        self.converters = {}


# -- pyarrow reading ---------------------------------------------------------------------------------


def _filesystem(files: Sequence[str]):
    """(pyarrow filesystem, paths) for local paths, file:/dbfs: URIs and object-store URIs."""
    import pyarrow.fs as pafs

    from captionrec.paths import to_local_path

    local = [to_local_path(f) for f in files]
    if all("://" not in f for f in local):
        return pafs.LocalFileSystem(), local
    uris = [f.replace("s3a://", "s3://", 1) for f in files]  # Hadoop's s3a is pyarrow's s3
    fs, _ = pafs.FileSystem.from_uri(uris[0])
    return fs, [pafs.FileSystem.from_uri(u)[1] for u in uris]


def _list_to_matrix(column, width: int | None = None) -> np.ndarray:
    """A list<int> column -> (rows, width) int64, right-padded with 0 (width: the longest list)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    values = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.int64)
    lengths = offsets[1:] - offsets[:-1]
    if width is None:
        width = int(lengths.max()) if n else 0
    if n and (lengths == width).all():
        return values.reshape(n, width)
    out = np.zeros((n, max(width, 1)), dtype=np.int64)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(len(values)) - np.repeat(offsets[:-1] - offsets[0], lengths)
    out[rows, cols] = values
    return out


def _to_numpy(table, columns: Sequence[str]) -> dict[str, np.ndarray]:
    import pyarrow as pa

    out: dict[str, np.ndarray] = {}
    for name in columns:
        col = table.column(name)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            out[name] = _list_to_matrix(col)
        else:
            out[name] = np.asarray(col.to_numpy(), dtype=np.int64)
    return out


def _read_sorted(files: Sequence[str], columns: Sequence[str], sort_keys: Sequence[str], flt=None):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    fs, paths = _filesystem(files)
    dataset = ds.dataset(list(paths), format="parquet", filesystem=fs)
    wanted = list(dict.fromkeys([*columns, *sort_keys]))
    table = dataset.to_table(columns=wanted, filter=flt)
    if table.num_rows:
        table = table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in sort_keys]))
    return table


def read_part(files: Sequence[str], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The rows of one materialised (window, role) part as numpy: ints -> (R,), list columns -> (R, width)
    0-padded, sorted by (user_idx, chunk) so every process sees the same order. No files: no rows."""
    if not files:
        return {c: np.zeros((0, 1) if c in LIST_COLUMNS else (0,), dtype=np.int64) for c in columns}
    return _to_numpy(_read_sorted(files, columns, ("user_idx", "chunk")), columns)


def read_rows(
    files: Sequence[str],
    window: int,
    roles: Sequence[int],
    columns: Sequence[str] = ("user_idx", "seq"),
) -> dict[str, np.ndarray]:
    """Rows of one window and role(s) of parquet files holding every window and role (window and role
    columns), sorted by (role, user_idx, chunk). Offline tools only (bench/): ranks read `read_part`."""
    import pyarrow.dataset as ds

    flt = (ds.field("window") == window) & ds.field("role").isin(list(roles))
    return _to_numpy(_read_sorted(files, columns, ("role", "user_idx", "chunk"), flt), columns)


def shard_rows(rows: dict[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """Rows rank::world of every column."""
    return {k: v[rank::world] for k, v in rows.items()}


def _pyarrow_batches(rows: dict[str, np.ndarray], batch_size: int, seed: int) -> Iterator[dict[str, torch.Tensor]]:
    n = len(rows["seq"])
    if n == 0:
        raise ValueError("no training rows for this window")
    rng = np.random.default_rng(seed)
    cols = {k: torch.from_numpy(rows[k]) for k in TRAIN_BATCH_COLUMNS}
    while True:
        perm = rng.permutation(n)
        for i in range(0, n, batch_size):
            idx = torch.from_numpy(perm[i : i + batch_size])
            if len(idx) < batch_size and n >= batch_size:  # top up the ragged tail from the next cycle
                idx = torch.cat([idx, torch.from_numpy(rng.permutation(n)[: batch_size - len(idx)])])
            yield {k: v[idx] for k, v in cols.items()}  # seq (B, L + 1), user_idx and new_targets (B,)


def _petastorm_batches(
    converter, rank: int, world: int, batch_size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    with converter.make_torch_dataloader(
        batch_size=batch_size,
        num_epochs=None,
        workers_count=1,
        cur_shard=rank,
        shard_count=world,
        shuffling_queue_capacity=4 * batch_size,
        seed=seed,
    ) as loader:
        for batch in loader:
            yield {k: batch[k].long() for k in TRAIN_BATCH_COLUMNS}


def train_batches(
    source: SequenceSource, window: int, role: int, rank: int, world: int, batch_size: int, seed: int
) -> Iterator[dict[str, torch.Tensor]]:
    """An endless iterator of this rank's training batches of (window, role):
    {'seq': (B, L + 1) long, 'user_idx': (B,) long, 'new_targets': (B,) long}."""
    if source.loader == "petastorm":
        if (window, role) not in source.converters:
            raise KeyError(f"no petastorm converter for window {window}, role {role}")
        return _petastorm_batches(source.converters[(window, role)], rank, world, batch_size, seed + rank)
    rows = read_part(source.parts.get((window, role), ()), TRAIN_BATCH_COLUMNS)
    total = len(rows["seq"])
    # Fewer rows than ranks: every rank trains on all of them rather than on nothing.
    mine = shard_rows(rows, rank, world) if total >= world else rows
    return _pyarrow_batches(mine, batch_size, seed + 1000 * rank)


def eval_rows(source: SequenceSource, window: int, role: int, rank: int = 0, world: int = 1) -> dict[str, np.ndarray]:
    """This rank's evaluation cases: seq (R, L + 1), target, cold, repeat, user_idx, chunk (R,), seen (R, S)."""
    rows = read_part(source.parts.get((window, role), ()), EVAL_COLUMNS)
    return shard_rows(rows, rank, world)
