"""APOLLO and APOLLO-Mini (``memopt.build_optimizer(model, "apollo" / "apollo_mini")``) against the authors'
``apollo-torch`` package (``APOLLOAdamW``) on the same model, data and split.

The package draws its projections from its own seed sequence (a seed per parameter position, advanced at each
redraw); memopt seeds a generator with ``(proj_seed, parameter index, step)`` so that no projection is state.
The test hands the package memopt's projections (its ``GradientProjector.update_ortho_matrix`` replaced by
one that returns them) and runs memopt with the package's redraw schedule (``proj_schedule="galore"``): then
the two are equal bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from apollo_torch import APOLLOAdamW
from apollo_torch import random_projector as package_projector
from tests.helpers import hidden_matrices_net, train_regression
from torch import nn

import memopt
from memopt.estimators.subspace_momentum import projector_seed
from memopt.optim.apollo import Apollo, gaussian_projection


def _memopt_projections(monkeypatch, gap: int) -> None:
    """Make the package draw memopt's projection of parameter ``seed - 1`` at steps ``1, 1 + gap, ...``."""

    def update_ortho_matrix(self, full_rank_grad, proj_type):
        draws = getattr(self, "draws", 0)
        step = 1 + draws * gap
        index = self.seed - 1  # the package numbers parameters from 1, memopt from 0; the same order
        proj = gaussian_projection(tuple(full_rank_grad.shape), self.rank, projector_seed(0, index, step), "cpu")
        self.ortho_matrix = proj if proj_type == "right" else proj.T
        self.draws = draws + 1

    monkeypatch.setattr(package_projector.GradientProjector, "update_ortho_matrix", update_ortho_matrix)


@pytest.mark.parametrize(
    ("name", "projection"),
    [
        ("apollo", {"rank": 4, "scale_type": "channel", "scale": 1.0}),
        ("apollo_mini", {"rank": 1, "scale_type": "tensor", "scale": 128.0}),
    ],
)
@pytest.mark.parametrize("weight_decay", [0.0, 0.1], ids=["no-decay", "decay"])
def test_equals_apollo_torch_given_the_same_projections(monkeypatch, name, projection, weight_decay):
    gap, lr = 5, 1e-2
    _memopt_projections(monkeypatch, gap)
    net = hidden_matrices_net()
    optimizer = memopt.build_optimizer(
        net, name, lr=lr, weight_decay=weight_decay, update_proj_gap=gap, proj_schedule="galore", **projection
    )
    train_regression(net, optimizer)
    reference = hidden_matrices_net()
    hidden = [reference[0].weight, reference[3].weight, reference[5].weight]
    rest = [p for p in reference.parameters() if all(p is not h for h in hidden)]
    package = APOLLOAdamW(
        [{"params": hidden, "proj": "random", "proj_type": "std", "update_proj_gap": gap, **projection},
         {"params": rest}], lr=lr, weight_decay=weight_decay,
    )  # fmt: skip
    train_regression(reference, package)
    for (param_name, mine), theirs in zip(net.named_parameters(), reference.parameters()):
        assert torch.equal(mine, theirs), param_name


def test_the_projection_is_redrawn_from_its_seed_and_the_moments_are_projected():
    net = hidden_matrices_net()
    optimizer = memopt.build_optimizer(net, "apollo", rank=4, update_proj_gap=5)
    train_regression(net, optimizer, 6)
    tall, wide = optimizer.state[net[0].weight], optimizer.state[net[3].weight]
    assert tall["exp_avg"].shape == (40, 4) and wide["exp_avg_sq"].shape == (4, 40)
    assert tall["proj_drawn"] == 5  # memopt's schedule: 1, gap, 2 gap
    seed = projector_seed(0, 0, 1)
    first = gaussian_projection((40, 24), 4, seed, "cpu")
    assert first.shape == (4, 24) and torch.equal(first, gaussian_projection((40, 24), 4, seed, "cpu"))
    assert abs(first.square().sum().item() / 24 - 1.0) < 0.5  # E ||P x||^2 = ||x||^2: rows of N(0, 1/r)
    mini = memopt.build_optimizer(hidden_matrices_net(), "apollo_mini")
    assert mini.param_groups[0]["rank"] == 1 and mini.param_groups[0]["scale_type"] == "tensor"


def test_bad_settings_are_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"has shape \(3,\), but APOLLO projects matrices.*rank=None"):
        Apollo([nn.Parameter(torch.ones(3))], rank=2)
    with pytest.raises(ValueError, match="scale_type"):
        Apollo([nn.Parameter(torch.ones(3, 3))], rank=2, scale_type="row")
    with pytest.raises(ValueError, match="norm_growth_limit"):
        Apollo([nn.Parameter(torch.ones(3, 3))], rank=2, norm_growth_limit=0.5)
