"""Sample N frames (or frames at a rate) from the start of a video with PyAV, decoding as little as possible.

Targets: ``N`` times evenly spaced over ``[start_s, start_s + span)`` at segment centres,
``start_s + (i + 0.5) * span / N`` with ``span = min(window_s, duration - start_s)``; with ``fps`` set,
``N = max(1, round(span * fps))``. Each target gets the decoded frame whose timestamp
(``frame.pts * time_base``, so VFR is handled) is nearest to it.

How little is decoded (one sequential pass over the window's packets, in decode order):

* Packets are demuxed (cheap: ~15 ms for 30 s of 720p) but only sent to the decoder when needed: a target
  ``t`` needs the packets whose pts lie in ``[t - m, t + m]`` (``m`` = one average frame interval, so the
  nearest frame is always inside) plus their reference chain back to the previous keyframe. Packets after
  the last target of a GOP, up to the next keyframe, are never decoded. When a target lies just before a
  keyframe's display time, the previous GOP's chain is kept (open GOPs: B-frames shown before a keyframe
  reference the previous GOP). ``strategy="auto"`` and ``"scan"`` return bit-identical frames to ``"full"``
  (tested on H.264 with and without B-frames, MPEG-4 part 2 open GOPs, VP9, MJPEG; MP4/MKV/WebM/TS/AVI/MOV).
* Chain packets are decoded with ``skip_frame = "NONREF"`` (non-reference B-frames are dropped by the
  decoder); packets inside a target window with ``"DEFAULT"``. For H.264/HEVC with B-frames this halves
  the work of the chain; codecs that ignore ``skip_frame`` just decode everything that is sent.
* Resuming at a keyframe after skipped packets drains and resets the decoder first (as a seek does):
  decoders do not expect holes in the packet sequence (H.264 then withholds an open-GOP keyframe's frames).
* Skipping forward to a later GOP: reading through the gap costs ~16 us per packet (no decoding), a
  keyframe seek costs a decoder drain/reset plus I/O positioning (and saves reading the gap: what matters
  for remote files and long gaps). Heuristic (``strategy="auto"``): when the keyframe a seek would land on
  (looked up in the container index: MP4 ``stss``, MKV cues, AVI idx1) lies more than
  :data:`SEEK_MIN_GAP_S` seconds past the current demux position, seek
  (``container.seek(ts, stream=..., backward=True, any_frame=False)``); otherwise read through. So dense
  sampling (targets closer than a GOP) reads sequentially and sparse sampling (targets further apart than
  a GOP) seeks. Containers without an index (MPEG-TS, raw streams) are always read through: FFmpeg seeks
  them by timestamp search, which can land after the target and off a keyframe. Either way only the
  needed frames are decoded.
* Decoding stops once every target is served: the first packet whose dts is past the last target's window
  (frames are never decoded past the window end). ``strategy="scan"`` never seeks; ``"full"`` decodes every
  frame up to the last target (reference behaviour, and the fallback for packets without timestamps).

Truncated MP4/MOV files (index entries past the end of the file) raise ``corrupt``, as in ``probe``; other
formats decode what is there (``decode_errors`` counts packets that failed). A decode whose packet errors lost
most of the window (more than half of the targets got no frame within one target spacing,
``FrameSample.lost_targets``) raises ``decode_error``: its frames would not show the window.

Short clips: every target still gets a frame, so the output always has N frames; when the clip has fewer
frames than targets, nearest frames repeat (``times_s`` shows the repeats; ``FrameSample.num_distinct``
counts distinct ones). Rotation from the display matrix (``frame.rotation``) is applied with ``np.rot90``
(quarter turns only; mirroring is ignored). Sample aspect ratio is not applied.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from captionrec.media.errors import DECODE_ERROR, NO_VIDEO_STREAM, MediaError
from captionrec.media.probe import (
    check_not_truncated,
    normalize_rotation,
    open_media,
    scan_duration_s,
    stream_duration_s,
    stream_fps,
    stream_kinds,
    video_stream,
)

SEEK_MIN_GAP_S = 2.0  # seek only when it skips at least this much stream (s)
MAX_DECODE_ERRORS = 64  # give up after this many packet decode errors with nothing decoded
STRATEGIES = ("auto", "scan", "full")


@dataclass
class FrameSample:
    """Frames sampled from a video.

    ``times_s`` are the returned frames' timestamps (s from the video stream start); ``target_times_s`` the
    times asked for. ``duration_s`` is the video stream's duration. ``decoded_frames`` counts frames the
    decoder produced (the cost). ``strategy``: "scan" | "seek" (at least one seek happened) | "full".
    """

    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    times_s: np.ndarray  # (N,) float64
    target_times_s: np.ndarray  # (N,) float64
    source_fps: float
    duration_s: float
    decoded_frames: int
    strategy: str = "scan"
    seeks: int = 0
    rotation: int = 0
    decode_errors: int = 0
    lost_targets: int = 0  # targets whose frame lies more than one target spacing away (damaged stretches)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_distinct(self) -> int:
        return int(np.unique(self.times_s).size)


def output_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """(w, h) keeping the aspect ratio with ``w * h <= max_pixels`` and both even; unchanged if it fits."""
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    w = max(2, int(width * scale) // 2 * 2)
    h = max(2, int(height * scale) // 2 * 2)
    while w * h > max_pixels and (w > 2 or h > 2):  # rounding guard (tiny budgets)
        if w >= h and w > 2:
            w -= 2
        else:
            h -= 2
    return w, h


def target_times(span_s: float, num_frames: int, fps: float | None = None) -> np.ndarray:
    """Segment-centre targets in [0, span_s): (i + 0.5) * span / N; with ``fps``, N = max(1, round(span * fps))."""
    n = max(1, int(round(span_s * fps))) if fps is not None else num_frames
    return (np.arange(n, dtype=np.float64) + 0.5) * (max(span_s, 0.0) / n)  # (N,)


class _Picker:
    """Keeps, for every target, the nearest frame seen so far; converts a target's frame once it is final.

    Frames arrive in display order, so once a frame at time ``t`` is seen, targets ``<= t`` cannot get a
    nearer one and are converted (RGB, resized, rotated) and released.
    """

    def __init__(self, targets: np.ndarray, max_pixels: int | None, apply_rotation: bool) -> None:
        self.targets = targets  # (N,) absolute seconds
        self._tlist = targets.tolist()
        n = len(targets)
        self.best_d = np.full(n, np.inf)
        self.best: list[Any] = [None] * n
        self.best_t = np.full(n, np.nan)
        self.out: list[np.ndarray | None] = [None] * n
        self.final_upto = 0
        self.max_pixels = max_pixels
        self.apply_rotation = apply_rotation
        self.size: tuple[int, int] | None = None
        self.rotation = 0
        self.last_t: float | None = None
        self._cache: tuple[Any, np.ndarray] | None = None

    def offer(self, frame: Any, t: float) -> None:
        self.last_t = t if self.last_t is None else max(self.last_t, t)
        lo = self.final_upto
        if lo >= len(self._tlist):
            return
        d = np.abs(self.targets[lo:] - t)
        if frame.is_corrupt:  # frames decoded with missing references only fill otherwise empty targets
            d += 1e6
        upd = np.flatnonzero(d < self.best_d[lo:])
        if upd.size:
            self.best_d[lo + upd] = d[upd]
            self.best_t[lo + upd] = t
            for i in (lo + upd).tolist():
                self.best[i] = frame
        self._finalize(bisect_right(self._tlist, t))

    def _convert(self, frame: Any) -> np.ndarray:
        if self._cache is not None and self._cache[0] is frame:
            return self._cache[1]
        if self.size is None:
            self.size = output_size(frame.width, frame.height, self.max_pixels)
            self.rotation = normalize_rotation(frame.rotation)
        w, h = self.size
        arr = frame.to_ndarray(width=w, height=h, format="rgb24")  # (h, w, 3)
        k = self.rotation // 90 if self.apply_rotation else 0
        if k:
            arr = np.ascontiguousarray(np.rot90(arr, k))  # counter-clockwise quarter turns
        self._cache = (frame, arr)
        return arr

    def _finalize(self, upto: int) -> None:
        for i in range(self.final_upto, upto):
            if self.best[i] is not None:
                self.out[i] = self._convert(self.best[i])
                self.best[i] = None
        self.final_upto = max(self.final_upto, upto)

    def finish(self) -> bool:
        """Convert the remaining targets; False if no frame was ever offered."""
        self._finalize(len(self._tlist))
        self._cache = None
        if all(o is None for o in self.out):
            return False
        # Targets before the first decoded frame (never offered a nearer one) copy their neighbour.
        first = next(i for i, o in enumerate(self.out) if o is not None)
        for i in range(first):
            self.out[i], self.best_t[i] = self.out[first], self.best_t[first]
        for i in range(first + 1, len(self.out)):
            if self.out[i] is None:
                self.out[i], self.best_t[i] = self.out[i - 1], self.best_t[i - 1]
        return True


class _WindowDecoder:
    """One pass over a video stream's packets, decoding only what the targets need (see module docstring)."""

    def __init__(self, container: Any, stream: Any, picker: _Picker, margin_s: float, strategy: str) -> None:
        self.c = container
        self.s = stream
        self.cc = stream.codec_context
        self.picker = picker
        self.tb = float(stream.time_base)
        self.fps = stream_fps(stream)
        self.frame_dt = 1.0 / self.fps if self.fps else 0.04
        self.reorder_s = 4 * self.frame_dt  # dts/pts reordering allowance (B-frame delay)
        t = picker.targets
        self.t = t.tolist()
        self.lo = (t - margin_s).tolist()
        self.hi = (t + margin_s).tolist()
        self.strategy = strategy
        self.decoded = 0
        self.errors = 0
        self.seeks = 0
        self._skip_state: str | None = None
        self.sent = False  # any packet sent to the decoder since the last reset
        self.gap = False  # packets were skipped since the last one sent: reset the decoder before resuming
        self._next_time: float | None = None  # for frames without pts

    # -- decoder plumbing
    def _set_skip(self, mode: str) -> None:
        if mode != self._skip_state:
            self.cc.skip_frame = mode
            self._skip_state = mode

    def _send(self, packet: Any, full: bool) -> None:
        if self.strategy != "full":
            self._set_skip("DEFAULT" if full else "NONREF")
        self.sent = True
        try:
            frames = self.cc.decode(packet)
        except (av.FFmpegError, ValueError):  # ValueError: no decoder for this codec
            self.errors += 1
            if self.errors > MAX_DECODE_ERRORS and self.decoded == 0:
                raise MediaError(DECODE_ERROR, f"{self.errors} packets failed to decode, no frame decoded") from None
            return
        for f in frames:
            self._emit(f)

    def _emit(self, frame: Any) -> None:
        self.decoded += 1
        if frame.pts is not None:
            t = frame.pts * self.tb
        else:
            t = self._next_time if self._next_time is not None else (self.picker.last_t or 0.0) + self.frame_dt
        self._next_time = t + self.frame_dt
        self.picker.offer(frame, t)

    def _drain(self) -> None:
        try:
            frames = self.cc.decode(None)
        except (av.FFmpegError, ValueError):
            self.errors += 1
            return
        self.sent = False
        for f in frames:
            self._emit(f)

    def _restart(self) -> None:
        """Drain and reset the decoder before resuming after skipped packets.

        Decoders do not expect holes in the packet sequence: after one, H.264 withholds the frames of an
        open-GOP (non-IDR) keyframe's GOP. A reset makes the next keyframe a clean start, exactly as after a
        seek: the decoder then drops open-GOP leading pictures itself (they are never the nearest frame
        here, since the chain is only dropped when the target lies at/after the keyframe).
        """
        if self.sent:
            self._drain()
            self.cc.flush_buffers()
        self.gap = False

    def _in_window(self, pts_s: float, slack: float) -> bool:
        j = bisect_left(self.hi, pts_s - slack)
        return j < len(self.hi) and self.lo[j] - slack <= pts_s

    # -- seek decision
    def _should_seek(self, cur_s: float, need_s: float) -> bool:
        """Seek when the keyframe a seek would land on (from the container index) is far enough ahead.

        Containers without an index (MPEG-TS, raw streams, ...) are never seeked: FFmpeg seeks them by
        timestamp search, which can land after the target and on a non-keyframe; reading through is cheap.
        """
        if self.strategy != "auto":
            return False
        entries = self.s.index_entries
        if not len(entries):
            return False
        idx = entries.search_timestamp(int(need_s / self.tb), backward=True)
        if idx < 0:
            return False
        land_s = entries[idx].timestamp * self.tb
        return land_s - cur_s > SEEK_MIN_GAP_S

    # -- main loop
    def run(self) -> None:
        self.nxt = 0  # first target whose packets are not all sent yet
        self.sending = False  # inside a target's window (or its chain) right now
        self.buffer: list[Any] = []  # unsent packets since the last keyframe / last sent packet
        self.have_key = False  # decoding may start only at a keyframe
        self.seek_checked = -1
        self.untimed = False
        packets = self.c.demux(self.s)
        while self.nxt < len(self.lo):
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:  # demux error (truncated tail): keep what was decoded
                self.errors += 1
                break
            if pkt.size and self._packet(pkt):
                break
        if self.nxt < len(self.lo) and self.buffer:
            # The stream ended before the remaining targets (they lie past the last frame): decode the
            # unsent tail so that they get the last frames.
            for q in self.buffer:
                self._send(q, True)
        self._drain()

    def _packet(self, pkt: Any) -> bool:
        """Send, buffer or skip one packet (or seek past a gap); True once every target is served."""
        pts_s = pkt.pts * self.tb if pkt.pts is not None else None
        dts_s = pkt.dts * self.tb if pkt.dts is not None else None
        if pts_s is None and dts_s is None:
            self.untimed = True  # raw elementary streams: decode everything, time frames by count
        if self.untimed:
            self._send(pkt, True)
            return self.picker.last_t is not None and self.picker.last_t > self.hi[-1]
        slack = 0.0
        if pts_s is None:  # e.g. AVI: only decode order is known; widen the windows by the reorder delay
            pts_s, slack = dts_s, self.reorder_s
        # Targets whose windows are fully sent: every later packet has dts (<= pts) past them.
        n = len(self.lo)
        while self.nxt < n and (
            dts_s > self.hi[self.nxt] if dts_s is not None else pts_s > self.hi[self.nxt] + self.reorder_s
        ):
            self.nxt += 1
            self.sending = False
        if self.nxt >= n:
            return True
        if pkt.is_keyframe:
            # Drop the unsent chain before this keyframe unless the next target lies before the
            # keyframe's display time: then a frame shown before it (previous GOP, or an open-GOP
            # leading B-frame that references the previous GOP) may be the nearest, and needs that chain.
            # (If the target is at/after the keyframe, frames shown before it are farther than it.)
            # Resuming at this keyframe after dropped packets resets the decoder first (see _restart).
            if not self.sending and (not self.have_key or pts_s <= self.t[self.nxt] - slack) and self.buffer:
                self.buffer.clear()
                self.gap = True
            self.have_key = True
        elif not self.have_key:
            return False
        if self.strategy == "full":
            self._send(pkt, True)
        elif self.sending or pts_s >= self.lo[self.nxt] - slack:
            if not self.sending:
                if self.gap:
                    self._restart()
                for q in self.buffer:
                    self._send(q, False)
                self.buffer.clear()
                self.sending = True
            self._send(pkt, self._in_window(pts_s, slack))
        elif not self._seek_past_gap(pts_s, dts_s):
            self.buffer.append(pkt)
        return False

    def _seek_past_gap(self, pts_s: float, dts_s: float | None) -> bool:
        """Once per target: seek to the keyframe before its window when that skips enough stream (True if so)."""
        if self.seek_checked == self.nxt:
            return False
        self.seek_checked = self.nxt
        need_s = self.lo[self.nxt] - self.reorder_s
        if not self._should_seek(dts_s if dts_s is not None else pts_s, need_s):
            return False
        self._drain()  # seeking flushes the decoder: collect its pending frames first
        try:
            self.c.seek(int(need_s / self.tb), stream=self.s, backward=True, any_frame=False)
        except av.FFmpegError:
            self.cc.flush_buffers()
            self.strategy = "scan"
        else:
            self.seeks += 1
        self.buffer.clear()
        self.have_key = False
        self.gap = False  # the seek flushed the decoder
        return True


