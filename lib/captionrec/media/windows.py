"""Consecutive windows over a whole video: a plan (which windows), and their frames decoded one window at a time.

```python
from captionrec.media.windows import plan_windows, open_windows
plan = plan_windows(duration_s=600.0, window_s=30.0, stride_s=30.0, max_windows=16)
plan.windows[1]                 # Window(index=1, start_s=30.0, length_s=30.0)
plan.truncated                  # True: 16 windows cover 480 of the 600 s
with open_windows("clip.mp4", window_s=30.0, stride_s=30.0, max_windows=16) as wv:
    wv.plan                     # the plan for this file's duration
    for window, sample in wv.samples(num_frames=8, max_pixels=64 * 28 * 28):
        ...                     # sample: FrameSample of this window only (times_s from the video start)
```

Windows start at ``0, stride, 2 * stride, ...`` and last ``window_s`` (the last one ends at the video's end); a
window starts only while the previous one ends before the video's end (overlapping strides add no window that
lies wholly inside the previous one), a tail shorter than :data:`MIN_TAIL_S` is left out (a duration rounding
remainder, not content), and at most ``max_windows`` are planned: a longer video is *truncated* (the plan says
so, and how much of the video its windows cover). A video shorter than one window gets one window: the video.

Memory is bounded by one window: the container is opened once, and each window is decoded by the same
targeted decoder as :func:`captionrec.media.sample_frames` (only the packets its frames need), after a keyframe
seek to the window's start when the container has an index (MP4 ``stss``, MKV cues); containers without one are
re-opened and read through (demuxing is cheap; FFmpeg's timestamp search can land past a target there). Only
the ``num_frames`` resized frames of the current window are alive at once; nothing of earlier windows is kept.
No Spark, no models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from captionrec.media.errors import DECODE_ERROR, NO_VIDEO_STREAM, MediaError
from captionrec.media.frames import FrameSample, _sample_open
from captionrec.media.probe import (
    check_not_truncated,
    open_media,
    scan_duration_s,
    stream_duration_s,
    stream_kinds,
    video_stream,
)

MIN_TAIL_S = 0.5  # a last window shorter than this (and not the only one) is left out


@dataclass(frozen=True)
class Window:
    index: int
    start_s: float
    length_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s


@dataclass(frozen=True)
class WindowPlan:
    windows: tuple[Window, ...]
    duration_s: float
    truncated: bool  # the windows stop before the video's end (capped at max_windows)

    @property
    def covered_s(self) -> float:
        """Seconds of the video from its start to the end of the last window."""
        return self.windows[-1].end_s if self.windows else 0.0


def plan_windows(duration_s: float, window_s: float, stride_s: float, max_windows: int) -> WindowPlan:
    """The windows over a video of `duration_s` seconds (see the module docstring)."""
    if not window_s > 0 or not stride_s > 0:
        raise ValueError(f"window_s and stride_s must be > 0, got {window_s!r}, {stride_s!r}")
    if stride_s > window_s:
        raise ValueError(f"stride_s ({stride_s}) > window_s ({window_s}) would leave gaps between windows")
    if max_windows < 1:
        raise ValueError(f"max_windows must be >= 1, got {max_windows!r}")
    if not (duration_s is not None and math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number, got {duration_s!r}")
    duration_s, window_s, stride_s = float(duration_s), float(window_s), float(stride_s)
    windows: list[Window] = []
    start = 0.0
    while len(windows) < max_windows:
        length = min(window_s, duration_s - start)
        if windows and length < MIN_TAIL_S:
            break
        windows.append(Window(len(windows), round(start, 6), round(length, 6)))
        if start + window_s >= duration_s:  # this window reaches the end
            break
        start = len(windows) * stride_s
    truncated = windows[-1].end_s < duration_s - MIN_TAIL_S
    return WindowPlan(tuple(windows), float(duration_s), truncated)


class WindowedVideo:
    """An opened video and its window plan; `samples()` decodes the windows in order, one at a time."""

    def __init__(self, path: Any, media: Any, plan: WindowPlan) -> None:
        self.path, self._media, self.plan = path, media, plan
        self._reopen = None  # a context manager holding a re-opened container (containers without an index)

    def _container_for(self, window: Window) -> Any:
        """The opened media positioned at (or before) `window`'s start, with a clean decoder."""
        media = self._media
        v = video_stream(media.container)
        if window.index == 0:
            return media
        if len(v.index_entries):
            tb = float(v.time_base)
            origin = float(v.start_time * v.time_base) if v.start_time is not None else 0.0
            media.container.seek(int((window.start_s + origin) / tb), stream=v, backward=True, any_frame=False)
            v.codec_context.flush_buffers()
            return media
        self._close_reopened()  # no index: read through from the start of a fresh open
        self._reopen = open_media(self.path)
        return self._reopen.__enter__()

    def _close_reopened(self) -> None:
        if self._reopen is not None:
            self._reopen.__exit__(None, None, None)
            self._reopen = None

    def samples(
        self,
        num_frames: int = 8,
        fps: float | None = None,
        max_pixels: int | None = None,
    ) -> Iterator[tuple[Window, FrameSample | MediaError]]:
        """(window, its frames) for every planned window, in time order; a window that cannot be decoded comes
        with its MediaError instead (the next windows are still decoded: the caller decides what counts)."""
        try:
            for w in self.plan.windows:
                try:
                    media = self._container_for(w)
                    sample: FrameSample | MediaError = _sample_open(
                        media, self.plan.duration_s, num_frames, w.length_s, fps, max_pixels, w.start_s, "auto", True, 0
                    )
                except MediaError as exc:
                    sample = exc
                yield w, sample
        finally:
            self._close_reopened()


@contextmanager
def open_windows(path: Any, window_s: float, stride_s: float, max_windows: int) -> Iterator[WindowedVideo]:
    """Open a video once and plan its windows from the video stream's duration.

    Raises MediaError: missing_file, empty_file, not_a_video, corrupt, no_video_stream, decode_error.
    """
    with open_media(path) as media:
        v = video_stream(media.container)
        if v is None:
            raise MediaError(NO_VIDEO_STREAM, f"no video stream (streams: {stream_kinds(media.container)})", media.path)
        duration = stream_duration_s(media.container, v)
        if duration is None:  # no duration metadata: demux to the end (no decoding), then decode from a fresh open
            duration, _ = scan_duration_s(media.container, v)
    if duration is None or not duration > 0:
        raise MediaError(DECODE_ERROR, f"video stream has no length (duration {duration})", str(path))
    plan = plan_windows(duration, window_s, stride_s, max_windows)
    with open_media(path) as media:
        check_not_truncated(media, [video_stream(media.container)])  # a truncated MP4 fails as a whole: corrupt
        yield WindowedVideo(path, media, plan)
