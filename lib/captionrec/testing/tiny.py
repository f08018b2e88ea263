"""Build every tiny random model the embedded default and the tests use, into one folder.

    captionrec tiny-models --out models/tiny

Layout: <out>/captioning/<name> (Qwen2.5-VL, Qwen2-Audio, Whisper in CTranslate2 format, AST) and
<out>/features/<name> (BERT sentence-transformers embedder, VideoMAE; audio_raw reuses the AST).
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
    built = {f"captioning/{k}": v for k, v in tiny_captioning.build_all(out / "captioning").items()}
    built.update({f"features/{k}": v for k, v in
                  tiny_features.build_all(out / "features", kinds=("text", "videomae")).items()})
    return built


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="captionrec tiny-models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="models/tiny")
    args = p.parse_args(list(argv) if argv is not None else None)
    for name, path in build_all(args.out).items():
        print(f"{name}: {path}")
    return 0
