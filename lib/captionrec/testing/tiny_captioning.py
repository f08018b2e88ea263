"""Tiny random captioning models for tests and the offline default.

Builds, into a local folder, models with the real architectures and file layouts but random weights:

    <out>/qwen2_5_vl      Qwen2.5-VL   (AutoProcessor + AutoModelForImageTextToText)
    <out>/qwen2_audio     Qwen2-Audio  (AutoProcessor + Qwen2AudioForConditionalGeneration)
    <out>/whisper-ct2     Whisper converted to CTranslate2 (faster-whisper loads it)
    <out>/ast             AudioSet-style AST audio classifier (AutoFeatureExtractor + AutoModelForAudioClassification)

Every folder holds the one tiny-model marker (`captionrec.inference.refs.TINY_MARKER`, written by
`captionrec.testing.tiny.build_once`); the resolver and the wrappers read it to flag their output as noise.
Builds are deterministic (fixed seeds, tokenizer trained offline on a fixed corpus) and idempotent (a folder whose
marker has the current builder version is left alone). Nothing here touches the network.

CLI: `python -m captionrec.testing.tiny_captioning --out models/tiny [--only ast,whisper]`
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from captionrec.inference.hf_compat import dtype_kwargs, is_v5
from captionrec.inference.refs import TINY_MARKER, TINY_MODELS
from captionrec.testing.tiny import BUILDER_VERSION, SEED, build_once  # noqa: F401 - re-exported for callers

log = logging.getLogger(__name__)

MARKER = TINY_MARKER
QWEN_VL_DIR = TINY_MODELS["qwen2_5_vl"]
QWEN_AUDIO_DIR = TINY_MODELS["qwen2_audio"]
WHISPER_CT2_DIR = TINY_MODELS["whisper"]
AST_DIR = TINY_MODELS["ast"]

# Readable AudioSet-style labels (a subset of the 527 AudioSet classes, in AudioSet's spelling).
AUDIOSET_LABELS: tuple[str, ...] = (
    "Speech",
    "Male speech, man speaking",
    "Female speech, woman speaking",
    "Child speech, kid speaking",
    "Conversation",
    "Narration, monologue",
    "Laughter",
    "Applause",
    "Crowd",
    "Singing",
    "Music",
    "Musical instrument",
    "Guitar",
    "Piano",
    "Drum",
    "Electronic music",
    "Pop music",
    "Hip hop music",
    "Vehicle",
    "Car",
    "Engine",
    "Siren",
    "Dog",
    "Cat",
    "Bird",
    "Animal",
    "Water",
    "Rain",
    "Wind",
    "Silence",
    "Sine wave",
    "Beep, bleep",
    "Whistling",
    "Footsteps",
    "Typing",
    "Clapping",
)

_CORPUS = (
    "A person walks along a sunny street while cars pass by in the background.",
    "The video shows a cat playing with a red ball on a wooden floor.",
    "A woman is cooking pasta in a bright kitchen and talks to the camera.",
    "Two friends laugh and dance to pop music at a party with colorful lights.",
    "A man explains how to fix a bicycle tire step by step.",
    "The camera pans over mountains, a lake and a small village at sunset.",
    "Children play football in a park; a dog runs after the ball.",
    "A narrator describes the history of the city while old photos appear on screen.",
    "Rain falls on the window and thunder rumbles in the distance.",
    "The audio contains speech, background music, applause and a short beep.",
    "Someone is typing on a keyboard while a kettle whistles.",
    "A guitar and a piano play a calm melody; birds sing outside.",
    "Describe what you see in this video in one detailed paragraph.",
    "Describe the audio: speech, music, sounds, and what is said.",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
)


# ----------------------------------------------------------------------------------------------------- helpers


def _seed() -> None:
    import torch

    torch.manual_seed(SEED)


def _train_bpe(special_tokens: list[str], vocab_size: int = 512):
    """A byte-level BPE (Qwen2/GPT-2 style pre-tokenizer) trained on a fixed corpus: deterministic, offline."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(_CORPUS) * 4, trainer=trainer)
    return tok


# ------------------------------------------------------------------------------------------------------- Qwen

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|AUDIO|>",
]

# Qwen2.5-VL-Instruct's chat template (as shipped with the real checkpoints).
QWEN_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-Audio-Instruct's chat template.
QWEN_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content or content['type'] == 'audio' %}"
    "{% set audio_count.value = audio_count.value + 1 %}Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen_tokenizer(chat_template: str):
    from transformers import Qwen2TokenizerFast

    tok = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(QWEN_SPECIALS, vocab_size=512),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={},
        model_max_length=32768,
    )
    tok.chat_template = chat_template
    tok.padding_side = "left"
    return tok


def _qwen_text_kwargs(tok) -> dict:
    return dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True,
        # Wider than the usual 0.02 so greedy decoding depends on the input (0.02 decodes "\n" forever).
        initializer_range=0.2,
    )


