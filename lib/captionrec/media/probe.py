"""Open media files safely and read their metadata (PyAV), mapping every failure to a :class:`MediaError`.

``probe`` reads container metadata only (no decoding) except when a file declares no duration, in which
case it demuxes packets (still no decoding) and, if those carry no timing, counts decoded frames.

Paths: local paths, ``file://`` URIs, ``dbfs:/`` (via the ``/dbfs`` FUSE mount when present) and any
other ``scheme://`` URI that fsspec can open (``s3://``, ``abfss://``, ``gs://``...; PyAV reads the
file object; seeking must be supported by the filesystem).
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import IO, Any
from urllib.parse import unquote, urlparse

import av
import av.stream

from captionrec.media.errors import (
    CORRUPT,
    DECODE_ERROR,
    EMPTY_FILE,
    MISSING_FILE,
    NO_VIDEO_STREAM,
    NOT_A_VIDEO,
    MediaError,
)

# PyAV 19 removed av.open's metadata_errors option (a fresh install, e.g. on a Databricks cluster, gets 19).
_OPEN_KWARGS: dict[str, Any] = {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}

# Container formats FFmpeg opens that are not videos for our purposes: ANSI art (any .txt/.nfo file opens as
# "tty"), still images. GIF ("gif") and APNG stay accepted as (short) videos.
_NOT_VIDEO_FORMATS = frozenset({"tty", "image2", "image2pipe", "ico", "bmp_pipe", "dds_pipe"})

# First-bytes signatures of media containers: a file that starts like one but fails to open is "corrupt",
# anything else that fails to open is "not_a_video".
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp", b"sidx", b"moof")
_MAGICS = (
    b"\x1a\x45\xdf\xa3",  # Matroska / WebM (EBML)
    b"RIFF",  # AVI / WAV
    b"OggS",
    b"FLV",
    b"\x00\x00\x01\xba",  # MPEG-PS
    b"\x00\x00\x01\xb3",  # MPEG-1/2 video elementary stream
    b"\x30\x26\xb2\x75",  # ASF / WMV
    b"ID3",  # MP3 with ID3 tag
    b"fLaC",
    b"\x00\x00\x00\x01",  # H.264/HEVC Annex B start code
    b".RMF",
)


# ------------------------------------------------------------------------------------------------ opening


@dataclass
class OpenedMedia:
    """An open container plus what we learnt while opening it (internal; returned by :func:`open_media`)."""

    container: Any  # av.container.InputContainer
    path: str  # the input as given (for messages)
    local_path: str | None  # local filesystem path, None for fsspec objects
    size_bytes: int
    fileobj: IO[bytes] | None  # fsspec file object (None for local files)

    def reopen_bytes(self) -> IO[bytes]:
        """A fresh binary handle on the same bytes (used to parse MP4 boxes); caller closes it."""
        if self.local_path is not None:
            return open(self.local_path, "rb")
        import fsspec  # noqa: PLC0415  (optional dependency, only for remote URIs)

        return fsspec.open(self.path, "rb").open()


def _resolve(path: Any) -> tuple[str, str | None]:
    """(display path, local path or None when fsspec must open it)."""
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str) or not path:
        raise MediaError(MISSING_FILE, f"expected a path string, got {type(path).__name__}", str(path))
    if path.startswith("file:"):
        parsed = urlparse(path)
        if parsed.netloc not in ("", "localhost"):
            raise MediaError(MISSING_FILE, f"file:// URI with a remote host {parsed.netloc!r} is not supported", path)
        return path, unquote(parsed.path)
    if path.startswith("dbfs:/") and os.path.isdir("/dbfs"):
        return path, "/dbfs/" + path[len("dbfs:/") :].lstrip("/")
    if "://" in path:
        return path, None
    return path, path


def _sniff_reason(head: bytes) -> str:
    """CORRUPT when the first bytes look like a media container, NOT_A_VIDEO otherwise."""
    if len(head) >= 8 and head[4:8] in _MP4_BOXES:
        return CORRUPT
    if any(head.startswith(m) for m in _MAGICS):
        return CORRUPT
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS sync bytes
        return CORRUPT
    return NOT_A_VIDEO


@contextmanager
def open_media(path: Any) -> Iterator[OpenedMedia]:
    """Open ``path`` with PyAV, raising :class:`MediaError` (missing_file, empty_file, not_a_video, corrupt).

    The container is closed on exit. Nothing global is changed (no log level, no thread settings).
    """
    shown, local = _resolve(path)
    fileobj: IO[bytes] | None = None
    if local is not None:
        try:
            st = os.stat(local)
        except FileNotFoundError:
            raise MediaError(MISSING_FILE, "no such file", shown) from None
        except OSError as exc:
            raise MediaError(MISSING_FILE, f"cannot stat file ({exc.strerror})", shown) from None
        if os.path.isdir(local):
            raise MediaError(NOT_A_VIDEO, "path is a directory", shown)
        size = st.st_size
        if size == 0:
            raise MediaError(EMPTY_FILE, "file is empty (0 bytes)", shown)
        try:
            with open(local, "rb") as fh:
                head = fh.read(512)
        except OSError as exc:
            raise MediaError(MISSING_FILE, f"cannot read file ({exc.strerror})", shown) from None
        source: Any = local
    else:
        try:
            import fsspec  # noqa: PLC0415
        except ImportError:
            raise MediaError(MISSING_FILE, "remote URI needs fsspec, which is not installed", shown) from None
        try:
            fs, fpath = fsspec.core.url_to_fs(shown)
            if not fs.exists(fpath):
                raise MediaError(MISSING_FILE, "no such file", shown)
            size = int(fs.size(fpath) or 0)
        except MediaError:
            raise
        except Exception as exc:  # noqa: BLE001  (any filesystem error = cannot reach the file)
            raise MediaError(MISSING_FILE, f"cannot reach file ({type(exc).__name__}: {exc})", shown) from None
        if size == 0:
            raise MediaError(EMPTY_FILE, "file is empty (0 bytes)", shown)
        fileobj = fs.open(fpath, "rb")
        head = fileobj.read(512)
        fileobj.seek(0)
        source = fileobj

    try:
        container = av.open(source, mode="r", **_OPEN_KWARGS)
    except av.FileNotFoundError:
        if fileobj is not None:
            fileobj.close()
        raise MediaError(MISSING_FILE, "no such file", shown) from None
    except (av.FFmpegError, OSError, ValueError) as exc:
        if fileobj is not None:
            fileobj.close()
        reason = _sniff_reason(head)
        what = "cannot open container" if reason == CORRUPT else "not a recognised media container"
        raise MediaError(reason, f"{what} ({type(exc).__name__})", shown) from None
    try:
        fmt = container.format.name or ""
        if fmt in _NOT_VIDEO_FORMATS or fmt.endswith("_pipe"):
            raise MediaError(NOT_A_VIDEO, f"opens as {fmt!r}, which is not a video container", shown)
        yield OpenedMedia(container, shown, local, size, fileobj)
    finally:
        container.close()
        if fileobj is not None:
            fileobj.close()


# ------------------------------------------------------------------------------------------------ streams


def video_stream(container: Any) -> Any | None:
    """The first real video stream (cover art / attached pictures of audio files are skipped), or None."""
    for s in container.streams.video:
        if not (s.disposition & av.stream.Disposition.attached_pic):
            return s
    return None


def stream_kinds(container: Any) -> str:
    """'audio, video (cover art)' style summary of a container's streams, for error messages."""
    kinds = []
    for s in container.streams:
        cover = s.type == "video" and s.disposition & av.stream.Disposition.attached_pic
        kinds.append(f"{s.type} (cover art)" if cover else str(s.type))
    return ", ".join(sorted(kinds)) or "none"


