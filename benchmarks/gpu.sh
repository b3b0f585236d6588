#!/usr/bin/env bash
# The prepared GPU check of issue 16 (see benchmarks/gpu.py and docs/benchmarks.md): one JSON line on stdout,
# progress on stderr; under 8 minutes on one H100/H200. Usage: bash benchmarks/gpu.sh [extra gpu.py options]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(pwd)/src"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
exec timeout 470 python benchmarks/gpu.py --device cuda --budget-s 400 "$@"
