"""The ``memopt fit`` study: configurations chosen at budgets from generous to 10x below plain AdamW's peak.

For each model: the planner's peak of plain AdamW (fp32, no checkpointing, the recipe's split of the batch),
then :class:`memopt.harness.memory.fit.Fitter` at 1.25x, 1/2, 1/4 and 1/10 of it (one search, its estimates
shared by the budgets), and, where ``--measure`` is given, the chosen configuration's peak measured by a
real run under the live-tensor tracker (two microbatches of its size: the later microbatches of a step
hold the same tensors), for configurations of at most ``--measure-max`` samples per microbatch. Prints a
Markdown table per model.

    PYTHONPATH=src python -m memopt.harness.bench.fit_study --model 130m --measure
"""

from __future__ import annotations

import argparse
import time

from memopt.harness.memory.fit import Fitter, format_bytes
from memopt.harness.memory.profile import estimate, measure
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import preset_workload
from memopt.harness.train.optimizers import resolve_hparams

#: model -> (sequence length, vocabulary, samples per microbatch, microbatches) of plain AdamW
MODELS = {
    "130m": (256, 32000, 128, 4),  # the paper recipe of memopt train
    "1b": (256, 32000, 128, 4),
    "llama-7b": (2048, 32000, 8, 1),
}
FRACTIONS = (1.25, 0.5, 0.25, 0.1)


def study(name: str, measured: bool, measure_max: int = 4) -> list[str]:
    seq, vocab, micro, count = MODELS[name]
    workload = preset_workload(name, seq, vocab)
    plain = estimate(workload, "adamw", batch_size=micro * min(count, 2),
                     techniques=Techniques(microbatches=min(count, 2))).peak  # fmt: skip
    fitter = Fitter(workload, micro * count)
    rows = [
        f"{name}: {fitter.num_params:,} parameters, {micro * count} x {seq} tokens per step; plain AdamW "
        f"({micro} x {count}, fp32) peaks at {format_bytes(plain)} (planner)",
        "| budget | x plain peak | chosen | planner peak | measured peak | loss penalty (nats) | flags |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for fraction in FRACTIONS:
        budget = int(plain * fraction)
        began = time.process_time()
        result = fitter.fit(budget)
        if not result.fits:
            closest = result.closest
            rows.append(f"| {format_bytes(budget)} | {fraction:g} | nothing fits (closest {closest.candidate.label()}, "
                        f"{format_bytes(closest.peak)}) | | | | |")  # fmt: skip
            continue
        best = result.fits[0]
        real = ""
        c = best.candidate
        if measured and c.microbatch <= measure_max:
            hparams = resolve_hparams(c.optimizer, c.hparams(), None, workload.info.get("hidden_size"))
            n = min(c.microbatches, 2)
            real = format_bytes(measure(workload, c.optimizer, hparams, batch_size=c.microbatch * n,
                                        techniques=c.techniques(n)).peak)  # fmt: skip
        nats = best.penalty.nats
        rows.append(
            f"| {format_bytes(budget)} | {fraction:g} | {best.candidate.label()} | {format_bytes(best.peak)} "
            f"| {real} | "
            f"{'unmeasured' if nats is None else f'{nats:+.3f}'} | `{' '.join(best.candidate.train_flags())}` |"
        )
        print(f"  {name} {fraction:g}: {time.process_time() - began:.1f} CPU-s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=tuple(MODELS), required=True)
    parser.add_argument("--measure", action="store_true", help="measure the chosen configurations (real runs)")
    parser.add_argument("--measure-max", type=int, default=4, metavar="N",
                        help="measure only configurations of at most N samples per microbatch (default 4)")
    args = parser.parse_args()
    for name in args.model:
        print("\n".join(study(name, args.measure, args.measure_max)), flush=True)


if __name__ == "__main__":
    main()
