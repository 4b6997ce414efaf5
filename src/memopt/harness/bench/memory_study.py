"""The memory study: each technique alone and combined, its memory reduction and its cost in quality.

The structure of Sohoni et al. (2019), "Low-Memory Neural Network Training: A Technical Report": a
baseline (float32, the full batch in one pass, no checkpointing, SGD with momentum), then each technique
alone and the combinations, reporting for each the *memory reduction factor* (the baseline's peak
training memory divided by the mix's, both measured by ``memopt memory``'s measure mode on the real
model and batch) and the change in test accuracy (image task) or validation loss (language model).

* ``image``: a WideResNet (:mod:`memopt.harness.train.wide_resnet`) on scikit-learn's 8x8 handwritten digits
  (1797 images that ship with the package; a stratified 80/20 split), trained with each mix.
* ``lm``: the harness's ``small`` LLaMA preset on the default corpus, trained by ``memopt train``'s loop
  with each mix (:class:`memopt.harness.train.config.TrainConfig` fields), validation loss at the end.

    python -m memopt.harness.bench.memory_study image --out runs/memory_study
    python -m memopt.harness.bench.memory_study lm --out runs/memory_study

Each writes ``<out>/<task>.json`` (every figure, the settings and the machine) and ``<out>/<task>.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from memopt.harness.bench.memory_study_report import _write, format_rows, summarize
from memopt.harness.memory.profile import build_optimizer, measure, prepare_model
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import image_workload
from memopt.harness.train.step import TrainStep

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass(frozen=True)
class Mix:
    """A named technique mix of the study."""

    name: str
    techniques: Techniques


def image_mixes() -> list[Mix]:
    """Each technique alone, then the combinations (the paper's: sparsity, low precision, microbatching,
    checkpointing together)."""
    t = Techniques
    return [
        Mix("baseline", t()),
        Mix("microbatches 8", t(microbatches=8)),
        Mix("checkpointing", t(checkpointing=True)),
        Mix("bf16 + stochastic rounding", t(precision="bf16-sr")),
        Mix("sparsity 0.8", t(sparsity=0.8)),
        Mix("sparsity 0.9", t(sparsity=0.9)),
        Mix("mb8 + ckpt + sparsity 0.9", t(microbatches=8, checkpointing=True, sparsity=0.9)),
        Mix(
            "mb8 + ckpt + bf16-sr + sparsity 0.8",
            t(microbatches=8, checkpointing=True, precision="bf16-sr", sparsity=0.8),
        ),
        Mix(
            "mb8 + ckpt + bf16-sr + sparsity 0.9",
            t(microbatches=8, checkpointing=True, precision="bf16-sr", sparsity=0.9),
        ),
        Mix(
            "mb16 + ckpt + bf16-sr + sparsity 0.9",
            t(microbatches=16, checkpointing=True, precision="bf16-sr", sparsity=0.9),
        ),
    ]


def digits_split(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (train images, train labels, test images, test labels); pixels scaled to
    [0, 1] then standardised with the training split's mean and deviation."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images / 16.0, digits.target, test_size=0.2, stratify=digits.target, random_state=seed
    )
    x_train, x_test = torch.tensor(x_train, dtype=torch.float32), torch.tensor(x_test, dtype=torch.float32)
    mean, std = x_train.mean(), x_train.std()
    return (
        ((x_train - mean) / std).unsqueeze(1),
        torch.tensor(y_train),
        ((x_test - mean) / std).unsqueeze(1),
        torch.tensor(y_test),
    )


def train_image(
    mix: Mix, data: tuple, *, depth: int, widen: int, epochs: int, batch_size: int, seed: int
) -> dict[str, float]:
    """Train the WideResNet with ``mix`` by SGD with momentum and a cosine schedule; test accuracy."""
    x_train, y_train, x_test, y_test = data
    techniques = mix.techniques
    workload = image_workload(depth=depth, widen=widen)
    torch.manual_seed(seed)
    model, master = prepare_model(workload, techniques)
    optimizer = build_optimizer(model, master, "sgd", dict(SGD), techniques)
    steps_per_epoch = len(x_train) // batch_size
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    dtype = techniques.param_dtype
    micro = batch_size // techniques.microbatches
    step = TrainStep(
        model,
        optimizer,
        _classification_loss,
        torch.device("cpu"),
        microbatches=techniques.microbatches,
        bf16_autocast=techniques.autocast,
        scheduler=scheduler,
    )
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator)
        for index in range(steps_per_epoch):
            parts = order[index * batch_size : (index + 1) * batch_size].split(micro)
            step(lambda i, parts=parts: (_images(x_train[parts[i]], dtype), y_train[parts[i]]))
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=techniques.autocast):
        predictions = model(x_test.to(dtype)).float().argmax(dim=1)
    return {"accuracy": float((predictions == y_test).float().mean()), "train_seconds": time.perf_counter() - began}


def _images(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A microbatch of images in the parameters' dtype and the channels-last layout."""
    return images.to(dtype).contiguous(memory_format=torch.channels_last)


