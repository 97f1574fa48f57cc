#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, torch and triton preinstalled, and no network.
#   bash bench/gpu_check.sh [OUT_DIR]      (or OUT=... ; default results/gpu)
# Installs this checkout without dependencies, then (bench/gpu_check.py) runs the CUDA tests, the
# persistent level's race and deadlock checks, per-step timings of every level against nn.LSTM in
# fp32-IEEE, fp32-TF32 and bf16 and against nn.GRU in fp32-TF32 and bf16, end-to-end d2l tokens/s and the SASS tensor-core columns, in
# under 8 minutes; writes everything to OUT_DIR (8 files at most) and prints the summary table
# last. A hung kernel cannot hang the script: every stage has a deadline, and the whole run one.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-results/gpu}}"
mkdir -p "$OUT"
unset TRITON_INTERPRET
export LSTM_TRITON_CHECK_BARRIER=1  # a timed-out persistent barrier raises on the host
PY="${PYTHON:-python}"
{ nvidia-smi; "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  "$PY" -m pip install --no-deps --no-build-isolation -e . \
    || echo "pip install failed; running from the source tree"; } > "$OUT/setup.log" 2>&1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The stages' own deadlines add up to 450 s; this one only catches what they cannot.
timeout --kill-after=5 465 "$PY" -m bench.gpu_check --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "gpu_check: TIMEOUT after 465 s (deadlock guard); partial results in $OUT" >&2
exit "$status"
