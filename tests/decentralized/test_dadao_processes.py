"""DADAO with one process per node (gloo, point-to-point) on a ring of 4: same optimum, same events."""

from __future__ import annotations

import numpy as np
import pytest

from memopt.decentralized.dadao import DADAO
from memopt.decentralized.graphs import ring
from memopt.decentralized.processes import run_dadao_processes
from memopt.harness.problems.decentralized import quadratic_sum


@pytest.mark.distributed
def test_four_processes_on_a_ring_reach_the_minimizer_and_replay_the_simulation():
    graph = ring(4)
    problem = quadratic_sum(4, 3, mu=0.2, L=1.0, seed=1)
    x_star = problem.minimizer
    x0 = np.random.default_rng(0).standard_normal((4, 3))
    t_max, seed = 200.0, 3
    run = run_dadao_processes(graph, problem, problem.mu, problem.L, t_max, seed=seed, x0=x0)
    sim = DADAO(graph, problem, problem.mu, problem.L, seed=seed, x0=x0)
    trace = sim.run(t_max, x_star, records=4)
    gap = float(((run.x - x_star) ** 2).sum(1).mean())
    assert trace.gap[0] > 1.0 and gap < 1e-5 * trace.gap[0]  # converged to the minimizer of the sum
    np.testing.assert_allclose(run.x, trace.x, atol=1e-10)  # the same trajectory, event for event
    assert sum(run.gradients) == sim.gradients and run.edge_activations == sim.communications
    # each edge event is counted once at each end; each node saw only its own events
    assert sum(run.communications) == 2 * sim.communications and min(run.gradients) > 0.5 * t_max