def _classification_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy of the model's logits (in float32) on ``(images, labels)``."""
    images, labels = batch
    return torch.nn.functional.cross_entropy(model(images).float(), labels)


def image_memory(mix: Mix, *, depth: int, widen: int, batch_size: int) -> dict[str, Any]:
    """The measured breakdown of two training steps of ``mix`` at ``batch_size`` (CPU, real tensors)."""
    breakdown = measure(
        image_workload(depth=depth, widen=widen), "sgd", dict(SGD), batch_size=batch_size, techniques=mix.techniques
    )
    return {"peak": breakdown.peak, "components": breakdown.components, "at_peak": breakdown.at_peak}


def run_image(out: Path, seeds: int, epochs: int, depth: int, widen: int, batch_size: int) -> dict[str, Any]:
    """The image half of the study; writes ``image.json`` and ``image.png``."""
    data = digits_split(0)
    rows = []
    for mix in image_mixes():
        memory = image_memory(mix, depth=depth, widen=widen, batch_size=batch_size)
        runs = [
            train_image(mix, data, depth=depth, widen=widen, epochs=epochs, batch_size=batch_size, seed=s)
            for s in range(seeds)
        ]
        accuracy = [r["accuracy"] for r in runs]
        rows.append({"mix": mix.name, "techniques": mix.techniques.to_dict(), **memory, "accuracy": accuracy})
        print(f"{mix.name:<40} peak {memory['peak'] / 2**20:7.2f} MiB  accuracy {accuracy}", flush=True)
    summarize(rows, "accuracy")
    settings = {"depth": depth, "widen": widen, "epochs": epochs, "batch_size": batch_size, "seeds": seeds, "sgd": SGD}
    return _write(out, "image", rows, settings, "test accuracy change (points)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("image", "lm"))
    parser.add_argument("--out", type=Path, default=Path("runs") / "memory_study")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=12, help="image task: training epochs")
    parser.add_argument("--depth", type=int, default=10, help="image task: WideResNet depth (6n + 4)")
    parser.add_argument("--widen", type=int, default=2, help="image task: WideResNet widening factor")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    began = time.perf_counter()
    if args.task == "image":
        payload = run_image(args.out, args.seeds, args.epochs, args.depth, args.widen, args.batch_size)
        print(format_rows(payload["rows"], "accuracy"))
    else:
        from memopt.harness.bench.memory_study_lm import run_lm

        payload = run_lm(args.out, args.seeds)
        print(format_rows(payload["rows"], "val_loss"))
    print(f"({time.perf_counter() - began:.0f} s; wrote {args.out}/{args.task}.json and .png)")
    return 0 if all(math.isfinite(r["peak"]) for r in payload["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
