"""Rows the caption-stage tests put into `items`: the ingest-stage columns the caption stage reads (shared by
tests/pipeline/test_caption_pipeline.py and tests/captioning/test_caption_kinds.py)."""

from __future__ import annotations

import datetime as dt

import pandas as pd

ITEMS_SCHEMA = (
    "item_id string, title string, video_path string, duration_s double, width int, height int, fps double, "
    "has_audio boolean, video_codec string, audio_codec string, size_bytes long, probe_status string, "
    "ingested_at timestamp"
)


def items_df(spark, paths: dict[str, str | None]):
    """One probed-ok item per (item_id -> video path), title = item_id, media fields unknown (the stage probes)."""
    now = dt.datetime.now(dt.UTC)
    rows = [
        dict(
            item_id=k,
            title=k,
            video_path=v,
            duration_s=None,
            width=None,
            height=None,
            fps=None,
            has_audio=None,
            video_codec=None,
            audio_codec=None,
            size_bytes=None,
            probe_status="ok",
            ingested_at=now,
        )
        for k, v in paths.items()
    ]
    return spark.createDataFrame(pd.DataFrame(rows), schema=ITEMS_SCHEMA)
