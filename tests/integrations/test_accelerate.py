"""memopt optimizers under Hugging Face Accelerate: ``accelerator.prepare(optimizer)``, a few steps, and
``save_state``/``load_state`` resuming exactly where an uninterrupted run goes, for every registry optimizer.

Closure optimizers (``needs_closure``) are stepped as ``optimizer.step(closure)``: the prepared optimizer
passes the closure through; stepping them without one is a ``ValueError`` that says so.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from tests.integrations.trainer_setup import ALL, CLOSURE, batch, build, parameters, tiny_mlp
from torch.nn.functional import mse_loss
from torch.optim.lr_scheduler import StepLR

STEPS, SAVE_AT = 6, 3


def _train(name: str, folder, *, save: bool = False, resume: bool = False) -> list[torch.Tensor]:
    """STEPS steps of ``name`` under Accelerate; ``save`` writes the state after SAVE_AT steps, ``resume``
    loads it and does the rest."""
    accelerator = Accelerator(cpu=True)
    model = tiny_mlp()
    optimizer = build(model, name)
    scheduler = StepLR(optimizer, step_size=2, gamma=0.5)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    start = 0
    if resume:
        accelerator.load_state(str(folder))
        start = SAVE_AT
    for step in range(start, STEPS):
        inputs, targets = batch(step)
        if getattr(optimizer.optimizer, "needs_closure", False):

            def closure(inputs=inputs, targets=targets):
                optimizer.zero_grad()
                loss = mse_loss(model(inputs), targets)
                accelerator.backward(loss)
                return loss

            optimizer.step(closure)
        else:
            accelerator.backward(mse_loss(model(inputs), targets))
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if save and step + 1 == SAVE_AT:
            accelerator.save_state(str(folder))
    return parameters(model)


@pytest.mark.parametrize("name", ALL)
def test_save_state_and_load_state_resume_exactly(tmp_path, name):
    straight = _train(name, tmp_path, save=True)
    resumed = _train(name, tmp_path, resume=True)
    initial = parameters(tiny_mlp())
    assert any(not torch.equal(a, b) for a, b in zip(straight, initial)), "the optimizer did not move"
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


@pytest.mark.parametrize("name", CLOSURE)
def test_closure_optimizers_say_they_need_step_closure(name):
    accelerator = Accelerator(cpu=True)
    model = tiny_mlp()
    model, optimizer = accelerator.prepare(model, build(model, name))
    inputs, targets = batch(0)
    accelerator.backward(mse_loss(model(inputs), targets))
    with pytest.raises(ValueError, match=r"\.step\(\) needs a closure: .*needs_closure"):
        optimizer.step()
