#!/usr/bin/env bash
# The GPU check, for a machine with a CUDA GPU, torch and triton preinstalled, and no network.
#   bash bench/gpu_check.sh [OUT_DIR]      (or OUT=... ; default results/gpu; PYTHON=... picks the interpreter)
# Prints a preflight line first (interpreter, torch/triton/CUDA/GPU versions, missing modules by name),
# installs this checkout without dependencies (its output shown when it fails), then runs
# bench/gpu_check.py: the CUDA tests on every core (pytest-xdist), the persistent level's race check,
# per-step timings of every level against nn.LSTM in fp32-IEEE, fp32-TF32 and bf16 and against nn.GRU
# in fp32-TF32 and bf16, the variable-length case, end-to-end d2l tokens/s and the SASS tensor-core
# columns of the rated builds, in under 8 minutes on a cold Triton cache. Writes everything to OUT_DIR
# (8 files at most); summary.txt is rewritten after every stage, so a run stopped at any point still
# leaves its table, and the table is printed last. A hung kernel cannot hang the script: every stage
# has a deadline, and the whole run one. Without a GPU (bench/rehearse_gpu_check.sh) the CUDA stages
# skip with their reason; the preflight, the install, the SASS stage and the summary run for real.
#
# LSTM_TRITON_CHECK_BARRIER=1 (a host read after every persistent call) is set by bench/gpu_check.py
# for the stages that check correctness (tests, race) only, never for the timed ones.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-results/gpu}}"
mkdir -p "$OUT"
unset TRITON_INTERPRET LSTM_TRITON_CHECK_BARRIER
START=$(date +%s)
# The image may have python3 only (no `python`).
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif command -v python3 >/dev/null 2>&1; then PY=python3
else PY=python; fi
LOG="$OUT/gpu_check.log"
: > "$LOG"

# Preflight: one line, first. Exit 3 only when torch or triton cannot be imported at all.
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG"
import importlib, os, platform, shutil, subprocess, sys
missing, v = [], {}
for mod in ("torch", "triton", "numpy", "pandas", "pytest", "xdist", "hypothesis", "matplotlib", "tqdm", "setuptools"):
    try:
        v[mod] = getattr(importlib.import_module(mod), "__version__", "?")
    except Exception as exc:  # noqa: BLE001 - any import failure is a missing module here
        missing.append(f"{mod} ({type(exc).__name__})")
gpu = "no CUDA device"
if "torch" in v:
    import torch
    cuda = torch.version.cuda or "none (CPU build)"
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        p = torch.cuda.get_device_properties(0)
        gpu = f"{n}× {p.name} sm_{p.major}{p.minor} {p.multi_processor_count} SMs {p.total_memory / 2**30:.0f} GiB"
else:
    cuda = "?"
smi = shutil.which("nvidia-smi")
driver = "nvidia-smi not found"
if smi:
    r = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
    driver = "driver " + (r.stdout.strip().splitlines() or ["?"])[0] if r.returncode == 0 else f"nvidia-smi exited {r.returncode}"
cache = os.environ.get("TRITON_CACHE_DIR") or os.path.expanduser("~/.triton/cache")
entries = len(os.listdir(cache)) if os.path.isdir(cache) else 0
print(f"preflight: python {platform.python_version()} ({sys.executable}) | torch {v.get('torch', '-')} CUDA {cuda} | "
      f"triton {v.get('triton', '-')} | {gpu} | {driver} | {os.cpu_count()} cores | triton cache {cache} "
      f"({entries} entries{', cold' if not entries else ''}) | "
      + ", ".join(f"{m} {v[m]}" for m in ("numpy", "pandas", "pytest", "xdist", "hypothesis", "matplotlib", "tqdm") if m in v)
      + " | missing: " + (", ".join(missing) or "none"), flush=True)
sys.exit(3 if "torch" in " ".join(missing) or "triton" in " ".join(missing) else 0)
EOF
[ "${PIPESTATUS[0]}" = 3 ] && { echo "gpu_check: torch or triton missing; nothing can run" | tee -a "$LOG"; exit 3; }

# Install without network; its output is shown when it fails, kept in the log either way.
SETUP="$(mktemp)"
SHADOW=""
if timeout 120 "$PY" -m pip install --no-deps --no-build-isolation --no-index -e . > "$SETUP" 2>&1; then
  echo "setup: pip install -e . ok ($(( $(date +%s) - START )) s since start)" | tee -a "$LOG"
  cat "$SETUP" >> "$LOG"
else
  echo "setup: pip install -e . FAILED; its output:" | tee -a "$LOG"
  tee -a "$LOG" < "$SETUP"
  # From the source tree: lstm_triton.kernels lives in kernels/ (pyproject's package-dir), so a shadow
  # package links it in beside lstm_triton's own files.
  SHADOW="$(mktemp -d)/src"
  mkdir -p "$SHADOW/lstm_triton"
  for f in "$PWD"/lstm_triton/*; do ln -s "$f" "$SHADOW/lstm_triton/"; done
  ln -s "$PWD/kernels" "$SHADOW/lstm_triton/kernels"
  echo "setup: running from the source tree instead (PYTHONPATH $SHADOW)" | tee -a "$LOG"
fi
rm -f "$SETUP"
export PYTHONPATH="${SHADOW:+$SHADOW:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import lstm_triton.kernels" >> "$LOG" 2>&1 \
  || { echo "setup: lstm_triton does not import:" | tee -a "$LOG"; "$PY" -c "import lstm_triton.kernels" 2>&1 | tail -5 | tee -a "$LOG"; }

# The stages' own deadlines (bench/gpu_check.py GPU_DEADLINES) add up to 405 s; this guard only
# catches what they cannot, and leaves the run, set-up included, under 8 minutes.
GUARD=${GPU_CHECK_GUARD_S:-435}
export GPU_CHECK_SETUP_S=$(( $(date +%s) - START ))
export PYTHONUNBUFFERED=1
timeout --kill-after=5 "$GUARD" "$PY" -m bench.gpu_check --out "$OUT" 2>&1 | tee -a "$LOG"
status=${PIPESTATUS[0]}
if [ "$status" = 124 ] || [ "$status" = 137 ]; then
  echo "gpu_check: TIMEOUT after $GUARD s (deadlock guard); partial results in $OUT; the last summary written:" \
    | tee -a "$LOG" >&2
  [ -f "$OUT/summary.txt" ] && cat "$OUT/summary.txt"
fi
echo "gpu_check: exit $status after $(( $(date +%s) - START )) s" >> "$LOG"
exit "$status"
