"""`audio_raw`: a pretrained audio encoder's pooled embedding of the first 30 s.

Choice: the Audio Spectrogram Transformer (AST, `MIT/ast-finetuned-audioset-10-10-0.4593`) through
transformers' `ASTModel` + `ASTFeatureExtractor`. It is the best-known AudioSet encoder in transformers,
needs no extra package (the feature extractor computes Kaldi fbanks with numpy when torchaudio is
missing) and covers music, speech and sound events alike, which is what a short-video soundtrack holds.

AST reads 1024 fbank frames (10.24 s at a 10 ms hop), so a 30 s window is cut into `chunk_s` chunks
(default 10 s); each chunk is embedded and the chunk vectors are averaged. Per chunk:
    pooling="pooler": AST's pooled output, the mean of its CLS and distillation tokens (the vector its
                      AudioSet classifier reads; the default)
    pooling="mean":   the mean of all last-layer tokens
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from captionrec.features import ResolvedModel, default_device, load_pretrained


def check_waveform(wav: np.ndarray, i: int = 0) -> np.ndarray:
    if not isinstance(wav, np.ndarray):
        raise TypeError(f"waveforms[{i}] is {type(wav).__name__}, expected a 1-D numpy array")
    if wav.ndim != 1:
        raise ValueError(f"waveforms[{i}] has shape {wav.shape}, expected mono (S,)")
    if wav.size == 0:
        raise ValueError(f"waveforms[{i}] is empty")
    if not np.issubdtype(wav.dtype, np.floating):
        raise ValueError(f"waveforms[{i}] has dtype {wav.dtype}, expected float samples in [-1, 1]")
    if not np.isfinite(wav).all():
        raise ValueError(f"waveforms[{i}] holds NaN or inf samples")
    return wav.astype(np.float32, copy=False)


def split_chunks(wav: np.ndarray, chunk: int, min_chunk: int) -> list[np.ndarray]:
    """(S,) -> chunks of `chunk` samples; a trailing chunk under `min_chunk` is dropped unless it is alone."""
    chunks = [wav[s : s + chunk] for s in range(0, len(wav), chunk)]
    if len(chunks) > 1 and len(chunks[-1]) < min_chunk:
        chunks.pop()
    return chunks


class ASTEncoder:
    """`encode(waveforms) -> (N, D) float32`; waveforms are mono float at `sample_rate` (16 kHz for AST)."""

    def __init__(
        self,
        model: str | ResolvedModel,
        *,
        device: str | None = None,
        chunk_s: float = 10.0,
        min_chunk_s: float = 1.0,
        pooling: Literal["pooler", "mean"] = "pooler",
        batch_size: int = 8,
        dtype: str = "auto",
        local_files_only: bool = True,
        tiny_dir: str = "models/tiny",
    ) -> None:
        import torch
        from transformers import ASTFeatureExtractor, ASTModel

        if pooling not in ("pooler", "mean"):
            raise ValueError(f"pooling must be 'pooler' or 'mean', got {pooling!r}")
        self.device = device or default_device()
        self.pooling = pooling
        self.batch_size = int(batch_size)
        self.resolved, self.extractor, self.model, self.dtype = load_pretrained(
            model,
            tiny_dir,
            "audio-spectrogram-transformer",
            ASTFeatureExtractor,
            ASTModel,
            self.device,
            dtype,
            local_files_only,
            "AST",
        )
        self.sample_rate = int(self.extractor.sampling_rate)
        # A chunk never exceeds what the extractor keeps (max_length frames at a 10 ms hop).
        max_s = self.extractor.max_length * 0.01
        self.chunk = int(min(chunk_s, max_s) * self.sample_rate)
        self.min_chunk = max(1, int(min_chunk_s * self.sample_rate))
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    def encode(self, waveforms: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) waveforms (S_i,) -> (N, D) float32 (mean over each waveform's chunks)."""
        wavs = [check_waveform(w, i) for i, w in enumerate(waveforms)]
        if not wavs:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks: list[np.ndarray] = []
        owner: list[int] = []
        for i, w in enumerate(wavs):
            for c in split_chunks(w, self.chunk, self.min_chunk):
                chunks.append(c)
                owner.append(i)
        torch = self._torch
        vecs = []
        for start in range(0, len(chunks), self.batch_size):
            feats = self.extractor(
                chunks[start : start + self.batch_size], sampling_rate=self.sample_rate, return_tensors="pt"
            )["input_values"]  # (B, 1024, mel)
            with torch.inference_mode():
                out = self.model(input_values=feats.to(self.device, self.dtype))
            pooled = out.pooler_output if self.pooling == "pooler" else out.last_hidden_state.mean(dim=1)  # (B, D)
            vecs.append(pooled.float().cpu().numpy())
        chunk_vecs = np.concatenate(vecs)  # (C, D)
        owner_arr = np.asarray(owner)
        return np.stack([chunk_vecs[owner_arr == i].mean(axis=0) for i in range(len(wavs))]).astype(np.float32)
