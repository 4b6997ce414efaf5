"""Tokens/s of ``memopt train``'s loop against a bare PyTorch loop on the same model, data and optimizer.

Both loops train the same freshly initialised model (same preset and seed) on the same batches (the
harness's tokenized data, the same block order) with the same registry optimizer and gradient clipping.
The bare loop is forward, backward, ``clip_grad_norm_``, ``step``, ``zero_grad`` and nothing else; the
harness loop is :meth:`memopt.harness.train.loop.Trainer.run` with everything it does per step (LR schedule, loss
and gradient-norm checks, JSON Lines metrics, limit checks, progress-bar bookkeeping), with checkpoints
off.

Two figures per loop: the median time of one loop iteration (for the harness, the difference of
consecutive ``elapsed`` stamps in its metrics, so all per-step work is inside) and the wall-clock rate over
the whole run (the harness's end-of-run evaluation subtracted). The median is the headline: on a shared
machine other processes cause multi-second stalls that hit a few iterations, which the median ignores
and the wall-clock rate does not. Runs alternate (bare, harness, harness, bare, ...) over several rounds
after one discarded warm-up pair. Usage::

    PYTHONPATH=src python scripts/bench_harness_overhead.py --preset small --steps 40 --rounds 8 --threads 1
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.config import make_config
from memopt.harness.train.data import TokenBatches, prepare_data
from memopt.harness.train.loop import Trainer
from memopt.harness.train.metrics import METRICS_NAME, read_metrics
from memopt.harness.train.models import build_model, model_config


def bare_loop(config, data, steps: int) -> tuple[float, float]:
    """(median iteration seconds, wall-clock tokens/s) of a plain loop over the same model, batches and
    optimizer."""
    model = build_model(model_config(config.preset, None, data.vocab_size, config.seq_len), config.seed)
    hparams = opt_lib.resolve_hparams(config.optimizer, {}, config.lr, model.config.hidden_size)
    optimizer = opt_lib.build(model, config.optimizer, hparams)
    batches = TokenBatches(data.train, config.seq_len, config.batch_size, config.seed)
    model.train()
    times = []
    start = time.perf_counter()
    for step in range(steps):
        began = time.perf_counter()
        inputs = batches.batch(step)
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - began)
    elapsed = time.perf_counter() - start
    return statistics.median(times), steps * config.tokens_per_step / elapsed


def harness_loop(config, data, steps: int, folder: Path) -> tuple[float, float]:
    """(median iteration seconds, wall-clock tokens/s without the final evaluation) of ``Trainer.run``."""
    run_config = dataclasses.replace(config, max_steps=steps, out=str(folder))
    trainer = Trainer(run_config, data)
    start = time.perf_counter()
    trainer.run()
    elapsed = time.perf_counter() - start
    records = read_metrics(folder / METRICS_NAME)
    eval_time = sum(r["eval_time"] for r in records if r["event"] == "eval")
    stamps = [0.0] + [r["elapsed"] for r in records if r["event"] == "train"]
    iterations = [b - a for a, b in itertools.pairwise(stamps)]
    return statistics.median(iterations), steps * config.tokens_per_step / (elapsed - eval_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per timed run")
    parser.add_argument("--rounds", type=int, default=4, help="timed pairs (after one warm-up pair)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    config = make_config(
        args.preset,
        optimizer=args.optimizer,
        eval_every=0,
        eval_batches=1,
        save_checkpoints=False,
        quiet=True,
        cache_dir=args.cache_dir,
    )
    data = prepare_data(config.data_config())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds + 1):
            order = ("bare", "harness") if round_index % 2 == 0 else ("harness", "bare")
            measured = {}
            for kind in order:
                if kind == "bare":
                    measured[kind] = bare_loop(config, data, args.steps)
                else:
                    measured[kind] = harness_loop(config, data, args.steps, Path(tmp) / f"run{round_index}")
            if round_index == 0:
                continue  # warm-up pair: allocator and kernel warm-up, discarded
            row = {
                "bare_median_step_s": measured["bare"][0],
                "harness_median_step_s": measured["harness"][0],
                "bare_wall_tokens_per_s": measured["bare"][1],
                "harness_wall_tokens_per_s": measured["harness"][1],
            }
            row["median_ratio"] = row["bare_median_step_s"] / row["harness_median_step_s"]
            row["wall_ratio"] = row["harness_wall_tokens_per_s"] / row["bare_wall_tokens_per_s"]
            rows.append(row)
            print(
                f"round {round_index}: median step bare {1000 * row['bare_median_step_s']:.1f} ms, harness "
                f"{1000 * row['harness_median_step_s']:.1f} ms (harness/bare tokens/s {row['median_ratio']:.3f}); "
                f"wall bare {row['bare_wall_tokens_per_s']:,.0f} tok/s, harness "
                f"{row['harness_wall_tokens_per_s']:,.0f} tok/s ({row['wall_ratio']:.3f})",
                flush=True,
            )
    tokens = config.tokens_per_step
    summary = {
        "preset": args.preset,
        "optimizer": args.optimizer,
        "steps": args.steps,
        "tokens_per_step": tokens,
        "torch_threads": torch.get_num_threads(),
        "rounds": rows,
        "bare_tokens_per_s": tokens / statistics.median(r["bare_median_step_s"] for r in rows),
        "harness_tokens_per_s": tokens / statistics.median(r["harness_median_step_s"] for r in rows),
        "median_ratio": statistics.median(r["median_ratio"] for r in rows),
        "wall_ratio": statistics.median(r["wall_ratio"] for r in rows),
    }
    print(
        f"over {args.rounds} rounds (median): bare {summary['bare_tokens_per_s']:,.0f} tok/s, harness "
        f"{summary['harness_tokens_per_s']:,.0f} tok/s per median step; harness/bare "
        f"{summary['median_ratio']:.3f} ({(summary['median_ratio'] - 1) * 100:+.1f}%); wall-clock harness/bare "
        f"{summary['wall_ratio']:.3f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
