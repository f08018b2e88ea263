"""Checking and listing source paths through Hadoop's FileSystem (any scheme the session can read: file,
s3a, abfss, gs, dbfs), and choosing one video file per item.

No silent fallback: a path that cannot be checked or a folder that cannot be listed is a `ListingError`,
raised before the stage writes anything (an empty listing would mark every known item `missing_file`).
Only a session without a JVM (Spark Connect) uses the local filesystem, and only for local or FUSE
paths (`/Volumes/...`, `/dbfs/...`, `dbfs:/` with /dbfs mounted); the log says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from captionrec.paths import is_local_or_fuse, to_local_path

log = logging.getLogger(__name__)


class ListingError(RuntimeError):
    """A source path could not be checked or listed; the stage stopped before writing anything."""


@dataclass(frozen=True)
class FileEntry:
    uri: str
    name: str
    size_bytes: int
    mtime_ms: int


@dataclass(frozen=True)
class VideoChoice:
    """The file used for an item, and any other files found for the same item id (quarantined)."""

    item_id: str
    file: FileEntry
    others: tuple[FileEntry, ...] = ()


def has_jvm(spark) -> bool:
    """False for Spark Connect sessions (no JVM handle on the client)."""
    try:
        return spark._jsc is not None
    except AttributeError:  # pyspark's PySparkAttributeError on Spark Connect
        return False


def _hadoop_fs(spark, path: str):
    hpath = spark._jvm.org.apache.hadoop.fs.Path(path)
    return hpath.getFileSystem(spark._jsc.hadoopConfiguration()), hpath


def _failure(action: str, path: str, exc: Exception) -> ListingError:
    java = getattr(exc, "java_exception", None)  # py4j: the Java exception says what went wrong
    text = str(java.toString()) if java is not None else f"{type(exc).__name__}: {exc}"
    msg = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return ListingError(
        f"cannot {action} {path} through Hadoop's FileSystem ({msg[:300]}); nothing was "
        "written. Check the path's scheme and the session's filesystem settings (spark.hadoop.fs.*, credentials)."
    )


def _local_only(path: str, action: str) -> str:
    if not is_local_or_fuse(path):
        raise ListingError(
            f"cannot {action} {path}: this session has no JVM (Spark Connect), so only local or FUSE paths "
            "(/Volumes/..., /dbfs/...) can be read here; nothing was written."
        )
    local = to_local_path(path)
    log.info("no JVM in this session (Spark Connect): %s %s through the local filesystem (%s)", action, path, local)
    return local


def path_exists(spark, path: str) -> bool:
    """Whether `path` exists; a path that cannot be checked raises `ListingError` (never False)."""
    if not has_jvm(spark):
        return os.path.exists(_local_only(path, "check"))
    try:
        fs, hpath = _hadoop_fs(spark, path)
        return bool(fs.exists(hpath))
    except Exception as exc:  # py4j errors carry the Java exception; any of them means "not checked"
        raise _failure("check", path, exc) from exc


def list_files(spark, folder: str) -> list[FileEntry]:
    """Plain files directly inside `folder` (sorted by name); an unlistable folder raises `ListingError`."""
    if not has_jvm(spark):
        return _list_local(_local_only(folder, "list"))
    try:
        fs, hpath = _hadoop_fs(spark, folder)
        out = [
            FileEntry(st.getPath().toString(), st.getPath().getName(), int(st.getLen()), int(st.getModificationTime()))
            for st in fs.listStatus(hpath)
            if st.isFile()
        ]
    except Exception as exc:
        raise _failure("list", folder, exc) from exc
    return sorted(out, key=lambda e: e.name)


def _list_local(folder: str) -> list[FileEntry]:
    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.is_file():
                st = e.stat()
                out.append(FileEntry(Path(e.path).resolve().as_uri(), e.name, st.st_size, int(st.st_mtime * 1000)))
    return sorted(out, key=lambda e: e.name)


def split_video_name(name: str, extensions: Sequence[str]) -> tuple[str, int] | None:
    """'12.MKV' -> ('12', index of '.mkv' in `extensions`); None for hidden files and other extensions."""
    if name.startswith("."):
        return None
    lower = name.lower()
    for rank, ext in enumerate(extensions):
        ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], rank
    return None


def choose_videos(files: Iterable[FileEntry], extensions: Sequence[str]) -> tuple[list[VideoChoice], int]:
    """One file per item id (the first extension in `extensions` order, then the name); -> (choices, files
    with other extensions, which are ignored)."""
    by_item: dict[str, list[tuple[int, str, FileEntry]]] = {}
    ignored = 0
    for f in files:
        parsed = split_video_name(f.name, extensions)
        if parsed is None:
            ignored += 1
            continue
        item_id, rank = parsed
        by_item.setdefault(item_id, []).append((rank, f.name, f))
    choices = []
    for item_id in sorted(by_item):
        ranked = [f for _r, _n, f in sorted(by_item[item_id], key=lambda t: (t[0], t[1]))]
        choices.append(VideoChoice(item_id, ranked[0], tuple(ranked[1:])))
    return choices, ignored
