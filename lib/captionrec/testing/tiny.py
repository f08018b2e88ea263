"""Build every tiny random model the embedded default and the tests use, into one folder.

    captionrec tiny-models --out models/tiny

Layout: <out>/<folder>, flat, where the stages' `tiny:<name>` references look (`captionrec.inference.refs.
TINY_MODELS` maps names to folders; caption.tiny_models_dir, embed.tiny_models_dir): Qwen2.5-VL, Qwen2-Audio,
Whisper in CTranslate2 format, AST (the caption stage's sound tagger and the embed stage's audio_raw encoder),
a BERT sentence-transformers embedder, VideoMAE.

Every folder holds the one tiny-model marker (`refs.TINY_MARKER`: builder version, kind, seed,
random_weights=true): the resolver and the wrappers read it to flag outputs as noise. Builds are deterministic
and idempotent (a folder whose marker has the current builder version is not rebuilt); a lock beside the folder
serialises concurrent builders.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from captionrec.inference.hf_compat import OMNI_MIN_TRANSFORMERS, has_omni
from captionrec.inference.refs import TINY_MARKER, TINY_MODELS

log = logging.getLogger(__name__)

BUILDER_VERSION = "2"
SEED = 1234


def marker_ok(folder: Path) -> bool:
    try:
        return json.loads((folder / TINY_MARKER).read_text()).get("builder_version") == BUILDER_VERSION
    except (OSError, ValueError):
        return False


def build_once(folder: Path, kind: str, build: Callable[[Path], None], **marker: object) -> Path:
    """Run `build(tmp)` into a temp sibling, write the marker and move it into place; skip when already built."""
    if marker_ok(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - non-POSIX: no locking
            pass
        if marker_ok(folder):  # built by another process while we waited
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            build(tmp)
            info = {"builder_version": BUILDER_VERSION, "kind": kind, "seed": SEED, "random_weights": True, **marker}
            (tmp / TINY_MARKER).write_text(json.dumps(info))
            for f in [tmp, *tmp.rglob("*")]:
                f.chmod(0o755 if f.is_dir() else 0o644)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return folder


def builders() -> dict[str, Callable[[str | os.PathLike], Path]]:
    """`tiny:<name>` -> its builder (every name of `TINY_MODELS`)."""
    from captionrec.testing import tiny_captioning, tiny_features, tiny_omni

    out = {
        **tiny_captioning.BUILDERS,
        "qwen2_5_omni": tiny_omni.build_qwen2_5_omni,
        "text": tiny_features.build_text,
        "videomae": tiny_features.build_videomae,
    }
    assert set(out) == set(TINY_MODELS), sorted(set(out) ^ set(TINY_MODELS))
    return out


def build_all(out: str | os.PathLike, only: Sequence[str] | None = None) -> dict[str, Path]:
    """Build (or find already built) the tiny models `only` (default: all) under `out`; name -> folder."""
    table = builders()
    names = list(only or table)
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown tiny model(s) {sorted(unknown)}; known: {sorted(table)}")
    if only is None and not has_omni():
        # Not an error unless asked for: the av kind is opt-in (caption.kinds) and needs transformers >= 4.52.
        names.remove("qwen2_5_omni")
        import transformers

        log.warning(
            "tiny model qwen2_5_omni not built: transformers %s has no Qwen2.5-Omni (needs >= %s); "
            "the av caption kind cannot run in this environment",
            transformers.__version__,
            ".".join(map(str, OMNI_MIN_TRANSFORMERS)),
        )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {name: Path(table[name](out)) for name in names}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="captionrec tiny-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default="models/tiny")
    p.add_argument("--only", default="", help=f"comma list of {','.join(TINY_MODELS)} (default all)")
    args = p.parse_args(list(argv) if argv is not None else None)
    only = [s.strip() for s in args.only.split(",") if s.strip()] or None
    for name, path in build_all(args.out, only).items():
        print(f"{name}: {path}")
    return 0
