#!/usr/bin/env bash
# Every check that needs a GPU, in one call (device time is short): the CUDA tests and the GPU benchmarks.
#
#   bash scripts/gpu_checks.sh            # results under $OUT (the device tool's folder) or runs/gpu_checks
#
# It runs from the repository root with the source tree on PYTHONPATH (nothing is installed), writes
#   device.txt        nvidia-smi and torch's view of the card
#   cuda_tests.log    every test that needs CUDA (they skip on a machine without one)
#   step_time.json    optimizer step time on LLaMA-60M shapes on the GPU, ratios to torch.optim.AdamW(fused=True)
#   step_time.log     the same as a table
# and exits non-zero if a CUDA test fails. On a machine without CUDA it says so and stops (exit 3).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

{ nvidia-smi || true; "$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')"; } >"$out/device.txt" 2>&1
cat "$out/device.txt"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"; then
  echo "gpu_checks: no CUDA device here; nothing to check." >&2
  exit 3
fi

status=0
# the CUDA tests: every test whose name or marker mentions cuda (they are skipped on CPU machines)
"$python" -m pytest -q -rs -p no:cacheprovider -k "cuda" tests 2>&1 | tee "$out/cuda_tests.log" || status=1

timeout 300 "$python" -m memopt.harness.bench.step_time --device cuda --rounds 7 --json "$out/step_time.json" \
  2>&1 | tee "$out/step_time.log" || status=1
exit $status
