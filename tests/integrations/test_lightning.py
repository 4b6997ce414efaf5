"""memopt optimizers in PyTorch Lightning: ``configure_optimizers`` with a scheduler, a few steps, and a
checkpoint resumed by ``Trainer.fit(ckpt_path=...)`` continuing exactly as an uninterrupted run.

Lightning's automatic optimization steps every optimizer as ``optimizer.step(closure)``, its closure running
``training_step``, ``zero_grad`` and ``backward``: closure optimizers (``needs_closure``) work as they are, and
give what a plain ``step(closure)`` loop gives.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from tests.integrations.trainer_setup import ALL, CLOSURE, batch, build, parameters, tiny_mlp
from torch.nn.functional import mse_loss
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset

BATCHES_PER_EPOCH = 3


class Regression(L.LightningModule):
    def __init__(self, name: str):
        super().__init__()
        self.net = tiny_mlp()
        self.name = name

    def training_step(self, data, index):
        inputs, targets = data
        return mse_loss(self.net(inputs), targets)

    def configure_optimizers(self):
        optimizer = build(self.net, self.name)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": StepLR(optimizer, 2, 0.5), "interval": "step"}}


def _data() -> DataLoader:
    inputs, targets = zip(*(batch(step) for step in range(BATCHES_PER_EPOCH)))
    return DataLoader(TensorDataset(torch.cat(inputs), torch.cat(targets)), batch_size=8, shuffle=False)


def _fit(module: Regression, steps: int, ckpt_path=None, checkpoints=None) -> L.Trainer:
    """``steps`` steps; with ``checkpoints`` (a folder), a checkpoint every epoch as a crashing run leaves them."""
    saver = [ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=BATCHES_PER_EPOCH, save_top_k=-1)]
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=checkpoints is not None, callbacks=saver if checkpoints else None,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(module, _data(), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("name", ALL)
def test_checkpoint_and_resume_continue_exactly(tmp_path, name):
    straight = Regression(name)
    _fit(straight, 2 * BATCHES_PER_EPOCH, checkpoints=tmp_path)
    (checkpoint,) = tmp_path.glob(f"*step={BATCHES_PER_EPOCH}.ckpt")
    resumed = Regression(name)
    trainer = _fit(resumed, 2 * BATCHES_PER_EPOCH, ckpt_path=checkpoint)
    assert trainer.global_step == 2 * BATCHES_PER_EPOCH
    assert any(not torch.equal(a, b) for a, b in zip(parameters(straight), parameters(tiny_mlp())))
    assert all(torch.equal(a, b) for a, b in zip(parameters(straight), parameters(resumed)))


@pytest.mark.parametrize("name", CLOSURE)
def test_closure_optimizers_get_lightnings_closure(name):
    module = Regression(name)
    _fit(module, BATCHES_PER_EPOCH)
    model = tiny_mlp()
    optimizer = build(model, name)
    scheduler = StepLR(optimizer, 2, 0.5)
    for step in range(BATCHES_PER_EPOCH):
        inputs, targets = batch(step)

        def closure(inputs=inputs, targets=targets):
            optimizer.zero_grad()
            loss = mse_loss(model(inputs), targets)
            loss.backward()
            return loss

        optimizer.step(closure)
        scheduler.step()
    for a, b in zip(parameters(module.net), parameters(model)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
