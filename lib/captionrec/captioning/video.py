"""Qwen2.5-VL video captioner: a batch of sampled clips (frame arrays) in, one caption per clip out.

Loaded through the normal transformers path (`AutoProcessor` + `AutoModelForImageTextToText`) from a Hugging Face
id or a local folder; `trust_remote_code` stays off. The clip goes in as a video (Qwen's video processor, with
the clip's sampling fps so temporal positions are right). Where the video processor cannot load (it needs
torchvision, which has no build for some torch wheels), the frames go in as a sequence of images instead:
same model, same prompt, the image processor + tokenizer expanding the image placeholders exactly as the
processor does.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from captionrec.inference.hf_compat import load_pretrained
from captionrec.inference.refs import is_synthetic

log = logging.getLogger(__name__)

FramesInput = Literal["auto", "video", "images"]


@dataclass
class VideoCaptionResult:
    text: str
    new_tokens: int


class VideoCaptioner:
    """Qwen2.5-VL captioner. `caption(clips, prompt)`: clips are (T, H, W, 3) uint8 arrays, T >= 1."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "auto",
        attn: str = "auto",
        frames_input: FramesInput = "auto",
        max_pixels: int = 360 * 420,
        min_pixels: int = 56 * 56,
        local_files_only: bool = False,
        model_id: str | None = None,
    ):
        from transformers import AutoModelForImageTextToText

        self.model_path = model
        self.model_id = model_id or model
        self.device = device
        self.max_pixels = int(max_pixels)
        self.min_pixels = int(min_pixels)
        self.synthetic = is_synthetic(model)
        t0 = time.perf_counter()
        kwargs: dict[str, Any] = {"local_files_only": local_files_only}
        self.processor, self.tokenizer, self.image_processor = self._load_processor(model, frames_input, kwargs)
        self.tokenizer.padding_side = "left"  # batched generation: prompts end where generation starts
        self.model = load_pretrained(AutoModelForImageTextToText, model, device, dtype, attn, local_files_only)
        self.image_token = "<|image_pad|>"
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self._takes_mm_token_types = "mm_token_type_ids" in inspect.signature(self.model.forward).parameters
        self.load_s = time.perf_counter() - t0
        log.info(
            "loaded %s on %s (%s input, %.1fs)%s",
            self.model_id,
            device,
            self.frames_input,
            self.load_s,
            " -- captions are noise: tiny random model" if self.synthetic else "",
        )

    # ------------------------------------------------------------------------------------------------ loading

    def _load_processor(self, model: str, frames_input: FramesInput, kwargs: dict[str, Any]):
        from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

        if frames_input in ("auto", "video"):
            try:
                processor = AutoProcessor.from_pretrained(model, **kwargs)
                if getattr(processor, "video_processor", None) is None:
                    raise ImportError("processor has no video processor")
                self.frames_input = "video"
                return processor, processor.tokenizer, processor.image_processor
            except ImportError as exc:  # torchvision missing: the video processor cannot import
                if frames_input == "video":
                    raise
                log.info("video processor unavailable (%s); frames go in as images", str(exc).strip().split("\n")[0])
        self.frames_input = "images"
        tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        image_processor = AutoImageProcessor.from_pretrained(model, **kwargs)
        if not tokenizer.chat_template:
            raise ValueError(f"{model}: tokenizer has no chat template")
        return None, tokenizer, image_processor

    # ---------------------------------------------------------------------------------------------- captioning

    def caption(
        self,
        clips: Sequence[np.ndarray],
        prompt: str,
        max_new_tokens: int = 128,
        fps: Sequence[float] | None = None,
        **generate_kwargs: Any,
    ) -> list[VideoCaptionResult]:
        """Greedy captions for a batch of clips; `fps`: each clip's sampling rate (frames per second of video).

        `generate_kwargs` go to `model.generate` (e.g. `min_new_tokens` for fixed-length benchmarks).
        """
        import torch

        if not clips:
            return []
        for c in clips:
            if c.ndim != 4 or c.shape[-1] != 3 or c.shape[0] < 1:
                raise ValueError(f"expected (T, H, W, 3) frames with T >= 1, got shape {c.shape}")
        if self.frames_input == "video":
            inputs = self._video_inputs(clips, prompt, fps)
        else:
            inputs = self._image_inputs(clips, prompt)
        inputs = inputs.to(self.device)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs
            )  # (B, L + new)
        new = out[:, prompt_len:]  # (B, new)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        pad = self.tokenizer.pad_token_id
        counts = [int((row != pad).sum()) if pad is not None else int(row.shape[0]) for row in new]
        return [VideoCaptionResult(text=t.strip(), new_tokens=n) for t, n in zip(texts, counts)]

    def _messages(self, n_frames: int, prompt: str, as_video: bool) -> list[dict]:
        visual = [{"type": "video"}] if as_video else [{"type": "image"} for _ in range(n_frames)]
        return [{"role": "user", "content": [*visual, {"type": "text", "text": prompt}]}]

    def _video_inputs(self, clips: Sequence[np.ndarray], prompt: str, fps: Sequence[float] | None):
        from transformers.video_utils import VideoMetadata

        texts = [
            self.processor.apply_chat_template(
                self._messages(len(c), prompt, True), add_generation_prompt=True, tokenize=False
            )
            for c in clips
        ]
        rates = list(fps) if fps is not None else [2.0] * len(clips)
        metadata = [
            VideoMetadata(
                total_num_frames=len(c), fps=float(r) if r and r > 0 else 2.0, height=c.shape[1], width=c.shape[2]
            )
            for c, r in zip(clips, rates)
        ]
        return self.processor(
            text=texts,
            videos=[np.ascontiguousarray(c) for c in clips],
            padding=True,
            return_tensors="pt",
            videos_kwargs={
                "video_metadata": metadata,
                "do_sample_frames": False,
                "size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
            },
        )

    def _image_inputs(self, clips: Sequence[np.ndarray], prompt: str):
        """The processor's work for frames-as-images: pixel patches + placeholder expansion + token types."""
        from transformers import BatchFeature

        texts = [
            self.tokenizer.apply_chat_template(
                self._messages(len(c), prompt, False), add_generation_prompt=True, tokenize=False
            )
            for c in clips
        ]
        frames = [f for c in clips for f in c]  # every frame of every clip, in order
        vision = self.image_processor(
            images=frames,
            return_tensors="pt",
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        )
        grid = vision["image_grid_thw"]  # (num_frames_total, 3): t, h, w patches per frame
        merge = int(self.image_processor.merge_size) ** 2
        expanded, k = [], 0
        for text in texts:
            parts = text.split(self.image_token)
            pieces = [parts[0]]
            for part in parts[1:]:
                pieces.append(self.image_token * int(grid[k].prod() // merge))
                pieces.append(part)
                k += 1
            expanded.append("".join(pieces))
        if k != len(frames):
            raise RuntimeError(f"chat template produced {k} image placeholders for {len(frames)} frames")
        enc = self.tokenizer(expanded, padding=True, return_tensors="pt")
        if self._takes_mm_token_types:  # transformers 5.x; 4.5x finds the image tokens by id itself
            enc["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).int()  # 1 = image token
        return BatchFeature({**enc, **vision})
