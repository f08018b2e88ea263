"""Build every tiny random model the embedded default and the tests use, into one folder.

    captionrec tiny-models --out models/tiny

Layout: <out>/<name>, flat, where the stages' `tiny:<name>` model references look (caption.tiny_models_dir,
embed.tiny_models_dir): Qwen2.5-VL, Qwen2-Audio, Whisper in CTranslate2 format, AST (the caption stage's
sound tagger and the embed stage's audio_raw encoder), a BERT sentence-transformers embedder, VideoMAE.
Builds are deterministic and idempotent (a folder with a complete marker is not rebuilt).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional


def build_all(out: str | os.PathLike) -> dict[str, Path]:
    from captionrec.testing import tiny_captioning, tiny_features

    out = Path(out)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    built = dict(tiny_captioning.build_all(out))
    built.update(tiny_features.build_all(out, kinds=("text", "videomae")))
    return built


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="captionrec tiny-models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/tiny")
    args = p.parse_args(list(argv) if argv is not None else None)
    for name, path in build_all(args.out).items():
        print(f"{name}: {path}")
    return 0
