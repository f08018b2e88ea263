"""Training inputs every rank can read: the sequences rows, materialised through Spark (driver side).

Training processes never list or open a table's own files: on Unity Catalog a Python process gets no
credentials for a managed table's storage. Instead the driver writes the rows the ranks need (training and
evaluation rows, per window and role) with Spark's own credentials to a folder every rank can read, and
hands the ranks the list of its files:

    <inputs_dir>/<key>/data-<id>/window=<w>/role=<r>/part-*.parquet
    <inputs_dir>/<key>/_manifest/part-*.txt        one JSON line: key, identity, data folder, files per part

`key` hashes the rows' identity (the input tables' location / Delta version / commit time, the split and
sequence settings, the code version): a run whose identity is unchanged writes nothing and reuses the folder.
The manifest is written last, so a folder is used only once complete: a killed write leaves a data folder
without a manifest, which is never read (the next run writes a fresh data folder beside it).

Where `<inputs_dir>` lives (`inputs_dir_for`): `train.inputs_dir`, else `${storage.cache_dir}/train_inputs`
(Databricks: the cache Volume), else `<storage.root>/_train_inputs` for path-addressed tables (a spark-submit
cluster's shared lakehouse: s3a:// or a shared mount; locally a folder beside the tables). Catalog tables with
neither setting, or a cluster whose root is a relative (driver-local) path, are an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from captionrec.paths import has_scheme, join
from captionrec.transforms.petastorm import is_local_master

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from captionrec.config.schema import StorageConfig
    from captionrec.training.loaders import SequenceSource

log = logging.getLogger(__name__)

LAYOUT = 1  # bump when the materialised columns or folder layout change
MANIFEST = "_manifest"
# What the ranks read (training: user_idx, seq, new_targets; evaluation: the rest); window/role are the folders.
COLUMNS = ("user_idx", "chunk", "seq", "new_targets", "target", "cold", "repeat", "seen")


def inputs_dir_for(master: str, configured: str | None, storage: "StorageConfig") -> str:
    """Where training inputs are materialised (see the module docstring for the order)."""
    import os

    if configured:
        return configured if has_scheme(configured) else os.path.abspath(configured)
    if storage.cache_dir:
        return join(storage.cache_dir, "train_inputs")
    local = is_local_master(master)
    if storage.catalog or storage.schema:
        raise ValueError(
            f"training inputs need a folder every training process can read, and catalog tables "
            f"({storage.catalog}.{storage.schema}) have no path root to put it under: set train.inputs_dir or "
            f"storage.cache_dir (on Databricks a Volume, e.g. /Volumes/<catalog>/<schema>/cache)"
        )
    root = storage.root
    if not has_scheme(root) and not os.path.isabs(root) and not local:
        raise ValueError(
            f"training on a cluster (master {master!r}) needs training inputs on storage every training process "
            f"can read, and storage.root={root!r} is a path on the driver's disk: set train.inputs_dir (an s3a:// "
            f"URI or a shared mount) or storage.cache_dir"
        )
    if not has_scheme(root):
        root = os.path.abspath(root)
    return join(root, "_train_inputs")


def inputs_key(identity: Mapping[str, Any]) -> str:
    """The folder name for rows of this identity (a hash of its canonical JSON)."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class TrainInputs:
    """A complete materialisation: `parts` maps (window, role) to its files, as paths the ranks open."""

    folder: str  # <inputs_dir>/<key>
    key: str
    parts: dict[tuple[int, int], tuple[str, ...]]
    reused: bool
    seconds: float  # spent finding (and, unless reused, writing) it


def _canonical(identity: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(identity, sort_keys=True, default=str))


def _committed(spark: "SparkSession", pattern: str) -> list[str]:
    """Files matching `pattern`, listed by Spark's own Hadoop filesystem (the credentials Spark writes with)."""
    sc = spark.sparkContext
    path = sc._jvm.org.apache.hadoop.fs.Path(pattern)
    statuses = path.getFileSystem(sc._jsc.hadoopConfiguration()).globStatus(path)
    return [] if statuses is None else sorted(str(st.getPath().toString()) for st in statuses)


def read_manifest(spark: "SparkSession", folder: str) -> dict | None:
    """The folder's manifest, or None when there is none or it is incomplete (a killed write)."""
    files = _committed(spark, join(folder, MANIFEST, "part-*"))  # a part file appears only once Spark commits it
    if not files:
        if _committed(spark, join(folder, MANIFEST)):
            log.warning("training inputs at %s: the manifest write did not finish: writing them again", folder)
        return None
    lines = [r["value"] for r in spark.read.text(files).collect()]
    try:
        manifest = json.loads("".join(lines)) if lines else None
    except json.JSONDecodeError:
        manifest = None
    if not manifest or manifest.get("complete") is not True:
        log.warning("training inputs at %s have no complete manifest: writing them again", folder)
        return None
    return manifest


