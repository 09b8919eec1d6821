#!/usr/bin/env bash
# Runs the exactness tests under tflite-runtime, which needs numpy<2: a separate venv
# with numpy 1, tflite-runtime and the package, TILEFLEET_RUNTIME=tflite_runtime forcing
# node/runtime.py to use it. Skips with a reason where tflite-runtime has no wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TFLITE_VENV:-/tmp/tilefleet-tflite-venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/pip" install -q 'numpy<2' tflite-runtime; then
  echo "tflite-runtime: SKIPPED (no wheel for this platform/python)"
  exit 0
fi
"$venv/bin/pip" install -q -e '.[test]' 'numpy<2'
TILEFLEET_RUNTIME=tflite_runtime "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  -m "not slow and not e2e" "$@" tests/planner/test_cut_exact.py tests/planner/test_tile_exact.py
