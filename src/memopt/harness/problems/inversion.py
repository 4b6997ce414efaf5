"""Network inversion on scikit-learn's digits: a small generator, latent-space inversion by gradient descent,
and landscape learning.

Landscape learning (Liu, Mao, Tendulkar, Wang & Vondrick, "Landscape Learning for Neural Network Inversion",
arXiv 2206.09027): instead of descending ``L(z) = ||G(z) - x||^2`` in the generator's latent space, descend
``L(theta(w))`` in a new space through a learned map ``theta: w -> z``. ``theta`` is trained so that gradient
descent in ``w`` is short: alternately (1) run ``K`` gradient steps in ``w`` from random starts for training
images with the current ``theta`` and store the visited points ``w_t`` in a replay buffer, and (2) update
``theta`` to lower ``sum_t L(theta(w_t); x)`` over buffer samples, the trajectory points held fixed (no
back-propagation through the descent). Our reading of the paper's method; sizes here are ours.

The generator is the decoder of a small VAE (Kingma & Welling, arXiv 1312.6114) trained on the 8x8 digits
(pixels scaled to [0, 1]); a VAE rather than the paper's GANs because it trains reliably in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from memopt.registry.specs import build_optimizer


def digits(held_out: int = 200, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8x8 digits as ``[n, 64]`` float32 in [0, 1]: (training, held-out) split, seeded."""
    from sklearn.datasets import load_digits

    data = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    order = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    return data[order[held_out:]], data[order[:held_out]]


class VAE(nn.Module):
    """Encoder ``64 -> hidden -> (mu, log var)`` and decoder (the generator) ``latent -> hidden -> hidden -> 64``."""

    def __init__(self, latent: int = 8, hidden: int = 128) -> None:
        super().__init__()
        self.latent = latent
        self.encoder = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(
            nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 64),
            nn.Sigmoid(),
        )

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        mu, log_var = self.encoder(x).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        recon = nn.functional.binary_cross_entropy(self.decoder(z), x, reduction="sum") / x.shape[0]
        kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum() / x.shape[0]
        return recon + kl


def train_generator(train: torch.Tensor, steps: int, seed: int, latent: int = 8) -> nn.Module:
    """Train the VAE with AdamW (lr 2e-3, batch 128); return its decoder, frozen."""
    torch.manual_seed(seed)
    vae = VAE(latent)
    optimizer = build_optimizer(vae, "adamw", lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = train[torch.randint(0, train.shape[0], (128,), generator=g)]
        loss = vae.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder = vae.decoder.eval()
    for p in decoder.parameters():
        p.requires_grad_(False)
    decoder.latent = latent
    return decoder


def errors(generator: nn.Module, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error ``||G(z_i) - x_i||^2 / 64``."""
    return ((generator(z) - x) ** 2).mean(dim=1)


class LatentMap(nn.Module):
    """The learned map ``theta(w) = w + MLP(w)`` (residual, so it starts near the identity)."""

    def __init__(self, latent: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, latent))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.net(w)


class _Latents(nn.Module):
    def __init__(self, start: torch.Tensor) -> None:
        super().__init__()
        self.z = nn.Parameter(start.clone())


@dataclass
class Inversion:
    """Per-image error after every iteration (``errors[t][i]``, ``t = 0`` the start) and the wall time."""

    errors: list[list[float]]
    seconds: float

    def iterations_to(self, target: float) -> list[int | None]:
        """Per image, the first iteration with error <= ``target`` (None if never)."""
        out = []
        for i in range(len(self.errors[0])):
            out.append(next((t for t, row in enumerate(self.errors) if row[i] <= target), None))
        return out


def invert(
    generator: nn.Module,
    x: torch.Tensor,
    start: torch.Tensor,
    optimizer: str,
    lr: float,
    iterations: int,
    mapping: nn.Module | None = None,
) -> Inversion:
    """Minimize ``sum_i ||G(m(v_i)) - x_i||^2 / 64`` over ``v`` from ``start`` (each image's gradient is its
    own) with registry optimizer ``optimizer`` (``"sgd"``: plain gradient descent) for ``iterations`` steps;
    ``m`` is ``mapping`` (landscape learning) or the identity (plain latent inversion)."""
    import time

    latents = _Latents(start)
    kwargs = {"lr": lr, "weight_decay": 0.0} if optimizer != "sgd" else {"lr": lr}
    opt = build_optimizer(latents, optimizer, **kwargs)
    to_z = mapping if mapping is not None else (lambda v: v)
    history = []
    begin = time.perf_counter()
    for _ in range(iterations):
        err = errors(generator, to_z(latents.z), x)
        history.append(err.detach().tolist())
        opt.zero_grad()
        err.sum().backward()
        opt.step()
    with torch.no_grad():
        history.append(errors(generator, to_z(latents.z), x).tolist())
    return Inversion(history, time.perf_counter() - begin)


def train_landscape(
    generator: nn.Module,
    train: torch.Tensor,
    rounds: int,
    lr: float,
    trajectory: int,
    seed: int,
    images_per_round: int = 64,
    updates_per_round: int = 20,
    buffer_size: int = 20_000,
) -> LatentMap:
    """Landscape learning (module docstring): ``rounds`` of (collect ``trajectory``-step GD paths in ``w``
    with step ``lr`` for ``images_per_round`` training images, from ``w_0 ~ N(0, I)``; then
    ``updates_per_round`` AdamW steps on ``theta`` over 256 buffer samples)."""
    torch.manual_seed(seed)
    latent = generator.latent
    mapping = LatentMap(latent)
    optimizer = build_optimizer(mapping, "adamw", lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    buffer_w, buffer_x = [], []
    for _ in range(rounds):
        x = train[torch.randint(0, train.shape[0], (images_per_round,), generator=g)]
        w = torch.randn(images_per_round, latent, generator=g).requires_grad_(True)
        for _ in range(trajectory + 1):
            buffer_w.append(w.detach().clone())
            buffer_x.append(x)
            (grad,) = torch.autograd.grad(errors(generator, mapping(w), x).sum(), w)
            w = (w - lr * grad).detach().requires_grad_(True)
        all_w, all_x = torch.cat(buffer_w)[-buffer_size:], torch.cat(buffer_x)[-buffer_size:]
        buffer_w, buffer_x = [all_w], [all_x]
        for _ in range(updates_per_round):
            pick = torch.randint(0, all_w.shape[0], (256,), generator=g)
            loss = errors(generator, mapping(all_w[pick]), all_x[pick]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for p in mapping.parameters():
        p.requires_grad_(False)
    return mapping.eval()
