#!/usr/bin/env bash
# Every check that needs a GPU, in one call (device time is short): the CUDA tests, the memory planner
# against the CUDA allocator and the GPU benchmarks. About 5 minutes on one H100.
#
#   bash scripts/gpu_checks.sh            # results under $OUT (the device tool's folder) or runs/gpu_checks
#
# It runs from the repository root with the source tree on PYTHONPATH (nothing is installed), writes
#   device.txt          nvidia-smi, torch's view of the card, the triton/bitsandbytes/torchao versions
#   cuda_tests.log      every test that needs CUDA (they skip on a machine without one): the Triton kernels
#                       against the torch path through the engine's dispatch (tests/kernels/test_triton_kernels.py),
#                       the memory planner within 5% of the allocator (tests/harness/memory/test_profile.py),
#                       the offload paths
#   memory_planner.log  the planner's estimate, the measured peak and the CUDA allocator's peak of a few
#                       optimizers (the figures behind the 5% test, for docs/memory.md)
#   step_time.json      optimizer step time on LLaMA-60M and LLaMA-1B shapes on the GPU: torch fused AdamW,
#                       memopt adamw_sn, adamw_snsm, adamw8bit (Triton and torch path), adamw_snsm8bit,
#                       bitsandbytes and torchao AdamW8bit; ratios to torch.optim.AdamW(fused=True)
#   step_time.log       the same as tables (and the reason of any row skipped)
# and exits non-zero if a CUDA test or a step fails. On a machine without CUDA it says so and stops (exit 3).
#
# FSDP2/NCCL parity: the suite's distributed tests (tests/distributed) run 2 CPU processes over gloo, and
# NCCL refuses two ranks on one GPU, so there is no NCCL run to make on a single card.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-runs/gpu_checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

{ nvidia-smi || true; "$python" -c "import torch, importlib.util as u, importlib.metadata as m; print('torch', torch.__version__, 'cuda', torch.version.cuda); \
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device'); \
[print(p, m.version(p)) for p in ('triton', 'bitsandbytes', 'torchao') if u.find_spec(p)]"; } >"$out/device.txt" 2>&1
cat "$out/device.txt"
if ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"; then
  echo "gpu_checks: no CUDA device here; nothing to check." >&2
  exit 3
fi

status=0
# the CUDA tests: every test whose name or marker mentions cuda (they are skipped on CPU machines)
timeout 180 "$python" -m pytest -q -rs -p no:cacheprovider -k "cuda" tests 2>&1 | tee "$out/cuda_tests.log" || status=1

# the memory planner's estimate (fake tensors) against the real step's peak and the CUDA allocator's
timeout 90 "$python" - <<'PY' 2>&1 | tee "$out/memory_planner.log" || status=1
from memopt.harness.memory.profile import estimate, measure
from memopt.harness.memory.workloads import preset_workload

workload = preset_workload("small", seq_len=128)
print(f"{'optimizer':<16}{'estimate MiB':>14}{'measured MiB':>14}{'allocator MiB':>15}{'estimate/allocator':>20}")
worst = 0.0
for name in ("adamw", "adamw_sn", "adamw8bit", "adamw_snsm8bit"):
    measured = measure(workload, name, batch_size=16, device="cuda")
    estimated = estimate(workload, name, batch_size=16, device="cuda")
    ratio = estimated.peak / measured.allocator_peak
    worst = max(worst, abs(ratio - 1))
    print(f"{name:<16}{estimated.peak / 2**20:>14.1f}{measured.peak / 2**20:>14.1f}"
          f"{measured.allocator_peak / 2**20:>15.1f}{ratio:>20.3f}")
print(f"largest gap between the estimate and the allocator: {100 * worst:.1f}% (target: within 5%)")
PY

timeout 300 "$python" -m memopt.harness.bench.step_time --device cuda --shapes 60m,1b --rounds 5 \
  --json "$out/step_time.json" 2>&1 | tee "$out/step_time.log" || status=1
exit $status
