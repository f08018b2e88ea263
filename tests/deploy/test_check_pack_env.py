"""scripts/check_pack_env.py, the check `make pack-env` (and the Dockerfile) runs after installing torch: a CPU-only
torch is refused for a GPU profile and accepted for PACK_PROFILE=cpu. Run against this venv (the local CPU wheel,
torch 2.13.0+cpu) and a fake interpreter standing in for a CUDA build; the ~5.5 GB pack itself is not built here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "check_pack_env.py"


def check(python: str, *profile: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--python", python, *profile], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def this_torch() -> dict:
    import torch

    return {"version": torch.__version__, "cuda": torch.version.cuda}


def test_refuses_a_cpu_torch_for_a_gpu_profile(this_torch):
    if this_torch["cuda"]:
        pytest.skip(f"this venv's torch {this_torch['version']} is a CUDA build; the CPU case needs the CPU wheel")
    proc = check(sys.executable)  # --profile gpu is the default
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"torch {this_torch['version']}, a CPU-only build" in proc.stderr
    assert "PACK_TORCH=" in proc.stderr and "PACK_PROFILE=cpu" in proc.stderr  # what to set


def test_accepts_a_cpu_torch_for_the_cpu_profile(this_torch):
    proc = check(sys.executable, "--profile", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert f"torch {this_torch['version']}" in proc.stdout and "cpu profile" in proc.stdout


def fake_python(tmp_path: Path, cuda: str | None) -> str:
    """An interpreter whose `torch` is a stub reporting `cuda` as torch.version.cuda."""
    pkg = tmp_path / "site" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("__version__ = '2.14.1'\nfrom . import version\n")
    (pkg / "version.py").write_text(f"cuda = {cuda!r}\n")
    exe = tmp_path / "python"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH={tmp_path / "site"} exec {sys.executable} "$@"\n')
    exe.chmod(0o755)
    return str(exe)


def test_accepts_a_cuda_torch_for_the_gpu_profile(tmp_path):
    proc = check(fake_python(tmp_path, "13.0"), "--profile", "gpu")
    assert proc.returncode == 0, proc.stderr
    assert "torch 2.14.1 (CUDA 13.0), fine for the gpu profile" in proc.stdout


def test_an_interpreter_without_torch_is_an_error(tmp_path):
    exe = tmp_path / "python"
    exe.write_text(
        f"#!/bin/sh\nexec {sys.executable} -S -I -c 'raise ModuleNotFoundError(\"No module named torch\")'\n"
    )
    exe.chmod(0o755)
    proc = check(str(exe))
    assert proc.returncode == 2 and "cannot import torch" in proc.stderr, proc.stderr
    assert check(str(tmp_path / "missing")).returncode == 2


def test_make_pack_env_installs_pack_torch_and_checks_it():
    """The pack-env recipe (dry run): PACK_TORCH replaces constraints.txt's CPU torch pin, the check runs after the
    installs and before venv-pack, with PACK_PROFILE."""

    def recipe(*overrides: str) -> list[str]:
        out = subprocess.run(
            ["make", "-n", "pack-env", *overrides], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        return lines[next(i for i, ln in enumerate(lines) if "-m venv build/pack-venv" in ln) :]

    lines = recipe()
    torch_pin = next(ln for ln in lines if "grep -v '^torch==' constraints.txt" in ln)
    assert "echo 'torch==2.14.1'" in torch_pin
    install = [
        i for i, ln in enumerate(lines) if re.search(r"pack-venv/bin/pip install .*-c build/pack-constraints", ln)
    ]
    checked = next(i for i, ln in enumerate(lines) if "check_pack_env.py --python build/pack-venv/bin/python" in ln)
    packed = next(i for i, ln in enumerate(lines) if "venv-pack" in ln)
    assert len(install) == 2 and max(install) < checked < packed
    assert lines[checked].endswith("--profile gpu") and "'torch==2.14.1'" in lines[install[0]]
    lines = recipe("PACK_PROFILE=cpu", "PACK_TORCH=torch==2.13.0")
    assert any(ln.endswith("--profile cpu") for ln in lines) and any("'torch==2.13.0'" in ln for ln in lines)
    assert not any("torch==2.13.0" in ln for ln in recipe() if "pip install" in ln)  # not the CPU wheel by default