def audio_stream(container: Any) -> Any | None:
    """The first audio stream, or None."""
    return container.streams.audio[0] if container.streams.audio else None


def stream_fps(stream: Any) -> float:
    """Average frame rate (frames / duration; right for VFR), falling back to FFmpeg's guesses; 0.0 if unknown."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate, stream.codec_context.framerate):
        if rate and rate > 0:
            fps = float(rate)
            if 0.0 < fps < 1000.0:  # 90000/1 style timebase "rates" are not frame rates
                return fps
    return 0.0


def stream_duration_s(container: Any, stream: Any | None) -> float | None:
    """Duration of ``stream`` from metadata (the stream's own, else the container's); None if neither is set."""
    if stream is not None and stream.duration is not None and stream.duration > 0 and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def scan_duration_s(container: Any, stream: Any, stop_after_s: float | None = None) -> tuple[float | None, str]:
    """Duration of ``stream`` by demuxing its packets (no decoding); by decoding if packets carry no timing.

    With ``stop_after_s`` the scan stops once it has seen that much (the caller only needs to know the
    stream is at least that long). Returns (seconds or None, "demux" | "decode"). Leaves the container at EOF.
    """
    tb = float(stream.time_base) if stream.time_base else 0.0
    fps = stream_fps(stream)
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None and tb else 0.0
    end_ts: float | None = None
    summed = 0.0
    count = 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            count += 1
            dur = float(pkt.duration * tb) if pkt.duration and tb else 0.0
            summed += dur or (1.0 / fps if fps else 0.0)
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if ts is not None and tb:
                end = ts * tb + dur - start
                end_ts = end if end_ts is None else max(end_ts, end)
            seen = end_ts if end_ts is not None else summed
            if stop_after_s is not None and seen >= stop_after_s:
                return seen, "demux"
    except av.FFmpegError:
        pass  # truncated tail: keep what was read
    if end_ts is not None and end_ts > 0:
        return end_ts, "demux"
    if summed > 0:
        return summed, "demux"
    if count == 0:
        return None, "demux"
    # Packets without any timing or durations: count decoded frames.
    container.seek(0)
    frames = 0
    try:
        for _ in container.decode(stream):
            frames += 1
    except av.FFmpegError:
        pass
    return (frames / fps if fps and frames else None), "decode"


# ------------------------------------------------------------------------------------------------ rotation


def _iter_boxes(fh: IO[bytes], start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, body start, box end) of the ISO-BMFF boxes in [start, end), reading headers only."""
    pos = start
    while pos + 8 <= end:
        fh.seek(pos)
        hdr = fh.read(8)
        if len(hdr) < 8:
            return
        size, typ = struct.unpack(">I4s", hdr)
        hlen = 8
        if size == 1:
            ext = fh.read(8)
            if len(ext) < 8:
                return
            size = struct.unpack(">Q", ext)[0]
            hlen = 16
        elif size == 0:
            size = end - pos
        if size < hlen:
            return
        yield typ, pos + hlen, min(pos + size, end)
        pos += size


