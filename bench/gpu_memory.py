"""Peak GPU and host memory per caption kind and embed family, COMPUTED (no GPU was lent for this estimate).

    .venv/bin/python bench/gpu_memory.py                      # the markdown table (docs/gpu-memory.md)
    .venv/bin/python bench/gpu_memory.py --profile cluster    # another profile's batch sizes and frames

Method (pure Python, no torch):
1. Parameters from the architecture: closed-form counts per family (Qwen2 decoder, Qwen2.5-VL / Omni vision
   tower, Whisper-style audio encoder and decoder, BERT, VideoMAE, AST) applied to each checkpoint's published
   config.json hyperparameters (written out below, since the Hub can't be reached here).
   tests/deploy/test_gpu_memory.py checks every formula against the real parameter count of the same architecture
   in models/tiny (the formula fed the tiny config.json = sum of numel over the loaded tiny model).
2. Weights = parameters x bytes of the load dtype: `dtype: auto` is bfloat16 on CUDA (inference.refs), the
   audio caption's AST tagger loads in float32 (captioning.audio), faster-whisper runs CTranslate2 `float16`.
3. Per batch, from the profile's settings: visual tokens (frames / temporal patch 2 x max_pixels / 28^2 after the
   2x2 merge; the omni captioner feeds frames as images, so no temporal merge), audio tokens (30 s -> 750),
   prompt tokens (prompt file words x 1.4 + 40 for the chat template; the audio fusion prompt also carries a
   transcript and tags: +250), new tokens.
   KV cache = batch x (prompt + media + new) x layers x 2 x kv_heads x head_dim x 2 bytes.
   Prefill activations (one layer live at a time, inference): tokens x (2 x hidden + 3 x intermediate) x 2 bytes,
   the same for the vision tower over its patches (plus one full-attention score matrix per sequence, as sdpa
   without flash-attention builds it), plus the last-position logits in float32.
   Encoder-only models (BERT, VideoMAE, AST, Whisper encoder): tokens x (2 x hidden + intermediate) x bytes plus
   the attention score matrix (batch x heads x seq^2, materialised as with eager attention: an upper bound).
4. + 0.6 GiB per process for the CUDA context, cuBLAS workspace and allocator slack. "Fits" means the peak is
   at most 95 % of the card's memory as nvidia-smi reports it (A10G 24 GB: 22.49 GiB, H100 80 GB: 79.6 GiB);
   above 85 % it is marked tight.
5. Host memory: ~2.5 GiB for the Python worker (torch, transformers, CTranslate2) + the checkpoints' bytes
   (safetensors are memory-mapped while loading: counted as resident, an upper bound) + decoded media of one
   `caption.items_per_batch` chunk (frames as uint8 RGB, audio as float32).

Activation terms are estimates (kernels, fragmentation and the library's temporaries vary); weights and KV
cache, which dominate, are exact arithmetic. Measure on a lent GPU before trusting a margin under ~10 %.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GiB = 1024**3
CARDS = {"A10G 24 GB": 23028 * 1024**2, "H100 80 GB": 81559 * 1024**2}  # nvidia-smi's total memory
FIT_SHARE = 0.95
TIGHT_SHARE = 0.85
CUDA_OVERHEAD = 0.6 * GiB
HOST_RUNTIME = 2.5 * GiB
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ parameter counts
def qwen2_decoder(c: dict[str, Any]) -> int:
    """Qwen2 / Qwen2.5 decoder LM: embeddings, layers (q/k/v with bias, o without; SwiGLU MLP; 2 RMSNorms),
    final norm, lm_head unless tied."""
    h, i, n, v = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    layer = (h * q + q) + 2 * (h * kv + kv) + q * h + 3 * h * i + 2 * h
    return v * h + n * layer + h + (0 if c.get("tie_word_embeddings", False) else v * h)


def qwen_vision(c: dict[str, Any]) -> int:
    """Qwen2.5-VL / Qwen2.5-Omni vision tower: 3D patch conv (no bias), blocks (RMSNorms, qkv + proj with bias,
    SwiGLU MLP with bias), patch merger (RMSNorm, 2-layer MLP over merge^2 patches)."""
    h, i, d = c["hidden_size"], c["intermediate_size"], c["depth"]
    patch = c.get("in_channels", c.get("in_chans", 3)) * c["temporal_patch_size"] * c["patch_size"] ** 2 * h
    block = 2 * h + (3 * h * h + 3 * h) + (h * h + h) + 2 * (h * i + i) + (i * h + h)
    m = h * c["spatial_merge_size"] ** 2
    out = c.get("out_hidden_size") or c["out_hidden_size"]
    merger = h + (m * m + m) + (m * out + out)
    return patch + d * block + merger


def whisper_encoder(c: dict[str, Any], positions_are_params: bool = True) -> int:
    """Whisper-style audio encoder (Whisper, Qwen2-Audio, Qwen2.5-Omni): 2 convs, positions, layers (k without
    bias), final LayerNorm. Omni's encoder has sinusoidal positions (a buffer), an extra ln_post and a proj."""
    d, f, n, mel = c["d_model"], c["encoder_ffn_dim"], c["encoder_layers"], c["num_mel_bins"]
    convs = (mel * d * 3 + d) + (d * d * 3 + d)
    layer = (4 * d * d + 3 * d) + 2 * d + (d * f + f) + (f * d + d) + 2 * d
    pos = c["max_source_positions"] * d if positions_are_params else 0
    return convs + pos + n * layer + 2 * d


