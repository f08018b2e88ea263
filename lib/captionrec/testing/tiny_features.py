"""Tiny random feature models, built offline (no hub) for tests and the embedded default.

Every builder takes the parent folder `out_dir` and returns `<out_dir>/<name>` (the layout the caption
stage's builders use, so `models/tiny` holds them all):
- `build_text(out_dir)` -> text/: a sentence-transformers folder around a 2-layer, 32-wide BERT with a
  WordPiece tokenizer made here with `tokenizers` (mean pooling + normalize; dim 32).
- `build_videomae(out_dir)` -> videomae/: VideoMAEModel at 64 px, 16 frames, tubelet 2, hidden 32, with
  its image processor.
- `build_ast(out_dir)` -> ast/: the tiny AST of `captionrec.testing.tiny_captioning.build_ast` (one copy).

Builds are deterministic (fixed seeds, fixed corpus) and idempotent: a folder holding the tiny-model marker
with the current builder version is reused as it is (`captionrec.testing.tiny.build_once`).

    python -m captionrec.testing.tiny_features --out models/tiny
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from captionrec.inference.refs import TINY_MARKER, TINY_MODELS
from captionrec.testing.tiny import build_once

MARKER = TINY_MARKER

TEXT_DIM = 32
VIDEOMAE_SIZE = 64
VIDEOMAE_FRAMES = 16

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CORPUS = [
    "A person walks a dog along a sunny beach while waves roll in.",
    "The video shows a chef chopping onions and frying them in a pan.",
    "Upbeat electronic music plays with a strong bass line and clapping.",
    "A woman speaks to the camera about her morning skincare routine.",
    "Cars race around a track as the crowd cheers loudly.",
    "Close up of a cat playing with a red ball of yarn on a wooden floor.",
    "Birds are singing in the background; wind rustles the leaves.",
    "A man explains how to fix a bicycle chain step by step.",
    "Children laugh and play football in a green park on a summer day.",
    "Video: a colourful test pattern with moving bars. Audio: a steady sine tone and speech.",
    "funny cute pets compilation dance tutorial cooking travel vlog gaming highlights news",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
]


def _wordpiece_tokenizer():
    """A BERT WordPiece tokenizer over a fixed vocab (specials, characters, ##characters, corpus words).

    The vocab is built here rather than by `WordPieceTrainer`, whose tie-breaking varies between runs.
    """
    import re
    import string

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    words = sorted({w for line in _CORPUS for w in re.findall(r"[a-z0-9]+", line.lower())} - set(chars))
    tokens = _SPECIALS + chars + [f"##{c}" for c in chars] + words
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def build_text(out_dir: str | Path) -> Path:
    """<out_dir>/text: a sentence-transformers model (tiny random BERT, mean pooling, normalize); dim 32."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import BertConfig, BertModel

        try:  # sentence-transformers >= 6
            from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
        except ImportError:  # pragma: no cover - older releases
            from sentence_transformers.models import Normalize, Pooling, Transformer
        from sentence_transformers import SentenceTransformer

        hf_dir = tmp / "_hf"
        tokenizer = _wordpiece_tokenizer()
        torch.manual_seed(0)
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_DIM,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            type_vocab_size=2,
            pad_token_id=tokenizer.pad_token_id,
        )
        BertModel(config).eval().save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        modules = [Transformer(str(hf_dir), max_seq_length=128), Pooling(TEXT_DIM, "mean"), Normalize()]
        SentenceTransformer(modules=modules, device="cpu").save(str(tmp / "st"))
        # Flatten: the saved sentence-transformers folder is the model folder.
        shutil.rmtree(hf_dir)
        for p in (tmp / "st").iterdir():
            p.rename(tmp / p.name)
        (tmp / "st").rmdir()

    return build_once(Path(out_dir) / TINY_MODELS["text"], "text", build, dim=TEXT_DIM)


def build_videomae(out_dir: str | Path) -> Path:
    """<out_dir>/videomae: VideoMAEModel, 64 px, 16 frames, hidden 32, with its image processor; dim 32."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import VideoMAEConfig, VideoMAEImageProcessor, VideoMAEModel

        torch.manual_seed(0)
        config = VideoMAEConfig(
            image_size=VIDEOMAE_SIZE,
            patch_size=16,
            num_frames=VIDEOMAE_FRAMES,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            use_mean_pooling=True,
        )
        VideoMAEModel(config).eval().save_pretrained(tmp)
        VideoMAEImageProcessor(
            size={"shortest_edge": VIDEOMAE_SIZE}, crop_size={"height": VIDEOMAE_SIZE, "width": VIDEOMAE_SIZE}
        ).save_pretrained(tmp)

    return build_once(Path(out_dir) / TINY_MODELS["videomae"], "videomae", build, dim=32)


def build_ast(out_dir: str | Path) -> Path:
    """<out_dir>/ast: the tiny AST (the caption stage's builder; one copy of that code)."""
    from captionrec.testing.tiny_captioning import build_ast as _build_ast

    return Path(_build_ast(Path(out_dir)))


BUILDERS = {"text": build_text, "videomae": build_videomae, "ast": build_ast}


def build(kind: str, out_dir: str | Path) -> Path:
    """Build (or reuse) tiny model `kind` (text | videomae | ast); returns <out_dir>/<kind>."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown tiny model '{kind}'; known: {', '.join(BUILDERS)}")
    return BUILDERS[kind](out_dir)


def build_all(out_dir: str | Path, kinds: Sequence[str] = ("text", "videomae", "ast")) -> dict[str, Path]:
    return {k: build(k, out_dir) for k in kinds}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m captionrec.testing.tiny_features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, help="parent folder; models go to <out>/text, <out>/videomae, <out>/ast")
    p.add_argument("--kinds", default="text,videomae,ast")
    args = p.parse_args(argv)
    built = build_all(args.out, [k.strip() for k in args.kinds.split(",") if k.strip()])
    for kind, path in built.items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
