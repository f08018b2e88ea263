#!/usr/bin/env bash
# The Databricks runtime's library set, tested (`make test-runtime`): builds a venv (~/.cache/captionrec/venv-runtime) from
# constraints/dbr-17.3-ml.txt (the Python libraries of the runtime the bundle targets) on the runtime's
# Python (3.12), shows that the wheel's own requirements resolve on top without replacing any runtime pin
# (what a wheel task installs on the cluster), installs the project for a local run, checks the pins
# survived (`pip check` too), builds the tiny models with the runtime's transformers and runs the whole
# pipeline on the sample (ingest -> caption -> embed -> experiment -> report, small grid) in a temp dir.
# Then a check that every stage's summary has the same shape (the same keys, recursively) as the main
# environment's, committed in .ci/summary_shape.json (`make summary-shape` rewrites it from a .venv run).
#   RUNTIME_VENV        where the venv lives (default: ~/.cache/captionrec/venv-runtime, outside the clone, so a
#                       fresh clone on the same machine (CI) reuses it; the project is re-pointed at this clone)
#   RUNTIME_PYTHON      interpreter to build it from (default: pyenv's 3.12.1, else python3.12, else python3.11)
#   RUNTIME_KEEP_WORK=1 keep the temp working dirs (printed)
#   RUNTIME_MAIN=1      also run the pipeline under .venv here and compare the two runs' shapes directly
# The venv is rebuilt when the pins or setup.py's requirements change (or with RUNTIME_REBUILD=1), else reused.
# A build downloads the runtime's torch 2.7.0 (PyPI's CUDA 12.6 build, ~3 GB with its nvidia-* wheels; pip keeps
# the pyspark wheel it builds in ~/.cache/pip/wheels). Measured on the 2-core CI machine at load 10-15: build 822 s
# (runtime libraries 647 s, the project on top 133 s); pipeline 977 s under this env, 446 s under .venv.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${RUNTIME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/captionrec/venv-runtime}"
PINS="$REPO/constraints/dbr-17.3-ml.txt"
STAMP="$VENV/.captionrec-runtime-installed"
MAIN_VENV="$REPO/.venv"
# The local run needs the full mlflow (sqlite tracking store); the runtime ships mlflow-skinny only. The same
# version: mlflow==X requires mlflow-skinny==X, so the runtime's MLflow stays what it is (see $PINS).
LOCAL_PINS="mlflow==$(sed -n 's/^mlflow-skinny==//p' "$PINS")"
# Must equal their pins after every install step (the rest of $PINS is checked too).
PROTECTED="pyspark mlflow-skinny torch transformers"

say() { echo "[runtime] $*"; }
fail() { echo "[runtime] FAIL: $*" >&2; exit 1; }
secs() { echo $(( $(date +%s) - $1 )); }

runtime_name="$(sed -n '1s/^# runtime: \(Databricks Runtime [0-9.]* LTS ML\).*/\1/p' "$PINS")"
[[ -n "$runtime_name" ]] || fail "$PINS: first line must name the runtime ('# runtime: Databricks Runtime <x.y> LTS ML ...')"

is_py() { [[ -x "$1" ]] && "$1" -c "import sys; sys.exit(sys.version_info[:2] != ($2))" 2>/dev/null; }
PY=""
if [[ -n "${RUNTIME_PYTHON:-}" ]]; then
    PY="$RUNTIME_PYTHON"
else
    # pyenv's 3.12 (checked by running it: a pyenv shim may name a version that isn't installed), else PATH's.
    for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.12*/bin/python "$(command -v python3.12 || true)"; do
        if is_py "$cand" "3, 12"; then PY="$cand"; break; fi
    done
    if [[ -z "$PY" ]]; then
        for cand in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python "$(command -v python3.11 || true)"; do
            if is_py "$cand" "3, 11"; then PY="$cand"; break; fi
        done
        [[ -n "$PY" ]] || fail "no Python 3.12 or 3.11 found; set RUNTIME_PYTHON"
        say "NOTE: no Python 3.12 here (the runtime's is 3.12.3): building on $("$PY" -V 2>&1) instead;" \
            "a 3.12-only break would go unnoticed"
    fi
