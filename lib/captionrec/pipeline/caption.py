"""The caption stage: `items` -> `captions` (item_id, kind, captioner_version).

    run(cfg, spark, store)                  read items + captions, caption what is pending, MERGE, summary dict
    plan_kind(cfg.caption, kind)            the captioner for one kind: settings, version, prompt, model refs
    pending_items(items, captions, plan)    DataFrame in/out: items without a caption for the plan's version
    caption_items(items, plan, profile)     DataFrame in/out: mapInPandas over the worker below
    caption_rows(rows, plan, models)        the Spark-free core (the worker and the bare-loop benchmark share it)

Captioner version: a short hash of everything that changes a caption of that kind (model ids, prompt version and
text, frame sampling, window, pixel budget, generation length, fusion, ...). Batch sizes, dtype and attention
kernels are left out: they change speed, not the captioner.

Statuses: `ok` (text is a caption), `skipped` (a permanent reason: no_audio_stream, silent, corrupt, empty_file,
not_a_video, no_video_stream, empty_output; never retried) and `error` (transient: error, oom, decode_error,
missing_file; retried by the next run when `caption.retry_errors`). Rows are MERGEd on the key, so a retry
replaces its error row and nothing duplicates.

Workers load their models once per Python process (`cached_model`, keyed by the plan and device), bind to the
GPU Spark assigned (`task_device`), decode the next batch in a background thread while the current one is on
the model, halve a batch that runs out of memory, and record a failing item with its error instead of failing
the task.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import numpy as np

from captionrec.captioning.batching import BatchRunner, error_reason, error_text
from captionrec.config.caption import CaptionConfig

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from captionrec.config.schema import Config
    from captionrec.tables import TableStore

log = logging.getLogger(__name__)

TABLE = "captions"
ITEMS = "items"
KEYS = ("item_id", "kind", "captioner_version")
KINDS = ("video", "audio")

OK, SKIPPED, ERROR = "ok", "skipped", "error"
PERMANENT_REASONS = frozenset(
    {"empty_file", "not_a_video", "corrupt", "no_video_stream", "no_audio_stream", "silent", "empty_output"}
)
NOISE_NOTE = "captions are noise: tiny random model"

# Input columns a worker needs from `items`.
ITEM_COLUMNS = ("item_id", "video_path", "has_audio")


# ------------------------------------------------------------------------------------------------ schema


def captions_schema() -> "StructType":
    from pyspark.sql.types import (
        ArrayType,
        BooleanType,
        DoubleType,
        IntegerType,
        MapType,
        StringType,
        StructField,
        StructType,
        TimestampType,
    )

    tag = StructType([StructField("label", StringType()), StructField("score", DoubleType())])
    return StructType(
        [
            StructField("item_id", StringType(), False),
            StructField("kind", StringType(), False),
            StructField("captioner_version", StringType(), False),
            StructField("status", StringType(), False),
            StructField("reason", StringType()),
            StructField("error", StringType()),
            StructField("text", StringType()),
            StructField("model_ids", MapType(StringType(), StringType())),
            StructField("prompt_version", StringType()),
            StructField("frames_used", IntegerType()),
            StructField("frame_times_s", ArrayType(DoubleType())),
            StructField("transcript", StringType()),
            StructField("language", StringType()),
            StructField("sound_tags", ArrayType(tag)),
            StructField("synthetic", BooleanType()),
            StructField("decode_s", DoubleType()),
            StructField("model_s", DoubleType()),
            StructField("total_s", DoubleType()),
            StructField("device", StringType()),
            StructField("task_gpus", StringType()),
            StructField("settings", StringType()),
            StructField("created_at", TimestampType()),
        ]
    )


COLUMNS = (
    "item_id", "kind", "captioner_version", "status", "reason", "error", "text", "model_ids", "prompt_version",
    "frames_used", "frame_times_s", "transcript", "language", "sound_tags", "synthetic", "decode_s", "model_s",
    "total_s", "device", "task_gpus", "settings", "created_at",
)


# -------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class CaptionPlan:
    """Everything a worker needs for one kind (picklable; shipped inside the mapInPandas closure)."""

    kind: str
    version: str
    settings_json: str  # the versioned settings, as stored in captions.settings
    prompt: str
    prompt_version: str
    model_ids: tuple[tuple[str, str], ...]  # (role, configured reference), e.g. ("vlm", "Qwen/Qwen2.5-VL-3B-Instruct")
    cfg: CaptionConfig
    tiny_dir: str  # absolute: workers may run in another working directory
    synthetic: bool = False

    @property
    def model_map(self) -> dict[str, str]:
        return dict(self.model_ids)

    def cache_key(self, device: str) -> str:
        return f"caption:{self.kind}:{self.version}:{device}:{self.tiny_dir}:{self.cfg.local_files_only}"


def load_prompt(prompt_file: str) -> str:
    """Prompt text from `prompt_file` (relative to the conf folder unless absolute)."""
    from captionrec.config import conf_dir

    path = Path(prompt_file)
    if not path.is_absolute():
        path = conf_dir() / path
    if not path.is_file():
        raise FileNotFoundError(f"caption prompt not found: {path}")
    return path.read_text().strip()


def captioner_settings(cfg: CaptionConfig, kind: str, prompt: str) -> dict[str, Any]:
    """The settings that define a captioner of `kind` (what its version hashes)."""
    phash = hashlib.sha256(prompt.encode()).hexdigest()[:12]
    if kind == "video":
        v = cfg.video
        return {
            "kind": "video", "model": v.model, "prompt_version": v.prompt_version, "prompt_sha": phash,
            "num_frames": None if v.fps else v.num_frames, "fps": v.fps, "max_frames": v.max_frames,
            "window_s": v.window_s, "max_pixels": v.max_pixels, "max_new_tokens": v.max_new_tokens,
            "frames_input": v.frames_input, "decoding": "greedy",
        }
    if kind == "audio":
        a = cfg.audio
        s = {
            "kind": "audio", "asr_model": a.asr_model, "asr_beam_size": a.asr_beam_size, "vad": a.vad,
            "language": a.language, "tagger_model": a.tagger_model, "top_k": a.top_k, "fusion": a.fusion,
            "window_s": a.window_s, "silence_dbfs": a.silence_dbfs, "sample_rate": 16000,
        }
        if a.fusion == "llm":
            s.update(llm_model=a.llm_model, llm_max_new_tokens=a.llm_max_new_tokens,
                     prompt_version=a.prompt_version, prompt_sha=phash, decoding="greedy")
        return s
    raise ValueError(f"unknown caption kind {kind!r}")


def captioner_version(settings: dict[str, Any]) -> str:
    """`<kind>-<12 hex>`: stable across runs and machines for the same settings."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return f"{settings['kind']}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def plan_kind(cfg: CaptionConfig, kind: str, build_tiny: bool = True) -> CaptionPlan:
    """Resolve one kind's captioner on the driver: prompt, version, model refs (tiny models built if missing)."""
    from captionrec.captioning import TINY_PREFIX, is_synthetic, resolve_model_ref

    tiny_dir = str(Path(cfg.tiny_models_dir).resolve())
    if kind == "video":
        prompt_version, prompt = cfg.video.prompt_version, load_prompt(cfg.video.prompt_file)
        roles = [("vlm", cfg.video.model)]
    elif kind == "audio":
        a = cfg.audio
        prompt_version = a.prompt_version if a.fusion == "llm" else "template_v1"
        prompt = load_prompt(a.prompt_file) if a.fusion == "llm" else ""
        roles = [("asr", a.asr_model), ("tagger", a.tagger_model)]
        if a.fusion == "llm":
            roles.append(("llm", a.llm_model))
    else:
        raise ValueError(f"unknown caption kind {kind!r}")
    synthetic = False
    for _, ref in roles:
        if ref.startswith(TINY_PREFIX):
            synthetic |= is_synthetic(resolve_model_ref(ref, tiny_dir, build_tiny=build_tiny))
        else:
            resolved = resolve_model_ref(ref, tiny_dir)  # pkg: refs must exist here too
            synthetic |= is_synthetic(resolved) if os.path.isdir(resolved) else False
    settings = captioner_settings(cfg, kind, prompt)
    return CaptionPlan(
        kind=kind, version=captioner_version(settings), settings_json=json.dumps(settings, sort_keys=True),
        prompt=prompt, prompt_version=prompt_version, model_ids=tuple(roles), cfg=cfg, tiny_dir=tiny_dir,
        synthetic=synthetic,
    )


