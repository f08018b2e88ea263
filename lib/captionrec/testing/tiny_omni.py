"""Tiny random Qwen2.5-Omni (the `av` caption kind's one-pass model) for tests and the offline default.

    <out>/qwen2_5_omni     Qwen2.5-Omni in the real checkpoint's layout: a full `Qwen2_5OmniConfig` (thinker +
                           talker + token2wav configs, `enable_audio_output: false`) whose weights are the thinker's
                           only (`thinker.*`), the tokenizer with the omni special tokens and chat template, and one
                           `preprocessor_config.json` holding both the image processor and the Whisper feature
                           extractor settings (as the real checkpoint has it), plus an empty `spk_dict.pt`.

`Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(folder)` loads the thinker from it exactly as from
`Qwen/Qwen2.5-Omni-3B` (the thinker sub-config and the `thinker.` weights). Sizes: text hidden 64 / 2 layers /
4 heads / 2 KV heads, mrope_section [2, 3, 3]; vision depth 2 / hidden 32 / out 64; audio d_model 32 / 2 layers /
128 mel bins / output 64. Deterministic (fixed seed, offline tokenizer); nothing here touches the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from captionrec.inference.hf_compat import require_omni
from captionrec.inference.refs import TINY_MODELS
from captionrec.testing.tiny import build_once
from captionrec.testing.tiny_captioning import _seed, _set_generation, _train_bpe

OMNI_DIR = TINY_MODELS["qwen2_5_omni"]

OMNI_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|AUDIO|>",
    "<|audio_bos|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
    "<|vision_eos|>",
]

# Qwen2.5-Omni's chat template (as shipped with the real checkpoints).
OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
_IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def _omni_tokenizer():
    from transformers import Qwen2TokenizerFast

    tok = Qwen2TokenizerFast(
        tokenizer_object=_train_bpe(OMNI_SPECIALS, vocab_size=512),
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|IMAGE|>",
            "audio_token": "<|AUDIO|>",
            "video_token": "<|VIDEO|>",
            "vision_bos_token": "<|vision_bos|>",
            "vision_eos_token": "<|vision_eos|>",
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
        },
        model_max_length=32768,
    )
    tok.chat_template = OMNI_CHAT_TEMPLATE
    return tok


def _omni_config(tok):
    from transformers import Qwen2_5OmniConfig

    ids = {t: tok.convert_tokens_to_ids(t) for t in OMNI_SPECIALS}
    special = dict(
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
    )
    thinker = dict(
        text_config=dict(
            vocab_size=len(tok),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            initializer_range=0.2,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=64,
            fullatt_block_indexes=[1],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        ),
        audio_config=dict(
            d_model=32,
            encoder_layers=2,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            num_mel_bins=128,
            output_dim=64,
            n_window=100,
        ),
        pad_token_id=ids["<|endoftext|>"],
        initializer_range=0.2,
        **special,
    )
    # The talker and token2wav keep their default configs (never built: enable_audio_output is false).
    return Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False)


def _preprocessor_config() -> dict:
    """The real checkpoint's one preprocessor_config.json: image processor + Whisper feature extractor settings."""
    return {
        "processor_class": "Qwen2_5OmniProcessor",
        "image_processor_type": "Qwen2VLImageProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": _IMAGE_MEAN,
        "image_std": _IMAGE_STD,
        "rescale_factor": 0.00392156862745098,
        "resample": 3,
        "min_pixels": 3136,
        "max_pixels": 12845056,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "size": {"shortest_edge": 3136, "longest_edge": 12845056},
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": 128,
        "sampling_rate": 16000,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 300,
        "n_samples": 4800000,
        "nb_max_frames": 30000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "dither": 0.0,
    }


def build_qwen2_5_omni(out_dir: str | os.PathLike) -> Path:
    """Tiny Qwen2.5-Omni (thinker weights only, the real checkpoint's files) with its tokenizer and preprocessors."""

    require_omni()  # transformers >= 4.52; a clear error before anything is built

    def build(d: Path) -> None:
        import torch
        from transformers import Qwen2_5OmniForConditionalGeneration

        tok = _omni_tokenizer()
        cfg = _omni_config(tok)
        _seed()
        model = Qwen2_5OmniForConditionalGeneration(cfg).eval()  # thinker only: enable_audio_output is false
        _set_generation(model.thinker, tok)
        model.generation_config = model.thinker.generation_config
        model.save_pretrained(d)
        tok.save_pretrained(d)
        (d / "chat_template.jinja").write_text(OMNI_CHAT_TEMPLATE)
        (d / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(), indent=2))
        torch.save({}, d / "spk_dict.pt")  # the full model's speaker table (no talker here: empty)

    return build_once(Path(out_dir) / OMNI_DIR, "qwen2_5_omni", build)
