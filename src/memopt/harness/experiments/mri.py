"""Accelerated multi-coil MRI: a small CIRIM with implicit or explicit data consistency against zero-filled and
compressed-sensing reconstructions (Karkalousos et al., arXiv 2111.15498).

Claims checked: the CIRIM beats compressed sensing; implicit DC (the RIM's likelihood gradient alone) is
better for the CIRIM than adding an explicit DC term; and the CIRIM stays robust to a sampling pattern not
seen in training.

Setting (sized for a shared 2-core CPU): scikit-image images resized to 48x48 with a smooth phase, 4
birdcage coils (sigpy), k-space noise 0.005; training on random crops of :data:`~memopt.harness.problems.
mri.TRAIN_IMAGES` with random 1-D Cartesian masks at 4x or 8x; testing on the Shepp-Logan phantom and two
held-out images at 4x and 8x, with Cartesian masks (the training pattern) and Poisson-disc masks (unseen).
CIRIM (:mod:`memopt.harness.problems.cirim`): 2 cascades of 4 RIM steps, hidden width 12, L1 loss on the
magnitude of every cascade's output, trained with registry optimizers (``build_optimizer``); compressed
sensing: wavelet-l1 by FISTA (:mod:`memopt.convex`), its weight picked on training images.
"""

from __future__ import annotations

import time

import torch

from memopt.harness.experiments.common import Options, Study, StudyResult, figure, mean_and_se
from memopt.harness.problems import mri
from memopt.harness.problems.cirim import CIRIM
from memopt.registry.specs import build_optimizer

SIZE, COILS, NOISE = 48, 4, 0.005
LAM_GRID = (1e-3, 3e-3, 1e-2)
SETTINGS = (("cartesian", 4), ("cartesian", 8), ("poisson", 4), ("poisson", 8))


def mask_for(kind: str, acceleration: float, seed: int, size: int = SIZE) -> torch.Tensor:
    if kind == "cartesian":
        return mri.cartesian_mask(size, acceleration, seed)
    if kind == "poisson":
        return mri.poisson_mask(size, acceleration, seed)
    raise ValueError(f"mask kind must be 'cartesian' or 'poisson', got {kind!r}.")


