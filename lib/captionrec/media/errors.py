"""Media errors with a short machine-readable ``reason`` (stored in items.probe_status / quarantine.reason)."""

from __future__ import annotations

# Reasons, as stored in tables. Keep them short, lowercase, stable.
MISSING_FILE = "missing_file"  # path does not exist
EMPTY_FILE = "empty_file"  # zero bytes
NOT_A_VIDEO = "not_a_video"  # no known container signature (text file, random bytes, image, ANSI art)
CORRUPT = "corrupt"  # looks like a media container but cannot be opened / is truncated
NO_VIDEO_STREAM = "no_video_stream"  # opens, but holds no video track (e.g. audio-only .m4a)
NO_AUDIO_STREAM = "no_audio_stream"  # opens, but holds no audio track
SILENT = "silent"  # audio track present but below the silence threshold (raised by callers, see is_silent)
DECODE_ERROR = "decode_error"  # container opened, but no frame / sample could be decoded

REASONS: frozenset[str] = frozenset(
    {MISSING_FILE, EMPTY_FILE, NOT_A_VIDEO, CORRUPT, NO_VIDEO_STREAM, NO_AUDIO_STREAM, SILENT, DECODE_ERROR}
)


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
