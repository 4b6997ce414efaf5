"""The planner's estimate against a measured run, component by component, on small configurations.

    python -m memopt.harness.bench.memory_check            # a Markdown table (docs/memory.md)

Each row profiles two training steps twice: with fake tensors (estimate) and on real CPU tensors
(measure), and reports the largest relative difference over the components and that of the peak.
"""

from __future__ import annotations

import argparse

from memopt.harness.memory.profile import estimate, measure
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import preset_workload

CONFIGS = [
    ("tiny", "adamw", 16, Techniques()),
    ("tiny", "adamw_snsm", 16, Techniques(checkpointing=True)),
    ("tiny", "adamw8bit", 16, Techniques(microbatches=4)),
    ("tiny", "adamw", 16, Techniques(precision="bf16-autocast")),
    ("tiny", "adamw", 16, Techniques(precision="bf16-master", sparsity=0.5)),
    ("small", "adamw", 16, Techniques()),
    ("small", "adamw_snsm", 16, Techniques(microbatches=2, checkpointing=True, precision="bf16-sr")),
    ("wrn-10-2", "sgd", 64, Techniques()),
    ("wrn-16-2", "adamw_snsm", 64, Techniques(microbatches=4, checkpointing=True)),
    ("wrn-16-2", "adamw8bit", 64, Techniques(precision="bf16-sr", sparsity=0.8)),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    header = "| model | optimizer | batch | techniques | measured peak MiB | estimated peak MiB | peak diff |"
    print(header + " worst component diff |")
    print("| --- | --- | ---: | --- | ---: | ---: | ---: | --- |")
    for preset, optimizer, batch, techniques in CONFIGS:
        workload = preset_workload(preset, seq_len=128 if preset == "small" else 64, vocab_size=2048)
        measured = measure(workload, optimizer, batch_size=batch, techniques=techniques)
        estimated = estimate(workload, optimizer, batch_size=batch, techniques=techniques)
        diffs = {
            key: abs(estimated.components[key] - value) / value for key, value in measured.components.items() if value
        }
        worst = max(diffs, key=diffs.get)
        peak = abs(estimated.peak - measured.peak) / measured.peak
        print(
            f"| {preset} | {optimizer} | {batch} | {techniques.label()} | {measured.peak / 2**20:.2f} | "
            f"{estimated.peak / 2**20:.2f} | {100 * peak:.1f}% | {worst} {100 * diffs[worst]:.1f}% |",
            flush=True,
        )


if __name__ == "__main__":
    main()
