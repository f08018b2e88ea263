"""Train-side safety nets without a full training run: MLflow never silently drops a NaN, a child run sits
under its parent, a GPU run never falls back to the CPU or shares a GPU, petastorm's cache is never
driver-local on a cluster, and the cluster profiles point it at shared storage."""

from __future__ import annotations

import math

import pytest

from captionrec.config import load_config
from captionrec.tracking import RunLogger, TrackingSpec


def _spec(tmp_path, **kw):
    return TrackingSpec(
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        experiment="protocol-tests",
        artifact_location=(tmp_path / "art").as_uri(),
        params={"p": "1"},
        tags={"t": "x"},
        **kw,
    )


def test_nan_metrics_are_named_not_silently_dropped(tmp_path):
    """Issue 8: MLflow drops NaN metric values without a word; the run must say which ones are missing."""
    from mlflow.tracking import MlflowClient

    with RunLogger(_spec(tmp_path)) as logger:
        logger.log_metrics({"hr@10": 0.5, "cold_hr@10": math.nan})
        logger.log_metrics({"test_cold_hr@10": math.nan, "test_hr@10": 0.25}, step=2)
        with pytest.raises(ValueError, match="infinite"):
            logger.log_metrics({"ndcg@10": math.inf})
        run_id = logger.run_id
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id)
    assert run.data.metrics["hr_10"] == 0.5 and "cold_hr_10" not in run.data.metrics
    assert run.data.tags["nan_metrics"] == "cold_hr_10,test_cold_hr_10@step2"
    assert run.data.tags["t"] == "x" and run.data.params["p"] == "1"


def test_a_child_run_sits_under_its_parent(tmp_path):
    """Issue 11's contract: the train run as a child of an experiment grid's parent run."""
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.create_experiment("grid", artifact_location=(tmp_path / "grid").as_uri())
    parent = client.create_run(exp, run_name="grid").info.run_id
    with RunLogger(_spec(tmp_path, parent_run_id=parent)) as logger:
        logger.log_metrics({"x": 1.0})
        child = logger.run_id
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.info.experiment_id == exp  # the parent's experiment, not the spec's
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    found = mlflow.search_runs([exp], filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert list(found["run_id"]) == [child]


def test_a_gpu_run_without_cuda_is_an_error_naming_the_setting(spark):
    """Issue 12.4: no silent CPU fallback, no guessed device."""
    import torch

    from captionrec.training.distributed import check_gpu_settings, gpu_device, setup

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="train.use_gpu=true but CUDA is not available"):
        setup(use_gpu=True)
    with pytest.raises(RuntimeError, match="train.use_gpu"):
        gpu_device(0)
    with pytest.raises(RuntimeError, match="spark.task.resource.gpu.amount=1"):
        check_gpu_settings(spark, num_processes=2, local_mode=False)
    with pytest.raises(RuntimeError, match="driver has no CUDA"):
        check_gpu_settings(spark, num_processes=2, local_mode=True)


def test_petastorm_cache_is_never_driver_local_on_a_cluster():
    """Issue 12.4: on a cluster the cache must be shared storage; a temp folder only on local masters."""
    from captionrec.transforms.petastorm import cache_dir_for

    for master in ("spark://10.0.0.1:7077", "yarn", "k8s://https://api:6443"):
        with pytest.raises(ValueError, match="train.petastorm_cache_dir"):
            cache_dir_for(master, None, None)
        assert cache_dir_for(master, "file:///Volumes/c/s/v/p", None) == "file:///Volumes/c/s/v/p"
        assert cache_dir_for(master, None, "s3a://b/cache") == "s3a://b/cache"
    for master in ("local[2]", "local-cluster[2,1,1024]"):
        assert cache_dir_for(master, None, None).startswith("file:///")
    assert load_config("databricks").train.petastorm_cache_dir.startswith("file:///Volumes/")
    cluster = load_config("cluster").train
    assert cluster.petastorm_cache_dir and not cluster.petastorm_cache_dir.startswith("file:///tmp")
    assert load_config("local").train.petastorm_cache_dir is None
