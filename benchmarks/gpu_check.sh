#!/usr/bin/env bash
# The learned proposer on a lent GPU, in one run of about 6 minutes (benchmarks/gpu_check.py says what it does).
#
# Here, once per session that is lent a device (status: can_start_another true):
#   benchmarks/gpu_check.sh prepare          # writes .gpu/ (ignored by git, about 40 MiB)
# Then one call of the device tool:
#   run(command="bash benchmarks/gpu_check.sh run", carry=[".gpu"], timeout_s=540)
# and put the table it prints in the README. MINUTES (default 4) is train-proposer's --max-minutes there.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  prepare)
    .venv/bin/python benchmarks/gpu_check.py prepare "${@:2}"
    ;;
  run)
    # the device's image has torch, timm, OpenCV, scikit-learn ...; the rest travels as wheels in .gpu/whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    python3 benchmarks/gpu_check.py run --minutes "${MINUTES:-4}" "${@:2}"
    ;;
  *)
    echo "usage: benchmarks/gpu_check.sh prepare | run" >&2
    exit 2
    ;;
esac
