"""Model plumbing shared by every model wrapper (captioning, features) and the Spark model-map. No Spark, no tables.

- `refs`: the one model-reference resolver (`resolve_model`: hub id | local folder | `tiny:<name>` |
  `pkg:<module>/<path>` | the packaged MiniLM) and the one dtype rule (`torch_dtype`).
- `batching`: `BatchRunner` (OOM halving + per-item error capture) and `prefetch_batches` (decode the next batch
  while the model runs): the one retry policy and the one prefetch helper for every model call.
- `models`: `Models`, the loaded-models shape every caption kind and feature encoder loads into.
- `hf_compat`: the transformers 4.x / 5.x differences (Auto class of audio LMs, the dtype argument, omni support).
"""
