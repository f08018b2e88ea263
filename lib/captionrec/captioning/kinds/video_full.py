"""Caption kind `video_full` (whole-video captions, `caption.video.segments`): the `video` kind's captioner over
consecutive windows of the whole video, combined into one item caption.

    setup(cfg) / settings(cfg, prompt, summary_prompt)   # driver: the video kind's + windowing and combination
    models = load(plan, device)                          # worker: the video kind's models
    rows = caption(plan, models, [decode(plan, item)])   # one item at a time (batch_size 1), window by window

Per item: `media.windows.open_windows` plans the windows (window length, stride, cap) from the video's duration
and decodes them one at a time (only `video.batch_size` windows' frames are alive at once: memory stays bounded
on a 10-minute clip); each batch of windows goes through the same `VideoCaptioner` and `BatchRunner` (OOM halving,
per-window fallback) as the `video` kind, with the same prompt and frame sampling. The window captions are then
combined in time order: `concat` joins them; `summary` runs the captioner's language model once more, text only,
over the timed window captions (`segments.summary_prompt_file`).

Storage: the item's ONE row (key item_id, kind, captioner_version) carries the window captions in a list column
(`captions.segments`: index, start/end, text, reason per window), not one row per window. Why: the windows are
made, used and retried together (the combined caption is a function of all of them; a half-written set is
useless), so one row keeps the table key, the pending planner and the one-MERGE-per-chunk commit unchanged and
makes re-runs idempotent for free (same key, one row; a changed window setting is a new captioner version, so
no stale window rows can linger beside new ones); the list is short (at most `max_windows`). A window that fails
to decode or caption is recorded in its list entry and left out of the combined caption; an item with no usable
window gets the first failing window's reason (a corrupt file: `corrupt` for the item, never retried).
`truncated` / `windows_used` / `covered_s` say when the cap stopped the windows before the video's end.
"""

from __future__ import annotations

import time
from typing import Any

from captionrec import contracts as C
from captionrec.captioning.common import (
    CaptionKind,
    CaptionPlan,
    Decoded,
    Setup,
    caption_row,
    failure,
    load_prompt,
    prompt_sha,
    text_or_empty,
    trim_frames,
)
from captionrec.captioning.kinds import video
from captionrec.config.caption import CaptionConfig, SegmentsConfig
from captionrec.inference.models import Models

NAME = C.VIDEO_FULL


def setup(cfg: CaptionConfig) -> Setup:
    """The video kind's prompt and model, plus the summary prompt (combine: summary)."""
    seg = cfg.video.segments
    return video.setup(cfg)._replace(
        summary_prompt=load_prompt(seg.summary_prompt_file) if seg.combine == "summary" else ""
    )


def settings(cfg: CaptionConfig, prompt: str, summary_prompt: str = "") -> dict[str, Any]:
    return segments_settings(video.settings(cfg, prompt), cfg.video.segments, summary_prompt)


def segments_settings(video: dict[str, Any], seg: SegmentsConfig, summary_prompt: str) -> dict[str, Any]:
    """The versioned settings of `video_full`: the video captioner's (minus its `window_s`) + the windowing and
    combination settings."""
    s = {k: v for k, v in video.items() if k != "window_s"}
    s.update(
        kind=C.VIDEO_FULL,
        seg_window_s=seg.window_s,
        seg_stride_s=seg.stride_s,
        seg_max_windows=seg.max_windows,
        combine=seg.combine,
    )
    if seg.combine == "summary":
        s.update(
            summary_prompt_version=seg.summary_prompt_version,
            summary_max_new_tokens=seg.summary_max_new_tokens,
            summary_prompt_sha=prompt_sha(summary_prompt),
        )
    return s


def clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 60}:{s % 60:02d}"


def timed_lines(segments: list[dict[str, Any]]) -> str:
    """The usable window captions, one line each, with their time range ("[0:30-1:00] text")."""
    return "\n".join(f"[{clock(s['start_s'])}-{clock(s['end_s'])}] {s['text']}" for s in segments if s.get("text"))


def summarize(vlm: Any, prompt: str, max_new_tokens: int) -> str:
    """One text-only greedy pass of the video captioner's language model (Qwen2.5-VL with no visual input)."""
    import torch

    messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    text = vlm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = vlm.tokenizer([text], return_tensors="pt")
    enc["mm_token_type_ids"] = torch.zeros_like(enc["input_ids"], dtype=torch.int)  # no image / video tokens
    enc = enc.to(vlm.device)
    with torch.inference_mode():
        out = vlm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)  # (1, L + new)
    new = out[:, enc["input_ids"].shape[1] :]
    return vlm.tokenizer.batch_decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0].strip()


