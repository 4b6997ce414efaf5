"""TrAct and weight normalization on image classification: accuracy and loss against epochs.

Claims checked:

* TrAct (Petersen, Borgelt & Ermon, NeurIPS 2024, arXiv 2410.23970): training the first layer's
  pre-activations instead of its weights (:func:`memopt.wrappers.tract.tract`, lambda 0.1, the paper's
  default, at the baseline's learning rate as in the authors' scripts) reaches the baseline's accuracy in
  1.25x to 4x fewer epochs, with SGD and with Adam.
* Weight normalization (Salimans & Kingma, arXiv 1602.07868; PyTorch's ``parametrizations.weight_norm`` on
  every ``nn.Linear`` and ``nn.Conv2d``) speeds up SGD.

Data: scikit-learn's handwritten digits (1797 8x8 grey images, shipped with scikit-learn, so nothing is
downloaded), upsampled to 16x16 (bilinear), scaled to [0, 1] and standardised with the training mean and
std; a fixed stratified split of 1347 training and 450 test images. No installable package ships a larger
image set offline (torchvision, keras, medmnist and the MNIST packages on PyPI download at run time), and
16x16 gives the first layers real patches: the ResNet's 3x3 stem sees 256 positions of 9 pixels, the ViT's
4x4 patch embedding 16 tokens of 16 pixels. Models: a WRN-10-1 (:class:`memopt.harness.train.wide_resnet.
WideResNet`: stem conv, three pre-activation blocks of widths 16/32/64, GroupNorm) and a ViT (conv patch
embedding 4x4 to 64 dims, learned positions, 2 pre-norm encoder layers with 4 heads and MLP 128, mean
pooling). Batch 64, cosine learning rate over the run (per step), no augmentation, cross-entropy.

Arms per model: each optimizer of ``--optimizers`` (any registry name; default ``sgd,adamw``) with and
without TrAct on the first layer, and SGD with weight normalization. Optimizers that need a closure get
one. Settings: :data:`SETTINGS` for SGD (momentum 0.9, the paper's ResNet recipe) and AdamW; any other
name runs at the registry's recommended settings (:func:`memopt.registry.specs.recommended_hparams`).
``--jobs N`` runs the independent runs in N processes
(same numbers). The summary gives, per arm, the final test accuracy and loss (mean over seeds) and the epochs to reach
:data:`TARGETS` test accuracy; TrAct's speed-up is the ratio of those epochs against the same optimizer's
baseline.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, mean_and_se, step_with
from memopt.harness.train.reparam import apply_tract, apply_weight_norm
from memopt.harness.train.wide_resnet import WideResNet
from memopt.registry.specs import build_optimizer, recommended_hparams

DEFAULT_OPTIMIZERS = ("sgd", "adamw")
#: per-optimizer settings for these models (both arms of a pair use the same); other names: the registry's
SETTINGS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "adamw": {"lr": 2e-3, "weight_decay": 0.05},
}
#: the optimizers that also run with weight normalization
WEIGHT_NORM_FOR = ("sgd",)
LAMBDA = 0.1
BATCH = 64
SIZE = 16
#: the test accuracy whose epochs-to-reach the summary compares, per model (fixed before the full run)
TARGETS = {"ResNet (WRN-10-1)": 0.95, "ViT": 0.90}
FULL_EPOCHS = 20
QUICK_EPOCHS = 2


def digits(quick: bool) -> dict[str, torch.Tensor]:
    """The digits, upsampled to 16x16 and standardised; ``quick`` keeps 256 training and 128 test images."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    labels = torch.tensor(data.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(range(len(labels)), test_size=0.25, random_state=0, stratify=data.target)
    if quick:
        train_idx, test_idx = train_idx[:256], test_idx[:128]
    train_x, test_x = images[train_idx], images[test_idx]
    mean, std = train_x.mean(), train_x.std()
    return {
        "train_x": (train_x - mean) / std,
        "train_y": labels[train_idx],
        "test_x": (test_x - mean) / std,
        "test_y": labels[test_idx],
    }


