"""The wheel and the Databricks Asset Bundle (databricks.yml + resources/*.yml).

What is checked here, without a workspace or the Databricks CLI (a Go binary that is in no package index):
- the bundle's job parses with the `databricks-bundles` typed models (unknown fields are errors), for each target;
- every task runs the wheel's real console script, with a stage the CLI has and overrides that load
  (`load_config("databricks", <the task's parameters, variables and job parameters resolved>)`);
- the clusters: a Spark-4 ML GPU runtime, SINGLE_USER, offline weights in the shared models Volume, one GPU per
  default task, optional policy / pool ids;
- every target's effective config is coherent (processes vs GPU workers, task CPUs vs node cores, GPU amounts vs
  the node's GPUs, paths vs the Volumes), and the check finds each kind of mismatch;
- what an admin asks for: prod's run_as service principal, permissions, one MLflow experiment per target, the Unity
  Catalog registry (a logged model is registered), notifications, health and per-task timeouts, a wheel with a new
  version per build (the artifact's build command, run), one argument list for all tasks;
- the schedule: file arrival on the _ready/ marker folder (prod) / a cron schedule (dev), one run at a time, GPU
  retries; the setup script's schemas, Volumes and grants;
- the wheel carries the config, and a wheel imported as a zip reads it from a real folder;
- (a re-run with nothing new commits nothing: tests/deploy/test_cluster_standalone.py, after the cluster run);
- `${bundle.git.commit}` reaches the MLflow tags.
Not checked here: `databricks bundle validate` (the CLI's own schema), a deploy, the runtime's exact libraries.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "databricks.yml"
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"
BUNDLE_TOP_LEVEL = {
    "bundle",
    "include",
    "artifacts",
    "variables",
    "targets",
    "workspace",
    "resources",
    "sync",
    "permissions",
    "presets",
    "run_as",
    "experimental",
    "scripts",
    "python",
}
TARGET_KEYS = {
    "mode",
    "default",
    "workspace",
    "variables",
    "resources",
    "artifacts",
    "presets",
    "run_as",
    "permissions",
    "git",
    "bundle",
    "sync",
    "cluster_id",
    "compute_id",
}
GPU_STAGES = ("caption", "embed", "train", "experiment", "recommend")


def _bundle() -> dict:
    return yaml.safe_load(BUNDLE.read_text())


def _resources() -> dict:
    out: dict = {}
    for pattern in _bundle()["include"]:
        for path in sorted(REPO.glob(pattern)):
            for kind, items in (yaml.safe_load(path.read_text()).get("resources") or {}).items():
                out.setdefault(kind, {}).update({k: (path, v) for k, v in items.items()})
    return out


def _deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _setup_script():
    spec = importlib.util.spec_from_file_location("databricks_setup", REPO / "scripts" / "databricks_setup.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _job(target: str) -> dict:
    """The job as `target` deploys it: resources/*.yml with the target's overrides merged in."""
    ((_, job),) = _resources()["jobs"].values()
    over = ((_bundle()["targets"][target].get("resources") or {}).get("jobs") or {}).get("captionrec_pipeline", {})
    return _deep_merge(job, over)


def _resolve(value, variables: dict, params: dict | None = None, task_key: str | None = None):
    """${var.x}, ${bundle.*}, {{job.parameters.x}} and {{task.name}} substituted as the CLI / Jobs service would."""
    if isinstance(value, dict):
        return {k: _resolve(v, variables, params, task_key) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, variables, params, task_key) for v in value]
    if not isinstance(value, str):
        return value
    full = re.fullmatch(r"\$\{var\.(\w+)\}", value)
    if full:  # a whole-value reference keeps the variable's type (num_workers: ${var.gpu_workers})
        return variables[full.group(1)]
    value = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]), value)
    value = value.replace("${bundle.git.commit}", GIT_SHA).replace("${bundle.name}", "captionrec")
    # a resource's name as deployed (development mode adds a "[dev <user>] " prefix the test leaves out)
    value = re.sub(
        r"\$\{resources\.(\w+)\.(\w+)\.name\}",
        lambda m: _resolve(_resources()[m.group(1)][m.group(2)][1]["name"], variables),
        value,
    )
    if params is not None:
        value = re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: str(params[m.group(1)]), value)
    if task_key is not None:
        value = value.replace("{{task.name}}", task_key)
    assert "${" not in value and (params is None or "{{" not in value), f"unresolved reference in {value!r}"
    return value


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel as `make wheel` / the bundle's artifact build it (pip wheel --no-deps)."""
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(REPO)],
        check=True,
        env=env,
        cwd=build,
        capture_output=True,
        timeout=300,
    )
    (whl,) = out.glob("captionrec-*.whl")
    return whl


# -- the root and the typed job model -------------------------------------------------------------------------


def test_bundle_root_and_targets():
    doc = _bundle()
    assert set(doc) <= BUNDLE_TOP_LEVEL, set(doc) - BUNDLE_TOP_LEVEL
    assert doc["bundle"]["name"] == "captionrec"
    assert all(list(REPO.glob(p)) for p in doc["include"])
    (art,) = doc["artifacts"].values()
    assert art["type"] == "whl" and "pip wheel" in art["build"] and "dist" in art["build"]
    assert [f["source"] for f in art["files"]] == ["dist/captionrec-*.whl"]
    for name in (
        "catalog",
        "schema",
        "volume",
        "models_schema",
        "models_volume",
        "cache_volume",
        "gpu_node_type",
        "cpu_node_type",
        "gpu_spark_version",
        "experiment",
        "registered_model",
        "recommender_model",
        "service_principal",
        "viewers_group",
        "operators_group",
        "notify_emails",
        "notify_webhooks",
        "duration_warning_seconds",
        "cpu_policy_id",
        "gpu_policy_id",
        "cpu_instance_pool_id",
        "gpu_instance_pool_id",
    ):
        assert doc["variables"][name].get("description") and doc["variables"][name].get("default") is not None, name
    for name, var in doc["variables"].items():  # a list default needs `type: complex`, or the CLI rejects it
        assert isinstance(var["default"], (str, int, float)) or var.get("type") == "complex", name
    assert set(doc["targets"]) == {"dev", "prod"}
    assert doc["targets"]["dev"]["mode"] == "development" and doc["targets"]["dev"]["default"] is True
    assert doc["targets"]["prod"]["mode"] == "production"
    for t in doc["targets"].values():
        assert set(t) <= TARGET_KEYS, set(t) - TARGET_KEYS
        assert set(t.get("variables", {})) <= set(doc["variables"])


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_job_parses_with_the_typed_bundle_models(target):
    from databricks.bundles.jobs import Job

    job = _job(target)
    parsed = Job.from_dict(copy.deepcopy(job))
    assert [t.task_key for t in parsed.tasks] == [
        "ingest",
        "caption",
        "embed",
        "train",
        "experiment",
        "recommend",
        "report",
    ]
    # the models are strict: a misspelt field is an error, not ignored
    with pytest.raises(ValueError, match="max_concurent_runs"):
        Job.from_dict({**copy.deepcopy(job), "max_concurent_runs": 1})
    bad_task = copy.deepcopy(job)
    bad_task["tasks"][0]["python_wheel_task"]["entrypoint"] = "captionrec"
    with pytest.raises(ValueError, match="entrypoint"):
        Job.from_dict(bad_task)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_admin_settings_parse_with_the_typed_models_and_resolve(target):
    """run_as, permissions, the per-target experiment, notifications, health and timeouts, policies / pools: each
    through its typed model, before and after the target's variables are resolved (empty policy / pool ids and
    empty notification lists included)."""
    from databricks.bundles.experiments import MlflowExperiment
    from databricks.bundles.jobs import Job, JobPermission, JobRunAs

    doc = _bundle()
    variables = _setup_script().bundle_variables(target, overrides={"service_principal": "0000-sp-app-id"})
    job = _resolve(_job(target), variables)
    parsed = Job.from_dict(copy.deepcopy(job))
    assert [t.timeout_seconds for t in parsed.tasks] and all(
        0 < t.timeout_seconds <= job["timeout_seconds"] for t in parsed.tasks
    )
    (rule,) = job["health"]["rules"]
    assert rule == {
        "metric": "RUN_DURATION_SECONDS",
        "op": "GREATER_THAN",
        "value": variables["duration_warning_seconds"],
    }
    assert 0 < rule["value"] < job["timeout_seconds"]
    for kind, var in (("email_notifications", "notify_emails"), ("webhook_notifications", "notify_webhooks")):
        assert job[kind]["on_failure"] == job[kind]["on_duration_warning_threshold_exceeded"] == variables[var] == []
    # filled-in notification variables parse too
    filled = _resolve(
        _job(target),
        {**variables, "notify_emails": ["ops@example.com"], "notify_webhooks": [{"id": "0b1c2d3e-destination"}]},
    )
    parsed = Job.from_dict(copy.deepcopy(filled))
    assert parsed.email_notifications.on_failure == ["ops@example.com"]
    assert parsed.webhook_notifications.on_failure[0].id == "0b1c2d3e-destination"
    # a pool instead of a node type, and a policy
    pooled = _resolve(
        _job(target), {**variables, "gpu_node_type": "", "gpu_instance_pool_id": "pool-1", "gpu_policy_id": "policy-1"}
    )
    gpu = next(c for c in Job.from_dict(pooled).job_clusters if c.job_cluster_key == "gpu").new_cluster
    assert (gpu.instance_pool_id, gpu.policy_id, gpu.node_type_id) == ("pool-1", "policy-1", "")

    # the CLI applies the top-level block to the job with CAN_RUN -> CAN_MANAGE_RUN (bundle/permissions)
    job_level = {"CAN_VIEW": "CAN_VIEW", "CAN_RUN": "CAN_MANAGE_RUN", "CAN_MANAGE": "CAN_MANAGE"}
    as_job = [
        JobPermission.from_dict({**_resolve(p, variables), "level": job_level[p["level"]]}) for p in doc["permissions"]
    ]
    assert {(p.level.value if hasattr(p.level, "value") else p.level) for p in as_job} == {"CAN_VIEW", "CAN_MANAGE_RUN"}
    assert {(p["level"], _resolve(p, variables)["group_name"]) for p in doc["permissions"]} == {
        ("CAN_VIEW", variables["viewers_group"]),
        ("CAN_RUN", variables["operators_group"]),
    }
    # the top-level block takes only these (the CLI rejects the job-only CAN_MANAGE_RUN there)
    assert {p["level"] for p in doc["permissions"]} <= {"CAN_VIEW", "CAN_RUN", "CAN_MANAGE"}
    run_as = doc["targets"][target].get("run_as")
    if target == "prod":
        assert run_as == {"service_principal_name": "${var.service_principal}"}
        assert JobRunAs.from_dict(_resolve(run_as, variables)).service_principal_name == "0000-sp-app-id"
        assert doc["variables"]["service_principal"]["default"] == ""  # no principal baked in: --var at deploy
    else:
        assert run_as is None and doc["targets"][target]["mode"] == "development"  # runs as the deployer

    (experiment,) = (v for _, v in _resources()["experiments"].values())
    exp = MlflowExperiment.from_dict(_resolve(experiment, variables))
    assert (
        exp.name == variables["experiment"] == {"dev": "/Shared/captionrec-dev", "prod": "/Shared/captionrec"}[target]
    )
    experiment_param = next(p["default"] for p in _job(target)["parameters"] if p["name"] == "experiment")
    assert experiment_param == "${resources.experiments.captionrec.name}"  # the deployed (dev-prefixed) name


def test_tasks_share_one_argument_list_and_task_settings():
    """The seven tasks run one argument list (a YAML anchor), whose first item is the task's key: no stage can miss
    an override another has (issue 19: the experiment task lacked train.num_processes). The wheel task and the GPU
    retries are written once too (anchors merged with `<<:`), so a task names only its place, cluster and timeout."""
    text = (REPO / "resources" / "captionrec_job.yml").read_text()
    assert text.count("storage.catalog=") == 1 and text.count("train.num_processes=") == 1
    for once in ("package_name:", "whl:", "max_retries: 2", "retry_on_timeout:", "&wheel_task", "&gpu_task"):
        assert text.count(once) == 1, once
    tasks = text[text.index("      tasks:\n") :].split("        - task_key: ")[2:]  # every task after the first
    assert len(tasks) == 6 and all(len(t.strip().splitlines()) <= 9 for t in tasks)
    job = _job("dev")
    (first, *rest) = [t["python_wheel_task"] for t in job["tasks"]]
    assert all(t == first for t in rest)
    assert first["parameters"][0] == "{{task.name}}"
    assert all(t["libraries"] == [{"whl": "../dist/captionrec-*.whl"}] for t in job["tasks"])
    gpu = [t for t in job["tasks"] if t["task_key"] in GPU_STAGES and t["task_key"] != "experiment"]
    assert all(
        (t["max_retries"], t["min_retry_interval_millis"], t["retry_on_timeout"]) == (2, 120000, True) for t in gpu
    )
    # a failed grid child fails the task (exit 3); a task retry would only repeat a deterministic failure
    assert next(t for t in job["tasks"] if t["task_key"] == "experiment")["max_retries"] == 0


def test_artifact_build_makes_one_wheel_with_a_new_version_each_time(tmp_path):
    """The artifact's build command, run as the CLI runs it (a shell in the bundle root), on a copy of the
    checkout with a stale wheel in dist/: afterwards dist/ holds exactly one wheel, 0.1.0+<time>.g<commit>, the
    tasks' library glob matches only it, and a second build gets another version."""
    import shutil
    import time

    (art,) = _bundle()["artifacts"].values()
    root = tmp_path / "bundle"
    for rel in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split():
        src = REPO / rel
        if src.is_file() and (rel.startswith(("lib/", "conf/")) or rel in ("setup.py", "README.md")):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / rel)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=root,
        check=True,
    )
    sha = subprocess.run(
        ["git", "rev-parse", "--short=8", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    (root / "dist").mkdir()
    (root / "dist" / "captionrec-0.0.9-py3-none-any.whl").write_bytes(b"stale")
    (root / "dist" / "captionrec-env.tar.gz").write_bytes(b"make pack-env's archive")  # not the bundle's to delete
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").symlink_to(sys.executable)  # the CLI runs `python3` from PATH: this venv's
    env = {
        **os.environ,
        "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_BUILD_ISOLATION": "1",
        "PIP_NO_INPUT": "1",
    }
    env.pop("CAPTIONREC_LOCAL_VERSION", None)
    library = _job("prod")["tasks"][0]["libraries"][0]["whl"]
    pattern = str(root / "resources" / library)
    versions = []
    for _ in range(2):
        out = subprocess.run(
            ["bash", "-c", art["build"]], cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-3000:]
        wheels = sorted((root / "dist").glob("*.whl"))
        assert len(wheels) == 1, wheels
        assert (root / "dist" / "captionrec-env.tar.gz").exists()
        m = re.fullmatch(r"captionrec-0\.1\.0\+(\d{14})\.g([0-9a-f]{8})-py3-none-any\.whl", wheels[0].name)
        assert m and m.group(2) == sha, wheels[0].name
        assert [w for w in (root / "dist").iterdir() if fnmatch.fnmatch(str(w), os.path.normpath(pattern))] == wheels
        versions.append(wheels[0].name)
        time.sleep(1.1)
    assert versions[0] != versions[1]


# -- tasks: entry point, stage, overrides ---------------------------------------------------------------------


def test_every_task_runs_the_wheels_console_script_with_overrides_that_load(wheel):
    from captionrec.cli import STAGES, _parser
    from captionrec.config import load_config
    from captionrec.config.loader import flatten

    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(meta).decode()
        names = set(zf.namelist())
    scripts = dict(re.findall(r"^(\S+)\s*=\s*(\S+)$", entry_points.split("[console_scripts]")[1], re.M))
    assert scripts["captionrec"] == "captionrec.cli:main"
    assert {"captionrec/_conf/databricks.yaml", "captionrec/_conf/prompts/video_v1.txt"} <= names
    commands = set(next(a for a in _parser()._actions if a.dest == "command").choices)
    wheel_glob = None
    for target in ("dev", "prod"):
        variables = _setup_script().bundle_variables(target)
        job = _job(target)
        params = {p["name"]: _resolve(p["default"], variables) for p in job["parameters"]}
        for task in job["tasks"]:
            pwt = task["python_wheel_task"]
            assert pwt["package_name"] == wheel.name.split("-")[0]
            assert pwt["entry_point"] in scripts
            argv = _resolve(pwt["parameters"], variables, params, task_key=task["task_key"])
            assert argv[0] == task["task_key"]
            command, rest = argv[0], argv[1:]
            assert rest[:2] == ["--profile", "databricks"]
            parsed = _parser().parse_intermixed_args(argv)  # the console script's own parser: options, then key=value
            assert parsed.profile == "databricks" and parsed.show_config  # the config lands in the driver log
            overrides = parsed.overrides
            assert command in commands, (command, sorted(commands))
            stage = command if command in STAGES else None  # as cli.main picks it
            cfg = load_config("databricks", overrides, stage=stage)  # raises on an unknown key or a bad value
            assert cfg.storage.catalog == variables["catalog"] and cfg.storage.schema == variables["schema"]
            assert cfg.tracking.git_commit == GIT_SHA
            if command == "ingest":
                assert cfg.data.source == f"/Volumes/{variables['catalog']}/{variables['schema']}/{variables['volume']}"
            if command in ("train", "experiment"):
                assert cfg.train.num_processes == variables["gpu_workers"]
            # one experiment per target; models registered in Unity Catalog, in the target's schema
            assert cfg.tracking.experiment == variables["experiment"]
            assert cfg.tracking.registry_uri == "databricks-uc"
            assert cfg.tracking.registered_model == (
                f"{variables['catalog']}.{variables['schema']}.{variables['registered_model']}"
            )
            # the recommend task's served model: <catalog>.<schema>.captionrec_recommender, alias champion
            assert variables["recommender_model"] == "captionrec_recommender"
            served = f"{variables['catalog']}.{variables['schema']}.captionrec_recommender"
            assert cfg.recommend.registered_model == served
            if command == "recommend":
                assert cfg.recommend.from_grid == "latest" and cfg.recommend.alias == "champion"
                assert cfg.recommend.gpu.enabled and cfg.tracking.registry_uri == "databricks-uc"
            # every model path and the petastorm cache follow the target's catalog, schema and volumes
            volumes = f"/Volumes/{variables['catalog']}/{variables['schema']}"
            assert cfg.storage.models_dir == (
                f"/Volumes/{variables['catalog']}/{variables['models_schema']}/{variables['models_volume']}"
            )
            assert cfg.train.petastorm_cache_dir == f"file://{volumes}/{variables['cache_volume']}/petastorm"
            paths = [
                v
                for k, v in flatten(cfg).items()
                if k.endswith(("model", "asr_model", "tagger_model", "llm_model"))
                and isinstance(v, str)
                and v.startswith("/")
            ]
            assert len(paths) >= 8 and all(p.startswith(cfg.storage.models_dir + "/") for p in paths), paths
            (lib,) = task["libraries"]
            resolved = os.path.normpath(REPO / "resources" / lib["whl"])
            wheel_glob = wheel_glob or resolved
            assert resolved == wheel_glob == str(REPO / "dist" / "captionrec-*.whl")
    assert fnmatch.fnmatch(str(REPO / "dist" / wheel.name), wheel_glob)


def test_clusters_runtime_access_mode_and_offline_weights():
    for target in ("dev", "prod"):
        variables = _setup_script().bundle_variables(target)
        job = _resolve(_job(target), variables)
        clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
        assert set(clusters) == {"cpu", "gpu"}
        for key, c in clusters.items():
            m = re.fullmatch(r"(\d+)\.(\d+)\.x-(cpu|gpu)-ml-scala2\.13", c["spark_version"])
            assert m and (int(m.group(1)), int(m.group(2))) >= (17, 3), c["spark_version"]  # Spark >= 4.0 ML runtime
            assert m.group(3) == key
            assert c["data_security_mode"] == "SINGLE_USER"  # classic SparkContext: profiles, TorchDistributor
            env = c["spark_env_vars"]
            assert env["HF_HOME"] == (
                f"/Volumes/{variables['catalog']}/{variables['models_schema']}/{variables['models_volume']}/hf"
            )
            # optional policy / pool: empty by default (the API omits empty strings)
            assert c["policy_id"] == variables[f"{key}_policy_id"] == ""
            assert c["instance_pool_id"] == variables[f"{key}_instance_pool_id"] == ""
            assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        gpu = clusters["gpu"]
        assert "autoscale" not in gpu and gpu["num_workers"] == variables["gpu_workers"]
        # TorchDistributor(use_gpu=True, local_mode=False) reads it as an int >= 1
        assert int(gpu["spark_conf"]["spark.task.resource.gpu.amount"]) == 1
        tasks = {t["task_key"]: t for t in job["tasks"]}
        for name, task in tasks.items():
            assert task["job_cluster_key"] == ("gpu" if name in GPU_STAGES else "cpu"), name
            if name in GPU_STAGES and name != "experiment":
                assert task["max_retries"] >= 1 and task["retry_on_timeout"] is True
        order = [(t["task_key"], [d["task_key"] for d in t.get("depends_on", [])]) for t in job["tasks"]]
        assert order == [
            ("ingest", []),
            ("caption", ["ingest"]),
            ("embed", ["caption"]),
            ("train", ["embed"]),
            ("experiment", ["train"]),
            ("recommend", ["experiment"]),
            ("report", ["recommend"]),
        ]


def test_schedule_per_target_and_one_run_at_a_time():
    prod_vars = _setup_script().bundle_variables("prod")
    prod = _resolve(_job("prod"), prod_vars)
    dev = _job("dev")
    for job in (prod, dev):
        assert job["max_concurrent_runs"] == 1 and job["queue"]["enabled"] is True
    trigger = prod["trigger"]
    assert trigger["pause_status"] == "UNPAUSED"
    # the marker folder the uploader writes once per batch, not videos/ (~100k files)
    assert (
        trigger["file_arrival"]["url"]
        == f"/Volumes/{prod_vars['catalog']}/{prod_vars['schema']}/{prod_vars['volume']}/_ready/"
    )
    assert "_ready/" in _setup_script().__doc__
    assert "schedule" not in prod and "trigger" not in dev
    assert dev["schedule"]["quartz_cron_expression"] and dev["schedule"]["timezone_id"] == "UTC"


def test_setup_script_creates_what_the_job_reads():
    setup = _setup_script()
    for target in ("dev", "prod"):
        variables = setup.bundle_variables(target, overrides={"service_principal": "0000-sp-app-id"})
        plan = setup.plan(variables, setup.run_as(target, variables))
        job = _resolve(_job(target), variables)
        params = {p["name"]: p["default"] for p in job["parameters"]}
        volumes = {f"/Volumes/{plan['catalog']}/{s}/{v}" for s, v in plan["volumes"]}
        assert {params["source"], params["models_dir"], params["cache_dir"]} == volumes
        hf_home = job["job_clusters"][0]["new_cluster"]["spark_env_vars"]["HF_HOME"]
        assert hf_home == params["models_dir"] + "/hf" and hf_home in plan["directories"]
        assert f"{params['source']}/videos" in plan["directories"]
        assert params["cache_dir"] + "/petastorm" in plan["directories"]
        trigger = (job.get("trigger") or {}).get("file_arrival")
        if trigger:
            assert trigger["url"].rstrip("/") in plan["directories"]
        statements = setup.sql(plan)
        assert (
            statements[0]
            == f"CREATE SCHEMA IF NOT EXISTS `{plan['catalog']}`.`{plan['schema']}` COMMENT 'captionrec tables';"
        )
        assert f"CREATE SCHEMA IF NOT EXISTS `{plan['catalog']}`.`{variables['models_schema']}`" in statements[1]
        assert sum(s.startswith("CREATE VOLUME IF NOT EXISTS") for s in statements) == 3
        grants = [s for s in statements if s.startswith("GRANT")]
        if target == "dev":  # runs as the deploying user: nothing to grant unless asked
            assert plan["principal"] is None and not grants
            continue
        # prod runs as the service principal: exactly what the job needs, the models schema read-only
        assert (
            plan["principal"]
            == "0000-sp-app-id"
            == _bundle()["targets"]["prod"]["run_as"]["service_principal_name"].replace(
                "${var.service_principal}", variables["service_principal"]
            )
        )
        cat, sch, msch = plan["catalog"], plan["schema"], variables["models_schema"]
        to = "TO `0000-sp-app-id`;"
        assert grants == [
            f"GRANT USE CATALOG ON CATALOG `{cat}` {to}",
            f"GRANT USE SCHEMA, CREATE TABLE, SELECT, MODIFY, CREATE MODEL ON SCHEMA `{cat}`.`{sch}` {to}",
            f"GRANT READ VOLUME ON VOLUME `{cat}`.`{sch}`.`{variables['volume']}` {to}",
            f"GRANT READ VOLUME, WRITE VOLUME ON VOLUME `{cat}`.`{sch}`.`{variables['cache_volume']}` {to}",
            f"GRANT USE SCHEMA ON SCHEMA `{cat}`.`{msch}` {to}",
            f"GRANT READ VOLUME ON VOLUME `{cat}`.`{msch}`.`{variables['models_volume']}` {to}",
        ]
        assert not any("WRITE" in g or "MODIFY" in g or "CREATE" in g for g in grants if f"`{msch}`" in g)
        # the registered model's schema is the one CREATE MODEL is granted on
        assert params["registered_model"].rsplit(".", 1)[0] == f"{cat}.{sch}"
    assert setup.bundle_variables("dev")["schema"] != setup.bundle_variables("prod")["schema"]
    assert setup.bundle_variables("dev")["models_schema"] == setup.bundle_variables("prod")["models_schema"]


def test_setup_script_refuses_prod_without_its_service_principal(capsys):
    setup = _setup_script()
    with pytest.raises(SystemExit, match="--var service_principal=<application-id>"):
        setup.main(["-t", "prod", "--sql"])
    with pytest.raises(SystemExit, match=r"unknown variable\(s\) \['service_principle'\]"):
        setup.main(["-t", "prod", "--sql", "--var", "service_principle=x"])
    with pytest.raises(SystemExit, match="not a plain identifier"):
        setup.main(["-t", "dev", "--sql", "--var", "models_schema=a-b"])
    assert setup.main(["-t", "prod", "--sql", "--var", "service_principal=abc-123"]) == 0
    out = capsys.readouterr().out
    assert "GRANT READ VOLUME ON VOLUME `main`.`captionrec_models`.`models` TO `abc-123`;" in out
    # dev with an explicit principal grants the same set to that user
    assert setup.main(["-t", "dev", "--sql", "--principal", "someone@example.com"]) == 0
    out = capsys.readouterr().out
    assert "ON SCHEMA `main`.`captionrec_dev` TO `someone@example.com`;" in out


def test_git_commit_from_the_job_reaches_mlflow_tags():
    from captionrec.config import load_config
    from captionrec.tracking import tracking_spec

    spec = tracking_spec(load_config("databricks", [f"tracking.git_commit={GIT_SHA}"]))
    assert spec.tags["git_commit"] == GIT_SHA
    local = tracking_spec(load_config("local"))  # a checkout: git rev-parse HEAD
    assert re.fullmatch(r"[0-9a-f]{40}", local.tags["git_commit"])


def test_logged_model_is_registered_under_the_configured_name(tmp_path):
    """tracking.registered_model / registry_uri reach mlflow: the train run's model becomes a version of that
    registered model (here a sqlite registry standing in for Unity Catalog's databricks-uc)."""
    import numpy as np
    import torch
    from mlflow.tracking import MlflowClient

    from captionrec.config import ConfigError, load_config
    from captionrec.tracking import tracking_spec
    from captionrec.tracking.mlflow_utils import RunLogger

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = load_config(
        "local",
        [
            f"tracking.tracking_uri={db}",
            f"tracking.registry_uri={db}",
            f"tracking.artifact_location={tmp_path / 'art'}",
            "tracking.experiment=reg",
            "tracking.registered_model=captionrec_test",
            f"tracking.git_commit={GIT_SHA}",
        ],
    )
    spec = tracking_spec(cfg)
    assert (spec.registry_uri, spec.registered_model) == (db, "captionrec_test")
    with RunLogger(spec) as run:
        run.log_model(torch.nn.Linear(2, 1), np.zeros((1, 2), dtype=np.float32))
    (version,) = MlflowClient(db, registry_uri=db).search_model_versions("name='captionrec_test'")
    assert version.run_id == run.run_id
    # the databricks profile registers in Unity Catalog, which takes three-part names only
    dbx = load_config("databricks")
    assert (
        dbx.tracking.registry_uri == "databricks-uc"
        and dbx.tracking.registered_model == "main.captionrec.captionrec_sasrec"
    )
    with pytest.raises(ConfigError, match="<catalog>.<schema>.<model>"):
        load_config("databricks", ["tracking.registered_model=captionrec_sasrec"])


# -- the wheel: config files from an installed or zipped package ----------------------------------------------


def test_config_loads_from_a_zipped_wheel(wheel, tmp_path):
    """`--py-files captionrec.zip` puts the package inside a zip on the driver: the profiles and prompts are
    read from a real folder (extracted once), never from a path inside the zip. Before: `unknown profile
    'cluster'` (conf_dir() pointed into the zip)."""
    import yaml as _yaml

    zipped = tmp_path / "captionrec.zip"
    zipped.write_bytes(wheel.read_bytes())
    site = Path(_yaml.__file__).resolve().parents[1]  # this venv's site-packages, for the dependencies
    script = (
        "import json, captionrec\n"
        "from captionrec.config import conf_dir, load_config\n"
        "c = load_config('cluster'); d = load_config('databricks')\n"
        "print(json.dumps({'module': captionrec.__file__, 'conf': str(conf_dir()), 'is_dir': conf_dir().is_dir(),\n"
        "  'prompt': (conf_dir() / c.caption.video.prompt_file).read_text()[:20], 'master': c.spark.master,\n"
        "  'catalog': d.storage.catalog}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CAPTIONREC_CONF_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(zipped), str(site)])
    env["TMPDIR"] = str(tmp_path)
    # -S: no site-packages processing, so the editable install of this checkout is not on the path
    out = subprocess.run(
        [sys.executable, "-S", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["module"].startswith(str(zipped))
    assert got["is_dir"] and not got["conf"].startswith(str(zipped)) and got["conf"].startswith(str(tmp_path))
    assert got["master"] == "active" and got["catalog"] == "main"
    assert got["prompt"] == (REPO / "conf" / "prompts" / "video_v1.txt").read_text()[:20]


def test_repo_conf_is_used_from_a_checkout():
    from captionrec.config import conf_dir

    assert conf_dir() == REPO / "conf"


# -- the runtime's Spark version ------------------------------------------------------------------------------


@pytest.mark.petastorm  # runs in the pinned pyspark 4.0.5 environment (.ci/petastorm.sh), skips elsewhere
def test_spark_code_paths_run_on_the_runtime_spark_version():
    """DBR 17.3 LTS ML is Spark 4.0 (the main environment has 4.2): the Spark API the stages and the table layer
    use, run on pyspark 4.0.x. (The runtime's MLflow, 3.0.1, is not installed anywhere here; every MLflow call
    the code makes was checked against that release's source by hand.)"""
    import inspect

    import pyspark

    if not pyspark.__version__.startswith("4.0."):
        pytest.skip(f"needs pyspark 4.0.x (the runtime's Spark), this is {pyspark.__version__}: run .ci/petastorm.sh")
    import pyarrow as pa
    from pyspark.sql import DataFrame

    from captionrec.config import load_config
    from captionrec.config.schema import SparkConfig
    from captionrec.spark.cluster import check_task_fits
    from captionrec.spark.session import get_spark
    from captionrec.spark.udf import gpu_resource_profile, map_rows
    from captionrec.tables.base import align_to_schema, dedupe_last, ntz_to_utc

    for method in (DataFrame.mapInPandas, DataFrame.mapInArrow):
        assert "profile" in inspect.signature(method).parameters  # stage-level scheduling: Spark >= 4.0
    spark = get_spark(SparkConfig(master="local[1]", shuffle_partitions=1, driver_memory="1g"))
    df = spark.createDataFrame([("a", 1), ("b", 2), ("a", 3)], "k string, n long")
    schema = pa.schema([("k", pa.string()), ("n2", pa.int64())])
    out = map_rows(df, lambda rows: ([{"k": r["k"], "n2": r["n"] * 2}] for r in rows), schema)
    assert sorted(tuple(r) for r in out.collect()) == [("a", 2), ("a", 6), ("b", 4)]
    assert df.toArrow().num_rows == 3  # the delta-rs backend's collect
    assert sorted(tuple(r) for r in dedupe_last(df.coalesce(1), ["k"]).collect()) == [("a", 3), ("b", 2)]
    target = spark.createDataFrame([], "n long, k string").schema
    assert align_to_schema(df, target, "t").columns == ["n", "k"]
    ts = ntz_to_utc(spark.sql("SELECT TIMESTAMP_NTZ'2025-01-02 03:04:05' AS ts")).first().ts
    assert ts is not None
    profile = gpu_resource_profile(1.0, task_cpus=4)
    assert profile.taskResources["gpu"].amount == 1.0 and profile.taskResources["cpus"].amount == 4
    assert check_task_fits(spark, 4, 1.0) == []  # local[*]: no executors of its own, nothing to check
    cfg = load_config(
        "databricks", ["storage.catalog=dev", "tracking.git_commit=abc", "train.num_processes=2"], stage="train"
    )
    assert cfg.train.local_mode is False and cfg.train.use_gpu is True and cfg.storage.catalog == "dev"


# -- every target's effective configuration is coherent -------------------------------------------------------

# Node types the bundle's variables may name: vCPUs (the cores Spark schedules tasks on) and GPUs per node.
# Add a row before pointing gpu_node_type / cpu_node_type at another type: an unknown node type fails the test.
NODE_TYPES = {
    # AWS
    "m5d.xlarge": (4, 0),
    "m5d.2xlarge": (8, 0),
    "m5d.4xlarge": (16, 0),
    "i3.xlarge": (4, 0),
    "g5.xlarge": (4, 1),
    "g5.2xlarge": (8, 1),
    "g5.4xlarge": (16, 1),
    "g5.8xlarge": (32, 1),
    "g5.12xlarge": (48, 4),
    "g5.48xlarge": (192, 8),
    "p4d.24xlarge": (96, 8),
    "p5.48xlarge": (192, 8),
    # Azure
    "Standard_D4ds_v5": (4, 0),
    "Standard_NV36ads_A10_v5": (36, 1),
    "Standard_NC24ads_A100_v4": (24, 1),
    # GCP
    "n2-standard-4": (4, 0),
    "g2-standard-8": (8, 1),
    "a2-highgpu-1g": (12, 1),
}


def _task_configs(target: str, variables_over: dict | None = None, edit_job=None):
    """(task, its cluster's new_cluster, the task's loaded Config) for every task of `target`, as deployed:
    variables with the target's overrides, the job with the target's overrides, job parameters at their defaults.
    `variables_over` / `edit_job(job)`: what-ifs for the tests of the check itself."""
    from captionrec.cli import STAGES, _parser
    from captionrec.config import load_config

    variables = {**_setup_script().bundle_variables(target), **(variables_over or {})}
    job = _job(target)
    if edit_job is not None:
        edit_job(job)
    params = {p["name"]: _resolve(p["default"], variables) for p in job["parameters"]}
    clusters = {c["job_cluster_key"]: _resolve(c["new_cluster"], variables) for c in job["job_clusters"]}
    out = []
    for task in job["tasks"]:
        argv = _resolve(task["python_wheel_task"]["parameters"], variables, params, task_key=task["task_key"])
        parsed = _parser().parse_intermixed_args(argv)  # the console script's own parser
        command = parsed.command
        stage = command if command in STAGES else None  # as cli.main picks it
        cfg = load_config(parsed.profile, parsed.overrides, stage=stage)
        out.append((task, clusters[task["job_cluster_key"]], cfg))
    return variables, out


def _incoherences(target: str, variables_over: dict | None = None, edit_job=None) -> list[str]:
    from captionrec.config.loader import flatten

    variables, tasks = _task_configs(target, variables_over, edit_job)
    problems: list[str] = []
    models_schema = variables.get("models_schema", variables["schema"])
    volumes = {
        "source": f"/Volumes/{variables['catalog']}/{variables['schema']}/{variables['volume']}",
        "models": f"/Volumes/{variables['catalog']}/{models_schema}/{variables['models_volume']}",
        "cache": f"/Volumes/{variables['catalog']}/{variables['schema']}/{variables['cache_volume']}",
    }
    for task, cluster, cfg in tasks:
        where = f"{target}/{task['task_key']}"
        node = cluster.get("node_type_id")
        if node not in NODE_TYPES:
            problems.append(
                f"{where}: node type {node!r} not in NODE_TYPES (tests/deploy/test_bundle.py): add its cores/GPUs"
            )
            continue
        cores, gpus = NODE_TYPES[node]
        workers = int(cluster.get("num_workers", 0))
        conf = cluster.get("spark_conf") or {}
        spark_task_cpus = int(conf.get("spark.task.cpus", 1))
        if spark_task_cpus > cores:
            problems.append(f"{where}: spark.task.cpus={spark_task_cpus} > {cores} cores of {node}")
        task_gpu = float(conf.get("spark.task.resource.gpu.amount", 0))
        if task_gpu > gpus:
            problems.append(f"{where}: spark.task.resource.gpu.amount={task_gpu} > {gpus} GPU(s) per {node}")
        # the stages that attach their own ResourceProfile (1 GPU + task_cpus CPUs per task)
        section = {"caption": cfg.caption, "embed": cfg.embed, "recommend": cfg.recommend}.get(task["task_key"])
        if section is not None and section.gpu.enabled:
            if gpus == 0:
                problems.append(f"{where}: {task['task_key']}.gpu.enabled on {node}, which has no GPU")
            elif section.gpu.task_amount > gpus:
                problems.append(
                    f"{where}: {task['task_key']}.gpu.task_amount={section.gpu.task_amount} > {gpus} GPU(s) per {node}"
                )
            amount = section.gpu.task_amount
            if not (amount == int(amount) or (amount <= 0.5 and abs(1 / amount - round(1 / amount)) < 1e-9)):
                # Spark's rule for a task's resource amount: a whole number, or 1/n to share one GPU n ways
                problems.append(
                    f"{where}: {task['task_key']}.gpu.task_amount={amount} is neither a whole number "
                    f"nor 1/n (0.5, 0.25, ...)"
                )
            if section.gpu.task_cpus > cores:
                problems.append(
                    f"{where}: {task['task_key']}.gpu.task_cpus={section.gpu.task_cpus} > {cores} cores of {node}"
                )
        if task["task_key"] in ("train", "experiment") and cfg.train.use_gpu:
            # TorchDistributor(local_mode=False, use_gpu=True): one barrier task per process, each on its own GPU,
            # scheduled with spark.task.resource.gpu.amount GPUs per task
            per_task = task_gpu or 1.0
            slots = workers * int(gpus // per_task) if gpus else 0
            if cfg.train.num_processes > slots:
                problems.append(
                    f"{where}: train.num_processes={cfg.train.num_processes} > {slots} GPU task slot(s) "
                    f"({workers} worker(s) x {gpus} GPU(s) on {node}, {per_task} GPU per task): pass "
                    f"train.num_processes=${{var.gpu_workers}} to the task or raise gpu_workers"
                )
            overridden = [
                o
                for o in getattr(cfg.experiment, "train_overrides", ())
                if o.startswith("train.num_processes=") or o.startswith("num_processes=")
            ]
            if task["task_key"] == "experiment" and overridden:
                problems.append(
                    f"{where}: experiment.train_overrides sets {overridden}: the grid's children must use "
                    f"the task's train.num_processes"
                )
        # every path the task reads or writes lies in the Volumes the bundle's variables name
        if cfg.storage.catalog != variables["catalog"] or cfg.storage.schema != variables["schema"]:
            problems.append(
                f"{where}: tables in {cfg.storage.catalog}.{cfg.storage.schema}, the bundle's variables "
                f"say {variables['catalog']}.{variables['schema']}"
            )
        expected = {
            "data.source": (cfg.data.source, volumes["source"]),
            "storage.models_dir": (cfg.storage.models_dir, volumes["models"]),
            "storage.cache_dir": (cfg.storage.cache_dir, volumes["cache"]),
        }
        for key, (got, want) in expected.items():
            if got.rstrip("/") != want:
                problems.append(f"{where}: {key}={got}, expected {want}")
        petastorm = cfg.train.petastorm_cache_dir or ""
        if petastorm and not petastorm.removeprefix("file://").startswith(volumes["cache"] + "/"):
            problems.append(f"{where}: train.petastorm_cache_dir={petastorm} is not under {volumes['cache']}")
        model_paths = {
            k: v
            for k, v in flatten(cfg).items()
            if k.endswith(("model", "asr_model", "tagger_model", "llm_model"))
            and isinstance(v, str)
            and v.startswith("/")
        }
        if len(model_paths) < 8:
            problems.append(f"{where}: only {len(model_paths)} model paths found: {sorted(model_paths)}")
        for key, path in model_paths.items():
            if not path.startswith(volumes["models"] + "/"):
                problems.append(f"{where}: {key}={path} is not under the models Volume {volumes['models']}")
        # any other Volume path of the config (train.inputs_dir, report folders, ...) is in one of the three
        for key, value in flatten(cfg).items():
            path = value.removeprefix("file://") if isinstance(value, str) else ""
            if path.startswith("/Volumes/") and not any(
                path.rstrip("/") == v or path.startswith(v + "/") for v in volumes.values()
            ):
                problems.append(f"{where}: {key}={value} is in none of the bundle's Volumes {sorted(volumes.values())}")
        hf_home = (cluster.get("spark_env_vars") or {}).get("HF_HOME", "")
        if not hf_home.startswith(volumes["models"] + "/"):
            problems.append(f"{where}: HF_HOME={hf_home!r} is not under the models Volume {volumes['models']}")
    return problems


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_every_target_is_coherent(target):
    """Processes vs GPU workers, task CPUs vs node cores, GPU amounts vs the node's GPUs, paths vs Volumes: an
    incoherent target fails here, not hours into a cluster run (issue 19: dev's one GPU worker with the
    experiment task's 2 processes made every child fail its barrier)."""
    problems = _incoherences(target)
    assert not problems, "\n".join(problems)


def _task(job: dict, key: str) -> dict:
    return next(t for t in job["tasks"] if t["task_key"] == key)


def _append_args(job: dict, key: str, *args: str) -> None:
    task = _task(job, key)
    task["python_wheel_task"] = {
        **task["python_wheel_task"],
        "parameters": [*task["python_wheel_task"]["parameters"], *args],
    }


def _drop_args(job: dict, key: str, prefix: str) -> None:
    task = _task(job, key)
    params = [a for a in task["python_wheel_task"]["parameters"] if not a.startswith(prefix)]
    task["python_wheel_task"] = {**task["python_wheel_task"], "parameters": params}


@pytest.mark.parametrize(
    "what_if, expected",
    [
        # the issue-19 defect: the experiment task without the bundle's process count, on dev's one GPU worker
        (
            dict(edit_job=lambda j: _drop_args(j, "experiment", "train.num_processes=")),
            "dev/experiment: train.num_processes=2 > 1 GPU task slot(s) (1 worker(s) x 1 GPU(s) on g5.2xlarge",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "train", "train.num_processes=3")),
            "dev/train: train.num_processes=3 > 1 GPU task slot(s)",
        ),
        (
            dict(variables_over={"gpu_node_type": "m5d.2xlarge"}),
            "dev/caption: caption.gpu.enabled on m5d.2xlarge, which has no GPU",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "caption", "caption.gpu.task_cpus=12")),
            "dev/caption: caption.gpu.task_cpus=12 > 8 cores of g5.2xlarge",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "embed", "embed.gpu.task_amount=2")),
            "dev/embed: embed.gpu.task_amount=2.0 > 1 GPU(s) per g5.2xlarge",
        ),
        (
            dict(
                edit_job=lambda j: (
                    next(c for c in j["job_clusters"] if c["job_cluster_key"] == "gpu")["new_cluster"]
                    .setdefault("spark_conf", {})
                    .update({"spark.task.cpus": "16"})
                )
            ),
            "dev/caption: spark.task.cpus=16 > 8 cores of g5.2xlarge",
        ),
        (
            dict(edit_job=lambda j: _task(j, "embed").update(job_cluster_key="cpu")),
            "dev/embed: embed.gpu.enabled on m5d.xlarge, which has no GPU",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "embed", "embed.gpu.task_amount=0.3")),
            "dev/embed: embed.gpu.task_amount=0.3 is neither a whole number nor 1/n",
        ),
        (
            dict(edit_job=lambda j: _task(j, "recommend").update(job_cluster_key="cpu")),
            "dev/recommend: recommend.gpu.enabled on m5d.xlarge, which has no GPU",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "report", "storage.cache_dir=/Volumes/main/captionrec/cache")),
            "dev/report: storage.cache_dir=/Volumes/main/captionrec/cache, expected /Volumes/main/captionrec_dev/cache",
        ),
        (
            dict(
                edit_job=lambda j: _append_args(j, "train", "train.inputs_dir=/Volumes/main/captionrec/scratch/inputs")
            ),
            "dev/train: train.inputs_dir=/Volumes/main/captionrec/scratch/inputs is in none of the bundle's Volumes",
        ),
        (dict(variables_over={"gpu_node_type": "g9.huge"}), "dev/caption: node type 'g9.huge' not in NODE_TYPES"),
        (
            dict(edit_job=lambda j: _append_args(j, "ingest", "data.source=/Volumes/main/captionrec/raw")),
            "dev/ingest: data.source=/Volumes/main/captionrec/raw, expected /Volumes/main/captionrec_dev/raw",
        ),
        (
            dict(edit_job=lambda j: _append_args(j, "embed", "embed.text.model=/dbfs/models/bge")),
            "dev/embed: embed.text.model=/dbfs/models/bge is not under the models Volume /Volumes/main/captionrec_models/models",
        ),
        (
            dict(
                edit_job=lambda j: [
                    c["new_cluster"]["spark_env_vars"].update(HF_HOME="/local_disk0/hf") for c in j["job_clusters"]
                ]
            ),
            "dev/ingest: HF_HOME='/local_disk0/hf' is not under the models Volume",
        ),
        # a task that leaves storage.models_dir to the profile, with the models Volume moved
        (
            dict(
                variables_over={"models_schema": "other_models"},
                edit_job=lambda j: _drop_args(j, "caption", "storage.models_dir="),
            ),
            "dev/caption: storage.models_dir=/Volumes/main/captionrec_models/models, expected /Volumes/main/other_models/models",
        ),
    ],
)
def test_coherence_check_finds_each_kind_of_mismatch(what_if, expected):
    problems = _incoherences("dev", **what_if)
    assert any(p.startswith(expected) for p in problems), problems
