"""Shared fixtures: one session-scoped local Spark, and paths to the shipped sample.

Tests mirror the package layout (tests/<package>/test_*.py; tests/deploy/ for the bundle, image and runtime checks).
Every test that starts Spark carries the `spark` marker: those that use the `spark` fixture get it here, those that
start Spark another way (a CLI stage, spark-submit, a second JVM) say `pytestmark = pytest.mark.spark` themselves.
`make test-fast` runs the rest (pure Python, seconds).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
# Tiny random models: production code never builds them (a missing one is an error that says to run
# `captionrec tiny-models`); the `tiny_dir` fixture builds them once per session here (idempotent).
TINY_DIR = Path(os.environ.get("CAPTIONREC_TINY_DIR", REPO / "models" / "tiny"))

# Tests never reach a hub: everything loads from local folders or wheels.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Spark pickles functions defined in test modules by reference: its Python workers (started by the JVM,
# which inherits this environment) must be able to import them.
TEST_DIRS = [REPO / "tests", *sorted(d for d in (REPO / "tests").iterdir() if d.is_dir() and any(d.glob("test_*.py")))]
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (*map(str, TEST_DIRS), str(REPO / "lib"), os.environ.get("PYTHONPATH", "")) if p
)


def pytest_collection_modifyitems(config, items):
    """A test that uses the session's Spark (directly or through another fixture), or starts a local / standalone
    cluster (`localcluster`), is a `spark` test."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) or item.get_closest_marker("localcluster"):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark():
    from captionrec.config.schema import SparkConfig
    from captionrec.spark.session import get_spark

    session = get_spark(
        SparkConfig(master="local[2]", app_name="captionrec-tests", driver_memory="3g", shuffle_partitions=2)
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    if not (SAMPLE / "videos").is_dir():
        pytest.fail(f"shipped sample missing at {SAMPLE}; regenerate with `captionrec sample --out {SAMPLE}`")
    return SAMPLE


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """Every tiny random model (`captionrec tiny-models`), built once into TINY_DIR."""
    from captionrec.testing.tiny import build_all

    build_all(TINY_DIR)
    return TINY_DIR