def sample_frames(
    path: Any,
    num_frames: int = 16,
    window_s: float | None = 30.0,
    fps: float | None = None,
    max_pixels: int | None = None,
    start_s: float = 0.0,
    *,
    strategy: str = "auto",
    apply_rotation: bool = True,
    threads: int = 0,
) -> FrameSample:
    """Sample frames from ``[start_s, start_s + window_s)`` of a video (see the module docstring).

    Args:
        num_frames: frames to return (ignored when ``fps`` is set).
        window_s: window length; None = to the end of the video.
        fps: sample at this rate instead (N = round(span * fps), at least 1).
        max_pixels: resize (keeping aspect, even dims) so that H * W <= max_pixels; None = native size.
        strategy: "auto" (seek across long gaps), "scan" (never seek) or "full" (decode every frame).
        threads: decoder threads (0 = FFmpeg's choice).

    Raises MediaError: missing_file, empty_file, not_a_video, corrupt, no_video_stream, decode_error.
    """
    if fps is None and (not isinstance(num_frames, (int, np.integer)) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive int, got {num_frames!r}")
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps!r}")
    if window_s is not None and not window_s > 0:
        raise ValueError(f"window_s must be > 0 or None, got {window_s!r}")
    if not start_s >= 0:
        raise ValueError(f"start_s must be >= 0, got {start_s!r}")
    if max_pixels is not None and max_pixels < 4:
        raise ValueError(f"max_pixels must be >= 4, got {max_pixels!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")

    args = (num_frames, window_s, fps, max_pixels, start_s, strategy, apply_rotation, threads)
    with open_media(path) as media:
        v = video_stream(media.container)
        if v is None:
            raise MediaError(NO_VIDEO_STREAM, f"no video stream (streams: {stream_kinds(media.container)})", media.path)
        duration = stream_duration_s(media.container, v)
        if duration is not None:
            return _sample_open(media, duration, *args)
        # No duration metadata: demux (only as far as the window needs), then decode from a fresh open.
        duration, _ = scan_duration_s(media.container, v, stop_after_s=None if window_s is None else start_s + window_s)
    if duration is None:
        raise MediaError(DECODE_ERROR, "no duration in metadata and no packets could be read", str(path))
    with open_media(path) as media:
        return _sample_open(media, duration, *args)


