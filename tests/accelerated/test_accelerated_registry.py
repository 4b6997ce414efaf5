"""The accelerated registry names: they build, run with recommended settings, export, count their state."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import Tiny
from torch import nn

import memopt
from memopt.registry.specs import accepted_hparams, recommended_hparams

NAMES = ["nag_gs", "meta_storm", "storm_plus", "quasar_agd", "nesterov_agd", "asgd"]
CLOSURE_NAMES = {"meta_storm", "storm_plus", "quasar_agd", "nesterov_agd"}


def test_names_and_exports():
    listed = memopt.list_optimizers()
    assert set(NAMES) <= set(listed)
    for name in ("NAGGS", "MetaSTORM", "STORMPlus", "QuasarAGD", "NesterovAGD", "ASGD", "Grokfast"):
        assert name in memopt.__all__ and hasattr(memopt, name)
    assert {"lr", "mu", "gamma", "fixed_gamma"} <= set(accepted_hparams("nag_gs"))
    assert {"lr", "p", "a0", "b0", "variant", "per_coordinate", "ema"} <= set(accepted_hparams("meta_storm"))


@pytest.mark.parametrize("name", NAMES)
def test_recommended_settings_lower_a_loss_with_the_harness_contract(name):
    torch.manual_seed(0)
    model = Tiny()
    optimizer = memopt.build_optimizer(model, name, **recommended_hparams(name))
    assert getattr(optimizer, "needs_closure", False) == (name in CLOSURE_NAMES)
    x = torch.randint(0, 20, (32,))
    losses = []
    for _ in range(60):

        def closure():
            optimizer.zero_grad()
            loss = model(x)
            loss.backward()
            return loss

        if getattr(optimizer, "needs_closure", False):
            loss = optimizer.step(closure)
        else:
            loss = closure()
            optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.2 * losses[0]
    assert memopt.state_bytes(optimizer) > 0


def test_state_bytes_follow_the_buffers():
    w = torch.zeros(100, requires_grad=True)
    for cls, buffers in ((memopt.NAGGS, 1), (memopt.ASGD, 1)):
        optimizer = cls([w])
        w.grad = torch.ones(100)
        optimizer.step()
        assert memopt.state_bytes(optimizer) == 400 * buffers + 8 * (len(optimizer.state[w]) - buffers)


def test_effective_lr():
    assert memopt.effective_lr(0.01, 0.9) == pytest.approx(0.1)
    assert memopt.effective_lr(0.01, 0.9, dampening=0.9) == pytest.approx(0.01)
    with pytest.raises(ValueError, match=r"Invalid momentum: 1\.0"):
        memopt.effective_lr(0.01, 1.0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: memopt.NAGGS([torch.zeros(2, requires_grad=True)], mu=0.0), r"Invalid mu: 0 with fixed_gamma=False"),
        (lambda: memopt.NAGGS([torch.zeros(2, requires_grad=True)], gamma=0.0), r"Invalid gamma: 0\.0"),
        (lambda: memopt.NAGGS([torch.zeros(2, requires_grad=True)], lr=-1.0), r"Invalid lr: -1\.0"),
        (lambda: memopt.build_optimizer(nn.Linear(2, 2), "nag_gs", alpha=0.1), r"no hyperparameter 'alpha'"),
        (lambda: memopt.build_optimizer(nn.Linear(2, 2), "metastorm"), r"Unknown optimizer 'metastorm'.*meta_storm"),
        (
            lambda: memopt.NAGGS([torch.zeros(2, dtype=torch.complex64, requires_grad=True)]),
            r"is complex.*view_as_real",
        ),
    ],
)
def test_errors_name_the_value_and_the_fix(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sparse_gradients_are_rejected_by_name():
    model = nn.Embedding(10, 4, sparse=True)
    optimizer = memopt.build_optimizer(model, "nag_gs")
    model(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match=r"parameter 'weight' has a sparse gradient"):
        optimizer.step()