def whisper_decoder(c: dict[str, Any]) -> int:
    """Whisper decoder: token + position embeddings, layers with self and cross attention, final LayerNorm;
    the output projection is tied to the token embeddings."""
    d, f, n = c["d_model"], c["decoder_ffn_dim"], c["decoder_layers"]
    attn = 4 * d * d + 3 * d + 2 * d
    layer = 2 * attn + (d * f + f) + (f * d + d) + 2 * d
    return c["vocab_size"] * d + c["max_target_positions"] * d + n * layer + 2 * d


def qwen2_audio(c: dict[str, Any]) -> int:
    a = c["audio_config"]
    t = {**c["text_config"], "tie_word_embeddings": c.get("tie_word_embeddings", False)}  # the top level decides
    return whisper_encoder(a) + (a["d_model"] * t["hidden_size"] + t["hidden_size"]) + qwen2_decoder(t)


def qwen2_5_vl(c: dict[str, Any]) -> int:
    t = {**c.get("text_config", c), "tie_word_embeddings": c.get("tie_word_embeddings", False)}
    return qwen_vision(c["vision_config"]) + qwen2_decoder(t)


def omni_thinker(c: dict[str, Any]) -> int:
    """Qwen2.5-Omni's thinker (what the av captioner loads; the talker and token2wav are not loaded)."""
    t = c["thinker_config"]
    a = t["audio_config"]
    # sinusoidal positions (a buffer), ln_post in place of the final LayerNorm, audio bos/eos embeddings, proj
    audio = (
        whisper_encoder(a, positions_are_params=False)
        + 2 * a["output_dim"]
        + (a["d_model"] * a["output_dim"] + a["output_dim"])
    )
    text = {**t["text_config"], "tie_word_embeddings": t.get("tie_word_embeddings", False)}  # the thinker decides
    return audio + qwen_vision(t["vision_config"]) + qwen2_decoder(text)


def bert(c: dict[str, Any], pooler: bool = True) -> int:
    h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    emb = (c["vocab_size"] + c["max_position_embeddings"] + c["type_vocab_size"]) * h + 2 * h
    layer = (4 * h * h + 4 * h) + 2 * h + (h * i + i) + (i * h + h) + 2 * h
    return emb + n * layer + ((h * h + h) if pooler else 0)


def _vit_layer(h: int, i: int, qkv_bias: int) -> int:
    return 3 * h * h + qkv_bias * h + (h * h + h) + (h * i + i) + (i * h + h) + 4 * h


def videomae(c: dict[str, Any]) -> int:
    """VideoMAEModel (the encoder the videomae feature uses): tubelet conv, fixed sinusoidal positions (no
    parameters), layers (q and v biases only), a final LayerNorm unless mean pooling."""
    h, i = c["hidden_size"], c["intermediate_size"]
    patch = c["num_channels"] * c["tubelet_size"] * c["patch_size"] ** 2 * h + h
    final = 0 if c.get("use_mean_pooling", True) else 2 * h
    return patch + c["num_hidden_layers"] * _vit_layer(h, i, 2 if c.get("qkv_bias", True) else 0) + final


