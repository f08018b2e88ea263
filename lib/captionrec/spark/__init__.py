"""Spark plumbing: the one session factory, and UDF helpers (per-worker model cache, GPU binding)."""