def _set_generation(model, tok) -> None:
    gc = model.generation_config
    gc.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
    gc.pad_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    gc.bos_token_id = tok.convert_tokens_to_ids("<|endoftext|>")
    gc.do_sample = False


def build_qwen2_5_vl(out_dir: str | os.PathLike) -> Path:
    """Tiny Qwen2.5-VL (vision depth 2/hidden 32, text hidden 64/2 layers) with its image+video processors."""

    def build(d: Path) -> None:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        tok = _qwen_tokenizer(QWEN_VL_CHAT_TEMPLATE)
        if is_v5():  # the text settings nest in text_config, M-RoPE in rope_parameters
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as ImProc

            text = {
                "text_config": dict(
                    _qwen_text_kwargs(tok),
                    rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
                )
            }
        else:  # 4.5x (Databricks ML runtimes): flat text settings, M-RoPE in rope_scaling; the numpy/PIL processor
            from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor as ImProc

            text = {
                k: v for k, v in _qwen_text_kwargs(tok).items() if k not in ("tie_word_embeddings", "initializer_range")
            }
            text.update(rope_theta=1000000.0, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
        ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
        cfg = Qwen2_5_VLConfig(
            **text,
            vision_config=dict(
                depth=2,
                hidden_size=32,
                intermediate_size=64,
                num_heads=2,
                out_hidden_size=64,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                window_size=112,
                fullatt_block_indexes=[1],
                tokens_per_second=2,
            ),
            image_token_id=ids["<|image_pad|>"],
            video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"],
            vision_end_token_id=ids["<|vision_end|>"],
            tie_word_embeddings=True,
            initializer_range=0.2,
        )
        _seed()
        model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        _set_generation(model, tok)
        model.save_pretrained(d)
        tok.save_pretrained(d)
        # Image processor (PIL backend: works without torchvision); same settings as the real checkpoint.
        improc = ImProc(min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2)
        improc.save_pretrained(d)
        _save_vl_processor_config(d)
        (d / "chat_template.jinja").write_text(QWEN_VL_CHAT_TEMPLATE)

    return build_once(Path(out_dir) / QWEN_VL_DIR, "qwen2_5_vl", build)


def _save_vl_processor_config(d: Path) -> None:
    """processor_config.json + video_preprocessor_config.json as the real checkpoint has them."""
    (d / "processor_config.json").write_text(json.dumps({"processor_class": "Qwen2_5_VLProcessor"}, indent=2))
    video = {
        "video_processor_type": "Qwen2VLVideoProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_resize": True,
        "do_rescale": True,
        "do_normalize": True,
        "do_convert_rgb": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "rescale_factor": 0.00392156862745098,
        "resample": 3,
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "size": {"shortest_edge": 3136, "longest_edge": 12845056},
    }
    (d / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2))


def build_qwen2_audio(out_dir: str | os.PathLike) -> Path:
    """Tiny Qwen2-Audio (audio encoder d_model 32 / 2 layers / 128 mels, text hidden 64) with its processor."""

    def build(d: Path) -> None:
        from transformers import (
            Qwen2AudioConfig,
            Qwen2AudioForConditionalGeneration,
            Qwen2AudioProcessor,
            WhisperFeatureExtractor,
        )

        tok = _qwen_tokenizer(QWEN_AUDIO_CHAT_TEMPLATE)
        cfg = Qwen2AudioConfig(
            audio_config=dict(
                model_type="qwen2_audio_encoder",
                d_model=32,
                encoder_layers=2,
                encoder_attention_heads=2,
                encoder_ffn_dim=64,
                num_mel_bins=128,
                max_source_positions=1500,
            ),
            text_config=dict(_qwen_text_kwargs(tok), model_type="qwen2"),
            audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
            initializer_range=0.2,
        )
        _seed()
        model = Qwen2AudioForConditionalGeneration(cfg).eval()
        _set_generation(model, tok)
        model.save_pretrained(d)
        fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30, return_attention_mask=True)
        proc = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template=QWEN_AUDIO_CHAT_TEMPLATE)
        proc.save_pretrained(d)

    return build_once(Path(out_dir) / QWEN_AUDIO_DIR, "qwen2_audio", build)


# ---------------------------------------------------------------------------------------------------- Whisper

# English-only Whisper special tokens, in Whisper's order (text tokens come first: faster-whisper decodes ids < eot).
WHISPER_SPECIALS = [
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nocaptions|>",
    "<|notimestamps|>",
]
WHISPER_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|>


def _whisper_tokenizer():
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast

    bpe = _train_bpe([], vocab_size=400)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in WHISPER_SPECIALS])
    bpe.add_special_tokens(
        [AddedToken("<|%.2f|>" % (i * 0.02), special=False, normalized=False) for i in range(WHISPER_TIMESTAMPS)]
    )
    tok = WhisperTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={},
    )
    return tok


