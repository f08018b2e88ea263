"""Synthetic media files for tests and benchmarks, made with imageio-ffmpeg's bundled ffmpeg (libx264 + aac).

Everything is tiny and fast: the whole :func:`make_media_suite` (including a 10-minute clip at 64x36) takes
~1-3 s on 2 cores. Video is FFmpeg's ``testsrc2`` pattern (moving, so frames differ), audio a sine tone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "ffmpeg_exe",
    "make_clip",
    "make_media_suite",
    "make_not_a_video",
    "make_spoken_clip",
    "make_truncated",
    "make_zero_byte",
    "run_ffmpeg",
]


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg  # noqa: PLC0415  (test/bench dependency only)

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: list[str], timeout: float = 300.0) -> None:
    """Run ffmpeg quietly; raise RuntimeError with the tail of its stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace")[-2000:]
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def make_clip(
    path: str | os.PathLike,
    *,
    duration_s: float = 2.0,
    size: tuple[int, int] = (160, 90),
    fps: float = 25,
    video: bool = True,
    audio: str | None = "tone",
    audio_duration_s: float | None = None,
    audio_rate: int = 16000,
    audio_volume: float = 0.5,
    tone_hz: float = 440.0,
    preset: str = "ultrafast",
    video_codec: str = "libx264",
    bframes: int | None = None,
    keyint: int | None = None,
    open_gop: bool = False,
    vfr: bool = False,
    rotation: int | None = None,
    faststart: bool = False,
) -> Path:
    """Encode an H.264/AAC MP4 (or an AAC-only .m4a with ``video=False``).

    Args:
        size: (width, height); even numbers for yuv420p.
        audio: "tone" (sine at ``audio_volume``), "silence" (digital silence), or None (no audio track).
        audio_duration_s: audio track length when it should differ from the video (default: same).
        preset: x264 preset; "ultrafast" has no B-frames, "veryfast" and slower have B-frames.
        video_codec: FFmpeg encoder; e.g. "mpeg4" (MPEG-4 part 2, open GOPs; use an .avi path).
        bframes: max consecutive B-frames (``-bf``); None = the encoder's default.
        keyint: keyframe interval in frames (``-g``); None = the encoder's default (x264: 250).
        open_gop: x264 open GOPs (non-IDR keyframes whose leading B-frames reference the previous GOP).
        vfr: variable frame rate: full ``fps`` for the first second, then every third frame.
        rotation: display rotation in degrees counter-clockwise (remuxed with ``-display_rotation``).
        faststart: move the ``moov`` index to the front (ffmpeg's default puts it at the end).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not video and audio is None:
        raise ValueError("a clip needs video or audio")
    args: list[str] = []
    if video:
        w, h = size
        args += ["-f", "lavfi", "-i", f"testsrc2=size={w}x{h}:rate={fps}:duration={duration_s}"]
    if audio is not None:
        adur = audio_duration_s if audio_duration_s is not None else duration_s
        if audio == "tone":
            src = f"sine=frequency={tone_hz}:sample_rate={audio_rate}:duration={adur},volume={audio_volume}"
        elif audio == "silence":
            src = f"anullsrc=r={audio_rate}:cl=mono,atrim=duration={adur}"
        else:
            raise ValueError(f"audio must be 'tone', 'silence' or None, got {audio!r}")
        args += ["-f", "lavfi", "-i", src]
    if video:
        args += ["-map", "0:v"]
        if vfr:
            args += ["-vf", "select='if(lt(t\\,1)\\,1\\,not(mod(n\\,3)))'", "-fps_mode", "vfr"]
        args += ["-c:v", video_codec, "-pix_fmt", "yuv420p"]
        if video_codec == "libx264":
            args += ["-preset", preset]
        if bframes is not None:
            args += ["-bf", str(bframes)]
        if keyint is not None:
            args += ["-g", str(keyint)]
        if open_gop:
            args += ["-x264-params", "open-gop=1"]
    if audio is not None:
        args += ["-map", f"{1 if video else 0}:a", "-c:a", "aac", "-b:a", "32k", "-ac", "1"]
    if faststart:
        args += ["-movflags", "+faststart"]
    if rotation is None:
        run_ffmpeg([*args, str(path)])
        return path
    tmp = path.with_name(path.stem + ".norot" + path.suffix)
    run_ffmpeg([*args, str(tmp)])
    run_ffmpeg(["-display_rotation", str(rotation), "-i", str(tmp), "-c", "copy", str(path)])
    tmp.unlink()
    return path


def make_spoken_clip(path: str | os.PathLike, text: str, voice: str | None = None) -> Path | None:
    """A 10 s test-pattern video whose soundtrack is `text` spoken by espeak-ng (`voice`: an espeak voice, None: its
    default), AAC in MP4; None when espeak-ng is not installed (the caller skips or leaves the clip out)."""
    espeak = shutil.which("espeak-ng") or shutil.which("espeak")
    if espeak is None:
        return None
    path = Path(path)
    wav = path.with_suffix(".wav")
    voice_args = ["-v", voice] if voice else []
    subprocess.run([espeak, *voice_args, "-w", str(wav), "-s", "150", text], check=True, capture_output=True)
    run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=160x90:rate=25:duration=10",
            "-i",
            str(wav),
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-shortest",
            str(path),
        ]
    )
    return path


def make_truncated(src: str | os.PathLike, dst: str | os.PathLike, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes (a download cut short)."""
    data = Path(src).read_bytes()
    dst = Path(dst)
    dst.write_bytes(data[: max(1, int(len(data) * keep_fraction))])
    return dst


