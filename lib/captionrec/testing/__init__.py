"""Test helpers shipped with the package: tiny random models and generated media (no network, deterministic)."""
