"""Training, pure torch (never pyspark at import): the per-window protocol and loop (`loop`), evaluation
beside baselines (`evaluate`), metrics (`metrics`), the MLflow results contract (`results`), Arrow-batch
loaders (`loaders`), the TorchDistributor launch (`distributed`) and the window definitions (`windows`).
The Spark transforms that build the splits and sequences live in `captionrec.transforms`."""