# ------------------------------------------------------------------------------------------------ models


@dataclass
class VideoModels:
    vlm: Any  # captionrec.captioning.video.VideoCaptioner
    device: str
    runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))

    @property
    def synthetic(self) -> bool:
        return bool(self.vlm.synthetic)


@dataclass
class AudioModels:
    asr: Any  # captionrec.captioning.audio.Transcriber
    tagger: Any  # SoundTagger
    llm: Any  # AudioCaptioner | None
    device: str
    tag_runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))
    llm_runner: BatchRunner = field(default_factory=lambda: BatchRunner(1))

    @property
    def synthetic(self) -> bool:
        return any(bool(getattr(m, "synthetic", False)) for m in (self.asr, self.tagger, self.llm) if m is not None)


def load_models(plan: CaptionPlan, device: str = "cpu") -> VideoModels | AudioModels:
    """Load one kind's models on `device` (called once per worker process through `cached_model`)."""
    from captionrec.captioning import resolve_model_ref

    cfg, refs = plan.cfg, plan.model_map

    def path(role: str) -> str:
        return resolve_model_ref(refs[role], plan.tiny_dir)

    if plan.kind == "video":
        from captionrec.captioning.video import VideoCaptioner

        v = cfg.video
        vlm = VideoCaptioner(
            path("vlm"), device=device, dtype=v.dtype, attn=v.attn_implementation, frames_input=v.frames_input,
            max_pixels=v.max_pixels, local_files_only=cfg.local_files_only, model_id=refs["vlm"],
        )
        return VideoModels(vlm=vlm, device=device, runner=BatchRunner(v.batch_size))

    from captionrec.captioning.audio import AudioCaptioner, SoundTagger, Transcriber

    a = cfg.audio
    asr = Transcriber(
        path("asr"), device=device, compute_type=a.asr_compute_type, vad=a.vad, language=a.language,
        beam_size=a.asr_beam_size, cpu_threads=max(0, cfg.torch_threads), local_files_only=cfg.local_files_only,
        model_id=refs["asr"],
    )
    tagger = SoundTagger(path("tagger"), device=device, top_k=a.top_k, local_files_only=cfg.local_files_only,
                         model_id=refs["tagger"])
    llm = None
    if a.fusion == "llm":
        llm = AudioCaptioner(path("llm"), device=device, dtype=a.dtype, attn=a.attn_implementation,
                             local_files_only=cfg.local_files_only, model_id=refs["llm"])
    return AudioModels(asr=asr, tagger=tagger, llm=llm, device=device,
                       tag_runner=BatchRunner(a.batch_size), llm_runner=BatchRunner(a.batch_size))


