"""Equal tuning of the experiment grid's rows (pure Python): the search space, the trials, the choice.

Every (feature set, model) row gets `experiment.tuning.budget` trials. Trial 0 is the row's train config as
given (so budget 1 is "no tuning" and reuses the runs of an untuned grid); trials 1.. are distinct points of
the product of the searched values, drawn with one seeded `random.Random` (rows with the same space get the
same points in the same order). `id_dropout` only matters for fusion (`id+feature`) item representations,
so only those rows search it. A row's choice is the trial with the best validation score (the mean over
windows of `valid_<metric>`; ties: the lower trial number); `choose` sees nothing but those scores.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

SEARCHED: tuple[str, ...] = ("lr", "dropout", "temperature")
FUSION_ONLY: tuple[str, ...] = ("id_dropout",)


def searched_keys(item_repr: str) -> tuple[str, ...]:
    """The train keys a row searches: lr, dropout, temperature, and id_dropout for id+feature rows."""
    return SEARCHED + (FUSION_ONLY if item_repr == "id+feature" else ())


def trial_points(tuning: Any, base: dict[str, float], item_repr: str) -> list[dict[str, float]]:
    """`tuning.budget` value dicts: the base values first, then distinct random points of the space.

    tuning: captionrec.config.experiment.TuningConfig; base: the row's own values of the searched keys.
    Raises when the space has fewer than budget - 1 points besides the base.
    """
    keys = searched_keys(item_repr)
    space = {k: tuple(float(v) for v in getattr(tuning, k)) for k in keys}
    try:
        return sample_points(space, {k: float(base[k]) for k in keys}, tuning.budget, tuning.seed)
    except ValueError as exc:
        raise ValueError(
            f"experiment.tuning.budget: {exc} (a {item_repr} row): widen experiment.tuning.{{{','.join(keys)}}}"
        ) from exc


def sample_points(space: dict[str, tuple], base: dict[str, Any], budget: int, seed: int) -> list[dict[str, Any]]:
    """`budget` points: `base` first, then distinct points of the product of `space` (other than base), drawn
    with random.Random(seed). Raises ValueError when the space has fewer than budget - 1 other points."""
    keys = list(space)
    first = {k: base[k] for k in keys}
    others = [p for p in (dict(zip(keys, v)) for v in itertools.product(*space.values())) if p != first]
    if budget - 1 > len(others):
        raise ValueError(f"budget {budget} but the space has only {len(others)} point(s) besides the base")
    return [first, *random.Random(seed).sample(others, budget - 1)]


def overrides(values: dict[str, float]) -> list[str]:
    """A trial's values as train `key=value` overrides (what recommend's refit can add)."""
    return [f"{k}={v!r}" for k, v in sorted(values.items())]


def choose(scores: dict[int, float]) -> int:
    """The trial with the best finite validation score (ties: the lower trial number).

    scores: trial number -> mean validation metric of that trial's run (NaN: no validation cases). With no
    finite score at all, trial 0 (the train config as given) is kept.
    """
    if not scores:
        raise ValueError("no finished trial to choose from")
    finite = {t: s for t, s in scores.items() if not math.isnan(s)}
    if not finite:
        return min(scores)
    return min(finite, key=lambda t: (-finite[t], t))
