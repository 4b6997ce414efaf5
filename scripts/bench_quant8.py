"""Where an 8-bit optimizer step's time goes on CPU: the parts of memopt's 8-bit kernels, timed in one run.

One float32 tensor of ``--numel`` elements (default 58,073,600, LLaMA-60M's parameter count) and, in
interleaved rounds, medians of:

* ``torch.optim.AdamW(fused=True)`` on it (the baseline: 28 bytes per element at memory bandwidth);
* memopt's ``adamw8bit`` on it (the fused C kernel: 16 bytes per element);
* a float32 copy of it (8 bytes per element: the machine's memory speed, for scale);
* the 8-bit store of a moment-like tensor (block maxima and codes, ``memopt.kernels.quant8``) and its load;
* the nearest-code search alone on values already in [-1, 1], on one thread, by each of its three paths
  (``quant8.nearest_codes``: the decision from positions the kernels use, the exact 8-lane search, the
  one-element search).

An AdamW8bit step requantizes two moments, so twice the store's time is a floor under the fused kernel's
step for as long as the codes must equal the reference path's. Usage::

    PYTHONPATH=src python scripts/bench_quant8.py --threads 2 --rounds 7
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

import memopt
from memopt.kernels import quant8
from memopt.state.formats import Blockwise8bit


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--numel", type=int, default=58_073_600)
    args = parser.parse_args(argv)
    if not quant8.available():
        raise SystemExit("the 8-bit C kernel is not built (no C compiler?): nothing to time")
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    n = args.numel

    def parameter() -> torch.nn.Parameter:
        p = torch.nn.Parameter(torch.randn(n, generator=generator) * 0.02)
        p.grad = torch.randn(n, generator=generator) * 1e-3
        return p

    fused_param, eight_bit_param = parameter(), parameter()
    fused = torch.optim.AdamW([fused_param], lr=1e-3, weight_decay=0.0, fused=True)
    eight_bit = memopt.AdamW8bit([eight_bit_param], lr=1e-3, weight_decay=0.0)
    moment = torch.randn(n, generator=generator) * 1e-3  # like a first moment: signed, spread over decades
    normalized = (moment / moment.abs().max()).contiguous()
    entry = Blockwise8bit(True).create(moment, (n,), sharded=False)
    source, target = torch.randn(n, generator=generator), torch.empty(n)
    codes = torch.empty(n, dtype=torch.uint8)
    store = quant8.KERNEL.store
    load = quant8.KERNEL.load
    rows: dict[str, Callable[[], object]] = {
        "torch AdamW fused step": fused.step,
        "memopt adamw8bit step (C kernel)": eight_bit.step,
        "float32 copy (8 B/element)": lambda: target.copy_(source),
        "8-bit store (maxima + codes)": lambda: store(entry.codes, entry.maxima, entry.format, moment),
        "8-bit load": lambda: load(entry.codes, entry.maxima, entry.format),
        **{
            f"nearest codes, {path.replace('_', ' ')}, 1 thread": (
                lambda path=path: quant8.nearest_codes(normalized, True, path=path, out=codes)
            )
            for path in ("fast_vector", "exact_vector", "one_element")
        },
    }
    for fn in rows.values():  # warm-up: lazy state, kernel builds, first touch of outputs
        fn()
        fn()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            samples[name].append(_timed(fn))
    baseline = statistics.median(samples["torch AdamW fused step"])
    print(f"{n:,} float32 elements; torch {torch.__version__}; {args.threads} threads; {platform.machine()}; "
          f"median of {args.rounds} interleaved rounds")  # fmt: skip
    print(f"{'part':<44}{'ms':>9}{'ns/element':>12}{'x fused':>9}")
    for name, values in samples.items():
        ms = statistics.median(values)
        print(f"{name:<44}{ms:9.1f}{ms * 1e6 / n:12.3f}{ms / baseline:9.2f}")


if __name__ == "__main__":
    main()
