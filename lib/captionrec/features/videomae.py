"""VideoMAE clip embedding: `num_frames` RGB frames -> VideoMAEModel -> mean of the last hidden state.

VideoMAEModel (no classification head) returns per-patch tokens (B, T/tubelet * (H/p) * (W/p), D); their
mean is the clip vector, as VideoMAE's own classifier pools (`use_mean_pooling`). Frames are resized and
centre-cropped by the model's image processor (VideoMAEImageProcessor; its PIL backend where torchvision
is missing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from captionrec.features import ResolvedModel, default_device, load_pretrained


def fit_frames(frames: np.ndarray, num_frames: int) -> np.ndarray:
    """(T, H, W, 3) -> (num_frames, H, W, 3) by uniform index sampling (repeats frames of short clips)."""
    if frames.shape[0] == num_frames:
        return frames
    idx = np.linspace(0, frames.shape[0] - 1, num_frames).round().astype(int)
    return frames[idx]


def check_clip(clip: np.ndarray, i: int = 0) -> np.ndarray:
    if not isinstance(clip, np.ndarray):
        raise TypeError(f"clips[{i}] is {type(clip).__name__}, expected a numpy array (T, H, W, 3)")
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.shape[0] == 0 or min(clip.shape[1:3]) == 0:
        raise ValueError(f"clips[{i}] has shape {clip.shape}, expected (T>0, H>0, W>0, 3)")
    if clip.dtype != np.uint8:
        raise ValueError(f"clips[{i}] has dtype {clip.dtype}, expected uint8 RGB")
    return clip


class VideoMAEEncoder:
    """`encode(clips) -> (N, D) float32`; each clip is (T, H, W, 3) uint8 RGB."""

    def __init__(
        self,
        model: str | ResolvedModel,
        *,
        device: str | None = None,
        num_frames: int | None = None,
        batch_size: int = 4,
        dtype: str = "auto",
        local_files_only: bool = True,
        tiny_dir: str = "models/tiny",
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, VideoMAEModel

        self.device = device or default_device()
        self.batch_size = int(batch_size)
        self.resolved, self.processor, self.model, self.dtype = load_pretrained(
            model,
            tiny_dir,
            "videomae",
            AutoImageProcessor,
            VideoMAEModel,
            self.device,
            dtype,
            local_files_only,
            "VideoMAE",
        )
        model_frames = int(self.model.config.num_frames)
        if num_frames is not None and num_frames != model_frames:
            raise ValueError(f"num_frames={num_frames} but {self.resolved.ref} was trained on {model_frames} frames")
        self.num_frames = model_frames
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    def encode(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """(N,) clips of (T, H, W, 3) uint8 -> (N, D) float32."""
        clips = [fit_frames(check_clip(c, i), self.num_frames) for i, c in enumerate(clips)]
        if not clips:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        out = []
        for start in range(0, len(clips), self.batch_size):
            batch = [list(c) for c in clips[start : start + self.batch_size]]
            pixels = self.processor(batch, return_tensors="pt")["pixel_values"]  # (B, T, 3, S, S)
            with torch.inference_mode():
                hidden = self.model(pixel_values=pixels.to(self.device, self.dtype)).last_hidden_state  # (B, P, D)
            out.append(hidden.float().mean(dim=1).cpu().numpy())  # (B, D)
        return np.concatenate(out).astype(np.float32, copy=False)
