"""Embed stage config (owned with the embed job)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EmbedConfig:
    feature_sets: tuple[str, ...] = ("title", "mllm_video", "mllm_audio", "mllm_av", "videomae", "audio_raw")
