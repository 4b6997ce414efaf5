"""GaLore-AdamW (``memopt.build_optimizer(model, "galore")``) against the authors' ``galore-torch`` package
(``GaLoreAdamW``, ``proj_type="std"``) on the same model, data and split.

Equal to float32 round-off, not bit for bit: after one step the wide matrix (left projection) is identical and
the tall ones (right projection) differ by an ulp, because memopt keeps the basis ``Vh[:r]`` as a contiguous
copy (:func:`memopt.estimators.projectors.build`, so as not to keep the whole ``Vh`` alive) where galore-torch
multiplies by a strided view of ``Vh``: BLAS then sums the products in another order. Measured over 12 steps:
at most 1.2e-7 absolute on any parameter (``rtol=1e-6`` below).
"""

from __future__ import annotations

import pytest
import torch
from galore_torch import GaLoreAdamW as ReferenceGaLore
from tests.helpers import hidden_matrices_net, train_regression
from torch import nn

import memopt
from memopt.optim.adam_parts import rebuilds_projector
from memopt.optim.galore import GaLoreAdamW


def _reference(net: nn.Module, **hparams) -> ReferenceGaLore:
    hidden = [net[0].weight, net[3].weight, net[5].weight]
    rest = [p for p in net.parameters() if all(p is not h for h in hidden)]
    projection = {k: hparams.pop(k) for k in ("rank", "update_proj_gap", "scale")}
    return ReferenceGaLore([{"params": hidden, **projection, "proj_type": "std"}, {"params": rest}], **hparams)


HPARAMS = {"lr": 0.01, "rank": 4, "update_proj_gap": 5, "scale": 0.25}


@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["no-decay", "decay"])
def test_equals_galore_torch_with_its_projector_schedule(weight_decay):
    net = hidden_matrices_net()
    optimizer = memopt.build_optimizer(net, "galore", proj_schedule="galore", weight_decay=weight_decay, **HPARAMS)
    train_regression(net, optimizer)
    reference = hidden_matrices_net()
    train_regression(reference, _reference(reference, weight_decay=weight_decay, **HPARAMS))
    for (name, mine), theirs in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-7, msg=name)


def test_memopt_schedule_rebuilds_at_1_gap_2gap_and_differs_from_galore_torch_after_step_gap():
    assert [t for t in range(1, 12) if rebuilds_projector(t, 5, "memopt")] == [1, 5, 10]
    assert [t for t in range(1, 12) if rebuilds_projector(t, 5, "galore")] == [1, 6, 11]
    bases = {}
    for steps in (4, 5, 6):
        net = hidden_matrices_net()
        optimizer = memopt.build_optimizer(net, "galore", **HPARAMS)
        train_regression(net, optimizer, steps)
        bases[steps] = optimizer.state[net[0].weight]["sm_basis"].clone()
    assert torch.equal(bases[4], bases[4]) and not torch.equal(bases[4], bases[5])  # rebuilt at step 5
    assert torch.equal(bases[5], bases[6])
    # up to step 4 both schedules coincide: equal to galore-torch; after the rebuild at 5 they part
    for steps, close in ((4, True), (6, False)):
        net, reference = hidden_matrices_net(), hidden_matrices_net()
        train_regression(net, memopt.build_optimizer(net, "galore", **HPARAMS), steps)
        train_regression(reference, _reference(reference, **HPARAMS), steps)
        assert torch.allclose(net[0].weight, reference[0].weight, rtol=1e-6, atol=1e-7) is close


def test_the_moments_have_the_projected_shapes_and_the_rest_is_adamw():
    net = hidden_matrices_net()
    optimizer = memopt.build_optimizer(net, "galore", **HPARAMS)
    galore, plain = optimizer.param_groups
    assert galore["param_names"] == ["0.weight", "3.weight", "5.weight"] and plain["rank"] is None
    train_regression(net, optimizer, 1)
    state = optimizer.state
    assert state[net[0].weight]["exp_avg"].shape == (40, 4)  # tall: right projection
    assert state[net[3].weight]["exp_avg_sq"].shape == (4, 40)  # wide: left projection
    assert state[net[7].weight]["exp_avg"].shape == (3, 30)  # the output head: AdamW, whole


def test_a_vector_in_a_rank_group_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"has shape \(3,\), but GaLore projects matrices.*rank=None"):
        GaLoreAdamW([nn.Parameter(torch.ones(3))], rank=2)
    with pytest.raises(ValueError, match="proj_schedule"):
        GaLoreAdamW([nn.Parameter(torch.ones(3, 3))], rank=2, proj_schedule="torch")
