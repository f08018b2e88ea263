"""Refuse a Python environment whose torch cannot use the GPUs its executors are given.

    python scripts/check_pack_env.py --python build/pack-venv/bin/python --profile gpu   # `make pack-env`
    python scripts/check_pack_env.py --python /opt/captionrec/bin/python --profile gpu   # the Dockerfile

Executors under a GPU profile (conf/spark-gpu.conf, conf/spark-k8s-gpu.conf: spark.executor.resource.gpu.amount)
run the caption, embed and train models with the environment's torch; a CPU-only build (torch.version.cuda is
None, e.g. the local torch==2.13.0+cpu wheel) would leave the GPUs idle or stop the stages
(caption.gpu.on_missing_cuda=error). `--profile gpu` exits 1 for such a torch and names what to set;
`--profile cpu` accepts any torch (CPU-only executors). Exit 2: the interpreter or its torch does not run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = "import json, torch; print(json.dumps({'version': torch.__version__, 'cuda': torch.version.cuda}))"
PROFILES = ("gpu", "cpu")


def torch_build(python: str, timeout_s: float = 300) -> dict:
    """torch.__version__ and torch.version.cuda as the interpreter `python` sees them."""
    try:
        proc = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"cannot run {python}: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{python} cannot import torch (exit {proc.returncode}): {' / '.join(tail)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check(build: dict, profile: str, python: str) -> str | None:
    """None when `build` suits `profile`; otherwise the error, naming what to set."""
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
    if profile == "gpu" and not build.get("cuda"):
        return (
            f"{python} has torch {build['version']}, a CPU-only build (torch.version.cuda is None): executors "
            f"under a GPU profile could not use their GPUs. Install a CUDA build of torch: `make pack-env "
            f"PACK_TORCH=torch==<version>` (PyPI's Linux torch wheels are CUDA builds; another CUDA version: "
            f"PACK_PIP_ARGS='--index-url https://download.pytorch.org/whl/cu126'), or pack for CPU-only "
            f"executors with PACK_PROFILE=cpu."
        )
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="the environment's interpreter (e.g. build/pack-venv/bin/python)")
    ap.add_argument(
        "--profile", choices=PROFILES, default="gpu", help="gpu (default): torch must be a CUDA build; cpu: any torch"
    )
    args = ap.parse_args(argv)
    try:
        build = torch_build(args.python)
    except RuntimeError as exc:
        print(f"check_pack_env: {exc}", file=sys.stderr)
        return 2
    error = check(build, args.profile, args.python)
    if error:
        print(f"check_pack_env: {error}", file=sys.stderr)
        return 1
    cuda = f"CUDA {build['cuda']}" if build.get("cuda") else "CPU-only"
    print(f"check_pack_env: {args.python}: torch {build['version']} ({cuda}), fine for the {args.profile} profile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
