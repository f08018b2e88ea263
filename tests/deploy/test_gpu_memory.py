"""The memory table's arithmetic (bench/gpu_memory.py): every parameter-count formula equals the real parameter
count of the same architecture (the tiny models in models/tiny, loaded with transformers; Whisper built from
its config), the formulas give the published sizes of the default checkpoints, and the profiles' batch sizes
fit the GPUs they target."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gm():
    spec = importlib.util.spec_from_file_location("gpu_memory", REPO / "bench" / "gpu_memory.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_memory"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _numel(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights count once


def _config(tiny_dir, name):
    return json.loads((tiny_dir / name / "config.json").read_text())


def test_formulas_equal_the_tiny_models_real_parameter_counts(gm, tiny_dir):
    import transformers as tf

    from captionrec.inference.hf_compat import audio_lm_class

    vl = tf.AutoModelForImageTextToText.from_pretrained(tiny_dir / "qwen2_5_vl")
    assert gm.qwen2_5_vl(_config(tiny_dir, "qwen2_5_vl")) == _numel(vl)
    audio_cfg = tf.AutoConfig.from_pretrained(tiny_dir / "qwen2_audio")
    audio = audio_lm_class(audio_cfg).from_pretrained(tiny_dir / "qwen2_audio")
    assert gm.qwen2_audio(_config(tiny_dir, "qwen2_audio")) == _numel(audio)
    thinker = tf.Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(tiny_dir / "qwen2_5_omni")
    assert gm.omni_thinker(_config(tiny_dir, "qwen2_5_omni")) == _numel(thinker)
    assert gm.bert(_config(tiny_dir, "text")) == _numel(tf.AutoModel.from_pretrained(tiny_dir / "text"))
    assert gm.videomae(_config(tiny_dir, "videomae")) == _numel(tf.VideoMAEModel.from_pretrained(tiny_dir / "videomae"))
    assert gm.ast(_config(tiny_dir, "ast")) == _numel(tf.ASTForAudioClassification.from_pretrained(tiny_dir / "ast"))
    # Whisper (the tiny one is a CTranslate2 file): the transformers architecture at small sizes
    small = dict(
        d_model=64,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=80,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=448,
        vocab_size=51866,
    )
    whisper = tf.WhisperForConditionalGeneration(tf.WhisperConfig(**small))
    assert gm.whisper_encoder(small) + gm.whisper_decoder(small) == _numel(whisper)


def test_formulas_give_the_published_sizes_of_the_default_checkpoints(gm):
    published = {  # model cards (parameters, billions)
        "Qwen2.5-VL-3B-Instruct": 3.75,
        "Qwen2-Audio-7B-Instruct": 8.40,
        "faster-whisper large-v3": 1.55,
        "bge-large-en-v1.5": 0.335,
        "videomae-base": 0.0864,
        "AST audioset-10-10": 0.0866,
    }
    for name, billions in published.items():
        assert gm.params(name) / 1e9 == pytest.approx(billions, rel=0.01), name


def test_kv_cache_arithmetic_and_profiles_fit_their_gpus(gm):
    text = gm.CHECKPOINTS["Qwen2.5-VL-3B-Instruct"]["config"]["text_config"]
    assert gm.kv_bytes(text, 1) == 36 * 2 * 2 * 128 * 2  # layers x (k, v) x kv heads x head dim x bf16
    assert gm.visual_tokens(16, 151200, as_video=True) == (8 * 192, 8 * 192 * 4)
    by = {r.what: r for r in gm.rows("databricks")}
    assert set(by) == {"caption video", "caption audio", "caption av", "embed"}
    assert all(gm.fits(r, "A10G 24 GB") for r in by.values())  # the bundle's default GPU node (g5: one A10G)
    assert by["caption audio"].weights / gm.GiB == pytest.approx(18.8, abs=0.1)
    assert all(gm.fits(r, "H100 80 GB") for r in gm.rows("cluster"))
    text_md = gm.table("databricks")
    assert text_md.count("\n") == 5 and "| caption audio |" in text_md