def _sample_open(
    media: Any,
    duration: float,
    num_frames: int,
    window_s: float | None,
    fps: float | None,
    max_pixels: int | None,
    start_s: float,
    strategy: str,
    apply_rotation: bool,
    threads: int,
) -> FrameSample:
    c = media.container
    v = video_stream(c)
    check_not_truncated(media, [v])
    for s in c.streams:
        if s is not v:
            s.discard = av.stream.Discard.all  # demux only the video stream
    if not v.codec_context.is_open:  # media.windows decodes window after window with one open decoder
        v.thread_type, v.thread_count = "AUTO", threads or v.thread_count
    tb = v.time_base
    origin = float(v.start_time * tb) if v.start_time is not None and tb else 0.0
    src_fps = stream_fps(v)
    span = max(0.0, min(window_s if window_s is not None else math.inf, duration - start_s))
    rel = start_s + target_times(span, num_frames, fps)  # (N,) seconds from the stream start
    picker = _Picker(rel + origin, max_pixels, apply_rotation)
    margin = 1.0 / src_fps if src_fps else 0.04
    dec = _WindowDecoder(c, v, picker, margin, strategy)
    dec.run()
    if not picker.finish():
        raise MediaError(DECODE_ERROR, f"no frame could be decoded ({dec.errors} decode errors)", media.path)
    frames = np.stack(picker.out)  # (N, H, W, 3) uint8
    used = "full" if strategy == "full" else ("seek" if dec.seeks else "scan")
    lost = lost_targets(picker.best_t, picker.targets, span, margin)
    if dec.errors and 2 * lost > len(rel):
        raise MediaError(
            DECODE_ERROR,
            f"{dec.errors} packet error(s) lost most of the window: {lost} of {len(rel)} targets got no nearby frame",
            media.path,
        )
    return FrameSample(
        frames=frames,
        times_s=picker.best_t - origin,
        target_times_s=rel,
        source_fps=src_fps,
        duration_s=float(duration),
        decoded_frames=dec.decoded,
        strategy=used,
        seeks=dec.seeks,
        rotation=picker.rotation,
        decode_errors=dec.errors,
        lost_targets=lost,
    )


def lost_targets(times: np.ndarray, targets: np.ndarray, span: float, frame_dt: float) -> int:
    """Targets whose chosen frame lies more than one target spacing (at least two frames) away from them."""
    tolerance = max(span / max(1, len(targets)), 2 * frame_dt)
    return int(np.count_nonzero(np.abs(times - targets) > tolerance + 1e-9))
