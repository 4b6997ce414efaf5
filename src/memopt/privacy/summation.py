r"""Shuffle-private summation of vectors of bounded norm: randomizer, shuffler, analyzer.

The structure is that of the vector-summation protocol of Cheu, Joseph, Mao & Peng, "Shuffle Private
Stochastic Convex Optimization" (ICLR 2022, arXiv 2106.09805): every coordinate of every user's vector is
encoded by randomized rounding on a grid of ``g`` steps and hidden among ``b`` noise bits. The paper body was
not available to us (only its abstract); the encoding below is restated from public re-implementations of the
protocol and its privacy guarantee is derived in :mod:`memopt.privacy.accountant`, not taken from the paper.

Inputs ``x_i in R^d`` with ``|x_{i,k}| <= B`` (any ``||x_i||_2 <= B`` qualifies). For user ``i`` and coordinate
``k`` the **randomizer** computes ``w = (x_{i,k} + B) g / B in [0, 2g]`` and ``r = floor(w) + Ber(w - floor(w))``
(so ``E r = w``), and emits ``2g + b`` messages labelled ``k``: ``r`` ones and ``2g - r`` zeros (the data bits)
and ``b`` independent ``Ber(p)`` bits (the noise bits). The **shuffler** permutes all users' messages
uniformly. The **analyzer** counts the ones with label ``k``, ``C_k``, and outputs

    ``z_k = (B / g) (C_k - p b n) - n B``.

Moments [derived]: ``E z_k = sum_i x_{i,k}`` (unbiased) and
``Var z_k = (B/g)^2 (n b p (1 - p) + sum_i f_{ik} (1 - f_{ik}))`` with ``f_{ik}`` the fractional part of
``w_{ik}``. Every user sends ``d (2g + b)`` one-bit messages, the same number whatever its input, so the
shuffled multiset reveals exactly the counts ``C_1..C_d``; :func:`private_sum` samples these counts directly
(``C_k = sum_i r_{ik} + Bin(n b, p)``, equal in distribution) and :func:`protocol_sum` runs the messages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SummationParameters:
    """``bound`` ``B`` on every coordinate (and on the ``l2`` norm), grid ``g``, noise bits ``b`` per coordinate
    and user, noise-bit probability ``p``."""

    bound: float
    grid: int
    bits: int
    p: float = 0.25

    def __post_init__(self) -> None:
        if not self.bound > 0:
            raise ValueError(f"bound must be > 0 (the norm bound B of the inputs), got {self.bound}.")
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"grid must be an int >= 1 (g grid steps per B), got {self.grid!r}.")
        if not isinstance(self.bits, int) or self.bits < 0:
            raise ValueError(f"bits must be an int >= 0 (noise bits per coordinate), got {self.bits!r}.")
        if not 0 < self.p < 1:
            raise ValueError(f"p must be in (0, 1), got {self.p}.")

    @property
    def messages_per_user_and_coordinate(self) -> int:
        return 2 * self.grid + self.bits


def clip_rows(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale each row of ``x`` to ``l2`` norm at most ``bound``."""
    norms = x.norm(dim=-1, keepdim=True)
    return x * torch.clamp(bound / norms.clamp_min(1e-300), max=1.0)


def _check_inputs(x: torch.Tensor, params: SummationParameters) -> None:
    if x.ndim != 2:
        raise ValueError(f"x must have shape (users, dim), got {tuple(x.shape)}.")
    if x.abs().max() > params.bound * (1 + 1e-12):
        raise ValueError(f"every coordinate must satisfy |x| <= bound={params.bound}; clip the inputs first.")


