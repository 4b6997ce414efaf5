"""DADAO's event-exact simulation: the flow, the jumps' invariants, convergence to the minimizer of the sum,
reproducibility; the synchronous baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memopt.decentralized.baselines import chebyshev_gossip, decentralized_gradient, msda
from memopt.decentralized.dadao import DADAO, Z_T, DADAOParameters, Flow, Z
from memopt.decentralized.graphs import complete, grid, random_geometric, ring, star
from memopt.harness.problems.decentralized import quadratic_sum


def test_parameters_follow_the_authors_constants():
    p = DADAOParameters(mu=0.2, L=1.0, chi1_star=0.3)
    s = np.sqrt(0.1)
    assert p.nu == 0.1 and p.s == pytest.approx(s)
    assert (p.alpha, p.alpha_t, p.eta, p.theta) == pytest.approx((s / 4, s / 8, s / 8, 1 / (2 * s)))
    assert (p.gamma, p.gamma_t, p.delta) == pytest.approx((0.25, 1 / (4 * np.sqrt(0.1)), s / 4))
    assert p.beta_t == pytest.approx(2 * 0.3 * np.sqrt(10.0))
    g = ring(6)  # default rate sqrt(2 chi1 chi2) = sqrt(30): chi1* = 6 / sqrt(30)
    assert DADAOParameters.for_graph(0.2, 1.0, g).chi1_star == pytest.approx(6 / np.sqrt(30))
    with pytest.raises(ValueError, match="mu must be > 0"):
        DADAOParameters(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="L must be >= mu"):
        DADAOParameters(2.0, 1.0, 1.0)


@pytest.mark.parametrize("mu", [0.01, 0.2, 1.0])
def test_flow_is_the_matrix_exponential(mu):
    flow = Flow(DADAOParameters(mu, 1.0, 0.5))
    for dt in (1e-3, 0.7, 25.0):
        exact = torch.linalg.matrix_exp(torch.from_numpy(flow.matrix * dt)).numpy()
        np.testing.assert_allclose(flow.propagator(dt), exact, atol=1e-11)
    with pytest.raises(ValueError, match="dt"):
        flow.propagator(-1.0)


GRAPHS = [ring(8), grid(3, 3), complete(8), star(8), random_geometric(8, 0.6, seed=0)]


@pytest.mark.parametrize("graph", GRAPHS, ids=lambda g: g.name)
def test_dadao_converges_to_the_minimizer_of_the_sum(graph):
    problem = quadratic_sum(graph.n, 3, mu=0.25, L=1.0, seed=1)
    x_star = problem.minimizer
    # the minimizer of the sum: its gradients sum to zero
    assert np.abs(problem.grads(np.tile(x_star, (graph.n, 1))).sum(0)).max() < 1e-12
    sim = DADAO(graph, problem, problem.mu, problem.L, seed=0)
    trace = sim.run(200.0, x_star, records=20)
    assert trace.gap[0] > 0.1
    assert trace.gap[-1] < 1e-6 * trace.gap[0]
    # linear convergence: the gap keeps falling over the second half (no plateau)
    assert trace.gap[-1] < 1e-2 * trace.gap[10]
    assert trace.gradients[-1] == sim.gradients and trace.communications[-1] == sim.communications
    # z-averages: comm jumps conserve sum_i z_i and sum_i z~_i, the flow conserves alpha~ z + alpha z~ per node
    p = sim.params
    state = np.stack([sim.flow(sim.state[i], sim.time - sim.last[i]) for i in range(graph.n)])
    invariant = (p.alpha_t * state[:, Z] + p.alpha * state[:, Z_T]).sum(0)
    assert np.abs(invariant).max() < 1e-9 * max(1.0, np.abs(state[:, Z_T]).max())


def test_event_counts_follow_the_rates():
    graph = ring(8)
    problem = quadratic_sum(graph.n, 2, seed=0)
    sim = DADAO(graph, problem, problem.mu, problem.L, seed=5)
    t_max = 300.0
    sim.run(t_max, records=1)
    rate = graph.quantities.sufficient_rate
    for count, expected in ((sim.gradients, graph.n * t_max), (sim.communications, rate * t_max)):
        assert abs(count - expected) < 4 * np.sqrt(expected)


def test_simulation_is_reproducible_for_a_seed():
    graph = grid(2, 3)
    problem = quadratic_sum(graph.n, 2, seed=2)
    x0 = np.random.default_rng(0).standard_normal((graph.n, 2))
    runs = [DADAO(graph, problem, problem.mu, problem.L, seed=s, x0=x0).run(50.0, problem.minimizer) for s in (4, 4, 5)]
    assert runs[0].gap == runs[1].gap and np.array_equal(runs[0].x, runs[1].x)
    assert runs[0].gap != runs[2].gap
    with pytest.raises(ValueError, match="x0 must have shape"):
        DADAO(graph, problem, problem.mu, problem.L, x0=np.zeros(5))
    with pytest.raises(ValueError, match=r"oracle\.n"):
        DADAO(ring(4), problem, problem.mu, problem.L)
    with pytest.raises(ValueError, match="t_max"):
        DADAO(graph, problem, problem.mu, problem.L).run(0.0)


def test_chebyshev_gossip_is_the_polynomial_of_the_laplacian():
    graph = ring(7)
    lap = graph.laplacian()
    lam, vecs = np.linalg.eigh(lap)
    gap = lam[1] / lam[-1]
    c2, c3, k = (1 + gap) / (1 - gap), 2 / ((1 + gap) * lam[-1]), 3
    t_k = np.polynomial.chebyshev.Chebyshev.basis(k)
    poly = 1 - t_k(c2 * (1 - c3 * lam)) / t_k(c2)
    v = np.random.default_rng(0).standard_normal((7, 2))
    np.testing.assert_allclose(chebyshev_gossip(lap, v, k, c2, c3), (vecs * poly) @ vecs.T @ v, atol=1e-12)


@pytest.mark.parametrize("graph", [ring(10), complete(6), star(6)], ids=lambda g: g.name)
def test_msda_is_exact_and_dgd_with_a_constant_step_is_not(graph):
    problem = quadratic_sum(graph.n, 3, mu=0.1, L=1.0, seed=0)
    x_star = problem.minimizer
    fast = msda(graph, problem.dual_grads, 3, problem.mu, problem.L, 150, x_star, record_every=10)
    assert fast.gap[-1] < 1e-16
    dgd = decentralized_gradient(graph, problem.grads, np.zeros(3), 1 / problem.L, 3000, x_star, record_every=100)
    # a fixed point of DGD is not the minimizer: it stalls at a gap that no longer decreases
    assert dgd.gap[-1] > 1e-4 and abs(dgd.gap[-1] - dgd.gap[-2]) < 1e-3 * dgd.gap[-1]
    assert dgd.gradients[-1] == 3000 * graph.n and dgd.communications[-1] == 3000 * graph.num_edges
