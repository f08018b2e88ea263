"""What every caption kind shares (a leaf: it imports no other captioning module).

- `CaptionKind`: the plug-in shape of a kind (`captioning.kinds`): `setup` (prompt + model references from the
  config) and `settings` (what the version hashes) -> a `CaptionPlan` on the driver (`captioning.plan`); then on
  the workers `load` (construct: models on a device, once per worker) and `decode` + `caption` (transform: item
  rows -> caption rows, a batch at a time), the construct / transform pair spark-rapids-ml uses.
- `CaptionPlan`: one kind's resolved captioner (picklable, shipped to the workers inside the model-map).
- `Models` (from `inference.models`): loaded models on one device with the `BatchRunner`(s) their calls go
  through (the caption kinds and the feature encoders share it).
- `Decoded` / `decode_item`: one item's decoded media (or the reason it has none), timed.
- `caption_row` / `failure` / `text_or_empty`: the one row builder, failure columns and empty-text rule.
- `SAMPLE_RATE` (from `media.audio`), `trim_frames`, `soundtrack`: the one audio rate, frame cap and
  empty/absent audio track rule.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from captionrec import contracts as C
from captionrec.config.caption import CaptionConfig
from captionrec.inference.batching import BatchRunner, error_reason, error_text
from captionrec.inference.models import Models
from captionrec.media.audio import SAMPLE_RATE  # the one audio rate (the decoder's default)

NOISE_NOTE = "captions are noise: tiny random model"
COLUMNS = C.columns(C.CAPTIONS)
NO_TEXT = "model generated no text"


# ------------------------------------------------------------------------------------------- kinds, plans


class Setup(NamedTuple):
    """What a kind reads from the config before its version: prompt (version, text), model references, extras."""

    prompt_version: str
    prompt: str
    roles: tuple[tuple[str, str], ...]  # (role, configured reference), e.g. ("vlm", "Qwen/Qwen2.5-VL-3B-Instruct")
    summary_prompt: str = ""  # video_full with combine=summary: the prompt over the window captions


@dataclass(frozen=True)
class CaptionKind:
    """One caption kind as a plug-in (module-level functions: the kind pickles by reference to the workers).

    setup(cfg) -> Setup; settings(cfg, prompt, summary_prompt) -> the versioned settings (with "kind");
    load(plan, device) -> Models; decode(plan, item) -> Decoded; caption(plan, models, [Decoded]) -> rows, one per
    item in order; batch_size(cfg) -> items per `caption` call; counts: boolean caption columns the stage summary
    counts (video_full: `truncated`).
    """

    name: str
    setup: Callable[[CaptionConfig], Setup]
    settings: Callable[[CaptionConfig, str, str], dict[str, Any]]
    load: Callable[["CaptionPlan", str], "Models"]
    decode: Callable[["CaptionPlan", dict[str, Any]], "Decoded"]
    caption: Callable[["CaptionPlan", "Models", list["Decoded"]], list[dict[str, Any]]]
    batch_size: Callable[[CaptionConfig], int]
    counts: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaptionPlan:
    """Everything a worker needs for one kind (picklable; shipped to the workers inside the model-map)."""

    kind: str
    version: str
    settings_json: str  # the versioned settings, as stored in captions.settings
    prompt: str
    prompt_version: str
    model_ids: tuple[tuple[str, str], ...]  # (role, configured reference), e.g. ("vlm", "Qwen/Qwen2.5-VL-3B-Instruct")
    cfg: CaptionConfig
    tiny_dir: str  # absolute: workers may run in another working directory
    synthetic_roles: tuple[str, ...] = ()  # roles whose model has random weights (a tiny model): noise
    summary_prompt: str = ""  # video_full with combine=summary: the prompt over the window captions
    spec: CaptionKind | None = None  # the kind's functions (captioning.kinds), set by plan_kind

    @property
    def synthetic(self) -> bool:
        """Some model of this kind has random weights: its captions are (partly) noise."""
        return bool(self.synthetic_roles)

    @property
    def synthetic_models(self) -> dict[str, str]:
        """Exactly the random models, role -> reference (a real packaged model such as tiny.en is not one)."""
        return {role: ref for role, ref in self.model_ids if role in self.synthetic_roles}

    @property
    def model_map(self) -> dict[str, str]:
        return dict(self.model_ids)

    @property
    def cache_key(self) -> str:
        """Identifies the loaded models (the model-map adds the device)."""
        return f"caption:{self.kind}:{self.version}:{self.tiny_dir}:{self.cfg.local_files_only}"

    def model_path(self, role: str) -> str:
        """Where `role`'s model is on this machine (resolved where the worker runs)."""
        from captionrec.inference.refs import resolve_model

        return resolve_model(self.model_map[role], self.tiny_dir).location