# ----------------------------------------------------------------------------------------- row processing


def _task_gpus() -> Optional[str]:
    from captionrec.spark.udf import task_gpu_addresses

    return ",".join(task_gpu_addresses()) or None


def _row(plan: CaptionPlan, item_id: str, device: str, synthetic: bool, **values: Any) -> dict[str, Any]:
    reason = values.get("reason")
    status = values.pop("status", None) or (OK if reason is None else (SKIPPED if reason in PERMANENT_REASONS else ERROR))
    row = {c: None for c in COLUMNS}
    row.update(
        item_id=item_id, kind=plan.kind, captioner_version=plan.version, status=status,
        model_ids=dict(plan.model_ids), prompt_version=plan.prompt_version, synthetic=synthetic,
        device=device, task_gpus=_task_gpus(), settings=plan.settings_json,
        created_at=dt.datetime.now(dt.timezone.utc),
    )
    row.update(values)
    return row


def _failure(exc: BaseException) -> dict[str, Any]:
    return {"reason": error_reason(exc), "error": error_text(exc)}


@dataclass
class _Failed:
    """A per-item failure from a BatchRunner (its `on_error`)."""

    item: Any
    exc: BaseException


@dataclass
class _Decoded:
    item: dict[str, Any]
    data: Any = None  # FrameSample (video) / float32 audio (audio)
    failure: Optional[dict[str, Any]] = None
    decode_s: float = 0.0


