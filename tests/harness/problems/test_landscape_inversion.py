"""Landscape learning (Liu et al., arXiv 2206.09027) on a digits VAE decoder: gradient descent in the learned
space reaches the error target in fewer iterations than the same gradient descent in the latent space, on
held-out digits from the same random starts."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.problems import inversion as inv

TARGET = 0.06  # per-pixel MSE; a random start is at about 0.10


def _median_iterations(result: inv.Inversion) -> float:
    reached = sorted(r if r is not None else float("inf") for r in result.iterations_to(TARGET))
    return reached[len(reached) // 2]


def _compare(seed: int) -> tuple[float, float]:
    train, held_out = inv.digits(held_out=200, seed=seed)
    generator = inv.train_generator(train, steps=300, seed=seed)
    mapping = inv.train_landscape(generator, train, rounds=20, lr=1.0, trajectory=10, seed=seed,
                                  updates_per_round=40)
    x = held_out[:32]
    start = torch.randn(32, generator.latent, generator=torch.Generator().manual_seed(100 + seed))
    plain = inv.invert(generator, x, start, "sgd", 1.0, 60)
    learned = inv.invert(generator, x, start, "sgd", 1.0, 60, mapping=mapping)
    assert plain.errors[0] == pytest.approx(inv.errors(generator, start, x).tolist())
    return _median_iterations(plain), _median_iterations(learned)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learned_landscape_is_faster_on_three_seeds(seed):
    plain, learned = _compare(seed)
    assert learned < plain, (plain, learned)


def test_inversion_records_every_iteration_and_targets():
    result = inv.Inversion(errors=[[0.1, 0.2], [0.05, 0.15], [0.01, 0.12]], seconds=1.0)
    assert result.iterations_to(0.06) == [1, None] and result.iterations_to(0.2) == [0, 0]
