#!/usr/bin/env bash
# `make summary-shape`: run the shape-check pipeline (.ci/pipeline.sh) under the main environment (.venv) and write
# the shape of its stage summaries to .ci/summary_shape.json, the reference `make test-runtime` checks the runtime
# environment's run against. Run it (and commit the file) when a stage summary gains or loses a key on purpose.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
say() { echo "[summary-shape] $*"; }
fail() { echo "[summary-shape] FAIL: $*" >&2; exit 1; }
secs() { echo $(( $(date +%s) - $1 )); }
source "$REPO/.ci/pipeline.sh"
[[ -x "$REPO/.venv/bin/captionrec" ]] || fail "run 'make install' first"
WORK="$(mktemp -d -t captionrec-shape.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
run_pipeline "$REPO/.venv" "$WORK/main" main
"$REPO/.venv/bin/python" "$REPO/.ci/summary_shape.py" --write "$REPO/.ci/summary_shape.json" "$WORK/main/summaries.json"