def load_prompt(prompt_file: str) -> str:
    """Prompt text from `prompt_file` (relative to the conf folder unless absolute)."""
    from captionrec.config import conf_dir

    path = Path(prompt_file)
    if not path.is_absolute():
        path = conf_dir() / path
    if not path.is_file():
        raise FileNotFoundError(f"caption prompt not found: {path}")
    return path.read_text().strip()


def prompt_sha(prompt: str) -> str:
    """The short hash of a prompt text that a captioner's settings (its version) hold."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:12]


def one_model_setup(section: Any, role: str) -> Setup:
    """`setup` of a kind with one model and one prompt; `section`: its config (model, prompt_file, prompt_version)."""
    return Setup(section.prompt_version, load_prompt(section.prompt_file), ((role, section.model),))


def one_model_settings(kind: str, section: Any, prompt: str, **specific: Any) -> dict[str, Any]:
    """`settings` of a kind with one model and one prompt: model, prompt (version + hash), greedy decoding, and the
    kind's `specific` settings (batch size, dtype and attention kernels are speed only: left out)."""
    return {
        "kind": kind,
        "model": section.model,
        "prompt_version": section.prompt_version,
        "prompt_sha": prompt_sha(prompt),
        "decoding": "greedy",
        **specific,
    }


def load_one_model(
    plan: CaptionPlan, device: str, role: str, section: Any, wrapper: Callable[..., Any], **options: Any
) -> Models:
    """`load` of a kind with one model: `wrapper` (a model class of captioning.video / .omni) built from `role`'s
    model with `section`'s dtype, attention kernel and batch size, plus the wrapper's own `options`."""
    model = wrapper(
        plan.model_path(role),
        device=device,
        dtype=section.dtype,
        attn=section.attn_implementation,
        local_files_only=plan.cfg.local_files_only,
        model_id=plan.model_map[role],
        **options,
    )
    return Models(model, device, BatchRunner(section.batch_size))


# ------------------------------------------------------------------------------------------------- rows


def caption_row(plan: CaptionPlan, item: dict[str, Any], models: Models, **values: Any) -> dict[str, Any]:
    """One contracts.CAPTIONS row for `item`; the status follows the reason unless given."""
    row = dict.fromkeys(COLUMNS)
    row.update(
        item_id=item["item_id"],
        kind=plan.kind,
        captioner_version=plan.version,
        status=C.status_of(values.get("reason")),
        model_ids=dict(plan.model_ids),
        prompt_version=plan.prompt_version,
        synthetic=models.synthetic,
        device=models.device,
        settings=plan.settings_json,
        created_at=dt.datetime.now(dt.UTC),
        media_fingerprint=item.get("media_fingerprint"),
    )
    row.update(values)
    return row


def failure(exc: BaseException) -> dict[str, Any]:
    """The reason and error columns of a failed item (a MediaError's reason, oom, or error)."""
    return {"reason": error_reason(exc), "error": error_text(exc)}


def text_or_empty(text: str | None, error: str = NO_TEXT) -> dict[str, Any]:
    """The one empty-text rule: a caption, or reason `empty_output` when the model generated nothing."""
    return {"text": text} if text else {"reason": C.EMPTY_OUTPUT, "error": error}


@dataclass
class Decoded:
    item: dict[str, Any]
    data: Any = None  # the kind's decoded media (FrameSample, float32 audio, AvClip, ...)
    failure: dict[str, Any] | None = None
    decode_s: float = 0.0
    decode_errors: int | None = None

    def base(self, model_s: float = 0.0) -> dict[str, Any]:
        """The decode and timing columns of this item's row."""
        return {"decode_s": self.decode_s, "total_s": self.decode_s + model_s, "decode_errors": self.decode_errors}


