#!/usr/bin/env bash
# One-shot GPU check: install c2lite editable (no dependencies), then run gpu_check.py.
# Output is also written to $OUT/gpu_check.log when $OUT is set. Exit status: gpu_check.py's.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
if ! "$PY" -m pip install --no-deps --no-build-isolation -e . >/dev/null; then
    echo "gpu_check.sh: 'pip install --no-deps --no-build-isolation -e .' failed" >&2
    exit 3
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    PYTHONUNBUFFERED=1 "$PY" benchmarks/gpu_check.py "$@" 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
PYTHONUNBUFFERED=1 exec "$PY" benchmarks/gpu_check.py "$@"
