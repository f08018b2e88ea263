"""Both notebooks executed with nbclient (a real Python kernel), their parameters cell replaced.

Fast: the experiments notebook on a logged grid of contract-shaped runs, the captions notebook on a small
captions table over real sample videos. Slow: both on the sample after ingest -> caption -> embed ->
experiment (a two-child grid)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from captionrec import contracts as C
from report_fixtures import caption_rows, shared_grid

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"


def execute(name: str, params: dict, cwd: Path, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source = "\n".join(f"{k} = {v!r}" for k, v in params.items())
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _outputs(nb, kind: str) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if kind in o.get("data", {})]


def _text(nb) -> str:
    parts = []
    for c in nb.cells:
        for o in c.get("outputs", []):
            parts.append(o.get("text", ""))
            parts += [o.get("data", {}).get(k, "") for k in ("text/plain", "text/html")]
    return "\n".join(map(str, parts))


def _check_experiments(nb, n_finished: int) -> None:
    assert len(_outputs(nb, "image/png")) >= 4  # bars per metric, per-window lines, cold vs warm
    assert f"{n_finished} finished" in _text(nb)


def test_experiments_notebook(tmp_path, tmp_path_factory):
    grid = shared_grid(tmp_path_factory)
    nb = execute(
        "experiments.ipynb",
        {
            "PROFILE": "local",
            "WORKDIR": str(tmp_path),
            "PARENT_RUN_ID": grid.parent_id,
            "OVERRIDES": [
                f"tracking.tracking_uri={grid.tracking_uri}",
                "tracking.experiment=report-tests",
                "report.bootstrap_samples=200",
            ],
        },
        tmp_path,
    )
    _check_experiments(nb, len(grid.finished))
    assert "mllm_video vs videomae" in _text(nb)


@pytest.mark.slow  # ingests the sample in the kernel (~25 s); `make demo` executes it on every run
def test_captions_notebook(spark, sample_dir, tmp_path):
    from captionrec.config.schema import StorageConfig
    from captionrec.tables import open_store

    store = open_store(spark, StorageConfig(backend="delta-rs", root=str(tmp_path / "lake")))
    items, caps = caption_rows(sample_dir, ["3", "7"])
    store.overwrite(C.ITEMS, spark.createDataFrame(items))
    caps["sound_tags"] = caps["sound_tags"].map(lambda v: v if isinstance(v, list) else [])
    store.overwrite(C.CAPTIONS, spark.createDataFrame(caps.drop(columns=["model_ids"])))
    nb = execute(
        "captions.ipynb",
        {
            "PROFILE": "local",
            "WORKDIR": str(tmp_path),
            "N_ITEMS": 2,
            "OVERRIDES": [f"storage.root={tmp_path / 'lake'}"],
        },
        tmp_path,
    )
    text = _text(nb)
    assert text.count('class="item"') == 2 and text.count("data:image/jpeg;base64,") == 12  # 6 frames each
    assert "item 3 speaks" in text and "Speech 0.90" in text


@pytest.mark.slow
def test_notebooks_on_the_sample(spark, sample_dir, tmp_path):
    """The sample through ingest -> caption -> embed -> experiment (id and mllm_av, SASRec, 1 epoch), then both
    notebooks on the result."""
    from captionrec.cli import run_stage
    from captionrec.config import load_config
    from captionrec.tables import open_store

    overrides = [
        f"storage.root={tmp_path}/lake",
        f"data.source={sample_dir}",
        f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_location={tmp_path}/art",
        "embed.feature_sets=[title,mllm_video,mllm_audio,mllm_av]",
        "experiment.feature_sets=[id,mllm_av]",
        "experiment.models=[sasrec]",
        "experiment.train_overrides=[log_model=false,epochs=1,num_processes=1,torch_threads=1]",
    ]
    cfg = load_config("local", overrides)
    store = open_store(spark, cfg.storage)
    for stage in ("ingest", "caption", "embed", "experiment"):
        run_stage(stage, cfg, spark, store)
    nb = execute(
        "experiments.ipynb",
        {"PROFILE": "local", "WORKDIR": str(tmp_path), "PARENT_RUN_ID": None, "OVERRIDES": overrides},
        tmp_path,
    )
    _check_experiments(nb, 2)
    nb = execute(
        "captions.ipynb", {"PROFILE": "local", "WORKDIR": str(tmp_path), "N_ITEMS": 4, "OVERRIDES": overrides}, tmp_path
    )
    assert _text(nb).count('class="item"') == 4