class _ItemWindows:
    """One item's windows: decoded a batch at a time, captioned, recorded as `segments` entries."""

    def __init__(self, plan: CaptionPlan, models: Models) -> None:
        self.plan, self.models, self.v = plan, models, plan.cfg.video
        self.segments: list[dict[str, Any]] = []
        self.frame_times: list[float] = []
        self.model_s = 0.0
        self.decode_errors = 0

    def entry(self, w: Any, **values: Any) -> dict[str, Any]:
        e = {
            "index": w.index,
            "start_s": w.start_s,
            "end_s": w.end_s,
            "text": None,
            "reason": None,
            "error": None,
            "frames_used": None,
        }
        e.update(values)
        return e

    def run(self, windowed: Any) -> None:
        """Caption every planned window of `windowed` (a media.windows.WindowedVideo), in order."""
        v = self.v
        samples = windowed.samples(num_frames=v.num_frames, fps=v.fps, max_pixels=v.max_pixels)
        batch: list[tuple[Any, Any]] = []
        while True:
            nxt = next(samples, None)  # a MediaError of one window: recorded, the next windows still count
            if nxt is not None:
                w, sample = nxt
                if isinstance(sample, BaseException):
                    self.segments.append(self.entry(w, **failure(sample)))
                else:
                    batch.append((w, self._limit(sample)))
            if batch and (nxt is None or len(batch) >= self.models.runner.batch_size):
                self.segments.extend(self.models.runner.run(batch, self._caption_batch, self._on_error))
                batch = []  # nothing of a captioned window is kept but its text
            if nxt is None:
                break
        self.segments.sort(key=lambda e: e["index"])

    def _limit(self, sample: Any) -> Any:
        self.decode_errors += int(sample.decode_errors)
        return trim_frames(sample, self.v.max_frames)

    def _caption_batch(self, batch: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        fps = [s.num_frames / w.length_s if w.length_s > 0 else 2.0 for w, s in batch]
        results = self.models.model.caption(
            [s.frames for _, s in batch], self.plan.prompt, max_new_tokens=self.v.max_new_tokens, fps=fps
        )
        self.model_s += time.perf_counter() - t0
        out = []
        for (w, s), res in zip(batch, results):
            self.frame_times.extend(round(float(t), 4) for t in s.times_s)
            out.append(self.entry(w, frames_used=s.num_frames, **text_or_empty(res.text)))
        return out

    def _on_error(self, pair: tuple[Any, Any], exc: BaseException) -> dict[str, Any]:
        w, s = pair
        return self.entry(w, frames_used=s.num_frames, **failure(exc))


def combine(plan: CaptionPlan, models: Models, segments: list[dict[str, Any]]) -> tuple[dict[str, Any], float]:
    """The item caption from its window captions -> ({text} or {reason, error}, model seconds)."""
    ok = [s for s in segments if s.get("text")]
    if not ok:
        first = next((s for s in segments if s.get("reason")), None)
        if first is None:
            return {"reason": C.DECODE_ERROR, "error": "no window planned"}, 0.0
        return {
            "reason": first["reason"],
            "error": f"no window captioned; window {first['index']}: {first['error']}",
        }, 0.0
    seg = plan.cfg.video.segments
    if seg.combine == "concat":
        return {"text": " ".join(s["text"] for s in ok)}, 0.0
    t0 = time.perf_counter()
    prompt = plan.summary_prompt.replace("{segments}", timed_lines(ok))
    try:
        text = models.runner.run(
            [prompt],
            lambda ps: [summarize(models.model, p, seg.summary_max_new_tokens) for p in ps],
            lambda p, exc: exc,
        )[0]
    except Exception as exc:  # noqa: BLE001 - recorded on the item
        text = exc
    spent = time.perf_counter() - t0
    if isinstance(text, BaseException):
        return failure(text), spent
    return text_or_empty(text, "summary pass generated no text"), spent


def caption_item(plan: CaptionPlan, models: Models, item: dict[str, Any]) -> dict[str, Any]:
    """One item's video_full row (contracts.CAPTIONS): window captions, the combined caption, or the reason."""
    from captionrec.media import MediaError
    from captionrec.media.windows import open_windows

    seg = plan.cfg.video.segments
    work = _ItemWindows(plan, models)
    t0 = time.perf_counter()
    wplan: Any | None = None
    try:
        path = item.get("video_path")
        if not path:
            raise MediaError(C.MISSING_FILE, "item has no video_path", None)
        with open_windows(path, seg.window_s, seg.stride_s, seg.max_windows) as windowed:
            wplan = windowed.plan
            work.run(windowed)
    except Exception as exc:  # noqa: BLE001 - the file as a whole (missing, corrupt, no video): the item's reason
        total = time.perf_counter() - t0
        return caption_row(
            plan,
            item,
            models,
            decode_s=total - work.model_s,
            model_s=work.model_s,
            total_s=total,
            segments=work.segments or None,
            **failure(exc),
        )
    result, summary_s = combine(plan, models, work.segments)
    model_s = work.model_s + summary_s
    total = time.perf_counter() - t0
    return caption_row(
        plan,
        item,
        models,
        **result,
        segments=work.segments,
        windows_used=len(wplan.windows),
        truncated=wplan.truncated,
        covered_s=round(wplan.covered_s, 3),
        frames_used=sum(int(s["frames_used"] or 0) for s in work.segments),
        frame_times_s=work.frame_times,
        decode_s=total - model_s,
        model_s=model_s,
        total_s=total,
        decode_errors=work.decode_errors,
    )


def decode(plan: CaptionPlan, item: dict[str, Any]) -> Decoded:
    """Nothing ahead of time: `caption_item` opens the file and decodes its windows one batch at a time."""
    return Decoded(item)


def caption(plan: CaptionPlan, models: Models, decoded: list[Decoded]) -> list[dict[str, Any]]:
    """Each item's one row (window captions, the combined caption or the reason), in order."""
    return [caption_item(plan, models, d.item) for d in decoded]


def batch_size(cfg: CaptionConfig) -> int:
    return 1  # one whole video at a time: its windows are the model batches


KIND = CaptionKind(NAME, setup, settings, video.load, decode, caption, batch_size, counts=("truncated",))