def train(
    dc: str, optimizer_name: str, lr: float, images: torch.Tensor, sens: torch.Tensor, steps: int, seed: int,
    batch: int = 4,
) -> tuple[CIRIM, list[float], float]:
    """Train a CIRIM; return it, the loss per step and the wall time."""
    torch.manual_seed(seed)
    model = CIRIM(cascades=2, steps=4, hidden=12, dc=dc)
    optimizer = build_optimizer(model, optimizer_name, lr=lr)
    g = torch.Generator().manual_seed(10_000 + seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        pick = torch.randint(0, images.shape[0], (batch,), generator=g)
        x = images[pick]
        accelerations = [4 if torch.rand((), generator=g) < 0.5 else 8 for _ in range(batch)]
        masks = torch.stack([mri.cartesian_mask(SIZE, a, seed * 100_000 + step * batch + i)
                             for i, a in enumerate(accelerations)])[:, None]
        y = mri.acquire(x, sens, masks, NOISE, seed=seed * 100_000 + step)
        outputs = model(y, sens, masks)
        loss = sum((o.abs() - x.abs()).abs().mean() for o in outputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return model, losses, time.perf_counter() - start


def pick_lambda(images: torch.Tensor, sens: torch.Tensor, steps: int) -> tuple[float, dict[float, float]]:
    """The wavelet weight with the best mean PSNR on ``images`` at 4x Cartesian."""
    scores = {}
    for lam in LAM_GRID:
        values = []
        for i, x in enumerate(images):
            mask = mri.cartesian_mask(SIZE, 4, seed=777 + i)
            y = mri.acquire(x, sens, mask, NOISE, seed=777 + i)
            values.append(mri.psnr_ssim(x, mri.compressed_sensing(y, sens, mask, lam, steps))[0])
        scores[lam] = sum(values) / len(values)
    return max(scores, key=scores.get), scores


def run(options: Options) -> StudyResult:
    quick = options.quick
    steps = 4 if quick else 150
    cs_steps = 10 if quick else 100
    seeds = list(range(options.seeds))
    sens = mri.coil_maps(COILS, SIZE).to(torch.complex64)
    if quick:
        images = mri.training_images(SIZE, 16, seed=0, names=mri.TRAIN_IMAGES[:3])
    else:
        images = mri.training_images(SIZE, 128, seed=0)
    names, tests = mri.test_images(SIZE)
    arms = [("implicit", "adamw"), ("explicit", "adamw")]
    if not quick:
        arms.append(("implicit", "adamw8bit"))
    models, training = {}, {}
    for dc, opt in arms:
        arm_seeds = seeds if opt == "adamw" else seeds[:1]
        for seed in arm_seeds:
            model, losses, seconds = train(dc, opt, 2e-3, images, sens, steps, seed)
            models[(dc, opt, seed)] = model
            training[f"CIRIM {dc} DC, {opt}, seed {seed}"] = {"loss": losses, "seconds": seconds}

    lam, lam_scores = pick_lambda(images[:2], sens.to(torch.complex128), cs_steps) if not quick else (3e-3, {})
    table = {}  # method -> setting -> list of (psnr, ssim) over test images (and seeds)
    for kind, acc in SETTINGS:
        setting = f"{kind} {acc}x"
        for i, x in enumerate(tests):
            mask = mask_for(kind, acc, seed=50 + i)
            y = mri.acquire(x, sens, mask, NOISE, seed=60 + i)
            table.setdefault("zero-filled", {}).setdefault(setting, []).append(
                mri.psnr_ssim(x, mri.adjoint(y, sens, mask)))
            cs = mri.compressed_sensing(y.to(torch.complex128), sens.to(torch.complex128), mask, lam, cs_steps)
            table.setdefault(f"CS wavelet-l1 (FISTA, lam {lam:g})", {}).setdefault(setting, []).append(
                mri.psnr_ssim(x, cs))
            with torch.no_grad():
                for (dc, opt, _seed), model in models.items():
                    out = model(y[None], sens, mask)[-1][0]
                    table.setdefault(f"CIRIM {dc} DC ({opt})", {}).setdefault(setting, []).append(
                        mri.psnr_ssim(x, out))

    lines = [
        f"{SIZE}x{SIZE}, {COILS} coils, noise {NOISE}; CIRIM 2 cascades x 4 steps, {steps} training steps of 4 "
        f"images, lr 2e-3, seeds {seeds}; test images {names}; CS {cs_steps} FISTA steps"
        + (f", lam from {lam_scores}" if lam_scores else "")
    ]
    summary = {}
    for method, by_setting in table.items():
        parts = []
        for setting, values in by_setting.items():
            psnr = mean_and_se([v[0] for v in values])
            ssim = mean_and_se([v[1] for v in values])
            summary.setdefault(method, {})[setting] = {"psnr": psnr, "ssim": ssim}
            parts.append(f"{setting}: {psnr[0]:.2f} dB / {ssim[0]:.3f}")
        lines.append(f"{method}: " + "; ".join(parts))
    for name, record in training.items():
        lines.append(f"{name}: final loss {sum(record['loss'][-10:]) / len(record['loss'][-10:]):.4f}, "
                     f"{record['seconds']:.0f} s training")
    implicit = summary.get("CIRIM implicit DC (adamw)", {})
    explicit = summary.get("CIRIM explicit DC (adamw)", {})
    wins = [s for s in implicit if implicit[s]["psnr"][0] > explicit[s]["psnr"][0]]
    lines.append(f"implicit DC beats explicit DC (PSNR, adamw) in {len(wins)}/{len(implicit)} settings: {wins}")

    fig, (ax1, ax2, ax3) = figure(3)
    for name, record in training.items():
        ax1.plot(record["loss"], label=name, alpha=0.8)
    ax1.set(xlabel="training step", ylabel="L1 loss (sum over cascades)", yscale="log", title="CIRIM training")
    ax1.legend(fontsize=6)
    settings = [f"{k} {a}x" for k, a in SETTINGS]
    width = 0.8 / len(summary)
    for j, (metric, ax) in enumerate((("psnr", ax2), ("ssim", ax3))):
        for i, (method, by_setting) in enumerate(summary.items()):
            ax.bar([k + i * width for k in range(len(settings))], [by_setting[s][metric][0] for s in settings],
                   width, label=method)
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(settings))], settings, fontsize=7)
        ax.set(ylabel=metric.upper(), title=f"{metric.upper()} on held-out images (Poisson unseen in training)")
        if j == 0:
            ax.legend(fontsize=6)
    data = {"lambda": lam, "lambda_scores": lam_scores, "training": training, "summary": summary,
            "per_image": table, "test_images": names}
    return StudyResult(data, fig, lines)


STUDY = Study("mri", "CIRIM with implicit/explicit data consistency vs zero-filled and compressed sensing", run)