fi
# One run at a time per venv: the venv is shared by the clones on this machine (a second run waits).
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock 9
say "$runtime_name pins: $PINS; Python: $("$PY" -V 2>&1) ($PY)"

# name==version from a requirements/constraints file, comments and blanks dropped.
pins() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -E '^[A-Za-z0-9._-]+==' || true; }

# Every pin in $PINS must be installed at exactly its version (distribution names normalised).
check_pins() {
    local what="$1"
    "$VENV/bin/python" - "$PINS" "$what" "$LOCAL_PINS" <<'PY'
import re, sys
from importlib import metadata

def norm(n):
    return re.sub(r"[-_.]+", "-", n).lower()

path, what, extra = sys.argv[1], sys.argv[2], sys.argv[3]
want = {}
for line in open(path).read().splitlines() + ([extra] if what == "local" else []):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        name, ver = line.split("==", 1)
        want[norm(name)] = ver.strip()
have = {norm(d.metadata["Name"]): d.version for d in metadata.distributions()}
bad = [f"{n}: pinned {v}, installed {have.get(n, 'nothing')}" for n, v in sorted(want.items())
       if have.get(n, "").split("+")[0] != v]
if bad:
    print(f"[runtime] FAIL ({what}): the runtime's libraries were replaced or are missing:", *bad, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"[runtime] {what}: all {len(want)} pins installed at their versions")
PY
}