def ast_patches(c: dict[str, Any]) -> int:
    f = (c["num_mel_bins"] - c["patch_size"]) // c["frequency_stride"] + 1
    t = (c["max_length"] - c["patch_size"]) // c["time_stride"] + 1
    return f * t


def ast(c: dict[str, Any], head: bool = True) -> int:
    """ASTForAudioClassification: cls + distillation tokens, positions, patch conv, ViT layers, final
    LayerNorm, and the head (LayerNorm + linear over the labels)."""
    h, i = c["hidden_size"], c["intermediate_size"]
    emb = 2 * h + (ast_patches(c) + 2) * h + (c["patch_size"] ** 2 * h + h)
    labels = len(c["id2label"]) if "id2label" in c else c["num_labels"]
    body = emb + c["num_hidden_layers"] * _vit_layer(h, i, 3 if c.get("qkv_bias", True) else 0) + 2 * h
    return body + ((2 * h + h * labels + labels) if head else 0)


# -------------------------------------------------------- published hyperparameters of the checkpoints
QWEN25_3B_TEXT = dict(
    hidden_size=2048,
    intermediate_size=11008,
    num_hidden_layers=36,
    num_attention_heads=16,
    num_key_value_heads=2,
    vocab_size=151936,
)
QWEN25_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    in_channels=3,
    patch_size=14,
    temporal_patch_size=2,
    spatial_merge_size=2,
    out_hidden_size=2048,
)
WHISPER_LARGE_V3 = dict(
    d_model=1280,
    encoder_layers=32,
    decoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_ffn_dim=5120,
    num_mel_bins=128,
    max_source_positions=1500,
    max_target_positions=448,
    vocab_size=51866,
)
# The Whisper-large-v3-sized audio encoder that Qwen2-Audio and Qwen2.5-Omni's thinker carry.
WHISPER_ENCODER = {
    k: WHISPER_LARGE_V3[k]
    for k in (
        "d_model",
        "encoder_layers",
        "encoder_attention_heads",
        "encoder_ffn_dim",
        "num_mel_bins",
        "max_source_positions",
    )
}
CHECKPOINTS: dict[str, dict[str, Any]] = {
    # Qwen/Qwen2.5-VL-3B-Instruct (tied embeddings)
    "Qwen2.5-VL-3B-Instruct": dict(
        arch="qwen2_5_vl",
        config=dict(text_config=QWEN25_3B_TEXT, vision_config=QWEN25_VISION, tie_word_embeddings=True),
    ),
    # Qwen/Qwen2-Audio-7B-Instruct: Whisper-large-v3-sized encoder + Qwen-7B (MHA, untied)
    "Qwen2-Audio-7B-Instruct": dict(
        arch="qwen2_audio",
        config=dict(
            audio_config=WHISPER_ENCODER,
            text_config=dict(
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=32,
                vocab_size=156032,
                tie_word_embeddings=False,
            ),
        ),
    ),
    # Qwen/Qwen2.5-Omni-3B thinker (its lm_head is untied, as transformers builds the thinker)
    "Qwen2.5-Omni-3B (thinker)": dict(
        arch="omni_thinker",
        config=dict(
            thinker_config=dict(
                tie_word_embeddings=False,
                audio_config={**WHISPER_ENCODER, "output_dim": 2048},
                vision_config=QWEN25_VISION,
                text_config={**QWEN25_3B_TEXT, "tie_word_embeddings": False},
            )
        ),
    ),
    # Systran/faster-whisper-large-v3 (CTranslate2 conversion of openai/whisper-large-v3)
    "faster-whisper large-v3": dict(arch="whisper", config=WHISPER_LARGE_V3),
    # MIT/ast-finetuned-audioset-10-10-0.4593 (527 AudioSet labels)
    "AST audioset-10-10": dict(
        arch="ast",
        config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            patch_size=16,
            frequency_stride=10,
            time_stride=10,
            max_length=1024,
            num_mel_bins=128,
            num_labels=527,
            qkv_bias=True,
        ),
    ),
    # BAAI/bge-large-en-v1.5 (BERT-large; sentence-transformers loads BertModel with its pooler)
    "bge-large-en-v1.5": dict(
        arch="bert",
        config=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            vocab_size=30522,
            max_position_embeddings=512,
            type_vocab_size=2,
        ),
    ),
    # MCG-NJU/videomae-base, loaded as VideoMAEModel (the encoder; the pretraining decoder is not loaded)
    "videomae-base": dict(
        arch="videomae",
        config=dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            num_channels=3,
            tubelet_size=2,
            patch_size=16,
            image_size=224,
            use_mean_pooling=False,
            qkv_bias=True,
        ),
    ),
}
FORMULAS = {
    "qwen2_5_vl": qwen2_5_vl,
    "qwen2_audio": qwen2_audio,
    "omni_thinker": omni_thinker,
    "bert": bert,
    "videomae": videomae,
    "ast": ast,
    "whisper": lambda c: whisper_encoder(c) + whisper_decoder(c),
}


