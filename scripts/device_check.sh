#!/usr/bin/env bash
# One-shot device check: ONE Markdown table (device, tracking frames/s, training s/step, GFLOP/s, compile times,
# memory) on stdout, progress on stderr. Details and flags: scripts/device_check.py --help.
#
#   scripts/device_check.sh                 # on a GPU / TPU: full sizes, under 8 minutes on one GPU
#   scripts/device_check.sh --tiny          # on CPU: the same code paths at tiny sizes, < 1 min on 2 cores
#                                           # (tests/test_device_check.py)
#
# Python: $PYTHON, else the checkout's .venv/bin/python, else python3. A hard limit of $DEVICE_CHECK_TIMEOUT
# seconds (default 480) interrupts the driver, which then prints the rows it has.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# --tiny: XLA's backend (LLVM) optimisations off, which halves the compile time of the tiny programs, and XLA's
# older loop emitters instead of the fusion emitters (at that level, half the CPU time again for the training
# step; the same HLO program either way).
for arg in "$@"; do
  if [[ "$arg" == "--tiny" ]]; then
    export XLA_FLAGS="${XLA_FLAGS:+$XLA_FLAGS }--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
  fi
done
exec timeout --signal=INT --kill-after=30 "${DEVICE_CHECK_TIMEOUT:-480}" "$python" "$here/device_check.py" "$@"
