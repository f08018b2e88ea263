"""The embed stage's per-item core, Spark-free: rows in -> decode -> batch -> encoder -> vector rows out.

    spec = EncoderSpec.of("videomae", resolve_model(cfg.videomae.model, cfg.tiny_models_dir), cfg)
    models = load_encoder(spec, device)                      # once per worker process and device
    for out in embed_rows(rows, spec, models):               # rows: item_id, feature_set, model_id,
        ...                                                  # source_version, payload (a text or a media path)

Output rows are `contracts.EMBED_ROWS`: a vector (dim, vector) or a reason (+ detail), never both; a failure is
never a vector: a bad file gets its media reason, an encoder failure `embed_error` (or `oom`), an all-zero or
non-finite vector `zero_vector` / `non_finite_vector`. Media is decoded on `decode_threads` threads while the
previous batch is on the encoder (`batching.prefetch_batches`); every encoder call goes through a `BatchRunner`
(OOM halving, a failing item alone), the same policy as the caption core; on CUDA each encoder call is timed on
the device (`inference.cost.model_call`, the stage's GPU-seconds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from captionrec import contracts as C
from captionrec.config.embed import EmbedConfig
from captionrec.inference.batching import BatchRunner, error_reason, error_text, prefetch_batches
from captionrec.inference.cost import model_call
from captionrec.inference.models import Models  # the one loaded-models shape (model: the encoder)
from captionrec.inference.refs import ResolvedModel

DETAIL_MAX = 500
FAMILIES = ("text", "videomae", "audio_raw")
# Texts per encoder call: sentence-transformers sorts a call's texts by length and sub-batches them itself.
TEXT_CALL_BATCHES = 16


def family_of(feature_set: str) -> str:
    """The encoder family of a feature set: every text set shares the text encoder."""
    if feature_set in C.TEXT_FEATURE_SETS:
        return "text"
    if feature_set in C.MEDIA_FEATURE_SETS:
        return feature_set
    raise ValueError(f"unknown feature set {feature_set!r}; known: {', '.join(C.FEATURE_SETS)}")


@dataclass(frozen=True)
class EncoderSpec:
    """One encoder family with its resolved model and the embed config (picklable; shipped to the workers)."""

    family: str
    resolved: ResolvedModel
    cfg: EmbedConfig

    @classmethod
    def of(cls, family: str, resolved: ResolvedModel, cfg: EmbedConfig) -> "EncoderSpec":
        if family not in FAMILIES:
            raise ValueError(f"unknown encoder family {family!r}; known: {', '.join(FAMILIES)}")
        return cls(family, resolved, cfg)

    @property
    def section(self) -> Any:
        return getattr(self.cfg, self.family)

    @property
    def call_size(self) -> int:
        """Items per encoder call (the BatchRunner's starting batch)."""
        size = self.section.batch_size
        return size * TEXT_CALL_BATCHES if self.family == "text" else size

    @property
    def cache_key(self) -> str:
        """Identifies the loaded encoder (the model-map adds the device)."""
        return f"embed:{self.family}:{self.resolved.location}:{self.section!r}:{self.cfg.local_files_only}"


def load_encoder(spec: EncoderSpec, device: str) -> Models:
    """Load `spec`'s encoder on `device` (the model-map calls this once per worker process and device)."""
    s, local = spec.section, spec.cfg.local_files_only
    if spec.family == "text":
        from captionrec.features.text import TextEncoder

        enc: Any = TextEncoder(
            spec.resolved,
            device=device,
            batch_size=s.batch_size,
            normalize=s.normalize,
            max_seq_length=s.max_seq_length,
            instruction=s.passage_instruction,
            dtype=s.dtype,
            local_files_only=local,
        )
    elif spec.family == "videomae":
        from captionrec.features.videomae import VideoMAEEncoder

        enc = VideoMAEEncoder(
            spec.resolved,
            device=device,
            num_frames=s.num_frames,
            batch_size=s.batch_size,
            dtype=s.dtype,
            local_files_only=local,
        )
    else:
        from captionrec.features.audio_raw import ASTEncoder

        enc = ASTEncoder(
            spec.resolved,
            device=device,
            chunk_s=s.chunk_s,
            min_chunk_s=s.min_chunk_s,
            pooling=s.pooling,
            batch_size=s.batch_size,
            dtype=s.dtype,
            local_files_only=local,
        )
    return Models(enc, device, BatchRunner(spec.call_size))


def load_frames(path: str, v: Any) -> np.ndarray:
    """`embed.videomae` sampling of a video: (T, H, W, 3) uint8 RGB."""
    from captionrec.media import sample_frames
    from captionrec.paths import to_local_path

    return sample_frames(
        to_local_path(path), num_frames=v.num_frames, window_s=v.window_s, max_pixels=v.max_pixels
    ).frames


def load_waveform(path: str, sample_rate: int, window_s: float) -> np.ndarray:
    """The first `window_s` of a file's audio: (S,) float32 mono at `sample_rate`."""
    from captionrec.media import load_audio
    from captionrec.paths import to_local_path

    audio = load_audio(to_local_path(path), sample_rate=sample_rate, window_s=window_s)
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def payload_loader(spec: EncoderSpec, models: Models) -> Callable[[Any], Any]:
    """payload (a text or a media path) -> what the encoder takes."""
    if spec.family == "text":
        return lambda text: text
    if spec.family == "videomae":
        return lambda path: load_frames(path, spec.cfg.videomae)
    return lambda path: load_waveform(path, models.model.sample_rate, spec.cfg.audio_raw.window_s)


def result(
    row: dict[str, Any], vec: np.ndarray | None = None, reason: str | None = None, detail: Any = None
) -> dict[str, Any]:
    """One EMBED_ROWS row: the vector, or the reason there is none (a zero / non-finite vector is a reason)."""
    if vec is not None:
        if not np.isfinite(vec).all():
            reason, detail, vec = C.NON_FINITE_VECTOR, "the encoder returned NaN/inf", None
        elif not np.any(vec):
            reason, detail, vec = C.ZERO_VECTOR, "the encoder returned an all-zero vector", None
    return {
        "item_id": row["item_id"],
        "feature_set": row["feature_set"],
        "model_id": row["model_id"],
        "source_version": row["source_version"],
        "dim": int(vec.shape[0]) if vec is not None else None,
        "vector": vec.astype(np.float32).tolist() if vec is not None else None,
        "reason": reason,
        "detail": None if detail is None else str(detail)[:DETAIL_MAX],
    }


def failed(row: dict[str, Any], exc: BaseException) -> dict[str, Any]:
    """The row of an item whose encoder call failed: `oom`, a media reason, else `embed_error`."""
    reason = error_reason(exc)
    return result(row, reason=C.EMBED_ERROR if reason == C.GENERIC_ERROR else reason, detail=error_text(exc))


def encode_batch(
    batch: list[tuple[dict[str, Any], Any, dict[str, Any] | None]],
    encode: Callable[[list], np.ndarray],
    runner: BatchRunner,
) -> list[dict[str, Any]]:
    """(row, input, failure row) triples -> output rows in order; inputs go through `runner` (OOM halving)."""
    good = [(row, data) for row, data, bad in batch if bad is None]

    def call(items: list[tuple[dict[str, Any], Any]]) -> list[dict[str, Any]]:
        vecs = encode([data for _, data in items])  # (B, D)
        return [result(row, vec) for (row, _), vec in zip(items, vecs)]

    done = iter(runner.run(good, call, lambda item, exc: failed(item[0], exc)))
    return [next(done) if bad is None else bad for _, _, bad in batch]


def embed_rows(
    rows: Iterable[dict[str, Any]],
    spec: EncoderSpec,
    models: Models,
    threads: int | None = None,
    ahead: bool = True,
) -> Iterator[list[dict[str, Any]]]:
    """Embed rows (item_id, feature_set, model_id, source_version, payload); yields EMBED_ROWS per batch.

    Payloads are loaded on `threads` threads (default `embed.decode_threads`) while the previous batch is on the
    encoder; a payload that fails to load becomes its row's reason (the media reason, else decode_error).
    """
    load = payload_loader(spec, models)
    threads = spec.cfg.decode_threads if threads is None else threads

    def encode(inputs: list) -> np.ndarray:
        with model_call(models.device):  # device time of the encoder call (cost accounting; CUDA only)
            return models.model.encode(inputs)

    def decode(row: dict[str, Any]) -> tuple[dict[str, Any], Any, dict[str, Any] | None]:
        try:
            return row, load(row["payload"]), None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a recorded reason
            reason = getattr(exc, "reason", None) or C.DECODE_ERROR
            return row, None, result(row, reason=reason, detail=f"{type(exc).__name__}: {exc}")

    for batch in prefetch_batches(rows, spec.call_size, decode, threads=threads, ahead=ahead and spec.family != "text"):
        yield encode_batch(batch, encode, models.runner)