def params(name: str) -> int:
    spec = CHECKPOINTS[name]
    return FORMULAS[spec["arch"]](spec["config"])


# ------------------------------------------------------------------------------------- per-batch terms
def prompt_tokens(prompt_file: str, extra: int = 0) -> int:
    words = len((REPO / "conf" / prompt_file).read_text().split())
    return math.ceil(words * 1.4) + 40 + extra


def visual_tokens(num_frames: int, max_pixels: int, as_video: bool) -> tuple[int, int]:
    """(tokens after the 2x2 merge, vision-tower patches) per clip, Qwen2.5-VL's rule: each frame resized to at
    most max_pixels in 28-pixel units; a video merges frame pairs (temporal patch 2), images don't."""
    merged_per_frame = max_pixels // (28 * 28)
    groups = math.ceil(num_frames / 2) if as_video else num_frames
    return groups * merged_per_frame, groups * merged_per_frame * 4


def kv_bytes(text: dict[str, Any], tokens: int, dtype_bytes: int = 2) -> int:
    hd = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    return tokens * text["num_hidden_layers"] * 2 * text["num_key_value_heads"] * hd * dtype_bytes


def decoder_act_bytes(text: dict[str, Any], tokens: int, batch: int, dtype_bytes: int = 2) -> int:
    per_token = 2 * text["hidden_size"] + 3 * text["intermediate_size"]
    return tokens * per_token * dtype_bytes + 2 * batch * text["vocab_size"] * 4


def encoder_act_bytes(hidden: int, inter: int, heads: int, seq: int, batch: int, dtype_bytes: int) -> int:
    return batch * seq * (2 * hidden + inter) * dtype_bytes + batch * heads * seq * seq * dtype_bytes


def vision_act_bytes(batch: int, patches: int, sequence: int) -> int:
    """The vision tower over `batch` clips of `patches` patches: one block's live tensors, plus one full-attention
    score matrix of the longest sequence (a video is one sequence in the full-attention blocks; frames as images
    are one each), which sdpa without flash-attention materialises per sequence: an upper bound."""
    v = QWEN25_VISION
    return batch * patches * (2 * v["hidden_size"] + 3 * v["intermediate_size"]) * 2 + v["num_heads"] * sequence**2 * 2


@dataclass
class Row:
    what: str
    models: str
    batch: str
    weights: float
    kv: float
    act: float
    host: float

    @property
    def peak(self) -> float:
        return self.weights + self.kv + self.act + CUDA_OVERHEAD


def _cfg(profile: str, overrides: tuple[str, ...] = ()):
    import sys

    sys.path.insert(0, str(REPO / "lib"))
    from captionrec.config import load_config

    return load_config(profile, list(overrides))


BATCH_KEYS = {
    "caption video": "caption.video.batch_size",
    "caption audio": "caption.audio.batch_size",
    "caption av": "caption.av.batch_size",
}


