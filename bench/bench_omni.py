#!/usr/bin/env python
"""Benchmark the one-pass omni captioner (kind `av`) against the paper's two-stage pair (kinds `video` + `audio`).

    python bench/bench_omni.py [--items 8] [--repeats 3] [--new-tokens 16] [--frames 8] [--threads 1] [--breakdown]

Same process, same clips (the bundled sample's first --items clean clips), models loaded once before the clock,
every method run --repeats times interleaved; the median is reported with items/s and the ratio to `omni`.

  omni          kind av:  Qwen2.5-Omni thinker, --frames frames + the soundtrack in one generate call per batch
  two_template  kind video (Qwen2.5-VL, --frames frames) + kind audio (faster-whisper tiny.en + AST tags +
                template fusion): the embedded default's two-stage pair
  two_llm       kind video + kind audio with fusion llm (Qwen2-Audio writes the audio caption): the paper's pair
  (--breakdown: each stage of the pair alone too, indented)

Each item goes through the stage's own Spark-free core (`captioning.core.caption_rows`: decode, batch, model,
rows). Every LLM generates exactly --new-tokens tokens (min_new_tokens = max_new_tokens) so that random weights
stopping early at an end token do not flatter one method. On the CPU the models are the tiny random ones
(`models/tiny`; `captionrec tiny-models --out models/tiny`) and faster-whisper tiny.en: the ratio measures the
pipeline shape (one decode of frames + audio and one generate vs two decodes and two or three model passes), not
the real models' compute. One torch thread by default, like each Spark worker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_DIR = REPO / "models" / "tiny"


def fixed_length(models, n: int) -> None:
    """Make every generate call of `models` produce exactly n new tokens."""
    for wrapper in vars(models).values():
        model = getattr(wrapper, "model", None)
        gc = getattr(model, "generation_config", None)
        if gc is not None and hasattr(model, "generate"):
            gc.min_new_tokens = n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/captionrec-bench")
    ap.add_argument("--breakdown", action="store_true", help="also time each stage of the pair alone")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch
    from bench_caption import bench_items

    from captionrec.captioning.core import caption_rows, load_models
    from captionrec.captioning.plan import plan_kind
    from captionrec.config.caption import AudioCaptionConfig, AvCaptionConfig, CaptionConfig, VideoCaptionConfig
    from captionrec.testing.tiny import build_all

    torch.set_num_threads(args.threads)
    build_all(TINY_DIR)
    items = bench_items(args.items, Path(args.workdir))
    n, b = args.new_tokens, args.batch_size
    cfg = CaptionConfig(
        tiny_models_dir=str(TINY_DIR),
        prefetch=True,
        video=VideoCaptionConfig(num_frames=args.frames, max_new_tokens=n, batch_size=b),
        audio=AudioCaptionConfig(batch_size=b, llm_max_new_tokens=n),
        av=AvCaptionConfig(num_frames=args.frames, max_new_tokens=n, batch_size=b, without_audio="frames"),
    )
    llm_cfg = replace(cfg, audio=replace(cfg.audio, fusion="llm"))
    plans = {
        "av": plan_kind(cfg, "av"),
        "video": plan_kind(cfg, "video"),
        "audio": plan_kind(cfg, "audio"),
        "audio_llm": plan_kind(llm_cfg, "audio"),
    }
    loaded, load_s = {}, {}
    for name, plan in plans.items():
        t0 = time.perf_counter()
        loaded[name] = load_models(plan)
        load_s[name] = round(time.perf_counter() - t0, 2)
        fixed_length(loaded[name], n)
    methods = {"omni": ["av"], "two_template": ["video", "audio"], "two_llm": ["video", "audio_llm"]}
    if args.breakdown:
        methods.update({"  video only": ["video"], "  audio template": ["audio"], "  audio llm": ["audio_llm"]})

    def run(kinds: list[str]) -> tuple[float, dict]:
        t0, statuses = time.perf_counter(), {}
        for k in kinds:
            for batch in caption_rows(items, plans[k], loaded[k]):
                for r in batch:
                    statuses[f"{k}:{r['status']}"] = statuses.get(f"{k}:{r['status']}", 0) + 1
        return time.perf_counter() - t0, statuses

    for kinds in methods.values():  # warm-up
        run(kinds)
    times: dict[str, list[float]] = {m: [] for m in methods}
    statuses = {}
    for _ in range(args.repeats):
        for m, kinds in methods.items():
            s, statuses[m] = run(kinds)
            times[m].append(s)
    base = statistics.median(times["omni"])
    print(
        f"{len(items)} clips, {args.frames} frames, {n} new tokens per LLM call, batch {b}, "
        f"{args.threads} thread(s), "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'method':14s} {'median s':>9s} {'min s':>7s} {'items/s':>8s} {'x omni':>7s}  statuses")
    for m in methods:
        med = statistics.median(times[m])
        print(f"{m:14s} {med:9.2f} {min(times[m]):7.2f} {len(items) / med:8.2f} {med / base:7.2f}  {statuses[m]}")
    print("model load s:", load_s)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "times": times, "load_s": load_s, "statuses": statuses}, indent=2)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
