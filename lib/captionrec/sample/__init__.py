"""Synthetic MicroLens-layout sample: a seeded generator of videos, interactions, titles and planted bad inputs."""

from __future__ import annotations

__all__ = ["generate", "main"]


def generate(*args, **kwargs):  # noqa: D103 - thin lazy re-export (keeps `import captionrec.sample` cheap)
    from captionrec.sample.generate import generate as _generate

    return _generate(*args, **kwargs)


def main(argv=None) -> int:  # noqa: D103
    from captionrec.sample.generate import main as _main

    return _main(argv)
