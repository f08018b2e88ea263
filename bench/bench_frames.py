#!/usr/bin/env python
"""Benchmark ``captionrec.media.sample_frames`` against plain sequential PyAV decoding of the same window.

    python bench/bench_frames.py [--repeats 5] [--workdir /tmp/captionrec-bench] [--json out.json]

Clips (generated once into --workdir with imageio-ffmpeg, ~30 s of encoding the first time):
  dense.mp4   30 s 1280x720 30 fps H.264 (x264 veryfast: B-frames, keyframe every 250 frames) + AAC tone
  gop2s.mp4   the same with a keyframe every 60 frames (2 s)
Cases:
  dense   16 frames over the 30 s window of dense.mp4
  sparse   4 frames over the 30 s window of gop2s.mp4
Baseline ("decode-only", as in shared/ENVIRONMENT.md): demux + decode every video frame of the window with
``thread_type="AUTO"``, no colour conversion. Each method runs --repeats times, interleaved; the table shows
medians and the ratio to the baseline. Targets: dense <= 1.0x, sparse <= 0.3x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))  # run from a checkout without install

from captionrec.media import sample_frames  # noqa: E402
from captionrec.testing.media_fixtures import make_clip  # noqa: E402

WINDOW_S = 30.0
TARGETS = {"dense": 1.0, "sparse": 0.3}


def decode_only(path: Path, window_s: float = WINDOW_S) -> int:
    """Baseline: decode every frame of the first ``window_s`` seconds, no conversion. Returns frames decoded."""
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for pkt in c.demux(s):
            for f in pkt.decode():
                if f.time is not None and f.time >= window_s:
                    return n
                n += 1
    return n


def ensure_clips(workdir: Path) -> dict[str, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    clips = {"dense": workdir / "dense.mp4", "sparse": workdir / "gop2s.mp4"}
    common = dict(duration_s=30.0, size=(1280, 720), fps=30, preset="veryfast", audio_rate=48000)
    if not clips["dense"].exists():
        print(f"generating {clips['dense']} ...", flush=True)
        make_clip(clips["dense"], **common)
    if not clips["sparse"].exists():
        print(f"generating {clips['sparse']} ...", flush=True)
        make_clip(clips["sparse"], keyint=60, **common)
    return clips


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "captionrec-bench")
    ap.add_argument("--max-pixels", type=int, default=None, help="resize budget for sample_frames (default: native)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()

    clips = ensure_clips(args.workdir)
    cases = {
        "dense": (clips["dense"], 16),
        "sparse": (clips["sparse"], 4),
    }
    methods = {
        "decode-only (baseline)": lambda p, n: decode_only(p),
        "sample_frames auto": lambda p, n: sample_frames(p, n, WINDOW_S, max_pixels=args.max_pixels),
        "sample_frames scan": lambda p, n: sample_frames(p, n, WINDOW_S, max_pixels=args.max_pixels, strategy="scan"),
        "sample_frames full": lambda p, n: sample_frames(p, n, WINDOW_S, max_pixels=args.max_pixels, strategy="full"),
    }
    times: dict[tuple[str, str], list[float]] = {}
    info: dict[tuple[str, str], str] = {}
    for case, (path, n) in cases.items():
        for fn in methods.values():  # warm-up (page cache, imports)
            fn(path, n)
        for _ in range(args.repeats):
            for name, fn in methods.items():  # interleaved so that machine noise hits all methods alike
                t0 = time.perf_counter()
                out = fn(path, n)
                times.setdefault((case, name), []).append(time.perf_counter() - t0)
                if isinstance(out, int):
                    info[(case, name)] = f"{out} frames decoded"
                else:
                    info[(case, name)] = (
                        f"{out.decoded_frames} frames decoded, {out.seeks} seeks, "
                        f"out {out.frames.shape[1]}x{out.frames.shape[2]}"
                    )

    print()
    print(
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), {os.cpu_count()} CPUs, {platform.machine()}, "
        f"window {WINDOW_S:.0f} s, {args.repeats} repeats, median"
    )
    header = f"{'case':<8} {'method':<24} {'median s':>9} {'min s':>7} {'ratio':>7}  notes"
    print(header)
    print("-" * len(header) + "-" * 30)
    results = []
    verdicts = []
    for case in cases:
        base = statistics.median(times[(case, "decode-only (baseline)")])
        for name in methods:
            ts = times[(case, name)]
            med = statistics.median(ts)
            ratio = med / base
            print(f"{case:<8} {name:<24} {med:>9.3f} {min(ts):>7.3f} {ratio:>6.2f}x  {info[(case, name)]}")
            results.append(
                {
                    "case": case,
                    "method": name,
                    "median_s": med,
                    "min_s": min(ts),
                    "ratio": ratio,
                    "runs_s": ts,
                    "notes": info[(case, name)],
                }
            )
        auto = statistics.median(times[(case, "sample_frames auto")]) / base
        ok = auto <= TARGETS[case]
        verdicts.append(ok)
        verdict = "PASS" if ok else "FAIL"
        print(f"{case:<8} target sample_frames auto <= {TARGETS[case]:.1f}x baseline: {verdict} ({auto:.2f}x)")
        print()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
