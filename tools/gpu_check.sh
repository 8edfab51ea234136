#!/usr/bin/env bash
# One run that a session with a lent GPU makes (about 8 minutes on one H100/H200): bench of
# draft and standard (eager, PyTorch grid, compiled), compiled-vs-eager losses, a profile of
# one step per phase, a smoke run of generate/stylize/edit, and a refit of
# backend/perf/calibration.json. Writes OUT/gpu_check.json and OUT/gpu_check.txt; see
# backend/perf/gpu_check.py. Without a CUDA GPU it says so and exits 0.
#   Usage: tools/gpu_check.sh [OUT]     (PY=path/to/python to choose the backend's Python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HF_HUB_OFFLINE=1 exec "$PY" -m backend.perf.gpu_check --out "${1:-gpu_check}"