def decode_item(item: dict[str, Any], read: Callable[[str], tuple[Any, int]]) -> Decoded:
    """Time `read(path)` -> (data, decode errors); any failure (a MediaError's reason) is the item's record."""
    from captionrec.media import MediaError

    t0 = time.perf_counter()
    try:
        path = item.get("video_path")
        if not path:
            raise MediaError(C.MISSING_FILE, "item has no video_path", None)
        data, errors = read(path)
        return Decoded(item, data, decode_s=time.perf_counter() - t0, decode_errors=int(errors))
    except Exception as exc:  # noqa: BLE001 - recorded per item
        return Decoded(item, failure=failure(exc), decode_s=time.perf_counter() - t0)


def single_model_batch(
    plan: CaptionPlan,
    models: Models,
    decoded: list[Decoded],
    call: Callable[[list[Decoded]], list[Any]],
    media: Callable[[Decoded], dict[str, Any]],
) -> list[dict[str, Any]]:
    """Rows of a kind with one model call per batch: `call(batch)` -> one result (with `.text`) per item, through
    `models.runner` (OOM halving, a failing item alone); `media(d)`: the item's media columns. A decode failure,
    a model failure and an empty text each get the item's own row, in input order."""
    good = [d for d in decoded if d.failure is None]

    def run_batch(batch: list[Decoded]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        results = call(batch)
        model_s = (time.perf_counter() - t0) / len(batch)
        return [
            caption_row(plan, d.item, models, **d.base(model_s), **media(d), model_s=model_s, **text_or_empty(res.text))
            for d, res in zip(batch, results)
        ]

    def on_error(d: Decoded, exc: BaseException) -> dict[str, Any]:
        return caption_row(plan, d.item, models, **d.base(), **media(d), **failure(exc))

    done = {id(d): row for d, row in zip(good, models.runner.run(good, run_batch, on_error))}
    return [
        done[id(d)] if d.failure is None else caption_row(plan, d.item, models, **d.base(), **d.failure)
        for d in decoded
    ]


# ------------------------------------------------------------------------------------------------- media


def decode_frames(
    path: str,
    num_frames: int,
    window_s: float,
    max_pixels: int | None,
    fps: float | None = None,
    max_frames: int | None = None,
) -> Any:
    """A media.FrameSample of the first `window_s`: `num_frames` evenly spaced (or `fps`), at most `max_frames`;
    no frame decoded is a `decode_error`."""
    from captionrec.media import MediaError, sample_frames

    sample = sample_frames(path, num_frames=num_frames, window_s=window_s, fps=fps, max_pixels=max_pixels)
    if sample.num_frames == 0:
        raise MediaError(C.DECODE_ERROR, "no frame decoded", path)
    return sample if max_frames is None else trim_frames(sample, max_frames)


def frame_columns(sample: Any) -> dict[str, Any]:
    """The frame columns of a caption row: how many frames the model saw and their times."""
    return {"frames_used": int(sample.num_frames), "frame_times_s": [round(float(t), 4) for t in sample.times_s]}


def trim_frames(sample: Any, max_frames: int) -> Any:
    """Keep at most `max_frames` evenly spaced frames of a FrameSample (fps sampling over a long window)."""
    if sample.num_frames > max_frames:
        keep = np.linspace(0, sample.num_frames - 1, max_frames).round().astype(int)
        sample.frames, sample.times_s = sample.frames[keep], sample.times_s[keep]
    return sample


def soundtrack(item: dict[str, Any], path: str, window_s: float, silence_dbfs: float | None = None) -> Any:
    """The one rule for a clip's soundtrack (every kind that hears audio): the first `window_s` at `SAMPLE_RATE`
    (a media.AudioSample), or a MediaError with the reason:

    - `no_audio_stream`: the file holds no audio track (`items.has_audio` false, or the decoder finds none);
    - `silent`: the track is there but holds nothing to hear: no samples in the window, or (when `silence_dbfs`
      is given) a level below that threshold (contracts: "audio track below the silence threshold").
    """
    from captionrec.media import MediaError, is_silent
    from captionrec.media.audio import decode_audio

    has_audio = item.get("has_audio")
    if has_audio is not None and not bool(has_audio):
        raise MediaError(C.NO_AUDIO_STREAM, "items.has_audio is false", path)
    sound = decode_audio(path, sample_rate=SAMPLE_RATE, window_s=window_s)  # samples: (S,) float32 mono
    if sound.samples.size == 0:
        raise MediaError(C.SILENT, "audio track has no samples", path)
    if silence_dbfs is not None and is_silent(sound.samples, silence_dbfs):
        raise MediaError(C.SILENT, f"audio below {silence_dbfs} dBFS", path)
    return sound
