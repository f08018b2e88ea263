#!/usr/bin/env bash
# The petastorm loader path, in its own pinned environment (petastorm 0.13.1 needs pyarrow <= 14,
# hence pyspark 4.0.x; the main environment has pyarrow 25 / pyspark 4.2). Builds the venv when it is
# missing or its pins changed (the pyspark sdist builds a wheel: keep pip's cache between runs), installs
# captionrec into it with --no-deps, and runs the petastorm-marked tests.
#   PETASTORM_VENV   where the venv lives (default: <repo>/.venv-petastorm)
#   PYTHON           the interpreter to build it from (default: python3.11, else python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${PETASTORM_VENV:-$REPO/.venv-petastorm}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
PINS="$REPO/constraints/petastorm.txt"
STAMP="$VENV/.captionrec-pins.sha256"
want="$(sha256sum "$PINS" | cut -d' ' -f1)"

if [[ ! -x "$VENV/bin/python" || ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "[petastorm] building $VENV from $PINS"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip wheel "setuptools<70"
    "$VENV/bin/python" -m pip install -q -r "$PINS"
    # petastorm's own metadata pins setuptools<70 and lets pip pick an old petastorm next to torch 2.13:
    # its real dependencies are in $PINS, so it goes in without them.
    "$VENV/bin/python" -m pip install -q --no-deps petastorm==0.13.1
    echo "$want" > "$STAMP"
fi
# The project itself, without its (modern) dependency set.
"$VENV/bin/python" -m pip install -q --no-deps -e "$REPO" >/dev/null

export PYSPARK_PYTHON="$VENV/bin/python" PYSPARK_DRIVER_PYTHON="$VENV/bin/python" SPARK_LOCAL_IP=127.0.0.1
export HF_HUB_OFFLINE=1
"$VENV/bin/python" -c "import petastorm, pyarrow, pyspark; print('[petastorm] petastorm', petastorm.__version__, 'pyarrow', pyarrow.__version__, 'pyspark', pyspark.__version__)"

set +e
"$VENV/bin/python" -m pytest -m petastorm -q tests/training/test_petastorm_loader.py tests/deploy/test_bundle.py "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
    echo "[petastorm] no petastorm tests were collected" >&2
    exit 1
fi
exit $rc
