"""Column expressions over stage tables that more than one stage uses (Spark only; no models)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from captionrec.contracts import MEDIA_FINGERPRINT_COLUMNS

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def sha16(col: "Column") -> "Column":
    """16 hex chars of the SHA-256 of a string column (null stays null)."""
    from pyspark.sql import functions as F

    return F.substring(F.sha2(col, 256), 1, 16)


def blank(col: "Column") -> "Column":
    """Null, empty or only white space."""
    from pyspark.sql import functions as F

    return col.isNull() | (F.trim(col) == "")


def probe_status(df: "DataFrame") -> "Column":
    """items.probe_status, "ok" where the column is null or absent."""
    from pyspark.sql import functions as F

    return F.coalesce(F.col("probe_status"), F.lit("ok")) if "probe_status" in df.columns else F.lit("ok")


def media_fingerprint(df: "DataFrame", columns: Sequence[str] = MEDIA_FINGERPRINT_COLUMNS) -> "Column":
    """`<size_bytes>:<video_mtime in ms>:<probe_status>` of an item ("-" for a null or absent column).

    It changes when ingest sees another file (a file that appears, is replaced or is touched): a caption or a
    media vector made for another fingerprint is stale. `columns` picks a prefix of the parts.
    """
    from pyspark.sql import functions as F

    present = set(df.columns)
    parts = []
    for name in columns:
        if name not in present:
            parts.append(F.lit("-"))
        elif name == "video_mtime":
            parts.append(F.coalesce(F.unix_millis(F.col(name).cast("timestamp")).cast("string"), F.lit("-")))
        else:
            parts.append(F.coalesce(F.col(name).cast("string"), F.lit("-")))
    return F.concat_ws(":", *parts)