def make_damaged(src: str | os.PathLike, dst: str | os.PathLike, upto: float = 0.9, seed: int = 0) -> Path:
    """Copy an MP4 (``moov`` at the end, as ``make_clip`` writes it) with its media data overwritten by random bytes
    from 5% to ``upto`` of the ``mdat`` box: the index is intact (not ``corrupt``), packets fail to decode.

    With ``upto=0.9`` most of the window is lost (a ``decode_error``); with ``upto=0.2`` the decoders skip the
    damaged stretch and the file stays usable (``decode_errors`` > 0).
    """
    import numpy as np

    data = bytearray(Path(src).read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    if mdat < 0 or moov < mdat:
        raise ValueError(f"{src}: expected an MP4 with mdat before moov")
    size = moov - 8 - (mdat + 8)
    start, end = mdat + 8 + int(size * 0.05), mdat + 8 + int(size * upto)
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    dst = Path(dst)
    dst.write_bytes(bytes(data))
    return dst


def make_zero_byte(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_not_a_video(path: str | os.PathLike, lines: int = 200) -> Path:
    """A plain text file (named however the caller likes: .mp4, .txt...)."""
    path = Path(path)
    path.write_text("This is a text file, not a video.\n" * lines)
    return path


def make_media_suite(out_dir: str | os.PathLike) -> dict[str, Path]:
    """Every test case in ``out_dir``; returns {case name: path}.

    Cases: normal (3 s 160x90 25 fps + tone), vertical (90x160, 9:16), fps60 (2 s at 60 fps),
    vfr (30 fps for 1 s then 10 fps), bframes (4 s, B-frames, keyint 25), gop1s (12 s, keyframe every 1 s,
    B-frames: sparse sampling seeks), open_gop (MPEG-4 part 2 in AVI, 2 B-frames, B-frames after a keyframe
    reference the previous GOP), open_gop_h264 (x264 open GOPs in MKV, keyframe every 1 s), no_audio,
    audio_only (.m4a), audio_cover_art (.mp3 whose only video stream is an attached cover picture), silent (digital-silence track),
    quiet (tone at about -87 dBFS), rotated (display rotation 90), long (10 min 64x36 10 fps, keyframe every 30 s,
    40 s of audio), raw_h264 (elementary stream: no container duration, no timestamps),
    zero_byte, truncated (moov at the end, cut in half), truncated_faststart (moov first, cut),
    not_a_video (text named .mp4), not_a_video_txt (text named .txt: FFmpeg opens it as ANSI art).
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    s: dict[str, Path] = {}
    s["normal"] = make_clip(d / "normal.mp4", duration_s=3.0)
    s["vertical"] = make_clip(d / "vertical.mp4", duration_s=2.0, size=(90, 160))
    s["fps60"] = make_clip(d / "fps60.mp4", duration_s=2.0, fps=60)
    s["vfr"] = make_clip(d / "vfr.mp4", duration_s=3.0, fps=30, vfr=True, audio=None)
    s["bframes"] = make_clip(d / "bframes.mp4", duration_s=4.0, preset="veryfast", keyint=25, audio=None)
    s["gop1s"] = make_clip(d / "gop1s.mp4", duration_s=12.0, preset="veryfast", keyint=25, audio=None)
    s["open_gop"] = make_clip(d / "open_gop.avi", duration_s=4.0, video_codec="mpeg4", bframes=2, keyint=25, audio=None)
    s["open_gop_h264"] = make_clip(
        d / "open_gop_h264.mkv", duration_s=6.0, preset="veryfast", keyint=25, open_gop=True, audio=None
    )
    s["no_audio"] = make_clip(d / "no_audio.mp4", duration_s=2.0, audio=None)
    s["audio_only"] = make_clip(d / "audio_only.m4a", duration_s=2.0, video=False)
    cover = d / "cover.png"
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc2=size=64x64", "-frames:v", "1", str(cover)])
    s["audio_cover_art"] = d / "audio_cover_art.mp3"
    run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-i",
            str(cover),
            "-map",
            "0",
            "-map",
            "1",
            "-c:a",
            "libmp3lame",
            "-c:v",
            "png",
            "-disposition:v",
            "attached_pic",
            str(s["audio_cover_art"]),
        ]
    )
    s["silent"] = make_clip(d / "silent.mp4", duration_s=2.0, audio="silence")
    s["quiet"] = make_clip(d / "quiet.mp4", duration_s=2.0, audio_volume=0.0005)
    s["rotated"] = make_clip(d / "rotated.mp4", duration_s=1.0, fps=10, rotation=90, audio=None)
    s["long"] = make_clip(d / "long.mp4", duration_s=600.0, size=(64, 36), fps=10, keyint=300, audio_duration_s=40.0)
    s["raw_h264"] = d / "raw.h264"
    run_ffmpeg(["-i", str(s["no_audio"]), "-c:v", "copy", "-f", "h264", str(s["raw_h264"])])
    s["zero_byte"] = make_zero_byte(d / "zero_byte.mp4")
    s["truncated"] = make_truncated(s["normal"], d / "truncated.mp4", 0.5)
    fast = make_clip(d / "faststart.mp4", duration_s=3.0, faststart=True)
    s["truncated_faststart"] = make_truncated(fast, d / "truncated_faststart.mp4", 0.3)
    s["not_a_video"] = make_not_a_video(d / "not_a_video.mp4")
    s["not_a_video_txt"] = make_not_a_video(d / "notes.txt", lines=2000)
    return s
