"""Probing video files with PyAV in parallel Arrow batches (`spark.udf.map_rows`, declared output types)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pyspark.sql import DataFrame

from captionrec import contracts as C
from captionrec.paths import to_local_path
from captionrec.spark.udf import map_rows


def probe_rows(rows: Iterator[dict[str, Any]], batch_size: int = 16) -> Iterator[list[dict[str, Any]]]:
    """Probe each (item_id, video_path) row with PyAV; a bad file yields its reason, never an exception.
    The rows are files just listed, so one that can't be opened at all is a transient `probe_error`
    (retried by the next run), never a permanent `missing_file`.

    Spark-free (the `map_rows` worker of `probe_videos`); yields lists of `contracts.PROBE_ROWS` rows.
    """
    from captionrec.media import MediaError, probe

    out: list[dict[str, Any]] = []
    for row in rows:
        item_id, path = row["item_id"], row["video_path"]
        rec: dict[str, Any] = {"item_id": item_id}
        try:
            p = probe(to_local_path(path))
            rec.update(
                duration_s=p.duration_s,
                width=p.display_width,
                height=p.display_height,
                fps=p.fps,
                has_audio=p.has_audio,
                video_codec=p.video_codec,
                audio_codec=p.audio_codec,
                probe_status=C.OK,
                probe_detail=None,
            )
        except MediaError as exc:
            if exc.reason == C.MISSING_FILE:  # it was just listed: unreachable now is transient, not missing
                rec.update(probe_status=C.PROBE_ERROR, probe_detail=f"listed, but could not be read: {exc}"[:500])
            else:
                rec.update(probe_status=exc.reason, probe_detail=str(exc)[:500])
        except Exception as exc:  # an unexpected decoder failure is still a per-item outcome
            rec.update(probe_status=C.PROBE_ERROR, probe_detail=f"{type(exc).__name__}: {exc}"[:500])
        out.append(rec)
        if len(out) >= batch_size:
            yield out
            out = []
    if out:
        yield out


def probe_videos(videos: DataFrame, partitions: int, batch_size: int = 16) -> DataFrame:
    """(item_id, video_path, ...) -> (item_id, probe columns) via PyAV in parallel Arrow batches."""
    return map_rows(
        videos.select("item_id", "video_path").repartition(partitions, "item_id"),
        lambda rows: probe_rows(rows, batch_size),
        C.schema(C.PROBE_ROWS),
    )
