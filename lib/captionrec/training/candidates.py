"""Which items a rolling window's cases are ranked among (`train.split.candidates`), and which items the feature
statistics may see: per-item timestamps (numpy, driver side) that the loop's `candidate_mask` compares with a
phase's end.

- `catalogue` (the default): every item of the `items` table is a candidate from the start. The items table has
  no time at which the source made an item available (`ingested_at` is when our ingest wrote the row, not when
  users could see the item), so the whole catalogue is ranked in every window; an item nobody watched is a
  candidate, and the test week's interactions never change the set.
- `interacted`: an item becomes a candidate at its first interaction (the rule before issue 20): a new item is
  ranked only if someone watched it before the phase's end, so the cold distractors are that week's items.

Cold (the target had no interaction before t_k) does not depend on the rule.
"""

from __future__ import annotations

import numpy as np

CANDIDATE_RULES = ("catalogue", "interacted")
NEVER = np.iinfo(np.int64).max  # first interaction of an item nobody interacted with
ALWAYS = np.iinfo(np.int64).min  # available from the start


def available_from(rule: str, first_ms: np.ndarray) -> np.ndarray:
    """(N + 1,) int64: from when each item is a candidate under `rule`, given each item's first interaction
    (`NEVER` for none; index 0 is padding and never a candidate)."""
    first = np.asarray(first_ms, dtype=np.int64)
    if rule == "catalogue":
        out = np.full(first.shape, ALWAYS, dtype=np.int64)
    elif rule == "interacted":
        out = first.copy()
    else:
        raise ValueError(f"split.candidates {rule!r} is not one of {CANDIDATE_RULES}")
    if out.size:
        out[0] = NEVER
    return out


def seen_before(first_ms: np.ndarray, until_ms: int | None) -> np.ndarray:
    """(N + 1,) bool: items with an interaction before `until_ms` (None: every item with an interaction).

    The items whose feature vectors the z-score statistics are computed over: an item first seen at or after
    t_0 (the first window's test start) cannot move them."""
    first = np.asarray(first_ms, dtype=np.int64)
    out = first < NEVER if until_ms is None else first < int(until_ms)
    if out.size:
        out[0] = False
    return out
