#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, torch and triton preinstalled, and no network.
#   bash bench/gpu_check.sh [OUT_DIR]      (or OUT=... ; default results/gpu)
# Installs this checkout without dependencies, runs the CUDA tests, the persistent level's race
# and deadlock checks and a short timing table (under 8 minutes), writes everything to OUT_DIR and
# prints the summary table last. A hung kernel cannot hang the script: every stage has a deadline.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-results/gpu}}"
mkdir -p "$OUT"
unset TRITON_INTERPRET
export LSTM_TRITON_CHECK_BARRIER=1  # a timed-out persistent barrier raises on the host
PY="${PYTHON:-python}"
{ nvidia-smi; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/environment.txt" 2>&1
"$PY" -m pip install --no-deps --no-build-isolation -e . > "$OUT/pip.log" 2>&1 \
  || echo "pip install failed (see $OUT/pip.log); running from the source tree" >&2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout --kill-after=10 450 "$PY" -m bench.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_check: TIMEOUT after 450 s (deadlock guard); partial results in $OUT" >&2
exit "$status"