def _decode_video(plan: CaptionPlan, item: dict[str, Any]) -> _Decoded:
    from captionrec.media import MediaError, sample_frames

    v = plan.cfg.video
    t0 = time.perf_counter()
    path = item.get("video_path")
    try:
        if not path:
            raise MediaError("missing_file", "item has no video_path", None)
        sample = sample_frames(path, num_frames=v.num_frames, window_s=v.window_s, fps=v.fps, max_pixels=v.max_pixels)
        if sample.num_frames == 0:
            raise MediaError("decode_error", "no frame decoded", path)
        if sample.num_frames > v.max_frames:  # fps sampling over a long window: keep max_frames evenly spaced
            keep = np.linspace(0, sample.num_frames - 1, v.max_frames).round().astype(int)
            sample.frames, sample.times_s = sample.frames[keep], sample.times_s[keep]
        return _Decoded(item, sample, decode_s=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - recorded per item
        return _Decoded(item, failure=_failure(exc), decode_s=time.perf_counter() - t0)


def _decode_audio(plan: CaptionPlan, item: dict[str, Any]) -> _Decoded:
    from captionrec.media import MediaError, is_silent, load_audio

    a = plan.cfg.audio
    t0 = time.perf_counter()
    path = item.get("video_path")
    try:
        if not path:
            raise MediaError("missing_file", "item has no video_path", None)
        has_audio = item.get("has_audio")
        if has_audio is False or (isinstance(has_audio, (bool, np.bool_)) and not has_audio):
            raise MediaError("no_audio_stream", "items.has_audio is false", path)
        audio = load_audio(path, sample_rate=16000, window_s=a.window_s)  # (samples,) float32 mono
        if audio.size == 0:
            raise MediaError("silent", "audio track has no samples", path)
        if is_silent(audio, a.silence_dbfs):
            raise MediaError("silent", f"audio below {a.silence_dbfs} dBFS", path)
        return _Decoded(item, audio, decode_s=time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001
        return _Decoded(item, failure=_failure(exc), decode_s=time.perf_counter() - t0)


def _caption_video_batch(plan: CaptionPlan, models: VideoModels, decoded: list[_Decoded]) -> list[dict[str, Any]]:
    v = plan.cfg.video
    out: dict[int, dict[str, Any]] = {}
    good = [(i, d) for i, d in enumerate(decoded) if d.failure is None]
    for i, d in enumerate(decoded):
        if d.failure is not None:
            out[i] = _row(plan, d.item["item_id"], models.device, models.synthetic, decode_s=d.decode_s,
                          total_s=d.decode_s, **d.failure)

    def fps_of(sample) -> float:
        span = min(v.window_s, sample.duration_s) if sample.duration_s else v.window_s
        return sample.num_frames / span if span and span > 0 else 2.0

    def run_batch(batch: list[tuple[int, _Decoded]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = models.vlm.caption(
            [d.data.frames for _, d in batch], plan.prompt, max_new_tokens=v.max_new_tokens,
            fps=[fps_of(d.data) for _, d in batch],
        )
        model_s = (time.perf_counter() - t0) / len(batch)
        rows = []
        for (_, d), res in zip(batch, results):
            extra: dict[str, Any] = {"text": res.text} if res.text else {"reason": "empty_output", "error": "model generated no text"}
            rows.append(_row(
                plan, d.item["item_id"], models.device, models.synthetic, frames_used=int(d.data.num_frames),
                frame_times_s=[round(float(t), 4) for t in d.data.times_s], decode_s=d.decode_s, model_s=model_s,
                total_s=d.decode_s + model_s, **extra,
            ))
        return rows

    def on_error(entry: tuple[int, _Decoded], exc: BaseException) -> dict[str, Any]:
        d = entry[1]
        return _row(plan, d.item["item_id"], models.device, models.synthetic, frames_used=int(d.data.num_frames),
                    decode_s=d.decode_s, total_s=d.decode_s, **_failure(exc))

    for (i, _), row in zip(good, models.runner.run(good, run_batch, on_error)):
        out[i] = row
    return [out[i] for i in range(len(decoded))]


def _caption_audio_batch(plan: CaptionPlan, models: AudioModels, decoded: list[_Decoded]) -> list[dict[str, Any]]:
    from captionrec.captioning.audio import render_audio_prompt, template_caption

    a = plan.cfg.audio
    out: dict[int, dict[str, Any]] = {}
    state: dict[int, dict[str, Any]] = {}
    for i, d in enumerate(decoded):
        if d.failure is not None:
            out[i] = _row(plan, d.item["item_id"], models.device, models.synthetic, decode_s=d.decode_s,
                          total_s=d.decode_s, **d.failure)
        else:
            state[i] = {"model_s": 0.0}

    def fail(i: int, exc: BaseException) -> None:
        d = decoded[i]
        out[i] = _row(plan, d.item["item_id"], models.device, models.synthetic, decode_s=d.decode_s,
                      total_s=d.decode_s + state[i]["model_s"], transcript=state[i].get("transcript"),
                      language=state[i].get("language"), **_failure(exc))
        state.pop(i)

    # 1. speech: faster-whisper, one clip at a time (it batches internally over 30 s windows)
    for i in list(state):
        t0 = time.perf_counter()
        try:
            tr = models.asr.transcribe(decoded[i].data)
            state[i].update(transcript=tr.text, language=tr.language)
        except Exception as exc:  # noqa: BLE001
            fail(i, exc)
            continue
        finally:
            if i in state:
                state[i]["model_s"] += time.perf_counter() - t0

    # 2. sound tags: batched, OOM-halving
    def tag_batch(idx: list[int]) -> list[Any]:
        t0 = time.perf_counter()
        tags = models.tagger.tag([decoded[i].data for i in idx])
        per = (time.perf_counter() - t0) / len(idx)
        for i in idx:
            state[i]["model_s"] += per
        return tags

    ids = list(state)
    for i, tags in zip(ids, models.tag_runner.run(ids, tag_batch, _Failed)):
        if isinstance(tags, _Failed):
            fail(i, tags.exc)
        else:
            state[i]["tags"] = tags

    # 3. the caption: LLM fusion (batched) or the template
    ids = list(state)
    if a.fusion == "llm":
        def llm_batch(idx: list[int]) -> list[str]:
            t0 = time.perf_counter()
            prompts = [render_audio_prompt(plan.prompt, state[i]["transcript"], state[i]["tags"]) for i in idx]
            texts = models.llm.caption([decoded[i].data for i in idx], prompts, max_new_tokens=a.llm_max_new_tokens)
            per = (time.perf_counter() - t0) / len(idx)
            for i in idx:
                state[i]["model_s"] += per
            return texts

        texts = models.llm_runner.run(ids, llm_batch, _Failed)
    else:
        texts = [template_caption(state[i]["transcript"], state[i]["tags"]) for i in ids]
    for i, text in zip(ids, texts):
        if isinstance(text, _Failed):
            fail(i, text.exc)
            continue
        d, s = decoded[i], state[i]
        extra: dict[str, Any] = {"text": text} if text else {"reason": "empty_output", "error": "model generated no text"}
        out[i] = _row(
            plan, d.item["item_id"], models.device, models.synthetic, transcript=s["transcript"],
            language=s["language"], sound_tags=[{"label": t.label, "score": float(t.score)} for t in s["tags"]],
            decode_s=d.decode_s, model_s=s["model_s"], total_s=d.decode_s + s["model_s"], **extra,
        )
    return [out[i] for i in range(len(decoded))]


def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def caption_rows(
    rows: Iterable[dict[str, Any]], plan: CaptionPlan, models: VideoModels | AudioModels, prefetch: Optional[bool] = None
) -> Iterator[list[dict[str, Any]]]:
    """Caption item rows (dicts with item_id, video_path, has_audio); yields output rows per model batch.

    Decoding of batch i+1 runs in a background thread while batch i is on the model (`prefetch`).
    Spark-free: the mapInPandas worker and the bare-loop benchmark both call this.
    """
    decode: Callable[[CaptionPlan, dict[str, Any]], _Decoded] = _decode_video if plan.kind == "video" else _decode_audio
    caption = _caption_video_batch if plan.kind == "video" else _caption_audio_batch
    size = plan.cfg.video.batch_size if plan.kind == "video" else plan.cfg.audio.batch_size
    prefetch = plan.cfg.prefetch if prefetch is None else prefetch

    def decode_chunk(chunk: list[dict[str, Any]]) -> list[_Decoded]:
        return [decode(plan, item) for item in chunk]

    chunks = _chunks(rows, size)
    if not prefetch:
        for chunk in chunks:
            yield caption(plan, models, decode_chunk(chunk))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="caption-decode") as pool:
        nxt = next(chunks, None)
        future = pool.submit(decode_chunk, nxt) if nxt is not None else None
        while future is not None:
            decoded = future.result()
            nxt = next(chunks, None)
            future = pool.submit(decode_chunk, nxt) if nxt is not None else None
            yield caption(plan, models, decoded)


def rows_to_pandas(rows: Sequence[dict[str, Any]]) -> "pd.DataFrame":
    import pandas as pd

    pdf = pd.DataFrame.from_records(list(rows), columns=list(COLUMNS))
    pdf["frames_used"] = pdf["frames_used"].astype("Int32")
    for c in ("decode_s", "model_s", "total_s"):
        pdf[c] = pdf[c].astype("float64")
    return pdf


# --------------------------------------------------------------------------------------------------- Spark


def worker_models(plan: CaptionPlan, device: str) -> VideoModels | AudioModels:
    """This worker process's models for `plan` (loaded once). On a GPU, another kind's caption models are dropped
    first, so a worker never holds the video and the audio models in GPU memory at once (on the CPU they stay)."""
    from captionrec.spark.udf import cached_model, cached_model_keys, clear_model_cache

    key = plan.cache_key(device)
    stale = [k for k in cached_model_keys() if k.startswith("caption:") and k != key]
    if device.startswith("cuda") and stale and key not in cached_model_keys():
        clear_model_cache()
        from captionrec.captioning.batching import free_memory

        free_memory()
    return cached_model(key, lambda: load_models(plan, device))


def make_worker(plan: CaptionPlan) -> Callable[[Iterator["pd.DataFrame"]], Iterator["pd.DataFrame"]]:
    """The mapInPandas function: per-process model cache, task GPU, streamed model batches.

    Models load on the first row, so an empty partition costs nothing.
    """

    def worker(batches: Iterator["pd.DataFrame"]) -> Iterator["pd.DataFrame"]:
        from captionrec.spark.udf import limit_torch_threads, task_device

        def rows() -> Iterator[dict[str, Any]]:
            for pdf in batches:
                for rec in pdf.to_dict("records"):
                    yield {k: (None if _isnull(v) else v) for k, v in rec.items()}

        stream = rows()
        first = next(stream, None)
        if first is None:
            return
        limit_torch_threads(plan.cfg.torch_threads)
        device = task_device()
        models = worker_models(plan, device)
        if models.synthetic:
            log.warning("%s (%s)", NOISE_NOTE, plan.kind)

        def all_rows() -> Iterator[dict[str, Any]]:
            yield first
            yield from stream

        for out in caption_rows(all_rows(), plan, models):
            yield rows_to_pandas(out)

    return worker


def _isnull(v: Any) -> bool:
    import pandas as pd

    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


def pending_items(items: "DataFrame", captions: Optional["DataFrame"], plan: CaptionPlan) -> "DataFrame":
    """Items without a caption row for `plan.version` that counts as done (ok/skipped, or errors when not retrying)."""
    from pyspark.sql import functions as F

    if captions is None:
        return items
    done = captions.filter((F.col("kind") == plan.kind) & (F.col("captioner_version") == plan.version))
    if plan.cfg.retry_errors:
        done = done.filter(F.col("status") != ERROR)
    return items.join(done.select("item_id").distinct(), on="item_id", how="left_anti")


def caption_items(
    items: "DataFrame", plan: CaptionPlan, profile: Any = None, partitions: Optional[int] = None
) -> "DataFrame":
    """items (item_id, video_path, has_audio, ...) -> caption rows for `plan` (lazy; mapInPandas).

    `partitions` (default `plan.cfg.partitions`; 0 keeps the input's) is how many tasks share the items.
    """
    from captionrec.spark.udf import map_in_pandas

    cols = [c for c in ITEM_COLUMNS if c in items.columns]
    df = items.select(*cols)
    if "has_audio" not in cols:
        from pyspark.sql import functions as F

        df = df.withColumn("has_audio", F.lit(None).cast("boolean"))
    n = plan.cfg.partitions if partitions is None else partitions
    if n > 0:
        df = df.repartition(n)
    return map_in_pandas(df, make_worker(plan), captions_schema(), profile=profile)


def gpu_profile(spark: "SparkSession", cfg: CaptionConfig) -> Any:
    from captionrec.spark.udf import profile_for

    g = cfg.gpu
    return profile_for(spark, g.enabled, g.task_amount, task_cpus=g.task_cpus, executor_gpus=g.executor_amount)


class _ArrowBatchSize:
    """Temporarily set spark.sql.execution.arrow.maxRecordsPerBatch (rows per pandas batch a worker gets)."""

    KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"

    def __init__(self, spark: "SparkSession", n: int):
        self.spark, self.n, self.old = spark, n, None

    def __enter__(self) -> None:
        try:
            self.old = self.spark.conf.get(self.KEY, None)
            self.spark.conf.set(self.KEY, str(self.n))
            self.set = True
        except Exception as exc:  # noqa: BLE001 - some managed sessions refuse conf changes
            log.info("could not set %s: %s", self.KEY, exc)
            self.set = False

    def __exit__(self, *exc: Any) -> None:
        if not self.set:
            return
        if self.old is None:
            self.spark.conf.unset(self.KEY)
        else:
            self.spark.conf.set(self.KEY, self.old)


def _counts(df: "DataFrame") -> dict[str, int]:
    return {r["status"]: int(r["n"]) for r in df.groupBy("status").count().withColumnRenamed("count", "n").collect()}


def _previous_errors(captions: Optional["DataFrame"], plan: CaptionPlan) -> dict[str, Optional[str]]:
    """item_id -> reason of this version's error rows (the transient failures a run retries)."""
    from pyspark.sql import functions as F

    if captions is None or not plan.cfg.retry_errors:
        return {}
    rows = (
        captions.filter((F.col("kind") == plan.kind) & (F.col("captioner_version") == plan.version)
                        & (F.col("status") == ERROR))
        .select("item_id", "reason").collect()
    )
    return {r["item_id"]: r["reason"] for r in rows}


def drop_unchanged_errors(result: "DataFrame", previous: dict[str, Optional[str]]) -> "DataFrame":
    """Leave out retried items that failed again for the same reason: no rewrite, no commit, same row."""
    from pyspark.sql import functions as F

    if not previous:
        return result
    prev = result.sparkSession.createDataFrame(
        [(k, v) for k, v in previous.items()], "item_id string, _prev_reason string"
    )
    joined = result.join(F.broadcast(prev), on="item_id", how="left")
    same = (F.col("status") == ERROR) & F.col("_prev_reason").isNotNull() & F.col("reason").eqNullSafe(F.col("_prev_reason"))
    return joined.filter(~same).drop("_prev_reason")


def run(cfg: "Config", spark: "SparkSession", store: "TableStore") -> dict[str, Any]:
    """Caption every pending item of every configured kind; MERGE into `captions`; return a summary.

    Per kind: pending = items without an ok/skipped row for the kind's current captioner version (plus, with
    `retry_errors`, items whose row is a transient error). One MERGE per kind (or per `commit_every` items).
    A retried item that fails again for the same reason is not rewritten, so a re-run with nothing new
    commits nothing.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ccfg = cfg.caption
    t_start = time.perf_counter()
    items = store.read(ITEMS)
    summary: dict[str, Any] = {"table": TABLE, "kinds": {}}
    profile = gpu_profile(spark, ccfg)
    synthetic = False
    for kind in ccfg.kinds:
        t0 = time.perf_counter()
        plan = plan_kind(ccfg, kind)
        synthetic |= plan.synthetic
        if plan.synthetic:
            log.warning("%s: %s uses tiny random models (%s)", NOISE_NOTE, kind, dict(plan.model_ids))
        captions = store.read(TABLE) if store.exists(TABLE) else None
        previous = _previous_errors(captions, plan)
        pending = pending_items(items, captions, plan).select(*[c for c in ITEM_COLUMNS if c in items.columns])
        pending = pending.persist(StorageLevel.MEMORY_AND_DISK)
        n_pending = pending.count()
        info: dict[str, Any] = {"captioner_version": plan.version, "pending": n_pending, "retried": len(previous),
                                "inserted": 0, "updated": 0, "unchanged_errors": 0, "statuses": {}, "commits": 0}
        if n_pending:
            n_chunks = max(1, -(-n_pending // ccfg.commit_every)) if ccfg.commit_every > 0 else 1
            for chunk in range(n_chunks):
                part = pending if n_chunks == 1 else pending.filter(
                    F.pmod(F.xxhash64("item_id"), F.lit(n_chunks)) == chunk
                )
                n_part = min(ccfg.partitions, -(-n_pending // n_chunks)) if ccfg.partitions > 0 else 0
                with _ArrowBatchSize(spark, ccfg.items_per_batch):
                    result = caption_items(part, plan, profile, partitions=n_part).persist(StorageLevel.MEMORY_AND_DISK)
                    counts = _counts(result)  # runs the models once; everything below reads the cached rows
                try:
                    n_result = sum(counts.values())
                    for status, n in counts.items():
                        info["statuses"][status] = info["statuses"].get(status, 0) + n
                    to_write = drop_unchanged_errors(result, previous)
                    n_write = to_write.count() if previous else n_result
                    info["unchanged_errors"] += n_result - n_write
                    if n_write:
                        merged = store.upsert(TABLE, to_write, keys=list(KEYS))
                        info["inserted"] += merged.inserted
                        info["updated"] += merged.updated
                        info["commits"] += 1
                finally:
                    result.unpersist()
        pending.unpersist()
        info["seconds"] = round(time.perf_counter() - t0, 2)
        summary["kinds"][kind] = info
        log.info("caption %s: %s", kind, info)
    summary["table_version"] = store.version(TABLE) if store.exists(TABLE) else None
    summary["synthetic"] = synthetic
    if synthetic:
        summary["note"] = f"{NOISE_NOTE}(s); set caption.video.model / caption.audio.* to real models for real captions"
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    return summary
