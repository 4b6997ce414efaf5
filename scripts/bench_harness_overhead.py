"""Tokens/s of ``memopt train``'s loop against a bare PyTorch loop on the same model, data and optimizer.

Both loops train the same freshly initialised model (same preset and seed) on the same batches (the
harness's tokenized data, the same block order) with the same registry optimizer and gradient clipping.
The bare loop is forward, backward, ``clip_grad_norm_``, ``step``, ``zero_grad`` and nothing else; the
harness loop is :meth:`memopt.train.loop.Trainer.run` with everything it does per step (LR schedule, loss
and gradient-norm checks, JSON Lines metrics, limit checks, progress bar when on a terminal), with
checkpoints off and its single end-of-run evaluation subtracted.

Runs alternate (bare, harness, harness, bare, ...) over several rounds after one discarded warm-up pair, and
each round's ratio is reported, so slow drifts of a shared machine hit both sides alike. Usage::

    PYTHONPATH=src python scripts/bench_harness_overhead.py --preset small --steps 60 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from memopt.train import optimizers as opt_lib
from memopt.train.config import make_config
from memopt.train.data import TokenBatches, prepare_data
from memopt.train.loop import Trainer
from memopt.train.metrics import METRICS_NAME, read_metrics
from memopt.train.models import build_model, model_config


def bare_loop(config, data, steps: int) -> float:
    """Tokens/s of a plain loop over the same model, batches and optimizer."""
    model = build_model(model_config(config.preset, None, data.vocab_size, config.seq_len), config.seed)
    hparams = opt_lib.resolve_hparams(config.optimizer, {}, config.lr, model.config.hidden_size)
    optimizer = opt_lib.build(model, config.optimizer, hparams)
    batches = TokenBatches(data.train, config.seq_len, config.batch_size, config.seed)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        inputs = batches.batch(step)
        loss = model(input_ids=inputs, labels=inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    elapsed = time.perf_counter() - start
    return steps * config.tokens_per_step / elapsed


def harness_loop(config, data, steps: int, folder: Path) -> float:
    """Tokens/s of ``Trainer.run`` (its end-of-run evaluation excluded)."""
    import dataclasses

    run_config = dataclasses.replace(config, max_steps=steps, out=str(folder))
    trainer = Trainer(run_config, data)
    start = time.perf_counter()
    trainer.run()
    elapsed = time.perf_counter() - start
    eval_time = sum(r["eval_time"] for r in read_metrics(folder / METRICS_NAME) if r["event"] == "eval")
    return steps * config.tokens_per_step / (elapsed - eval_time)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="timed pairs (after one warm-up pair)")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

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
            speeds = {}
            for kind in order:
                if kind == "bare":
                    speeds[kind] = bare_loop(config, data, args.steps)
                else:
                    speeds[kind] = harness_loop(config, data, args.steps, Path(tmp) / f"run{round_index}")
            if round_index == 0:
                continue  # warm-up pair: allocator and kernel warm-up, discarded
            rows.append({**speeds, "ratio": speeds["harness"] / speeds["bare"]})
            print(
                f"round {round_index}: bare {speeds['bare']:,.0f} tok/s, harness {speeds['harness']:,.0f} tok/s, "
                f"harness/bare {speeds['harness'] / speeds['bare']:.3f}",
                flush=True,
            )
    summary = {
        "preset": args.preset,
        "optimizer": args.optimizer,
        "steps": args.steps,
        "tokens_per_step": config.tokens_per_step,
        "torch_threads": torch.get_num_threads(),
        "rounds": rows,
        "median_bare_tokens_per_s": statistics.median(r["bare"] for r in rows),
        "median_harness_tokens_per_s": statistics.median(r["harness"] for r in rows),
        "median_ratio": statistics.median(r["ratio"] for r in rows),
    }
    print(
        f"median over {args.rounds} rounds: bare {summary['median_bare_tokens_per_s']:,.0f} tok/s, harness "
        f"{summary['median_harness_tokens_per_s']:,.0f} tok/s, harness/bare {summary['median_ratio']:.3f} "
        f"({(summary['median_ratio'] - 1) * 100:+.1f}%)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
