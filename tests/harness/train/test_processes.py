"""The single-process stand-in has the interface of the torchrun processes, with identities for collectives."""

from __future__ import annotations

import inspect

import pytest
import torch

from memopt.harness.train.distributed import Distributed, SingleProcess, launch
from memopt.harness.train.errors import ConfigError


def public(cls: type) -> set[str]:
    return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}


def test_single_process_has_every_method_and_field_of_distributed():
    fields = {"rank", "world_size", "device", "parallel"}
    assert public(Distributed) | fields <= public(SingleProcess) | {"device"}
    for name in public(Distributed) - fields - {"is_main"}:
        assert inspect.signature(getattr(SingleProcess, name)).parameters.keys() == (
            inspect.signature(getattr(Distributed, name)).parameters.keys()
        ), name


def test_single_process_collectives_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    processes = launch("cpu", "fsdp")
    assert isinstance(processes, SingleProcess)
    assert (processes.rank, processes.world_size, processes.is_main) == (0, 1, True)
    model = torch.nn.Linear(2, 2)
    assert processes.wrap(model) is model
    batch = torch.arange(6).reshape(3, 2)
    assert processes.local_rows(batch) is batch
    rows, weight = processes.eval_rows(batch)
    assert rows is batch and weight == 3
    values = torch.tensor([1.5, 2.0], dtype=torch.float64)
    total = processes.total(values)
    assert torch.equal(total, values) and total is not values
    assert processes.mean(values) is values and processes.agree(True) and not processes.agree(False)
    assert (
        processes.from_main("x") == "x" and processes.on_main(lambda: 7) == 7 and processes.main_first(lambda: 8) == 8
    )
    with processes.gradient_sync(model, False):
        pass
    processes.barrier()
    assert processes.describe() == {}


def test_single_process_clips_like_torch():
    torch.manual_seed(0)
    a = torch.nn.Linear(4, 4)
    a(torch.randn(3, 4)).square().sum().backward()
    b = torch.nn.Linear(4, 4)
    b.load_state_dict(a.state_dict())
    b.weight.grad, b.bias.grad = a.weight.grad.clone(), a.bias.grad.clone()
    norm = SingleProcess(torch.device("cpu")).clip_grad_norm(a.parameters(), 0.1)
    expected = torch.nn.utils.clip_grad_norm_(b.parameters(), 0.1)
    assert torch.equal(norm, expected) and torch.equal(a.weight.grad, b.weight.grad)


def test_a_bad_device_names_the_flag(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ConfigError, match=r"--device 'gpu': not a device"):
        launch("gpu", "fsdp")
