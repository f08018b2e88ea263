"""Media errors with a short machine-readable ``reason`` (stored in items.probe_status / quarantine.reason)."""

from __future__ import annotations

# Reasons, as stored in tables: the vocabulary lives in captionrec.contracts.
from captionrec.contracts import (  # noqa: E402
    CORRUPT,
    DECODE_ERROR,
    EMPTY_FILE,
    MISSING_FILE,
    NO_AUDIO_STREAM,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    SILENT,
)
from captionrec.contracts import MEDIA_REASONS as REASONS  # noqa: E402

__all__ = [
    "CORRUPT",
    "DECODE_ERROR",
    "EMPTY_FILE",
    "MISSING_FILE",
    "NO_AUDIO_STREAM",
    "NO_VIDEO_STREAM",
    "NOT_A_VIDEO",
    "REASONS",
    "SILENT",
    "MediaError",
]


class MediaError(Exception):
    """A media file could not be used.

    ``reason`` is one of :data:`REASONS` (machine-readable); ``str(err)`` is a human message;
    ``path`` is the input as given (may be None).
    """

    def __init__(self, reason: str, message: str, path: str | None = None) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown MediaError reason {reason!r}; expected one of {sorted(REASONS)}")
        self.reason = reason
        self.path = path
        self.message = message
        super().__init__(f"[{reason}] {message}" + (f": {path}" if path else ""))

    def __reduce__(self):  # picklable across Spark workers
        return (type(self), (self.reason, self.message, self.path))
