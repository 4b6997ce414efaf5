"""The GPU path: CUDA parameters, float32 masters in pinned host memory, copies on a side stream. Run only
where CUDA is available (skipped otherwise, with the reason)."""

from __future__ import annotations

import pytest
import torch
from offload_models import batches, tiny_model

from memopt.offload import offload
from memopt.registry.specs import build_optimizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU path needs CUDA; none here")

DATA = batches(6, 2)


def host_reference(name: str, dtype: torch.dtype, clip: float | None) -> list[torch.Tensor]:
    """The same math by hand: CUDA forward/backward, gradients copied to float32 CPU masters, the plain
    optimizer steps the masters, the masters copied back."""
    model = tiny_model(dtype=dtype).cuda()
    masters = [p.detach().float().cpu().requires_grad_() for p in model.parameters()]
    optimizer = build_optimizer(torch.nn.ParameterList(masters), name, lr=1e-2)
    for microbatches in DATA:
        for x in microbatches:
            (model(x.cuda().to(dtype)).float().pow(2).mean() / len(microbatches)).backward()
        for p, m in zip(model.parameters(), masters):
            m.grad = p.grad.float().cpu()
            p.grad = None
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(masters, clip)
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            for p, m in zip(model.parameters(), masters):
                p.copy_(m)
    return [p.detach().cpu() for p in model.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("to", ["cpu", "disk"])
def test_cuda_parameters_step_on_the_host(to, clip, dtype, tmp_path):
    model = tiny_model(dtype=dtype).cuda()
    optimizer = offload("adamw8bit", model, to, tmp_path if to == "disk" else None, max_grad_norm=clip,
                        accumulation_steps=2, lr=1e-2)  # fmt: skip
    assert all(not m.is_cuda for m in optimizer.masters())
    if to == "cpu":
        assert all(m.is_pinned() for m in optimizer.masters())
    for microbatches in DATA:
        for x in microbatches:
            (model(x.cuda().to(dtype)).float().pow(2).mean() / len(microbatches)).backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.cuda.synchronize()
    expected = host_reference("adamw8bit", dtype, clip)
    assert all(torch.equal(a, b.cpu()) for a, b in zip(expected, model.parameters()))
    assert all(not t.is_cuda for s in optimizer.inner.state.values() for t in s.values() if torch.is_tensor(t))
