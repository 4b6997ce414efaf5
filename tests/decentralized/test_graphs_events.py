"""Graphs and their Laplacian quantities; the seeded Poisson event queue."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from memopt.decentralized.events import COMMUNICATION, GRADIENT, EventQueue, PoissonClock, clock_generator
from memopt.decentralized.graphs import Graph, by_name, complete, grid, random_geometric, ring, star


def test_ring_of_six_matches_the_hand_computed_quantities():
    q = ring(6).quantities
    # L_G of C6: lambda+ = 2 - 2 cos(pi/3) = 1; |E| = 6 -> chi1 = 6; edge resistance 5/6 -> chi2 = 6 * 5/12.
    assert q.chi1 == pytest.approx(6.0) and q.chi2 == pytest.approx(2.5)
    assert q.sufficient_rate == pytest.approx(math.sqrt(30.0))


@pytest.mark.parametrize("n", [5, 8])
def test_closed_forms_for_complete_star_and_ring(n):
    c = complete(n).quantities  # lambda+ = n, |E| = n(n-1)/2, resistance 2/n
    assert c.chi1 == pytest.approx((n - 1) / 2) and c.chi2 == pytest.approx((n - 1) / 2)
    s = star(n).quantities  # lambda+ = 1, |E| = n-1, resistance 1
    assert s.chi1 == pytest.approx(n - 1) and s.chi2 == pytest.approx((n - 1) / 2)
    r = ring(n).quantities
    assert r.lambda_min_plus == pytest.approx(2 - 2 * math.cos(2 * math.pi / n))
    assert r.max_resistance == pytest.approx((n - 1) / n)
    for q in (c, s, r):
        assert q.chi2 <= q.chi1 + 1e-12  # chi2 <= chi1 (DADAO abstract)


def test_grid_and_random_geometric_graphs():
    g = grid(3, 4)
    assert g.n == 12 and g.num_edges == 3 * 3 + 2 * 4 and g.is_connected()
    a, b = random_geometric(20, 0.4, seed=1), random_geometric(20, 0.4, seed=1)
    assert a == b and a.is_connected()
    assert random_geometric(20, 0.4, seed=2) != a
    assert by_name("grid", 16).n == 16 and by_name("rgg", 16).is_connected()


def test_bad_graphs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="connected"):
        Graph(4, ((0, 1), (2, 3))).quantities  # noqa: B018
    with pytest.raises(ValueError, match="edges"):
        Graph(3, ((1, 0),))
    with pytest.raises(ValueError, match="n must be"):
        ring(2)
    with pytest.raises(ValueError, match="radius"):
        random_geometric(10, 0.0)
    with pytest.raises(ValueError, match="graph name"):
        by_name("torus", 9)


def _events(queue: EventQueue, t_max: float) -> list[tuple[float, int, int]]:
    return [(e.time, e.kind, e.index) for e in queue.until(t_max)]


def test_event_queue_is_reproducible_for_a_seed_and_changes_with_it():
    g = ring(5)
    a = _events(EventQueue(g, seed=7, comm_rate=3.0), 20.0)
    b = _events(EventQueue(g, seed=7, comm_rate=3.0), 20.0)
    c = _events(EventQueue(g, seed=8, comm_rate=3.0), 20.0)
    assert a == b and a != c
    assert all(t1 <= t2 for (t1, *_), (t2, *_) in itertools.pairwise(a))


def test_a_node_sees_the_same_events_in_its_own_queue_as_in_the_global_one():
    g = grid(2, 3)
    full = _events(EventQueue(g, seed=3, comm_rate=4.0), 30.0)
    for i in range(g.n):
        edges = g.incident_edges(i)
        local = _events(EventQueue(g, seed=3, comm_rate=4.0, nodes=[i], edge_indices=edges), 30.0)
        expected = [e for e in full if (e[1] == GRADIENT and e[2] == i) or (e[1] == COMMUNICATION and e[2] in edges)]
        assert local == expected


def test_clock_counts_and_waiting_times_are_poisson():
    g = complete(4)  # 6 edges
    rate, t_max = 12.0, 2000.0
    events = _events(EventQueue(g, seed=0, grad_rate=0.5, comm_rate=rate), t_max)
    n_grad = sum(1 for e in events if e[1] == GRADIENT)
    n_comm = len(events) - n_grad
    for count, expected in ((n_grad, 0.5 * 4 * t_max), (n_comm, rate * t_max)):
        assert abs(count - expected) < 4 * math.sqrt(expected)  # Poisson: sd = sqrt(mean)
    clock = PoissonClock(2.0, clock_generator(0, GRADIENT, 0))
    times = np.array([clock.tick() for _ in range(20000)])
    gaps = np.diff(np.concatenate([[0.0], times]))
    assert gaps.mean() == pytest.approx(0.5, rel=0.03)
    assert (gaps > 1.0).mean() == pytest.approx(math.exp(-2.0), abs=0.01)  # P(W > t) = exp(-rate t)
    with pytest.raises(ValueError, match="rate"):
        PoissonClock(0.0, clock_generator(0, GRADIENT, 0))
    with pytest.raises(ValueError, match="comm_rate"):
        EventQueue(g, seed=0, comm_rate=-1.0)
