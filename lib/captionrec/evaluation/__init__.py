"""Evaluation, one definition of each thing, used by training, the report and the analysis:

- `ranking` (torch, where the scores are): each test case's full-catalogue rank of its target (ties against
  it; seen items and non-candidates excluded): `Catalogue`, `full_ranking`, `naive_ranking`, `mask_scores`,
  `target_ranks`;
- `metrics` (numpy): HR@k / nDCG@k / MRR from ranks (`case_values`, `rank_metrics`, `summarize_ranks`: per
  case, per user, cold), `mean_std`, `parse_metric`, the large-k warning (`warn_k_share`, `KShareWarning`);
- `bootstrap` (numpy / pandas): cases of two sides paired by (window, user_idx, chunk), their targets checked
  (`paired_runs`, `paired_cases`, `PairingError`), the user-level paired bootstrap of their difference and
  relative gain with seeds resampled too (`cluster_bootstrap`), Holm's correction (`holm`), and the case-level
  bootstrap kept for one-case-per-user data (`case_bootstrap`).

```python
from captionrec.evaluation import Catalogue, summarize_ranks, cluster_bootstrap
ranks, n_candidates = Catalogue.of(item_vecs).rank(user_vecs, targets, seen)
summarize_ranks(ranks.numpy(), ks=(10,), users=users, cold=cold)  # {"hr@10": ..., "user_hr@10": ..., ...}
```
The names are importable from the package; a module is imported when one of its names is first used (the
report and the analysis never import torch).
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = {
    "ranking": (
        "NEG_INF",
        "RANK_CHUNK",
        "Catalogue",
        "check_finite",
        "count_at_least",
        "full_ranking",
        "mask_scores",
        "naive_ranking",
        "require_finite",
        "target_ranks",
    ),
    "metrics": (
        "K_SHARE_WARN",
        "KShareWarning",
        "case_values",
        "mean_std",
        "metric_names",
        "parse_metric",
        "rank_metrics",
        "summarize_ranks",
        "warn_k_share",
    ),
    "bootstrap": (
        "KEYS",
        "Paired",
        "PairingError",
        "case_bootstrap",
        "check_pairing",
        "cluster_bootstrap",
        "holm",
        "paired_cases",
        "paired_runs",
        "subset_mask",
    ),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
