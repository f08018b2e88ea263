"""captionrec.media on real MP4s made by ffmpeg (captionrec.testing.media_fixtures), no mocks."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from captionrec.media import (
    REASONS,
    FrameSample,
    MediaError,
    ProbeResult,
    audio_rms_dbfs,
    is_silent,
    load_audio,
    output_size,
    probe,
    sample_frames,
    target_times,
)
from captionrec.testing.media_fixtures import ffmpeg_exe, make_media_suite

SR = 16000


@pytest.fixture(scope="session")
def media(tmp_path_factory) -> dict[str, Path]:
    return make_media_suite(tmp_path_factory.mktemp("media"))


# ------------------------------------------------------------------------------------------------ probe


def test_probe_normal_clip_matches_what_was_encoded(media):
    r = probe(media["normal"])
    assert isinstance(r, ProbeResult)
    assert r.duration_s == pytest.approx(3.0, abs=0.1)
    assert r.video_duration_s == pytest.approx(3.0, abs=0.05)
    assert (r.width, r.height) == (160, 90)
    assert (r.display_width, r.display_height) == (160, 90)
    assert r.fps == pytest.approx(25.0)
    assert r.has_audio and r.has_video
    assert (r.video_codec, r.audio_codec) == ("h264", "aac")
    assert r.size_bytes == media["normal"].stat().st_size
    assert r.rotation == 0
    assert r.num_frames == 75
    assert r.audio_sample_rate == SR and r.audio_channels == 1
    assert r.duration_source == "container"
    assert r.to_dict()["fps"] == r.fps
    with pytest.raises(AttributeError):  # frozen
        r.fps = 1.0  # type: ignore[misc]


def test_probe_accepts_pathlike_str_and_file_uri(media):
    p = media["normal"]
    a, b, c = probe(p), probe(str(p)), probe(p.as_uri())
    assert a.to_dict() | {"path": ""} == b.to_dict() | {"path": ""} == c.to_dict() | {"path": ""}
    assert c.path.startswith("file://")


def test_fsspec_uri_reads_through_a_file_object(media):
    fsspec = pytest.importorskip("fsspec")
    fs = fsspec.filesystem("memory")
    fs.pipe("/captionrec-test/rotated.mp4", media["rotated"].read_bytes())
    uri = "memory://captionrec-test/rotated.mp4"
    r = probe(uri)
    assert (r.width, r.height, r.rotation) == (160, 90, 90)
    fs_ = sample_frames(uri, num_frames=2)
    assert fs_.frames.shape == (2, 160, 90, 3)
    with pytest.raises(MediaError) as e:
        probe("memory://captionrec-test/nope.mp4")
    assert e.value.reason == "missing_file"


def test_probe_vertical_and_60fps(media):
    v = probe(media["vertical"])
    assert (v.width, v.height, v.display_width, v.display_height) == (90, 160, 90, 160)
    f = probe(media["fps60"])
    assert f.fps == pytest.approx(60.0)
    assert f.num_frames == 120


def test_probe_rotation_swaps_display_dims(media):
    r = probe(media["rotated"])
    assert r.rotation == 90
    assert (r.width, r.height) == (160, 90)
    assert (r.display_width, r.display_height) == (90, 160)


def test_probe_without_duration_metadata_demuxes(media):
    r = probe(media["raw_h264"])
    assert r.duration_source == "demux"
    assert r.duration_s == pytest.approx(2.0, abs=0.1)
    assert r.container_format == "h264"


def test_probe_no_audio_and_audio_only(media):
    r = probe(media["no_audio"])
    assert r.has_audio is False and r.audio_codec is None
    with pytest.raises(MediaError) as e:
        probe(media["audio_only"])
    assert e.value.reason == "no_video_stream"
    a = probe(media["audio_only"], require_video=False)
    assert a.has_video is False and a.has_audio is True
    assert (a.width, a.height, a.fps, a.video_codec) == (0, 0, 0.0, None)
    assert a.duration_s == pytest.approx(2.0, abs=0.1)


# ------------------------------------------------------------------------------------------------ bad input

BAD_CASES = [
    ("zero_byte", "empty_file"),
    ("truncated", "corrupt"),
    ("truncated_faststart", "corrupt"),
    ("not_a_video", "not_a_video"),
    ("not_a_video_txt", "not_a_video"),
    ("missing", "missing_file"),
]


@pytest.mark.parametrize(("case", "reason"), BAD_CASES)
@pytest.mark.parametrize("fn", ["probe", "sample_frames", "load_audio"])
def test_bad_inputs_raise_media_error_with_reason(media, tmp_path, case, reason, fn):
    path = tmp_path / "missing.mp4" if case == "missing" else media[case]
    func = {"probe": probe, "sample_frames": sample_frames, "load_audio": load_audio}[fn]
    with pytest.raises(MediaError) as e:
        func(path)
    assert e.value.reason == reason
    assert e.value.reason in REASONS
    assert str(path.name) in str(e.value)


def test_other_bad_paths(tmp_path):
    with pytest.raises(MediaError) as e:
        probe(tmp_path)  # a directory
    assert e.value.reason == "not_a_video"
    with pytest.raises(MediaError) as e:
        probe(None)  # a null video_path row
    assert e.value.reason == "missing_file"
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(MediaError) as e:
        probe(noise)
    assert e.value.reason == "not_a_video"


def test_media_error_contract():
    err = MediaError("corrupt", "cut short", "/x.mp4")
    assert err.reason == "corrupt" and err.path == "/x.mp4"
    assert "cut short" in str(err) and "/x.mp4" in str(err)
    back = pickle.loads(pickle.dumps(err))  # crosses Spark worker boundaries
    assert (back.reason, back.message, back.path) == ("corrupt", "cut short", "/x.mp4")
    with pytest.raises(ValueError):
        MediaError("bogus", "x")


# ------------------------------------------------------------------------------------------------ frames


def test_sample_frames_shape_dtype_and_times(media):
    fs = sample_frames(media["normal"], num_frames=8)
    assert isinstance(fs, FrameSample)
    assert fs.frames.shape == (8, 90, 160, 3) and fs.frames.dtype == np.uint8
    assert fs.times_s.shape == (8,) and fs.target_times_s.shape == (8,)
    np.testing.assert_allclose(fs.target_times_s, (np.arange(8) + 0.5) * 3.0 / 8)
    assert np.all(np.abs(fs.times_s - fs.target_times_s) <= 0.5 / 25 + 1e-6)  # nearest frame at 25 fps
    assert fs.source_fps == pytest.approx(25.0)
    assert fs.duration_s == pytest.approx(3.0, abs=0.05)
    assert fs.num_distinct == 8
    assert not np.array_equal(fs.frames[0], fs.frames[-1])  # testsrc2 moves
    assert fs.frames.flags["C_CONTIGUOUS"]


def test_sample_frames_fps_mode(media):
    fs = sample_frames(media["normal"], fps=2.0)
    assert fs.frames.shape[0] == 6
    np.testing.assert_allclose(fs.target_times_s, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75])


def test_sample_frames_60fps(media):
    fs = sample_frames(media["fps60"], num_frames=10)
    assert fs.source_fps == pytest.approx(60.0)
    assert np.all(np.abs(fs.times_s - fs.target_times_s) <= 0.5 / 60 + 1e-6)


def test_sample_frames_vertical(media):
    fs = sample_frames(media["vertical"], num_frames=4)
    assert fs.frames.shape == (4, 160, 90, 3)


@pytest.mark.parametrize(
    ("max_pixels", "expected"), [(4000, None), (160 * 90, (90, 160)), (10**9, (90, 160)), (100, None)]
)
def test_sample_frames_max_pixels(media, max_pixels, expected):
    fs = sample_frames(media["normal"], num_frames=3, max_pixels=max_pixels)
    _, h, w, _ = fs.frames.shape
    assert h * w <= max_pixels
    if expected is not None:
        assert (h, w) == expected
    else:
        assert h % 2 == 0 and w % 2 == 0
        assert w / h == pytest.approx(16 / 9, rel=0.15)


def test_output_size():
    assert output_size(1280, 720, None) == (1280, 720)
    w, h = output_size(1280, 720, 448 * 448)
    assert w * h <= 448 * 448 and w % 2 == 0 and h % 2 == 0 and w / h == pytest.approx(16 / 9, rel=0.01)
    w, h = output_size(1080, 1920, 360 * 640)
    assert (w, h) == (360, 640)
    assert output_size(3, 1000, 4) == (2, 2)


def test_target_times():
    np.testing.assert_allclose(target_times(4.0, 4), [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(target_times(3.0, 99, fps=1.0), [0.5, 1.5, 2.5])
    assert target_times(0.0, 3).tolist() == [0.0, 0.0, 0.0]


def test_vfr_times_come_from_pts(media):
    fs = sample_frames(media["vfr"], num_frames=12)
    t = fs.times_s
    assert np.all(np.diff(t) >= 0)
    assert t[0] >= 0 and t[-1] <= fs.duration_s
    # After 1 s the clip runs at 10 fps: frames sit on 0.1 s steps, each within half a step of its target.
    late = fs.target_times_s > 1.1
    assert late.sum() >= 6
    np.testing.assert_allclose(t[late] * 10, np.round(t[late] * 10), atol=1e-3)
    assert np.all(np.abs(t[late] - fs.target_times_s[late]) <= 0.05 + 1e-6)


def test_rotation_applied_like_ffmpeg(media):
    path = media["rotated"]  # 10 frames at 10 fps, 160x90 stored, rotation 90 ccw
    fs = sample_frames(path, num_frames=5)  # targets 0.1, 0.3, ... fall on frames 1, 3, 5, 7, 9
    assert fs.rotation == 90
    assert fs.frames.shape == (5, 160, 90, 3)
    raw = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    ref = np.frombuffer(raw, np.uint8).reshape(-1, 160, 90, 3)  # ffmpeg autorotates
    ours, theirs = fs.frames.astype(int), ref[[1, 3, 5, 7, 9]].astype(int)
    assert np.abs(ours - theirs).mean() < 3
    assert np.abs(np.rot90(ours, 2, axes=(1, 2)) - theirs).mean() > 20  # orientation matters
    raw_fs = sample_frames(path, num_frames=5, apply_rotation=False)
    assert raw_fs.frames.shape == (5, 90, 160, 3)


def test_short_clip_repeats_frames_never_crashes(media):
    fs = sample_frames(media["rotated"], num_frames=32)  # the clip has 10 frames
    assert fs.frames.shape[0] == 32
    assert fs.num_distinct <= 10
    assert np.all(np.diff(fs.times_s) >= 0)
    fs = sample_frames(media["normal"], num_frames=2, start_s=10.0)  # start past the end: last frame
    assert fs.frames.shape[0] == 2 and fs.times_s[0] == pytest.approx(3.0 - 1 / 25, abs=1e-6)


def test_long_clip_stops_at_window(media):
    fs = sample_frames(media["long"])  # 10 min at 10 fps = 6000 frames; window 30 s
    assert fs.frames.shape == (16, 36, 64, 3)
    assert fs.duration_s == pytest.approx(600.0, abs=0.5)
    assert fs.times_s.max() <= 30.0
    assert fs.decoded_frames <= 30 * 10 + 10  # never past the window


def test_long_clip_sparse_sampling_seeks(media):
    fs = sample_frames(media["long"], num_frames=4, window_s=None)  # targets 75, 225, 375, 525 s
    assert fs.strategy == "seek" and fs.seeks >= 3
    np.testing.assert_allclose(fs.times_s, [75.0, 225.0, 375.0, 525.0], atol=0.05)
    assert fs.decoded_frames <= 4 * 300 + 20  # at most one GOP (30 s) per target, not 6000
    scan = sample_frames(media["long"], num_frames=4, window_s=None, strategy="scan")
    assert scan.seeks == 0 and np.array_equal(scan.frames, fs.frames)


def test_start_offset(media):
    fs = sample_frames(media["long"], num_frames=4, start_s=100.0, window_s=20.0)
    np.testing.assert_allclose(fs.target_times_s, [102.5, 107.5, 112.5, 117.5])
    assert np.all((fs.times_s >= 100.0) & (fs.times_s <= 120.0))
    assert fs.seeks >= 1


@pytest.mark.parametrize(
    ("case", "num_frames"),
    # open_gop with 6, 10, 13 targets: one lands just before a keyframe's display time, where the nearest frame
    # is an open-GOP leading B-frame that needs the previous GOP's chain. open_gop_h264 with 5 targets: resuming
    # at a non-IDR keyframe after skipped packets needs a decoder reset, or H.264 withholds that GOP's frames.
    [
        ("bframes", 16),
        ("gop1s", 3),
        ("gop1s", 16),
        ("open_gop", 6),
        ("open_gop", 10),
        ("open_gop", 13),
        ("open_gop", 40),
        ("open_gop_h264", 5),
        ("open_gop_h264", 16),
    ],
)
def test_skipping_strategies_return_the_same_frames_as_full_decode(media, case, num_frames):
    full = sample_frames(media[case], num_frames=num_frames, strategy="full")
    for strategy in ("auto", "scan"):
        fs = sample_frames(media[case], num_frames=num_frames, strategy=strategy)
        np.testing.assert_array_equal(fs.times_s, full.times_s)
        np.testing.assert_array_equal(fs.frames, full.frames)
        assert fs.decoded_frames < full.decoded_frames
    sparse = sample_frames(media["gop1s"], num_frames=3)
    assert sparse.strategy == "seek"


def test_raw_stream_without_timestamps(media):
    fs = sample_frames(media["raw_h264"], num_frames=4)
    assert fs.frames.shape == (4, 90, 160, 3)
    assert fs.num_distinct == 4
    np.testing.assert_allclose(fs.times_s, fs.target_times_s, atol=0.5 / 25 + 1e-6)


@pytest.mark.parametrize("case", ["audio_only", "audio_cover_art"])
def test_audio_files_have_no_video_stream(media, case):
    for fn in (probe, sample_frames):
        with pytest.raises(MediaError) as e:
            fn(media[case])
        assert e.value.reason == "no_video_stream"
    assert probe(media[case], require_video=False).has_video is False
    assert abs(load_audio(media[case]).shape[0] - 2 * SR) <= 1200


def test_sample_frames_argument_errors(media):
    for kwargs in ({"num_frames": 0}, {"fps": -1.0}, {"window_s": 0.0}, {"strategy": "magic"}, {"max_pixels": 1}):
        with pytest.raises(ValueError):
            sample_frames(media["normal"], **kwargs)


# ------------------------------------------------------------------------------------------------ audio


def test_load_audio_long_is_exactly_the_window(media):
    a = load_audio(media["long"])  # 40 s of audio, 30 s window
    assert a.dtype == np.float32 and a.ndim == 1
    assert a.shape[0] == 30 * SR
    assert -1.0 <= a.min() and a.max() <= 1.0


def test_load_audio_short_is_the_whole_track(media):
    a = load_audio(media["normal"])  # 3 s clip
    assert abs(a.shape[0] - 3 * SR) <= 1024  # AAC frame padding
    b = load_audio(media["normal"], sample_rate=8000, window_s=None)
    assert abs(b.shape[0] - 3 * 8000) <= 512


def test_load_audio_start_offset_and_file_uri(media):
    a = load_audio(media["long"].as_uri(), start_s=20.0, window_s=30.0)  # 20 s left of 40
    assert abs(a.shape[0] - 20 * SR) <= 1024
    b = load_audio(media["long"], start_s=20.0, window_s=5.0)
    assert b.shape[0] == 5 * SR
    full = load_audio(media["long"], window_s=26.0)
    # The same samples as decoding from the start (resampler phase may differ by a sample).
    assert np.abs(b[1000:4000] - full[20 * SR + 1000 : 20 * SR + 4000]).max() < 0.05


def test_load_audio_no_audio_stream(media):
    for case in ("no_audio", "raw_h264"):
        with pytest.raises(MediaError) as e:
            load_audio(media[case])
        assert e.value.reason == "no_audio_stream"


def test_load_audio_audio_only(media):
    a = load_audio(media["audio_only"])
    assert abs(a.shape[0] - 2 * SR) <= 1024
    assert not is_silent(a)


def test_silence_detection(media):
    assert is_silent(load_audio(media["silent"]))
    assert is_silent(load_audio(media["quiet"]))  # a tone far below -50 dBFS
    loud = load_audio(media["normal"])
    assert not is_silent(loud)
    assert audio_rms_dbfs(loud) == pytest.approx(-27.0, abs=1.5)  # sine at 1/8 amplitude x 0.5 volume
    assert is_silent(loud, threshold_dbfs=-20.0)
    assert is_silent(np.zeros(0, np.float32)) and audio_rms_dbfs(np.zeros(10)) == float("-inf")
    assert audio_rms_dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["bframes", "gop1s", "open_gop", "open_gop_h264", "vfr", "long"])
def test_skipping_matches_full_decode_for_every_target_count(media, case):
    for n in range(2, 50):
        full = sample_frames(media[case], num_frames=n, strategy="full", max_pixels=64 * 36)
        fs = sample_frames(media[case], num_frames=n, max_pixels=64 * 36)
        np.testing.assert_array_equal(fs.times_s, full.times_s, err_msg=f"{case} n={n}")
        np.testing.assert_array_equal(fs.frames, full.frames, err_msg=f"{case} n={n}")


# -- packet errors: counted, and a decode that lost most of the window is a decode_error ----------------------


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    from captionrec.testing.media_fixtures import make_clip, make_damaged

    d = tmp_path_factory.mktemp("damaged")
    clip = make_clip(d / "ten.mp4", duration_s=10.0, keyint=25)
    return {"most": make_damaged(clip, d / "most.mp4", upto=0.9), "head": make_damaged(clip, d / "head.mp4", upto=0.2)}


def test_packet_errors_that_lose_most_of_the_window_are_decode_errors(damaged):
    from captionrec.media import probe
    from captionrec.media.audio import decode_audio

    assert probe(damaged["most"]).duration_s == pytest.approx(10.0, abs=0.1)  # the index is intact: not corrupt
    with pytest.raises(MediaError, match="lost most of the window") as err:
        load_audio(damaged["most"])  # it used to return the first ~1.5 s of 10 without a word
    assert err.value.reason == "decode_error"
    with pytest.raises(MediaError, match="lost most of the window") as err:
        sample_frames(damaged["most"], num_frames=8)
    assert err.value.reason == "decode_error"
    # a damaged stretch the decoders skip: usable, and the errors are counted
    audio = decode_audio(damaged["head"])
    assert audio.decode_errors > 0 and audio.seconds > 0.5 * audio.expected_s
    frames = sample_frames(damaged["head"], num_frames=8)
    assert frames.decode_errors > 0 and 2 * frames.lost_targets <= frames.num_frames


def test_clean_decodes_report_no_errors(media):
    from captionrec.media.audio import decode_audio

    a = decode_audio(media["normal"])
    assert (
        a.decode_errors == 0
        and a.seconds == pytest.approx(3.0, abs=0.1)
        and a.expected_s == pytest.approx(3.0, abs=0.1)
    )
    f = sample_frames(media["normal"], num_frames=8)
    assert f.decode_errors == 0 and f.lost_targets == 0