def _parts_from_manifest(folder: str, manifest: dict) -> dict[tuple[int, int], tuple[str, ...]]:
    return {(int(p["window"]), int(p["role"])): tuple(join(folder, f) for f in p["files"]) for p in manifest["parts"]}


def _relative_parts(files: Sequence[str], data: str) -> dict[tuple[int, int], list[str]]:
    """Spark's listing of a fresh data folder -> {(window, role): [data-<id>/window=w/role=r/part-...]}."""
    marker = f"/{data}/"
    out: dict[tuple[int, int], list[str]] = {}
    for f in files:
        at = f.find(marker)
        if at < 0:
            raise RuntimeError(f"Spark listed {f!r}, which is not under the data folder {data!r} it just wrote")
        rel = f[at + 1 :]
        keys = dict(seg.split("=", 1) for seg in rel.split("/") if "=" in seg)
        out.setdefault((int(keys["window"]), int(keys["role"])), []).append(rel)
    return {k: sorted(v) for k, v in out.items()}


def materialise(sequences: "DataFrame", inputs_dir: str, identity: Mapping[str, Any]) -> TrainInputs:
    """The rows of `sequences` the ranks need, written once per identity under `inputs_dir` (reused after)."""
    t0 = time.perf_counter()
    spark = sequences.sparkSession
    identity = _canonical(identity)
    key = inputs_key(identity)
    folder = join(inputs_dir, key)
    found = read_manifest(spark, folder)
    if found is not None:
        if found.get("identity") != identity:
            raise RuntimeError(
                f"training inputs at {folder} were written for another identity (a key collision): remove that folder"
            )
        log.info("training inputs: reusing %s", folder)
        return TrainInputs(folder, key, _parts_from_manifest(folder, found), True, time.perf_counter() - t0)

    data = f"data-{uuid.uuid4().hex[:12]}"
    (
        sequences.select("window", "role", *COLUMNS)
        .repartition("window", "role")
        .write.partitionBy("window", "role")
        .mode("errorifexists")
        .parquet(join(folder, data))
    )
    rel = _relative_parts(spark.read.parquet(join(folder, data)).inputFiles(), data)
    manifest = {
        "key": key,
        "identity": identity,
        "layout": LAYOUT,
        "data": data,
        "complete": True,
        "parts": [{"window": w, "role": r, "files": files} for (w, r), files in sorted(rel.items())],
    }
    _write_manifest(spark, folder, manifest)
    settled = read_manifest(spark, folder)  # a concurrent run may have committed its own first: use that one
    if settled is None:
        raise RuntimeError(f"training inputs at {folder}: the manifest just written does not read back")
    seconds = time.perf_counter() - t0
    log.info("training inputs: wrote %s (%d parts) in %.1f s", folder, len(rel), seconds)
    return TrainInputs(folder, key, _parts_from_manifest(folder, settled), False, seconds)


def _write_manifest(spark: "SparkSession", folder: str, manifest: dict) -> None:
    from pyspark.errors import AnalysisException

    line = spark.createDataFrame([(json.dumps(manifest, sort_keys=True),)], "value string").coalesce(1)
    try:
        # errorifexists: a complete manifest is never replaced. An incomplete one (killed write) was reported by
        # read_manifest; replace it.
        line.write.mode("errorifexists").text(join(folder, MANIFEST))
    except AnalysisException as exc:
        if "PATH_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
            raise
        if read_manifest(spark, folder) is None:
            line.write.mode("overwrite").text(join(folder, MANIFEST))


def make_source(
    sequences: "DataFrame",
    keys: Sequence[tuple[int, int]],
    inputs_dir: str,
    identity: Mapping[str, Any],
    loader: str = "auto",
    world: int = 1,
    cache_dir: str | None = None,
) -> "SequenceSource":
    """Driver side: materialise (or reuse) the training inputs and describe them for the ranks.

    keys: the (window, role) pairs the ranks train on (petastorm converters are made for those, from the
    materialised rows).
    """
    from captionrec.training.loaders import SequenceSource, resolve_loader

    kind = resolve_loader(loader)
    inputs = materialise(sequences, inputs_dir, identity)
    if not inputs.parts:
        raise ValueError("the sequences table has no rows (nothing to train on)")
    source = SequenceSource(
        loader=kind, parts=inputs.parts, folder=inputs.folder, reused=inputs.reused, seconds=inputs.seconds
    )
    if kind == "petastorm":
        from captionrec.transforms.petastorm import petastorm_converters

        source.converters = petastorm_converters(sequences.sparkSession, inputs.parts, keys, world, cache_dir)
    return source
