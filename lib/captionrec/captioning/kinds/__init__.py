"""The caption kinds, one module each, and `KINDS`: the registry that planning, the caption stage and the checks
against `contracts.CAPTION_KINDS` read.

Every kind module exports the same things, bundled in its `KIND` (a `common.CaptionKind`): `setup` + `settings`
(the captioner version), `load` (models on a device), `decode` and `caption` (a batch of items -> caption rows).
Adding a kind = one module here + one line in `KINDS` (+ its name in `contracts.CAPTION_KINDS`, the data contract
the embed stage reads). A kind from elsewhere (a plug-in, a test) joins with `register`.
"""

from __future__ import annotations

from captionrec import contracts as C
from captionrec.captioning.common import CaptionKind
from captionrec.captioning.kinds import audio, av, video, video_full

KINDS: dict[str, CaptionKind] = {
    video.NAME: video.KIND,
    audio.NAME: audio.KIND,
    av.NAME: av.KIND,
    video_full.NAME: video_full.KIND,
}


def register(kind: CaptionKind) -> CaptionKind:
    """Add (or replace) a kind by its name; returns it. Built-in kinds cannot be replaced."""
    if kind.name in C.CAPTION_KINDS and KINDS.get(kind.name) is not kind:
        raise ValueError(f"caption kind {kind.name!r} is built in")
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind added with `register` (built-in kinds stay)."""
    if name in C.CAPTION_KINDS:
        raise ValueError(f"caption kind {name!r} is built in")
    KINDS.pop(name, None)


def get_kind(name: str) -> CaptionKind:
    """The registered kind called `name`; an unknown name is an error that lists the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown caption kind {name!r}; known: {', '.join(KINDS)}") from None


def missing_kinds() -> list[str]:
    """Names of `contracts.CAPTION_KINDS` without a registered module (empty when the registry covers them)."""
    return [k for k in C.CAPTION_KINDS if k not in KINDS]