def mp4_track_rotations(fh: IO[bytes], size: int) -> dict[int, int]:
    """{track_id: rotation} from the ``tkhd`` matrices of an MP4/MOV file, without decoding anything.

    Rotation uses FFmpeg's display-matrix convention (degrees counter-clockwise to apply for display,
    ``av_display_rotation_get``), normalised to 0/90/180/270 (a phone's "rotate=90" tag reads 270).
    """
    out: dict[int, int] = {}
    for typ, body, end in _iter_boxes(fh, 0, size):
        if typ != b"moov":
            continue
        for ttyp, tbody, tend in _iter_boxes(fh, body, end):
            if ttyp != b"trak":
                continue
            for htyp, hbody, _hend in _iter_boxes(fh, tbody, tend):
                if htyp != b"tkhd":
                    continue
                fh.seek(hbody)
                data = fh.read(92)
                if len(data) < 84:
                    break
                version = data[0]
                if version == 1:
                    track_id = struct.unpack(">I", data[20:24])[0]
                    mstart = 4 + 8 + 8 + 4 + 4 + 8 + 8 + 8
                else:
                    track_id = struct.unpack(">I", data[12:16])[0]
                    mstart = 4 + 4 + 4 + 4 + 4 + 4 + 8 + 8
                if len(data) < mstart + 36:
                    break
                m = struct.unpack(">9i", data[mstart : mstart + 36])
                a, b, c, d = (x / 65536.0 for x in (m[0], m[1], m[3], m[4]))
                s0, s1 = math.hypot(a, c), math.hypot(b, d)
                if s0 == 0 or s1 == 0:
                    break
                ccw = -math.degrees(math.atan2(b / s1, a / s0))
                out[track_id] = normalize_rotation(ccw)
                break
        break
    return out


def normalize_rotation(degrees: float | None) -> int:
    """Round to the nearest quarter turn in [0, 360): -90 -> 270."""
    if degrees is None or not math.isfinite(degrees):
        return 0
    return int(round(degrees / 90.0)) % 4 * 90


def _rotation_of(media: OpenedMedia, stream: Any) -> int:
    fmt = media.container.format.name or ""
    if "mp4" not in fmt and "mov" not in fmt:
        return 0
    try:
        with media.reopen_bytes() as fh:
            rots = mp4_track_rotations(fh, media.size_bytes)
    except Exception:  # noqa: BLE001  (rotation is best effort; decoding reports it per frame anyway)
        return 0
    return rots.get(stream.id, 0)


