"""Audio track -> mono float32 at a fixed rate (PyAV decoder + ``av.AudioResampler``), plus loudness helpers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from captionrec.media.errors import DECODE_ERROR, NO_AUDIO_STREAM, MediaError
from captionrec.media.probe import audio_stream, check_not_truncated, open_media, stream_duration_s, stream_kinds

SAMPLE_RATE = 16000  # Hz: every soundtrack a model hears (Whisper, AST, Qwen2-Audio, Qwen2.5-Omni all take 16 kHz)

MAX_DECODE_ERRORS = 64
# A decode with packet errors that yields less than this share of the window it should have is a decode_error.
MIN_DECODED_SHARE = 0.5


@dataclass
class AudioSample:
    """Decoded audio: ``samples`` (S,) mono float32 at ``sample_rate``; ``decode_errors`` counts packets that
    failed to demux or decode; ``expected_s`` is how much the window should hold (None: unknown duration)."""

    samples: np.ndarray
    sample_rate: int
    decode_errors: int = 0
    expected_s: float | None = None

    @property
    def seconds(self) -> float:
        return self.samples.shape[0] / self.sample_rate


def load_audio(
    path: Any,
    sample_rate: int = SAMPLE_RATE,
    window_s: float | None = 30.0,
    start_s: float = 0.0,
) -> np.ndarray:
    """Decode ``[start_s, start_s + window_s)`` of the first audio track to mono float32 in [-1, 1].

    Decoding stops at the window end; the resampler is flushed. The result has exactly
    ``round(window_s * sample_rate)`` samples when the track is long enough, else the whole remainder
    (``~duration * sample_rate``). Times are relative to the audio stream's start. ``decode_audio`` returns
    the same samples with the number of packet errors.

    Raises MediaError: missing_file, empty_file, not_a_video, corrupt, no_audio_stream, decode_error (no frame
    decoded, or packet errors lost most of the window).
    """
    return decode_audio(path, sample_rate, window_s, start_s).samples


def decode_audio(
    path: Any,
    sample_rate: int = SAMPLE_RATE,
    window_s: float | None = 30.0,
    start_s: float = 0.0,
) -> AudioSample:
    """``load_audio`` with the decode report (see ``AudioSample``)."""
    if not sample_rate > 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate!r}")
    if window_s is not None and not window_s > 0:
        raise ValueError(f"window_s must be > 0 or None, got {window_s!r}")
    if not start_s >= 0:
        raise ValueError(f"start_s must be >= 0, got {start_s!r}")

    with open_media(path) as media:
        c = media.container
        a = audio_stream(c)
        if a is None:
            raise MediaError(NO_AUDIO_STREAM, f"no audio stream (streams: {stream_kinds(c)})", media.path)
        check_not_truncated(media, [a])
        for s in c.streams:
            if s is not a:
                s.discard = av.stream.Discard.all
        duration = stream_duration_s(c, a)
        tb = float(a.time_base) if a.time_base else None
        origin = float(a.start_time * a.time_base) if a.start_time is not None and tb else 0.0
        begin = origin + start_s
        if start_s > 0 and tb:
            try:
                c.seek(int(begin / tb), stream=a, backward=True)
            except av.FFmpegError:
                pass  # unseekable: decode from the start and trim
        reader = _AudioReader(a, sample_rate, origin, begin, None if window_s is None else begin + window_s, media.path)
        reader.run(c.demux(a))

    audio = np.concatenate(reader.chunks).astype(np.float32, copy=False) if reader.chunks else np.zeros(0, np.float32)
    if reader.first_t is not None and reader.first_t < begin:
        audio = audio[int(round((begin - reader.first_t) * sample_rate)) :]
    if window_s is not None:
        audio = audio[: int(round(window_s * sample_rate))]
    expected = None
    if duration is not None:
        expected = max(0.0, duration - start_s) if window_s is None else max(0.0, min(window_s, duration - start_s))
    out = AudioSample(np.ascontiguousarray(audio), sample_rate, reader.errors, expected)
    if out.decode_errors and expected and out.seconds < MIN_DECODED_SHARE * expected:
        raise MediaError(
            DECODE_ERROR,
            f"{out.decode_errors} audio packet error(s) lost most of the window: decoded {out.seconds:.2f} s of "
            f"{expected:.2f} s",
            str(path),
        )
    return out


class _AudioReader:
    """One pass over an audio stream's packets: decode, resample, keep the window; count packet errors."""

    def __init__(
        self, stream: Any, sample_rate: int, origin: float, begin: float, end: float | None, path: Any
    ) -> None:
        self.a, self.origin, self.begin, self.end, self.path = stream, origin, begin, end, path
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        self.chunks: list[np.ndarray] = []
        self.first_t: float | None = None
        self.errors = 0
        self.decoded = 0

    def run(self, packets: Any) -> None:
        while True:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:  # demux error in a damaged tail: keep what was decoded (and count it)
                self.errors += 1
                break
            if pkt.size == 0:
                continue
            try:
                frames = self.a.codec_context.decode(pkt)
            except (av.FFmpegError, ValueError):  # ValueError: no decoder for this codec
                self.errors += 1
                if self.errors > MAX_DECODE_ERRORS and self.decoded == 0:
                    raise MediaError(DECODE_ERROR, f"{self.errors} audio packets failed to decode", self.path) from None
                continue
            if self._keep(frames):
                break
        for out in self.resampler.resample(None):  # flush the resampler's delay line
            self.chunks.append(out.to_ndarray().reshape(-1))
        if self.decoded == 0 and self.errors:
            raise MediaError(DECODE_ERROR, f"no audio frame could be decoded ({self.errors} errors)", self.path)

    def _keep(self, frames: Any) -> bool:
        """Resample the frames inside the window; True once the window end is reached."""
        for fr in frames:
            t = fr.time
            if self.end is not None and t is not None and t >= self.end:
                return True
            if t is not None and fr.sample_rate and t + fr.samples / fr.sample_rate <= self.begin:
                continue  # wholly before the window (after a backward seek)
            if self.first_t is None:
                self.first_t = t if t is not None else self.origin
            self.decoded += 1
            for out in self.resampler.resample(fr):
                self.chunks.append(out.to_ndarray().reshape(-1))  # (1, n) packed mono -> (n,)
        return False


def audio_rms_dbfs(audio: np.ndarray) -> float:
    """RMS level in dBFS (full scale = amplitude 1.0; a full-scale sine is -3 dBFS); -inf for silence/empty."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def is_silent(audio: np.ndarray, threshold_dbfs: float = -50.0) -> bool:
    """True when the RMS level is below ``threshold_dbfs`` (empty audio is silent)."""
    return audio_rms_dbfs(audio) < threshold_dbfs
