#!/usr/bin/env python
"""Whole-video captions on a 10-minute 720p clip against captioning only its first 30 s: time and peak memory.

    python bench/bench_long_video.py [--minutes 10] [--max-windows 20] [--repeats 1] [--workdir DIR] [--json out.json]

Input: a synthetic 1280x720 30 fps H.264 clip (lavfi `testsrc2` through imageio-ffmpeg's ffmpeg, as the sample and
test-clip generators make theirs; x264 `veryfast`, so with B-frames; keyframe every 250 frames; no audio), encoded
once and cached under `--workdir` (default /tmp/captionrec-bench/long_720p_<minutes>m.mp4; 3-8 min on 2 loaded cores).

Variants, each in a fresh Python process (so the memory of one cannot hide in the other's high-water mark), with
the embedded default's tiny random Qwen2.5-VL (`models/tiny`), one torch thread, 8 frames per window at the
default pixel budget (64*28*28), 32 new tokens per caption, models loaded and warmed up before the clock:
  first30   the `video` kind: `captioning.core.caption_rows` over the first 30 s (the paper's setting; baseline)
  segments  the `video_full` kind: `caption_rows` over consecutive 30 s windows of the whole clip (stride 30 s,
            at most --max-windows), concatenated; window by window through `media.windows`, 4 windows per model
            batch (`caption.video.batch_size`, the default): at most 4 windows' frames are alive at once
  seg_b1    the same with one window per model batch (`caption.video.batch_size=1`): one window alive at once
Measured per variant: wall seconds of the caption call; tracemalloc peak (Python + numpy allocations during the
call); RSS growth (ru_maxrss after the call minus the RSS before it: FFmpeg's decoder buffers and torch's
activations included). Ratios segments / first30 are printed (same run; interleaved when --repeats > 1).

Targets (exit 1 if missed): memory stays bounded while the clip is 20x longer (seg_b1: tracemalloc peak ratio <= 1.5
and RSS growth ratio <= 2.0; segments: tracemalloc peak ratio <= 1.5 x its batch of 4 windows) and time grows at
most linearly with the windows (time ratio <= 1.5 x windows used).

Recorded (2-core shared dev machine, load ~3-6 from other sessions; 2026-11-30), 10-minute clip, 20 windows:
see bench/README.md ("bench_long_video.py") for the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_DIR = REPO / "models" / "tiny"
MEM_TARGET = 1.5  # tracemalloc peak ratio per window alive at once
RSS_TARGET = 2.0  # RSS growth ratio with one window alive at once
BATCH = 4  # caption.video.batch_size (default) of the `segments` variant
VARIANTS = ("first30", "segments", "seg_b1")
TIME_PER_WINDOW_TARGET = 1.5


def make_long_clip(workdir: Path, minutes: float) -> Path:
    """The cached synthetic 720p clip (encoded on first use)."""
    from captionrec.testing.media_fixtures import run_ffmpeg

    path = workdir / f"long_720p_{minutes:g}m.mp4"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = path.with_name(path.stem + ".partial.mp4")
        run_ffmpeg(
            [
                "-f",
                "lavfi",
                "-i",
                f"testsrc2=size=1280x720:rate=30:duration={60.0 * minutes:g}",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "250",
                "-pix_fmt",
                "yuv420p",
                str(tmp),
            ],
            timeout=3600.0,
        )
        tmp.rename(path)
        print(f"encoded {path} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return path


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_variant(variant: str, clip: str, max_windows: int, tiny_dir: str) -> dict:
    """In this (fresh) process: load the models, warm up on a 2 s clip, then time + trace one caption call."""
    import tracemalloc

    import torch

    from captionrec import contracts as C
    from captionrec.captioning.core import caption_rows, load_models
    from captionrec.captioning.plan import plan_kind
    from captionrec.config.caption import CaptionConfig, SegmentsConfig, VideoCaptionConfig
    from captionrec.testing.media_fixtures import make_clip

    torch.set_num_threads(1)
    seg = SegmentsConfig(enabled=True, window_s=30.0, stride_s=30.0, max_windows=max_windows)
    video = VideoCaptionConfig(
        num_frames=8, window_s=30.0, batch_size=1 if variant == "seg_b1" else BATCH, segments=seg
    )
    plan = plan_kind(
        CaptionConfig(tiny_models_dir=tiny_dir, video=video), "video" if variant == "first30" else C.VIDEO_FULL
    )
    models = load_models(plan, "cpu")
    warm = make_clip(Path(tempfile.mkdtemp()) / "warm.mp4", duration_s=2.0, size=(1280, 720), audio=None)
    list(caption_rows([{"item_id": "w", "video_path": str(warm)}], plan, models, prefetch=False))
    item = {"item_id": "long", "video_path": clip, "has_audio": False, "media_fingerprint": None}
    rss0 = _rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    rows = [r for out in caption_rows([item], plan, models, prefetch=False) for r in out]
    wall = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    (row,) = rows
    if row["status"] != C.OK:
        raise RuntimeError(f"{variant}: caption failed: {row['reason']}: {row['error']}")
    return {
        "variant": variant,
        "wall_s": wall,
        "tracemalloc_peak_mb": peak / 2**20,
        "rss_growth_mb": max(0.0, maxrss - rss0),
        "rss_before_mb": rss0,
        "windows": row.get("windows_used") or 1,
        "truncated": bool(row.get("truncated")),
        "frames": row["frames_used"],
        "decode_s": row["decode_s"],
        "model_s": row["model_s"],
    }


def spawn(variant: str, clip: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--variant",
        variant,
        "--clip",
        str(clip),
        "--max-windows",
        str(args.max_windows),
        "--tiny-dir",
        str(args.tiny_dir),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--max-windows", type=int, default=20)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "captionrec-bench")
    p.add_argument("--tiny-dir", type=Path, default=TINY_DIR)
    p.add_argument("--json", type=Path)
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # child process
    p.add_argument("--clip", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.clip, args.max_windows, str(args.tiny_dir))))
        return 0
    if not (args.tiny_dir / "qwen2_5_vl").exists():
        raise SystemExit(f"tiny models missing in {args.tiny_dir}: run `captionrec tiny-models --out {args.tiny_dir}`")
    args.workdir.mkdir(parents=True, exist_ok=True)
    clip = make_long_clip(args.workdir, args.minutes)
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in runs:  # interleaved
            runs[v].append(spawn(v, clip, args))
    keys = ("wall_s", "tracemalloc_peak_mb", "rss_growth_mb")
    med = {
        v: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in (*keys, "decode_s", "model_s")} for v, rs in runs.items()
    }
    ratios = {
        v: {k: med[v][k] / med["first30"][k] if med["first30"][k] > 0 else float("inf") for k in keys}
        for v in VARIANTS
        if v != "first30"
    }
    print(f"clip: {clip.name} ({args.minutes:g} min, 1280x720 30 fps); load {os.getloadavg()[0]:.1f}")
    print(
        f"{'variant':9} {'windows':>7} {'frames':>6} {'wall s':>8} {'decode s':>8} {'model s':>8} "
        f"{'tracemalloc MB':>14} {'RSS growth MB':>13}"
    )
    for v in VARIANTS:
        r, m = runs[v][0], med[v]
        print(
            f"{v:9} {r['windows']:>7} {r['frames']:>6} {m['wall_s']:>8.2f} {m['decode_s']:>8.2f} {m['model_s']:>8.2f} "
            f"{m['tracemalloc_peak_mb']:>14.1f} {m['rss_growth_mb']:>13.1f}"
        )
    windows = runs["segments"][0]["windows"]
    for v, q in ratios.items():
        print(
            f"ratios {v}/first30: time {q['wall_s']:.2f}x ({q['wall_s'] / windows:.2f}x per window), "
            f"tracemalloc peak {q['tracemalloc_peak_mb']:.2f}x, RSS growth {q['rss_growth_mb']:.2f}x; "
            f"windows={windows} truncated={runs[v][0]['truncated']}"
        )
    ok = (
        ratios["seg_b1"]["tracemalloc_peak_mb"] <= MEM_TARGET
        and ratios["seg_b1"]["rss_growth_mb"] <= RSS_TARGET
        and ratios["segments"]["tracemalloc_peak_mb"] <= MEM_TARGET * BATCH
        and all(q["wall_s"] <= TIME_PER_WINDOW_TARGET * windows for q in ratios.values())
    )
    print(
        "targets:",
        "met" if ok else "MISSED",
        f"(seg_b1 memory ratios <= {MEM_TARGET} / {RSS_TARGET}, segments "
        f"tracemalloc <= {MEM_TARGET * BATCH}, time <= {TIME_PER_WINDOW_TARGET} x windows)",
    )
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "median": med, "ratios": ratios}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