def _ct2_converter():
    """ctranslate2's TransformersConverter, loading with the dtype keyword of the installed transformers (4.8 passes
    `dtype=`, which 4.5x's from_pretrained hands to the model's constructor)."""
    import ctranslate2

    class Converter(ctranslate2.converters.TransformersConverter):
        def load_model(self, model_class, model_name_or_path, **kwargs):
            if "dtype" in kwargs:
                kwargs.update(dtype_kwargs(kwargs.pop("dtype")))
            return super().load_model(model_class, model_name_or_path, **kwargs)

    return Converter


def build_whisper_ct2(out_dir: str | os.PathLike) -> Path:
    """Tiny English-only Whisper (d_model 64, 2+2 layers, 80 mels) converted to CTranslate2 for faster-whisper."""

    def build(d: Path) -> None:
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

        tok = _whisper_tokenizer()
        vid = tok.convert_tokens_to_ids
        eot, sot, notimestamps = vid("<|endoftext|>"), vid("<|startoftranscript|>"), vid("<|notimestamps|>")
        assert eot == len(tok) - len(WHISPER_SPECIALS) - WHISPER_TIMESTAMPS, "text tokens must precede <|endoftext|>"
        cfg = WhisperConfig(
            vocab_size=len(tok),
            num_mel_bins=80,
            d_model=64,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
            max_source_positions=1500,
            max_target_positions=448,
            bos_token_id=eot,
            eos_token_id=eot,
            pad_token_id=eot,
            decoder_start_token_id=sot,
            begin_suppress_tokens=[vid(" "), eot] if vid(" ") is not None else [eot],
            suppress_tokens=[],
        )
        _seed()
        model = WhisperForConditionalGeneration(cfg).eval()
        gc = model.generation_config
        gc.decoder_start_token_id, gc.eos_token_id, gc.pad_token_id = sot, eot, eot
        gc.no_timestamps_token_id = notimestamps
        gc.suppress_tokens, gc.begin_suppress_tokens = [], [eot]
        gc.is_multilingual = False
        _Converter = _ct2_converter()
        with tempfile.TemporaryDirectory() as hf:
            model.save_pretrained(hf)
            tok.save_pretrained(hf)
            fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000)
            fe.save_pretrained(hf)
            _Converter(hf, copy_files=["tokenizer.json", "preprocessor_config.json"], load_as_float16=False).convert(
                str(d), quantization=None, force=True
            )

    return build_once(Path(out_dir) / WHISPER_CT2_DIR, "whisper-ct2", build)


# -------------------------------------------------------------------------------------------------------- AST


def build_ast(out_dir: str | os.PathLike) -> Path:
    """Tiny AudioSet-style AST classifier (hidden 32, 2 layers, 128 mels x 1024 frames) with readable labels.

    Returns the model folder; `AutoFeatureExtractor` + `AutoModelForAudioClassification` load it.
    """

    def build(d: Path) -> None:
        from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

        id2label = dict(enumerate(AUDIOSET_LABELS))
        cfg = ASTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_mel_bins=128,
            max_length=1024,
            patch_size=16,
            frequency_stride=10,
            time_stride=10,
            id2label=id2label,
            label2id={v: k for k, v in id2label.items()},
            problem_type="multi_label_classification",
        )
        _seed()
        ASTForAudioClassification(cfg).eval().save_pretrained(d)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # 128 mel bins at 16 kHz leave one filter empty (as the real AST)
            ASTFeatureExtractor(num_mel_bins=128, max_length=1024, sampling_rate=16000).save_pretrained(d)

    return build_once(Path(out_dir) / AST_DIR, "ast", build)


# ------------------------------------------------------------------------------------------------------ all

BUILDERS: dict[str, Callable[[str | os.PathLike], Path]] = {
    "qwen2_5_vl": build_qwen2_5_vl,
    "qwen2_audio": build_qwen2_audio,
    "whisper": build_whisper_ct2,
    "ast": build_ast,
}


def build_all(out_dir: str | os.PathLike, only: tuple[str, ...] | None = None) -> dict[str, Path]:
    """Build (or find already built) every tiny captioning model under `out_dir`; name -> folder."""
    names = only or tuple(BUILDERS)
    unknown = set(names) - set(BUILDERS)
    if unknown:
        raise ValueError(f"unknown tiny model(s) {sorted(unknown)}; known: {sorted(BUILDERS)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return {name: BUILDERS[name](out_dir) for name in names}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="models/tiny", help="folder to build into (default models/tiny)")
    ap.add_argument("--only", default="", help=f"comma list of {','.join(BUILDERS)} (default all)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    only = tuple(s.strip() for s in args.only.split(",") if s.strip()) or None
    for name, path in build_all(args.out, only).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
