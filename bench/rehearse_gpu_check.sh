#!/usr/bin/env bash
# Rehearse the GPU check (bench/gpu_check.sh) on a CPU machine, in an environment built like the GPU
# machine's image, so the first run on the device is not its first run anywhere.
#   bash bench/rehearse_gpu_check.sh [OUT_DIR]          (default results/gpu-rehearsal)
#
# The image (the H200 machine): python3 only (Python 3.12; `python` may not exist), torch 2.11 (CUDA
# 13), triton 3.6, numpy, pandas, pytest, pytest-xdist, hypothesis, matplotlib, setuptools, pip with no
# index, no network, a cold Triton cache. Here: a fresh venv of Python 3.11 (the CPU torch wheel this
# machine carries is cp311 only) with torch==2.13.0 (its CPU build: torch 2.11's CUDA wheel cannot be
# had here), triton==3.6.0, numpy, pandas, pytest, pytest-xdist, hypothesis, matplotlib (and the pytest
# plugins the image has that load into every run: pytest-benchmark, pytest-timeout), and nothing
# else of the project's own dependencies: tqdm (which the image does have) is left out on purpose, so
# the preflight must name it and the check must run without it. The venv's `python` is removed and
# PATH holds the venv and /usr/bin, /bin only, so `python3` is the only interpreter name; the check
# then runs with PIP_NO_INDEX=1 (and no pip configuration), an empty TRITON_CACHE_DIR, no CUDA
# device and a clean environment (env -i).
#
# Without CUDA the CUDA stages skip with their reason and the tests only collect; the preflight, the
# install, the SASS stage (real ahead-of-time compiles of the rated builds for the device's sm_90 on a
# cold cache) and the summary, rewritten after every stage, run for real and end with the table.
#
# REHEARSE_REUSE=1 keeps a venv built before (default: built anew, ~70 s); REHEARSE_VENV picks its
# folder; REHEARSE_PYTHON the base interpreter (python3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/gpu-rehearsal}"
VENV="${REHEARSE_VENV:-${TMPDIR:-/tmp}/lstm-triton-gpu-image}"
BASE="${REHEARSE_PYTHON:-python3.11}"
# (pytest-benchmark, pytest-timeout: plugins the image has, which load into every pytest run)
PACKAGES=(torch==2.13.0 triton==3.6.0 numpy pandas pytest pytest-xdist hypothesis matplotlib pytest-benchmark
          pytest-timeout)
T0=$(date +%s)

if [ "${REHEARSE_REUSE:-0}" != 1 ] || [ ! -x "$VENV/bin/python3" ]; then
  rm -rf "$VENV"
  "$BASE" -m venv "$VENV"
  # (this machine's pip configuration names local index folders that do not all exist: not worth a line each)
  "$VENV/bin/python3" -m pip install --quiet "${PACKAGES[@]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
  rm -f "$VENV/bin/python"  # python3 only, as on the image
  echo "rehearse: image-like venv $VENV built in $(( $(date +%s) - T0 )) s: ${PACKAGES[*]}"
fi
"$VENV/bin/python3" -m pip uninstall --quiet --yes lstm-triton tqdm >/dev/null 2>&1 || true
rm -rf "$OUT"
CACHE="$(mktemp -d)"  # an empty Triton cache
IMAGE_ENV=(env -i HOME="$HOME" PATH="$VENV/bin:/usr/bin:/bin" LANG=C.UTF-8 PIP_NO_INDEX=1
           PIP_CONFIG_FILE=/dev/null TRITON_CACHE_DIR="$CACHE" CUDA_VISIBLE_DEVICES="")
"${IMAGE_ENV[@]}" bash -c 'command -v python >/dev/null && { echo "rehearse: python exists: $(command -v python)"; exit 1; }
                           echo "rehearse: interpreters on PATH: python3 -> $(command -v python3); python: none"'

T1=$(date +%s)
set +e
"${IMAGE_ENV[@]}" bash bench/gpu_check.sh "$OUT"
status=$?
set -e
echo "rehearse: bench/gpu_check.sh exited $status after $(( $(date +%s) - T1 )) s (Triton cache $CACHE:" \
     "$(find "$CACHE" -name '*.cubin' | wc -l) cubins); files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
exit "$status"
