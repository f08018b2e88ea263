"""Serving a trained recommender (Spark-free).

- `index`: `ItemIndex`, a FAISS inner-product index over a model's item vectors (exact / HNSW / IVF chosen
  by catalogue size, GPU where faiss has one) with its id map; `exact_topk`, the exact reference.
- `pyfunc`: `log_recommender` logs a model as an MLflow pyfunc (input: a history of item ids + k; output:
  the top-k item ids and scores, seen items excluded) that `mlflow models serve` serves over HTTP;
  `promote_if_better` moves the registry alias `champion` only to a model whose validation metric beats it.
- `choice`: the recommend stage's model choice (a grid's best configuration by validation, trials included) and
  what a served run is made of (`Served`).
- `registry`: a train run's logged model loaded back, and the production refit logged, registered and promoted.
"""
