"""Caption stage config (owned with the caption job)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CaptionConfig:
    kinds: tuple[str, ...] = ("video", "audio")