def largest_batch(profile: str, what: str, card_bytes: int, limit: int = 64) -> int:
    """The largest batch size of `what` whose peak stays within FIT_SHARE of the card (0: not even 1)."""
    best = 0
    for b in range(1, limit + 1):
        row = next(r for r in rows(profile, (f"{BATCH_KEYS[what]}={b}",)) if r.what == what)
        if row.peak > FIT_SHARE * card_bytes:
            break
        best = b
    return best


def rows(profile: str = "databricks", overrides: tuple[str, ...] = ()) -> list[Row]:
    cfg = _cfg(profile, overrides)
    cap, emb = cfg.caption, cfg.embed
    frame_bytes = lambda n, px: n * px * 3  # noqa: E731  uint8 RGB
    audio_bytes = 30 * 16000 * 4  # 30 s float32 mono
    out = []

    # video: Qwen2.5-VL-3B over num_frames frames as one video
    v = cap.video
    vl = CHECKPOINTS["Qwen2.5-VL-3B-Instruct"]["config"]
    merged, patches = visual_tokens(v.num_frames, v.max_pixels, as_video=v.frames_input != "images")
    seq = prompt_tokens(v.prompt_file) + merged
    w = params("Qwen2.5-VL-3B-Instruct") * 2
    kv = kv_bytes(vl["text_config"], v.batch_size * (seq + v.max_new_tokens))
    act = max(
        decoder_act_bytes(vl["text_config"], v.batch_size * seq, v.batch_size),
        vision_act_bytes(v.batch_size, patches, patches),
    )
    host = HOST_RUNTIME + w + frame_bytes(cap.items_per_batch * v.num_frames, v.max_pixels)
    out.append(
        Row(
            "caption video",
            "Qwen2.5-VL-3B bf16",
            f"{v.batch_size} clips x {v.num_frames} frames, {v.max_pixels} px ({merged} visual tokens)",
            w,
            kv,
            act,
            host,
        )
    )

    # audio: faster-whisper large-v3 float16 + AST tagger (float32) + Qwen2-Audio-7B fusion (bf16), all resident
    a = cap.audio
    qa = CHECKPOINTS["Qwen2-Audio-7B-Instruct"]["config"]
    wh = WHISPER_LARGE_V3
    w_whisper = params("faster-whisper large-v3") * BYTES.get(a.asr_compute_type, 2)
    w_ast = params("AST audioset-10-10") * 4
    w_llm = params("Qwen2-Audio-7B-Instruct") * 2 if a.fusion == "llm" else 0
    beams = a.asr_beam_size
    whisper_work = beams * (wh["max_target_positions"] + wh["max_source_positions"]) * wh["decoder_layers"] * 2 * wh[
        "d_model"
    ] * 2 + encoder_act_bytes(wh["d_model"], wh["encoder_ffn_dim"], 20, 1500, 1, 2)
    ast_cfg = CHECKPOINTS["AST audioset-10-10"]["config"]
    ast_work = encoder_act_bytes(768, 3072, 12, ast_patches(ast_cfg) + 2, a.batch_size, 4)
    seq = 750 + prompt_tokens(a.prompt_file, extra=250)
    kv = kv_bytes(qa["text_config"], a.batch_size * (seq + a.llm_max_new_tokens)) if w_llm else 0
    llm_act = (
        (
            decoder_act_bytes(qa["text_config"], a.batch_size * seq, a.batch_size)
            + encoder_act_bytes(1280, 5120, 20, 1500, a.batch_size, 2)
        )
        if w_llm
        else 0
    )
    act = max(whisper_work, ast_work, llm_act)
    host = HOST_RUNTIME + w_whisper + w_ast + w_llm + cap.items_per_batch * audio_bytes
    out.append(
        Row(
            "caption audio",
            f"whisper large-v3 fp16 + AST fp32 + Qwen2-Audio-7B bf16 (beam {beams})",
            f"{a.batch_size} clips x 30 s (750 audio tokens)",
            w_whisper + w_ast + w_llm,
            kv,
            act,
            host,
        )
    )

    # av: Qwen2.5-Omni-3B thinker, frames as images + the clip's audio
    o = cap.av
    om = CHECKPOINTS["Qwen2.5-Omni-3B (thinker)"]["config"]["thinker_config"]
    merged, patches = visual_tokens(o.num_frames, o.max_pixels, as_video=False)
    seq = prompt_tokens(o.prompt_file) + merged + 750
    w = params("Qwen2.5-Omni-3B (thinker)") * 2
    kv = kv_bytes(om["text_config"], o.batch_size * (seq + o.max_new_tokens))
    act = max(
        decoder_act_bytes(om["text_config"], o.batch_size * seq, o.batch_size),
        vision_act_bytes(o.batch_size, patches, patches // o.num_frames),
    )
    host = HOST_RUNTIME + w + cap.items_per_batch * (frame_bytes(o.num_frames, o.max_pixels) + audio_bytes)
    out.append(
        Row(
            "caption av",
            "Qwen2.5-Omni-3B thinker bf16",
            f"{o.batch_size} clips x {o.num_frames} frames + 30 s ({merged} visual + 750 audio tokens)",
            w,
            kv,
            act,
            host,
        )
    )

    # embed: the three families in one Spark job (a worker may hold all three)
    t, vm, ar = emb.text, emb.videomae, emb.audio_raw
    w_text, w_vm, w_ast = params("bge-large-en-v1.5") * 2, params("videomae-base") * 2, params("AST audioset-10-10") * 2
    seq_t = t.max_seq_length or 512
    vm_tokens = (vm.num_frames // 2) * (224 // 16) ** 2
    acts = {
        "text": encoder_act_bytes(1024, 4096, 16, seq_t, t.batch_size, 2),
        "videomae": encoder_act_bytes(768, 3072, 12, vm_tokens, vm.batch_size, 2),
        "ast": encoder_act_bytes(768, 3072, 12, ast_patches(ast_cfg) + 2, ar.batch_size, 2),
    }
    host = HOST_RUNTIME + w_text + w_vm + w_ast + vm.batch_size * frame_bytes(vm.num_frames, vm.max_pixels or 224 * 224)
    out.append(
        Row(
            "embed",
            "bge-large + videomae-base + AST, bf16",
            f"text {t.batch_size} x {seq_t} tokens; videomae {vm.batch_size} x {vm.num_frames} frames; "
            f"AST {ar.batch_size} x 10 s",
            w_text + w_vm + w_ast,
            0,
            max(acts.values()),
            host,
        )
    )
    return out


def fits(row: Row, card: str) -> bool:
    return row.peak <= FIT_SHARE * CARDS[card]


def table(profile: str = "databricks") -> str:
    head = (
        f"| stage / kind | models (dtype) | batch (profile `{profile}`) | weights | KV cache | activations | GPU peak | "
        + " | ".join(f"fits {c}" for c in CARDS)
        + " | host peak |"
    )
    lines = [head, "|" + "---|" * (8 + len(CARDS) - 0)]
    for r in rows(profile):
        fits = []
        for total in CARDS.values():
            limit = FIT_SHARE * total
            share = r.peak / total
            verdict = (
                f"**no** ({share:.0%})"
                if r.peak > limit
                else f"yes, tight ({share:.0%})"
                if share > TIGHT_SHARE
                else f"yes ({share:.0%})"
            )
            if r.what in BATCH_KEYS:
                best = largest_batch(profile, r.what, total)
                verdict += f"; largest batch {best}{'+' if best == 64 else ''}" if best else "; not at batch 1"
            fits.append(verdict)
        lines.append(
            f"| {r.what} | {r.models} | {r.batch} | {r.weights / GiB:.1f} GiB | {r.kv / GiB:.2f} GiB | "
            f"{r.act / GiB:.2f} GiB | {r.peak / GiB:.1f} GiB | " + " | ".join(fits) + f" | {r.host / GiB:.1f} GiB |"
        )
    return "\n".join(lines)


def param_table() -> str:
    lines = ["| checkpoint | parameters (formula) |", "|---|---|"]
    for name in CHECKPOINTS:
        lines.append(f"| {name} | {params(name) / 1e9:.3f} B |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", action="append", help="conf/<profile>.yaml (default: databricks and cluster)")
    args = p.parse_args(argv)
    print(param_table())
    for profile in args.profile or ["databricks", "cluster"]:
        print()
        print(table(profile))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