def check_not_truncated(media: OpenedMedia, streams: list[Any]) -> None:
    """MP4/MOV index entries record each sample's byte range: data past the end of the file = truncated."""
    for s in streams:
        if s is None:
            continue
        entries = s.index_entries
        n = len(entries)
        if n == 0:
            continue
        last = entries[n - 1]
        if last.pos >= 0 and last.size > 0 and last.pos + last.size > media.size_bytes:
            raise MediaError(
                CORRUPT,
                f"truncated: {s.type} data runs to byte {last.pos + last.size} but the file has {media.size_bytes}",
                media.path,
            )


# ------------------------------------------------------------------------------------------------ probe


@dataclass(frozen=True)
class ProbeResult:
    """What a media file holds, from container metadata.

    ``width``/``height`` are the stored (coded) frame size; ``display_width``/``display_height`` swap them
    when ``rotation`` is 90/270 (sample aspect ratio is not applied). ``rotation``: degrees counter-clockwise
    to apply for display (FFmpeg convention), 0/90/180/270. ``duration_s`` is the container's (longest
    stream); ``video_duration_s`` the video stream's. ``duration_source``: "container" | "stream" | "demux" |
    "decode". Audio-only files (``probe(..., require_video=False)``) have width = height = 0, fps = 0.
    """

    path: str
    duration_s: float
    width: int
    height: int
    fps: float
    has_audio: bool
    video_codec: str | None
    audio_codec: str | None
    size_bytes: int
    rotation: int = 0
    display_width: int = 0
    display_height: int = 0
    has_video: bool = True
    container_format: str | None = None
    video_duration_s: float | None = None
    num_frames: int | None = None
    bit_rate: int | None = None
    pix_fmt: str | None = None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    duration_source: str = "container"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe(path: Any, *, require_video: bool = True) -> ProbeResult:
    """Read a media file's metadata; raises :class:`MediaError` (see ``captionrec.media.errors``).

    Reasons: missing_file, empty_file, not_a_video, corrupt (cannot open, or MP4 truncated), no_video_stream
    (only when ``require_video``), decode_error (no duration can be established at all).
    """
    with open_media(path) as media:
        c = media.container
        v = video_stream(c)
        a = audio_stream(c)
        if v is None and require_video:
            raise MediaError(NO_VIDEO_STREAM, f"no video stream (streams: {stream_kinds(c)})", media.path)
        if v is None and a is None:
            raise MediaError(NOT_A_VIDEO, "no audio or video stream", media.path)
        check_not_truncated(media, [v, a])

        source = "container"
        duration = c.duration / av.time_base if c.duration is not None and c.duration > 0 else None
        vdur = stream_duration_s(c, v) if v is not None else None
        if duration is None:
            durs = [d for d in (vdur, stream_duration_s(c, a) if a is not None else None) if d]
            duration = max(durs) if durs else None
            source = "stream"
        if duration is None:
            duration, source = scan_duration_s(c, v if v is not None else a)
            vdur = duration if v is not None else None
        if duration is None:
            raise MediaError(DECODE_ERROR, "no duration in metadata and no frames could be read", media.path)

        width = height = 0
        fps = 0.0
        rotation = 0
        num_frames = None
        pix_fmt = None
        if v is not None:
            cc = v.codec_context
            width, height = int(cc.width or 0), int(cc.height or 0)
            fps = stream_fps(v)
            rotation = _rotation_of(media, v)
            num_frames = int(v.frames) if v.frames else (int(round((vdur or duration) * fps)) if fps else None)
            pix_fmt = cc.pix_fmt
        dw, dh = (height, width) if rotation in (90, 270) else (width, height)
        return ProbeResult(
            path=media.path,
            duration_s=float(duration),
            width=width,
            height=height,
            fps=fps,
            has_audio=a is not None,
            video_codec=v.codec_context.name if v is not None else None,
            audio_codec=a.codec_context.name if a is not None else None,
            size_bytes=media.size_bytes,
            rotation=rotation,
            display_width=dw,
            display_height=dh,
            has_video=v is not None,
            container_format=c.format.name,
            video_duration_s=float(vdur) if vdur is not None else None,
            num_frames=num_frames,
            bit_rate=int(c.bit_rate) if c.bit_rate else None,
            pix_fmt=pix_fmt,
            audio_sample_rate=(int(a.codec_context.sample_rate) or None) if a is not None else None,
            audio_channels=(int(a.codec_context.channels) or None) if a is not None else None,
            duration_source=source,
        )