# What the venv is built from: the pins and setup.py's requirement lists (not its other lines: the bundle's
# per-build version must not cost a rebuild). The stamp holds their hash.
inputs_hash() {
    { cat "$PINS"; "$PY" - "$REPO/setup.py" <<'PY'
import ast, sys
call = next(n for n in ast.walk(ast.parse(open(sys.argv[1]).read()))
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
kw = {k.arg: k.value for k in call.keywords}
print(ast.dump(kw["install_requires"]), ast.dump(kw["extras_require"]))
PY
    } | sha256sum | cut -d' ' -f1
}
want="$(inputs_hash)"

if [[ ! -x "$VENV/bin/python" || "$("$VENV/bin/python" -V 2>&1)" != "$("$PY" -V 2>&1)" || ! -f "$STAMP" || "$(cat "$STAMP" 2>/dev/null)" != "$want" || "${RUNTIME_REBUILD:-0}" == 1 ]]; then
    t_build=$(date +%s)
    say "building $VENV (new, or the pins / setup.py's requirements changed)"
    rm -rf "$VENV"; mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip wheel setuptools
    t=$(date +%s)
    # 1. The runtime: its libraries at the release notes' versions.
    "$VENV/bin/python" -m pip install -q -r "$PINS"
    say "runtime libraries installed in $(secs "$t") s"
    check_pins runtime

    # 2. What a wheel task does on the cluster: pip installs the wheel with its requirements, no constraints.
    #    Nothing the runtime ships may be replaced (a dry run: the report lists what pip would install).
    report="$(mktemp)"
    "$VENV/bin/python" -m pip install -q --dry-run --report "$report" "$REPO" \
        || fail "the wheel's requirements do not resolve on top of the runtime's libraries"
    "$VENV/bin/python" - "$report" "$PINS" <<'PY'
import json, re, sys

def norm(n):
    return re.sub(r"[-_.]+", "-", n).lower()

report, pins = json.load(open(sys.argv[1])), {}
for line in open(sys.argv[2]):
    line = line.split("#", 1)[0].strip()
    if "==" in line:
        n, v = line.split("==", 1)
        pins[norm(n)] = v
adds = [(norm(i["metadata"]["name"]), i["metadata"]["version"]) for i in report["install"]]
replaced = [f"{n} {pins[n]} -> {v}" for n, v in adds if n in pins and n != "captionrec"]
if replaced:
    print("[runtime] FAIL: installing the wheel would replace runtime libraries:", *replaced, sep="\n  ", file=sys.stderr)
    sys.exit(1)
print("[runtime] the wheel's requirements resolve on the runtime without replacing any pin; pip adds:",
      ", ".join(f"{n}=={v}" for n, v in adds if n != "captionrec") or "nothing")
PY
    rm -f "$report"

    # 3. The project for the local run (local Spark, delta-rs, offline weights, pytest), constrained to the pins.
    t=$(date +%s)
    local_pins="$VENV/local-pins.txt"
    { pins "$PINS"; echo "$LOCAL_PINS"; } > "$local_pins"
    "$VENV/bin/python" -m pip install -q -c "$local_pins" -e "$REPO[local,dev]"
    say "project (editable, [local,dev]) installed in $(secs "$t") s"
    check_pins local
    "$VENV/bin/python" -m pip check || fail "pip check"
    echo "$want" > "$STAMP"
    say "env built in $(secs "$t_build") s"
else
    say "reusing $VENV (built from the same pins and requirements)"
    # Built from another clone, maybe: the editable install points at this one (no dependency changes).
    "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO"
    # The editable install's metadata may be stale if setup.py moved on (caught by the stamp) -- the pins must hold.
    check_pins local
fi

"$VENV/bin/python" -c "
import sys, pyspark, mlflow, torch, transformers, sentence_transformers, numpy, pandas, pyarrow
print('[runtime] python', sys.version.split()[0], 'pyspark', pyspark.__version__, 'mlflow', mlflow.__version__,
      'torch', torch.__version__, 'transformers', transformers.__version__,
      'sentence-transformers', sentence_transformers.__version__, 'numpy', numpy.__version__,
      'pandas', pandas.__version__, 'pyarrow', pyarrow.__version__)"

# The fast checks under the runtime's transformers 4.51.3 too (Qwen2-Audio's class, dtype keyword, omni guard).
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$REPO/tests/deploy/test_runtime_env.py" || fail "tests/deploy/test_runtime_env.py under $VENV"

source "$REPO/.ci/pipeline.sh"  # GRID and run_pipeline: the same run as `make summary-shape`

WORK_ROOT="$(mktemp -d -t captionrec-runtime.XXXXXX)"
if [[ "${RUNTIME_KEEP_WORK:-0}" == 1 ]]; then say "working dirs kept under $WORK_ROOT"; else trap 'rm -rf "$WORK_ROOT"' EXIT; fi

run_pipeline "$VENV" "$WORK_ROOT/runtime" runtime
# The stage summaries as the runtime env printed them (one screen each).
"$VENV/bin/python" - "$WORK_ROOT/runtime/summaries.json" <<'PY'
import json, sys
from captionrec.cli import format_summary

text, dec, pos = open(sys.argv[1]).read(), json.JSONDecoder(), 0
while text[pos:].strip():
    pos += len(text[pos:]) - len(text[pos:].lstrip())
    summary, end = dec.raw_decode(text, pos)
    pos = end
    print(format_summary(summary), flush=True)
PY

# The same shape as the main environment's summaries: the committed .ci/summary_shape.json (written by
# `make summary-shape` from a .venv run of the same pipeline). RUNTIME_MAIN=1 also runs the main environment here and
# compares the two runs directly (5-6 min more).
"$VENV/bin/python" "$REPO/.ci/summary_shape.py" --golden "$REPO/.ci/summary_shape.json" "$WORK_ROOT/runtime/summaries.json" \
    || fail "the runtime's summaries differ in shape from .ci/summary_shape.json: if a summary changed on purpose," \
            "run 'make summary-shape' and commit the file"
if [[ "${RUNTIME_MAIN:-0}" == 1 ]]; then
    [[ -x "$MAIN_VENV/bin/captionrec" ]] || fail "main environment $MAIN_VENV missing: run 'make install' first"
    run_pipeline "$MAIN_VENV" "$WORK_ROOT/main" main
    "$VENV/bin/python" "$REPO/.ci/summary_shape.py" "$WORK_ROOT/main/summaries.json" "$WORK_ROOT/runtime/summaries.json"
fi
say "OK: $runtime_name libraries: install, pins, pip check, pipeline and summary shape"
