"""Peak resident memory and tokens/s of training with the optimizer state on disk against keeping it in RAM.

For each optimizer, two runs in fresh processes, one after the other (same model preset, seed, random
token batches, clipping): ``plain`` (the registry optimizer, state in RAM) and ``disk``
(:func:`memopt.offload.offload` with ``to="disk"``: the state in files, a window of three parameters' state
in memory). Each child builds the model in RAM, runs one warm-up step (it creates the state) and ``--steps``
timed steps, and reports:

* ``peak_rss``: the process's peak resident set size (``ru_maxrss``, the model, gradients, activations and
  whatever state is in memory; the disk tier's files sit in the kernel's page cache, which is not counted);
* ``tokens_per_s`` (wall) and CPU seconds per step (``time.process_time``, all threads);
* for ``disk``: the bytes on disk, and the *stall*: time the training thread waited for the disk tier per
  step (in ``take``/``put``/``drain``: reads not prefetched in time, write-backs not finished), i.e. the cost
  the disk tier adds to a step beyond the update itself.

Usage::

    PYTHONPATH=src python scripts/offload_study.py --preset 130m --steps 3 --path /tmp/offload-study
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def child(args: argparse.Namespace) -> dict:
    from memopt.harness.train.models import build_model, count_parameters, model_config
    from memopt.harness.train.step import causal_lm_loss
    from memopt.offload import offload
    from memopt.registry.specs import build_optimizer
    from memopt.state.accounting import state_bytes

    torch.set_num_threads(args.threads)
    config = model_config(args.preset, None, args.vocab_size, args.seq_len)
    model = build_model(config, 0)
    hidden = config.hidden_size
    hparams = {"rank": hidden // 4} if args.optimizer in ("adamw_snsm", "adamw_snsm8bit") else {}
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.mode == "disk":
        optimizer = offload(args.optimizer, model, "disk", args.path, max_grad_norm=1.0, **hparams)
        stall = {"s": 0.0}
        store = optimizer.store
        for method in ("take", "put", "drain"):
            original = getattr(store, method)

            def timed(*a, _original=original, **k):
                began = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    stall["s"] += time.perf_counter() - began

            setattr(store, method, timed)
    else:
        optimizer = build_optimizer(model, args.optimizer, **hparams)
    generator = torch.Generator().manual_seed(1)
    walls, cpus, stalls = [], [], []
    for step in range(args.steps + 1):
        inputs = torch.randint(config.vocab_size, (args.batch, args.seq_len), generator=generator)
        wall, cpu = time.perf_counter(), time.process_time()
        if args.mode == "disk":
            stall["s"] = 0.0
        causal_lm_loss(model, inputs).backward()
        if args.mode != "disk":
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step:  # the first step creates the state: not timed
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
            stalls.append(stall["s"] if args.mode == "disk" else 0.0)
    tokens = args.batch * args.seq_len
    result = {
        "optimizer": args.optimizer,
        "mode": args.mode,
        "params": count_parameters(model),
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_after_model": rss_model,
        "step_wall_s": walls,
        "step_cpu_s": cpus,
        "tokens_per_s": tokens * len(walls) / sum(walls),
        "stall_s": stalls,
    }
    if args.mode == "disk":
        result["state_on_disk"] = optimizer.store.bytes_on_disk()
        result["store_peak_resident"] = optimizer.store.peak_resident
        optimizer.close()
    else:
        result["state_bytes"] = state_bytes(optimizer)
    return result


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def table(results: list[dict]) -> str:
    """The results as a markdown table: one row per optimizer, plain against disk (MiB = 2**20 bytes)."""
    mib = 2**20
    rows = [
        "| optimizer | state MiB | peak RSS plain | peak RSS disk | disk / plain | CPU s/step plain | CPU s/step disk "
        "| tokens/s plain | tokens/s disk | stall s/step | disk window MiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["optimizer"], r["mode"]): r for r in results}
    for name in dict.fromkeys(r["optimizer"] for r in results):
        plain, disk = by[(name, "plain")], by[(name, "disk")]
        rows.append(
            f"| {name} | {disk['state_on_disk'] / mib:,.0f} | {plain['peak_rss'] / mib:,.0f} | "
            f"{disk['peak_rss'] / mib:,.0f} | {disk['peak_rss'] / plain['peak_rss']:.2f} | "
            f"{_mean(plain['step_cpu_s']):.2f} | {_mean(disk['step_cpu_s']):.2f} | {plain['tokens_per_s']:.1f} | "
            f"{disk['tokens_per_s']:.1f} | {_mean(disk['stall_s']):.2f} | {disk['store_peak_resident'] / mib:,.0f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="130m")
    parser.add_argument("--optimizers", nargs="+", default=["adamw", "adamw8bit", "adamw_snsm"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=32000, help="tokenizer vocabulary (presets that take it)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--path", default=tempfile.gettempdir(), help="folder on the disk that holds the state")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--table", default=None, metavar="JSON", help="only print the table of a results file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.table:
        with open(args.table) as file:
            print(table(json.load(file)))
        return
    os.makedirs(args.path, exist_ok=True)
    results = []
    for name in args.optimizers:
        for mode in ("plain", "disk"):
            flags = {"--optimizer": name, "--mode": mode, "--preset": args.preset, "--steps": args.steps,
                     "--batch": args.batch, "--seq-len": args.seq_len, "--vocab-size": args.vocab_size,
                     "--threads": args.threads, "--path": args.path}  # fmt: skip
            command = [sys.executable, __file__, "--child", *(str(x) for item in flags.items() for x in item)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as file:
            json.dump(results, file, indent=2)
    print(table(results))


if __name__ == "__main__":
    main()