def rounded(x: torch.Tensor, params: SummationParameters, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomized rounding ``r in {0..2g}`` of ``w = (x + B) g / B`` with ``E r = w`` (int64, same shape)."""
    w = ((x + params.bound) * (params.grid / params.bound)).clamp(0, 2 * params.grid)
    low = w.floor()
    up = torch.rand(w.shape, generator=generator, dtype=w.dtype) < (w - low)
    return (low + up.to(w.dtype)).to(torch.int64)


def randomize(x: torch.Tensor, params: SummationParameters, generator: torch.Generator | None = None) -> torch.Tensor:
    """One user's messages for the vector ``x`` (shape ``(d,)``): an int64 tensor of rows ``(label k, bit)``,
    ``d (2g + b)`` rows, grouped by coordinate (the shuffler hides the order)."""
    if x.ndim != 1:
        raise ValueError(f"x must be one user's vector of shape (dim,), got {tuple(x.shape)}.")
    _check_inputs(x[None], params)
    d, g, b = x.shape[0], params.grid, params.bits
    r = rounded(x, params, generator)
    slots = torch.arange(2 * g)
    data = (slots[None, :] < r[:, None]).to(torch.int64)  # r ones then 2g - r zeros
    noise = (torch.rand((d, b), generator=generator, dtype=torch.float64) < params.p).to(torch.int64)
    bits = torch.cat([data, noise], dim=1)
    labels = torch.arange(d)[:, None].expand_as(bits)
    return torch.stack([labels.reshape(-1), bits.reshape(-1)], dim=1)


def shuffle(messages: list[torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
    """The shuffler: all users' messages in one uniformly random order."""
    pooled = torch.cat(messages)
    return pooled[torch.randperm(pooled.shape[0], generator=generator)]


def analyze(shuffled: torch.Tensor, users: int, dim: int, params: SummationParameters) -> torch.Tensor:
    """The analyzer: ``z_k = (B/g) (C_k - p b n) - n B`` from the shuffled messages (float64, shape ``(d,)``)."""
    counts = torch.zeros(dim, dtype=torch.float64).index_add_(0, shuffled[:, 0], shuffled[:, 1].to(torch.float64))
    return _debias(counts, users, params)


def _debias(counts: torch.Tensor, users: int, params: SummationParameters) -> torch.Tensor:
    scale = params.bound / params.grid
    return scale * (counts - params.p * params.bits * users) - users * params.bound


def protocol_sum(
    x: torch.Tensor, params: SummationParameters, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Run the whole protocol on the rows of ``x`` (users): randomize, shuffle, analyze."""
    _check_inputs(x, params)
    messages = [randomize(row, params, generator) for row in x]
    return analyze(shuffle(messages, generator), x.shape[0], x.shape[1], params)


def private_sum(x: torch.Tensor, params: SummationParameters, generator: torch.Generator | None = None) -> torch.Tensor:
    """The analyzer's output, sampled from the counts it sees (equal in distribution to :func:`protocol_sum`,
    without materialising ``n d (2g + b)`` messages)."""
    _check_inputs(x, params)
    n, d = x.shape
    data = rounded(x.to(torch.float64), params, generator).sum(0).to(torch.float64)
    trials = torch.full((d,), float(n * params.bits), dtype=torch.float64)
    noise = torch.binomial(trials, torch.full_like(trials, params.p), generator=generator)
    return _debias(data + noise, n, params)


def variance(x: torch.Tensor, params: SummationParameters) -> torch.Tensor:
    """Exact per-coordinate variance of the analyzer's output for the inputs ``x`` (rows = users)."""
    _check_inputs(x, params)
    w = (x.to(torch.float64) + params.bound) * (params.grid / params.bound)
    frac = w - w.floor()
    n = x.shape[0]
    noise = n * params.bits * params.p * (1 - params.p)
    return (params.bound / params.grid) ** 2 * (noise + (frac * (1 - frac)).sum(0))


def worst_case_variance(users: int, params: SummationParameters) -> float:
    """Per-coordinate variance bound over all inputs: ``(B/g)^2 (n b p (1-p) + n/4)``."""
    return (params.bound / params.grid) ** 2 * (users * params.bits * params.p * (1 - params.p) + users / 4)


def grid_from_users(users: int, dim: int) -> int:
    """The grid ``g = max(ceil(2 sqrt(n)), d, 4)`` used by the public re-implementations (rounding variance
    at most ``B^2 / 16`` per coordinate, whatever ``n``)."""
    return max(math.ceil(2 * math.sqrt(users)), dim, 4)
