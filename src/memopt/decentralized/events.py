"""A continuous-time event queue driven by independent, seeded Poisson clocks.

Every node ``i`` has a *gradient clock* of rate ``grad_rate`` and every edge ``(i, j)`` a *communication
clock* of rate ``comm_rate / |E|`` (DADAO, Nabli & Oyallon, arXiv 2208.00779: local gradient steps and gossip
are separate independent Poisson point processes). A clock's waiting times are i.i.d. exponential draws from
its own generator, seeded by ``(seed, kind, index)`` through :class:`numpy.random.SeedSequence`. The event
times of a clock therefore do not depend on which other clocks exist or on the order they are read in: a
process that owns only node ``i`` and its edges (:mod:`memopt.decentralized.processes`) draws exactly the
events that the single-process simulation draws for them.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from memopt.decentralized.graphs import Graph

GRADIENT = 0
COMMUNICATION = 1


def clock_generator(seed: int, kind: int, index: int) -> np.random.Generator:
    """The generator of clock ``(kind, index)`` (kind :data:`GRADIENT` with a node, :data:`COMMUNICATION`
    with an edge index)."""
    if kind not in (GRADIENT, COMMUNICATION):
        raise ValueError(f"kind must be GRADIENT (0) or COMMUNICATION (1), got {kind!r}.")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(kind, index)))


class PoissonClock:
    """Rings at the points of a homogeneous Poisson process of ``rate`` on ``(0, inf)``."""

    def __init__(self, rate: float, generator: np.random.Generator) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}.")
        self.rate = float(rate)
        self._generator = generator
        self.time = 0.0

    def tick(self) -> float:
        """Advance to the next ring and return its time."""
        self.time += float(self._generator.exponential(1.0 / self.rate))
        return self.time


@dataclass(frozen=True)
class Event:
    """``kind`` GRADIENT at node ``index``, or COMMUNICATION on edge ``index`` (its nodes in ``nodes``)."""

    time: float
    kind: int
    index: int
    nodes: tuple[int, ...]


class EventQueue:
    """Merges the clocks of a set of nodes and edges of ``graph`` in time order (a binary heap).

    ``nodes`` and ``edge_indices`` select the clocks (all by default); ``t_max`` ends the stream.
    """

    def __init__(
        self,
        graph: Graph,
        seed: int,
        grad_rate: float = 1.0,
        comm_rate: float = 1.0,
        nodes: list[int] | None = None,
        edge_indices: list[int] | None = None,
    ) -> None:
        if not grad_rate > 0:
            raise ValueError(f"grad_rate must be > 0 (per node), got {grad_rate}.")
        if not comm_rate > 0:
            raise ValueError(f"comm_rate must be > 0 (total over all edges), got {comm_rate}.")
        self.graph = graph
        nodes = list(range(graph.n)) if nodes is None else nodes
        edge_indices = list(range(graph.num_edges)) if edge_indices is None else edge_indices
        per_edge = comm_rate / graph.num_edges
        self._clocks: dict[tuple[int, int], PoissonClock] = {}
        self._heap: list[tuple[float, int, int]] = []
        for i in nodes:
            self._add(GRADIENT, i, grad_rate, seed)
        for k in edge_indices:
            self._add(COMMUNICATION, k, per_edge, seed)

    def _add(self, kind: int, index: int, rate: float, seed: int) -> None:
        clock = PoissonClock(rate, clock_generator(seed, kind, index))
        self._clocks[(kind, index)] = clock
        heapq.heappush(self._heap, (clock.tick(), kind, index))

    def pop(self) -> Event:
        """The earliest pending event (and schedule that clock's next one)."""
        time, kind, index = heapq.heappop(self._heap)
        heapq.heappush(self._heap, (self._clocks[(kind, index)].tick(), kind, index))
        nodes = (index,) if kind == GRADIENT else self.graph.edges[index]
        return Event(time, kind, index, nodes)

    def peek_time(self) -> float:
        return self._heap[0][0]

    def until(self, t_max: float) -> Iterator[Event]:
        """Events with time ``<= t_max`` in increasing time."""
        while self._heap[0][0] <= t_max:
            yield self.pop()
