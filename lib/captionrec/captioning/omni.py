"""Qwen2.5-Omni one-pass captioner (the `av` caption kind): a clip's frames and its soundtrack in, one caption out.

Only the thinker (the text-generating half: vision encoder + audio encoder + LLM) is loaded, through transformers'
`Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained` from a Hugging Face id (`Qwen/Qwen2.5-Omni-3B`) or a
local folder; it takes the full checkpoint's thinker sub-config and `thinker.*` weights and leaves the talker and
the vocoder (speech output) unloaded. `trust_remote_code` stays off.

Frames go in as a sequence of images (the processor's image path, which needs no torchvision), then the audio clip,
then the prompt, in one user turn of the model's own chat template:

    <|vision_bos|><|IMAGE|>..<|vision_eos|> x T   <|audio_bos|><|AUDIO|>..<|audio_eos|>   prompt

A clip without audio (`None`) gets the frames and the prompt only. The processor is `Qwen2_5OmniProcessor`, built
from the checkpoint's tokenizer, image processor and Whisper feature extractor with no video processor (the video
processor needs torchvision, and no video input is used). No Spark, no tables.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from captionrec.captioning.common import SAMPLE_RATE
from captionrec.inference.hf_compat import load_pretrained, require_omni
from captionrec.inference.refs import is_synthetic

log = logging.getLogger(__name__)


@dataclass
class OmniCaptionResult:
    text: str
    new_tokens: int


def _processor_class():
    """Qwen2_5OmniProcessor that accepts no video processor (frames go in as images; torchvision not needed)."""
    from transformers import Qwen2_5OmniProcessor

    class ImagesAudioOmniProcessor(Qwen2_5OmniProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    return ImagesAudioOmniProcessor


def _processor_chat_template(model: str, local_files_only: bool) -> str | None:
    """The processor-level chat template (chat_template.jinja / chat_template.json) when the tokenizer has none."""
    import json
    from pathlib import Path

    from transformers.utils import cached_file

    for name in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(model, name, local_files_only=local_files_only, _raise_exceptions_for_missing_entries=False)
        if path:
            text = Path(path).read_text()
            return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return None


def load_omni_processor(model: str, local_files_only: bool = False):
    """The checkpoint's tokenizer (with its chat template), image processor and feature extractor, as one
    Qwen2_5OmniProcessor without a video processor. A checkpoint without a chat template is an error."""
    from transformers import AutoFeatureExtractor, AutoImageProcessor, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": local_files_only}
    tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
    template = tokenizer.chat_template or _processor_chat_template(model, local_files_only)
    if not template:
        raise ValueError(f"{model}: no chat template in the tokenizer or chat_template.json (expected Qwen2.5-Omni's)")
    processor = _processor_class()(
        image_processor=AutoImageProcessor.from_pretrained(model, **kwargs),
        video_processor=None,
        feature_extractor=AutoFeatureExtractor.from_pretrained(model, **kwargs),
        tokenizer=tokenizer,
        chat_template=template,
    )
    processor.tokenizer.padding_side = "left"  # batched generation: prompts end where generation starts
    return processor


class OmniCaptioner:
    """Qwen2.5-Omni thinker. `caption(clips, audios, prompt)`: clips are (T, H, W, 3) uint8 arrays (T >= 1), audios
    16 kHz mono float32 arrays or None (no soundtrack)."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        dtype: str = "auto",
        attn: str = "auto",
        max_pixels: int = 64 * 28 * 28,
        min_pixels: int = 56 * 56,
        local_files_only: bool = False,
        model_id: str | None = None,
    ):
        require_omni()
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration

        t0 = time.perf_counter()
        self.model_path = model
        self.model_id = model_id or model
        self.device = device
        self.max_pixels, self.min_pixels = int(max_pixels), int(min_pixels)
        self.synthetic = is_synthetic(model)
        self.processor = load_omni_processor(model, local_files_only)
        self.tokenizer = self.processor.tokenizer
        self.model = load_pretrained(
            Qwen2_5OmniThinkerForConditionalGeneration, model, device, dtype, attn, local_files_only
        )
        self.sampling_rate = int(getattr(self.processor.feature_extractor, "sampling_rate", SAMPLE_RATE))
        if self.sampling_rate != SAMPLE_RATE:
            raise ValueError(f"{model}: feature extractor expects {self.sampling_rate} Hz audio; decoding gives 16 kHz")
        self.load_s = time.perf_counter() - t0
        log.info(
            "loaded %s on %s (%.1fs)%s",
            self.model_id,
            device,
            self.load_s,
            " -- captions are noise: tiny random model" if self.synthetic else "",
        )

    def _messages(self, n_frames: int, with_audio: bool, prompt: str) -> list[dict]:
        content: list[dict] = [{"type": "image"} for _ in range(n_frames)]
        if with_audio:
            content.append({"type": "audio"})
        content.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": content}]

    def inputs(self, clips: Sequence[np.ndarray], audios: Sequence[np.ndarray | None], prompt: str):
        """The processor's tensors for a batch (frames as images, then the audio clip, then the prompt)."""
        if len(clips) != len(audios):
            raise ValueError(f"{len(clips)} clips but {len(audios)} audio clips")
        for c in clips:
            if c.ndim != 4 or c.shape[-1] != 3 or c.shape[0] < 1:
                raise ValueError(f"expected (T, H, W, 3) frames with T >= 1, got shape {c.shape}")
        texts = [
            self.processor.apply_chat_template(
                self._messages(len(c), a is not None, prompt), add_generation_prompt=True, tokenize=False
            )
            for c, a in zip(clips, audios)
        ]
        frames = [f for c in clips for f in c]  # every frame of every clip, in order
        sounds = [np.asarray(a, dtype=np.float32) for a in audios if a is not None]
        return self.processor(
            text=texts,
            images=frames,
            audio=sounds or None,
            padding=True,
            return_tensors="pt",
            images_kwargs={"size": {"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels}},
            # Padded to the batch's longest clip, not the extractor's 300 s (the processor pads to max_length):
            # the encoder reads only each clip's own frames (feature_attention_mask), so captions are the same.
            audio_kwargs={"sampling_rate": self.sampling_rate, "max_length": max((len(a) for a in sounds), default=0)},
        )

    def caption(
        self,
        clips: Sequence[np.ndarray],
        audios: Sequence[np.ndarray | None],
        prompt: str,
        max_new_tokens: int = 128,
        **generate_kwargs: Any,
    ) -> list[OmniCaptionResult]:
        """Greedy captions for a batch; `generate_kwargs` go to `generate` (e.g. `min_new_tokens` for benchmarks)."""
        import torch

        if not clips:
            return []
        inputs = self.inputs(clips, audios, prompt).to(self.device)
        for key in ("pixel_values", "input_features"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.model.dtype)
        prompt_len = inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
        new = out[:, prompt_len:]  # (B, new)
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        pad = self.tokenizer.pad_token_id
        counts = [int((row != pad).sum()) if pad is not None else int(row.shape[0]) for row in new]
        return [OmniCaptionResult(text=t.strip(), new_tokens=n) for t, n in zip(texts, counts)]
