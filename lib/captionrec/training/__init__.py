"""Training, pure torch (never pyspark at import): the per-window protocol and loop (`loop`), evaluation
beside baselines (`evaluate`: ranks from `captionrec.evaluation.ranking`, metrics from
`captionrec.evaluation.metrics`), the MLflow results contract (`results`), Arrow-batch loaders (`loaders`), the
TorchDistributor launch (`distributed`), the window definitions (`windows`) and synthetic interactions for tests
and benchmarks (`synthetic`). The Spark transforms that build the splits and sequences live in
`captionrec.transforms`."""
