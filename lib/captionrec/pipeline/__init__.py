"""Pipeline stages: one module per stage with `run(cfg, spark, store) -> dict`; table I/O lives only here."""
