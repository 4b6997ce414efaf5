"""The memory study's WideResNet: shapes, and the two equivalences the study relies on (checkpointing and
microbatches compute the full batch's gradient)."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.train.wide_resnet import WideResNet


def _grads(model: WideResNet, images: torch.Tensor, labels: torch.Tensor, parts: int) -> list[torch.Tensor]:
    model.zero_grad()
    for x, y in zip(images.chunk(parts), labels.chunk(parts)):
        (torch.nn.functional.cross_entropy(model(x), y) / parts).backward()
    return [p.grad.clone() for p in model.parameters()]


def test_checkpointing_and_microbatches_give_the_full_batch_gradient():
    torch.manual_seed(0)
    model = WideResNet(depth=10, widen=1).double()
    images, labels = torch.randn(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    assert model(images).shape == (8, 10)
    full = _grads(model, images, labels, 1)
    # GroupNorm: a sample's output does not depend on the others, so 8 microbatches of 1 give the same gradient
    torch.testing.assert_close(_grads(model, images, labels, 8), full, rtol=1e-10, atol=1e-12)
    model.checkpointing = True
    torch.testing.assert_close(_grads(model, images, labels, 1), full, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("depth", "widen", "message"), [(12, 2, "depth 12"), (16, 0, "widen 0")])
def test_bad_shapes_are_refused(depth, widen, message):
    with pytest.raises(ValueError, match=message):
        WideResNet(depth=depth, widen=widen)
