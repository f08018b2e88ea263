"""Audio track -> mono float32 at a fixed rate (PyAV decoder + ``av.AudioResampler``), plus loudness helpers."""

from __future__ import annotations

from typing import Any

import av
import numpy as np

from captionrec.media.errors import DECODE_ERROR, NO_AUDIO_STREAM, MediaError
from captionrec.media.probe import audio_stream, check_not_truncated, open_media, stream_kinds

MAX_DECODE_ERRORS = 64


def load_audio(
    path: Any,
    sample_rate: int = 16000,
    window_s: float | None = 30.0,
    start_s: float = 0.0,
) -> np.ndarray:
    """Decode ``[start_s, start_s + window_s)`` of the first audio track to mono float32 in [-1, 1].

    Decoding stops at the window end; the resampler is flushed. The result has exactly
    ``round(window_s * sample_rate)`` samples when the track is long enough, else the whole remainder
    (``~duration * sample_rate``). Times are relative to the audio stream's start.

    Raises MediaError: missing_file, empty_file, not_a_video, corrupt, no_audio_stream, decode_error.
    """
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
        tb = float(a.time_base) if a.time_base else None
        origin = float(a.start_time * a.time_base) if a.start_time is not None and tb else 0.0
        begin = origin + start_s
        end = begin + window_s if window_s is not None else None
        if start_s > 0 and tb:
            try:
                c.seek(int(begin / tb), stream=a, backward=True)
            except av.FFmpegError:
                pass  # unseekable: decode from the start and trim
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first_t: float | None = None
        errors = 0
        decoded = 0
        stop = False
        packets = c.demux(a)
        while not stop:
            try:
                pkt = next(packets)
            except StopIteration:
                break
            except av.FFmpegError:  # demux error in a damaged tail: keep what was decoded
                errors += 1
                break
            if pkt.size == 0:
                continue
            try:
                frames = a.codec_context.decode(pkt)
            except (av.FFmpegError, ValueError):  # ValueError: no decoder for this codec
                errors += 1
                if errors > MAX_DECODE_ERRORS and decoded == 0:
                    raise MediaError(DECODE_ERROR, f"{errors} audio packets failed to decode", media.path) from None
                continue
            for fr in frames:
                t = fr.time
                if end is not None and t is not None and t >= end:
                    stop = True
                    break
                if t is not None and fr.sample_rate and t + fr.samples / fr.sample_rate <= begin:
                    continue  # wholly before the window (after a backward seek)
                if first_t is None:
                    first_t = t if t is not None else origin
                decoded += 1
                for out in resampler.resample(fr):
                    chunks.append(out.to_ndarray().reshape(-1))  # (1, n) packed mono -> (n,)
        for out in resampler.resample(None):  # flush the resampler's delay line
            chunks.append(out.to_ndarray().reshape(-1))
        if decoded == 0 and errors:
            raise MediaError(DECODE_ERROR, f"no audio frame could be decoded ({errors} errors)", media.path)

    audio = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros(0, np.float32)  # (S,)
    if first_t is not None and first_t < begin:
        audio = audio[int(round((begin - first_t) * sample_rate)) :]
    if window_s is not None:
        audio = audio[: int(round(window_s * sample_rate))]
    return np.ascontiguousarray(audio)


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