class ViT(nn.Module):
    """A small vision transformer: conv patch embedding, learned positions, pre-norm encoder, mean pooling."""

    def __init__(self, patch: int = 4, dim: int = 64, depth: int = 2, heads: int = 4, classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, stride=patch)
        self.positions = nn.Parameter(torch.zeros(1, (SIZE // patch) ** 2, dim))
        nn.init.trunc_normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.positions
        return self.head(self.norm(self.encoder(tokens)).mean(dim=1))


MODELS = {"ResNet (WRN-10-1)": lambda: WideResNet(depth=10, widen=1, classes=10, channels=1), "ViT": ViT}


def arms(optimizers: tuple[str, ...]) -> list[tuple[str, str, str | None]]:
    """(label, optimizer, technique) for every run: each optimizer plain and with TrAct, SGD with weight norm."""
    out: list[tuple[str, str, str | None]] = []
    for name in optimizers:
        out += [(name, name, None), (f"{name}+TrAct", name, "tract")]
        if name in WEIGHT_NORM_FOR:
            out.append((f"{name}+WN", name, "weight_norm"))
    return out


def settings_for(name: str) -> dict[str, Any]:
    """The hyperparameters the study uses for ``name``."""
    return dict(SETTINGS.get(name) or recommended_hparams(name))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on ``x, y``."""
    model.eval()
    logits = model(x)
    model.train()
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


def train(model_name: str, optimizer: str, technique: str | None, seed: int, data: dict, epochs: int) -> dict:
    """One run: per-epoch test accuracy, test loss and mean training loss, and the CPU seconds it took."""
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    if technique == "tract":
        apply_tract(model, LAMBDA)
    elif technique == "weight_norm":
        apply_weight_norm(model)
    opt = build_optimizer(model, optimizer, **settings_for(optimizer))
    n = len(data["train_y"])
    steps = epochs * -(-n // BATCH)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    generator = torch.Generator().manual_seed(1000 + seed)
    curve: dict[str, list[float]] = {"test_acc": [], "test_loss": [], "train_loss": []}
    cpu = time.process_time()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        losses = []
        for start in range(0, n, BATCH):
            index = order[start : start + BATCH]
            x, y = data["train_x"][index], data["train_y"][index]

            def closure(x=x, y=y) -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            loss = step_with(opt, closure)
            scheduler.step()
            losses.append(float(loss.detach()))
        acc, test_loss = evaluate(model, data["test_x"], data["test_y"])
        curve["test_acc"].append(acc)
        curve["test_loss"].append(test_loss)
        curve["train_loss"].append(sum(losses) / len(losses))
    curve["cpu_seconds"] = time.process_time() - cpu
    return curve


def epochs_to(curve: list[float], target: float) -> int | None:
    """The first epoch (1-based) whose test accuracy reaches ``target``; None if none does."""
    return next((i + 1 for i, acc in enumerate(curve) if acc >= target), None)


def summarise(runs: list[dict], epochs: int, target: float) -> dict[str, Any]:
    """Mean and standard error over seeds of the final accuracy and loss, and epochs to ``target`` test
    accuracy (a seed that never reaches it counts as ``epochs + 1``; ``reached`` says how many did)."""
    reached = [epochs_to(r["test_acc"], target) for r in runs]
    acc, acc_se = mean_and_se([r["test_acc"][-1] for r in runs])
    loss, loss_se = mean_and_se([r["test_loss"][-1] for r in runs])
    to_target, to_target_se = mean_and_se([e if e is not None else epochs + 1 for e in reached])
    return {
        "final_acc": acc,
        "final_acc_se": acc_se,
        "final_loss": loss,
        "final_loss_se": loss_se,
        "epochs_to_target": to_target,
        "epochs_to_target_se": to_target_se,
        "reached": sum(e is not None for e in reached),
        "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
    }


def run(options: Options) -> StudyResult:
    optimizers = tuple(options.optimizers or DEFAULT_OPTIMIZERS)
    epochs = QUICK_EPOCHS if options.quick else FULL_EPOCHS
    data = digits(options.quick)
    jobs = [
        (model_name, label, name, technique, seed)
        for model_name in MODELS
        for label, name, technique in arms(optimizers)
        for seed in range(options.seeds)
    ]
    curves = _run_all([(m, n, t, seed, data, epochs) for m, _, n, t, seed in jobs], options.jobs)
    runs: dict[str, dict[str, list[dict]]] = {}
    for (model_name, label, *_), curve in zip(jobs, curves):
        runs.setdefault(model_name, {}).setdefault(label, []).append(curve)
    summary = {
        m: {label: summarise(r, epochs, TARGETS[m]) for label, r in by_arm.items()} for m, by_arm in runs.items()
    }
    fig = _figure(runs, epochs)
    lines = [
        f"digits 16x16 ({len(data['train_y'])} train / {len(data['test_y'])} test), batch {BATCH}, {epochs} epochs, "
        f"{options.seeds} seeds, cosine lr; TrAct lambda {LAMBDA}; target test accuracy "
        + ", ".join(f"{m} {t:.0%}" for m, t in TARGETS.items())
        + "; settings "
        + "; ".join(f"{name} {settings_for(name)}" for name in optimizers)
    ]
    for model_name, by_arm in summary.items():
        for label, row in by_arm.items():
            speedup = ""
            name = next(n for lab, n, _ in arms(optimizers) if lab == label)
            if label != name:
                base = by_arm[name]
                if min(base["reached"], row["reached"]) < options.seeds:
                    speedup = f", no speed-up figure (not every seed of it and {name} reached the target)"
                else:
                    speedup = f", {base['epochs_to_target'] / row['epochs_to_target']:.2f}x fewer epochs than {name}"
            lines.append(
                f"{model_name} {label}: test acc {row['final_acc']:.4f} +- {row['final_acc_se']:.4f}, "
                f"test loss {row['final_loss']:.4f}, epochs to {TARGETS[model_name]:.0%} {row['epochs_to_target']:.1f} "
                f"+- {row['epochs_to_target_se']:.1f} ({row['reached']}/{options.seeds} reached){speedup}; "
                f"{row['cpu_seconds']:.1f} CPU s"
            )
    settings = {name: settings_for(name) for name in optimizers}
    data_out = {"epochs": epochs, "targets": TARGETS, "lambda": LAMBDA, "settings": settings, "summary": summary}
    data_out["runs"] = runs
    return StudyResult(data_out, fig, lines)


def _train_one_thread(args: tuple) -> dict:
    torch.set_num_threads(1)
    return train(*args)


def _run_all(tasks: list[tuple], processes: int) -> list[dict]:
    """:func:`train` on every task, in order; in ``processes`` forked workers when more than one (each run
    seeds itself and uses one thread, so the numbers are those of a sequential run)."""
    if processes <= 1:
        return [train(*task) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        return list(pool.map(_train_one_thread, tasks))


def _figure(runs: dict[str, dict[str, list[dict]]], epochs: int):
    fig, axes = figure(2 * len(runs), width=4.6, height=3.6)
    x = list(range(1, epochs + 1))
    for column, (model_name, by_arm) in enumerate(runs.items()):
        acc_ax, loss_ax = axes[2 * column], axes[2 * column + 1]
        for label, seeds in by_arm.items():
            style = "--" if "TrAct" in label else (":" if "WN" in label else "-")
            for ax, key in ((acc_ax, "test_acc"), (loss_ax, "test_loss")):
                mean = [sum(r[key][i] for r in seeds) / len(seeds) for i in range(epochs)]
                ax.plot(x, mean, style, label=label)
        acc_ax.axhline(TARGETS[model_name], c="gray", lw=0.6)
        acc_ax.set(xlabel="epoch", ylabel="test accuracy", title=f"{model_name}: accuracy", ylim=(0.5, 1.0))
        loss_ax.set(xlabel="epoch", ylabel="test cross-entropy", title=f"{model_name}: loss", yscale="log")
        acc_ax.legend(fontsize=7)
    return fig


STUDY = Study(
    "tract",
    "TrAct and weight norm on digits: ResNet and ViT, SGD and AdamW, accuracy against epochs",
    run,
    takes_optimizers=True,
    takes_jobs=True,
)
