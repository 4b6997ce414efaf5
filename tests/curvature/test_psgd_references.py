"""PSGD against the authors' packages: PSGD-Kron against ``kron_torch.Kron`` (kron-torch 0.3.3, Walters,
Pooladzandi & Li) on the same problem, seed and random vectors; the low-rank (UVd) and diagonal fits against
psgd-torch's ``update_precond_UVd_math_`` (psgd-torch 0.6.1, Xi-Lin Li) on the same pairs.

Random draws are made identical, not compared statistically:

* kron-torch draws each ``V`` with ``torch.randn_like`` from torch's global generator, parameter by parameter
  on every update step, and decides a factor rebalance per step with ``random.Random(42).random() < 0.01``.
  :class:`SharedDraws` makes PSGDKron draw ``V`` the same way (``_random_normal``) and take the rebalance
  decisions from its own ``random.Random(42)``, one per step; the global generator is seeded identically
  before each run.
* psgd-torch's UVd fit draws two decisions from torch's global generator, ``torch.rand([]) < 0.01``
  (rebalance) and ``torch.rand([]) < 0.5`` (step U, else V); the test re-seeds the generator, draws the same
  two numbers and passes the decisions to :func:`memopt.curvature.lra.uvd_fit`.

What remains different, and bounds the tolerances: kron-torch solves the triangular systems in float32 even for
float64 factors (``_solve_triangular_right`` casts with ``.float()``), so in float64 the two agree to about
1e-8 after 30 steps rather than to float64 rounding; the products are taken in another order (einsum against
mode products), and psgd-torch solves ``I + V^T U`` by LU where memopt calls ``torch.linalg.solve``.
"""

from __future__ import annotations

import contextlib
import io
import random

import kron_torch.kron as kron_torch  # dev dependencies (pyproject.toml): pip install kron-torch psgd-torch
import psgd_torch.psgd as psgd_torch
import pytest
import torch

from memopt.curvature import PSGDKron
from memopt.curvature.base import update_probability
from memopt.curvature.diag import diag_fit
from memopt.curvature.lra import uvd_fit, uvd_precondition


@pytest.fixture(autouse=True)
def no_compile(monkeypatch):
    """kron-torch wraps its math in torch.compile; the eager functions are the same math, and fast to start."""
    monkeypatch.setattr(torch._dynamo.config, "disable", True)


class SharedDraws(PSGDKron):
    """PSGDKron drawing its random vectors and rebalance decisions as kron-torch does (module docstring)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rng, self.decisions = random.Random(42), {}

    def _random_normal(self, like, generator):
        return torch.randn_like(like)

    def _balance_due(self, step):
        if step not in self.decisions:
            self.decisions[step] = self.rng.random() < 0.01
        return self.decisions[step]


def _run(make, dtype: torch.dtype, steps: int) -> list[torch.Tensor]:
    """A matrix, a vector and a 3-D tensor (merged to a 12 x 5 matrix) on a least-squares-plus-quartic loss."""
    generator = torch.Generator().manual_seed(0)
    w1, w2, w3 = (torch.randn(shape, generator=generator, dtype=dtype) for shape in ((6, 9), (9,), (3, 4, 5)))
    params = [torch.nn.Parameter(w) for w in (w1, w2, w3)]
    x, y = torch.randn(32, 9, generator=generator, dtype=dtype), torch.randn(32, 6, generator=generator, dtype=dtype)
    optimizer = make(params)
    torch.manual_seed(123)
    for _ in range(steps):
        optimizer.zero_grad()
        w1, w2, w3 = params
        loss = ((x @ w1.T + w2[:6] - y) ** 2).mean() + 0.01 * (w3**4).sum() + (w2**2).sum()
        loss.backward()
        with contextlib.redirect_stdout(io.StringIO()):  # kron-torch prints its state sizes on the first step
            optimizer.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize(("dtype", "steps", "tolerance"), [(torch.float64, 30, 1e-7), (torch.float32, 20, 2e-5)])
def test_psgd_kron_equals_kron_torch(dtype, steps, tolerance):
    options = dict(lr=1e-2, b1=0.9, weight_decay=0.1, precond_lr=0.1, precond_init_scale=1.0)
    theirs = _run(lambda p: kron_torch.Kron(p, **options, precond_dtype=dtype), dtype, steps)
    ours = _run(lambda p: SharedDraws(p, **options), dtype, steps)
    start = _run(lambda p: SharedDraws(p, **{**options, "lr": 0.0}), dtype, 1)
    for a, b, s in zip(ours, theirs, start):
        moved = (b - s).abs().max()
        assert moved > 0.05  # the runs went somewhere
        assert (a - b).abs().max() <= tolerance * max(1.0, float(b.abs().max())), (a - b).abs().max()


def test_update_schedule_is_kron_torchs():
    """The probability schedule over 4500 steps, bit for bit, and the steps kron-torch's counter fits on."""
    steps = 4500
    theirs = kron_torch.precond_update_prob_schedule()._schedule_fn(torch.arange(steps, dtype=torch.float32))
    ours = torch.stack([update_probability(n, None) for n in range(steps)])
    assert torch.equal(ours, theirs)
    fits, counter = [], 0
    for n in range(steps):  # kron-torch's rule, which PSGDBase._due applies per parameter
        counter += 1
        if counter >= 1 / ours[n]:
            fits.append(n)
            counter = 0
    assert fits[:500] == list(range(500)) and fits[-1] - fits[-2] == 34


def _pairs(n: int, count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(n, n, generator=generator, dtype=torch.float64)
    hessian = basis @ basis.T / n + torch.diag(torch.linspace(0.1, 3.0, n, dtype=torch.float64))
    vs = [torch.randn(n, 1, generator=generator, dtype=torch.float64) for _ in range(count)]
    return [(v, hessian @ v) for v in vs]


@pytest.mark.parametrize("rank", [0, 3])
def test_uvd_fit_equals_psgd_torch(rank):
    """100 fits of Q = (I + U V^T) diag(d) (rank 0: PSGDDiag's fit) from the same start and pairs."""
    n, tiny = 20, torch.finfo(torch.float64).tiny
    generator = torch.Generator().manual_seed(7)
    U0 = torch.randn(n, rank, generator=generator, dtype=torch.float64) / (n * (rank + 10)) ** 0.5
    V0 = torch.randn(n, rank, generator=generator, dtype=torch.float64) / (n * (rank + 10)) ** 0.5
    theirs = [U0.clone(), V0.clone(), torch.ones(n, 1, dtype=torch.float64)]
    ours = [U0.clone(), V0.clone(), torch.ones(n, 1, dtype=torch.float64)]
    diagonal = torch.ones(n, 1, dtype=torch.float64)
    for k, (v, h) in enumerate(_pairs(n, 100, seed=3)):
        torch.manual_seed(k)
        psgd_torch.update_precond_UVd_math_(*theirs, v, h, 0.1, "2nd", tiny)
        torch.manual_seed(k)
        balance, update_u = bool(torch.rand([]) < 0.01), bool(torch.rand([]) < 0.5)
        uvd_fit(*ours, v, h, 0.1, tiny, balance=balance, update_u=update_u)
        diag_fit(diagonal, v, h, 0.1, tiny)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert (theirs[2] - 1).abs().max() > 0.1  # d moved
    if rank == 0:
        torch.testing.assert_close(diagonal, theirs[2], rtol=1e-10, atol=1e-12)
    g = torch.randn(n, 1, dtype=torch.float64)
    torch.testing.assert_close(uvd_precondition(*ours, g), psgd_torch.precond_grad_UVd_math(*theirs, g))
