"""Poincaré embeddings of a transitive closure (Nickel & Kiela, NeurIPS 2017) and their reconstruction metrics.

Model: one point ``theta_u`` of the Poincaré ball per node (a :class:`~memopt.manifolds.ManifoldParameter`),
initialised uniformly in ``[-1e-3, 1e-3]^d``. Loss for an edge ``(u, v)`` with ``K`` negatives ``v'`` (nodes
``w != u`` with ``(u, w)`` not an edge, sampled uniformly)::

    L(u, v) = -log( exp(-d(u, v)) / sum_{v'' in {v} u negatives} exp(-d(u, v'')) )

i.e. cross-entropy over the logits ``-d`` with the positive first (the reference implementation's form).
A negative that cannot be found after a few rounds of rejection is masked out of the softmax.

Reconstruction (every edge is both trained on and evaluated), as in the reference ``reconstruction``:
for each node ``u`` with neighbours ``N_u`` (its ancestors in the closure), ``rank(u, v) = 1 + #{w not in
N_u, w != u : d(u, w) < d(u, v)}``; the **mean rank** averages over all edges, the **MAP** averages over
nodes the average precision of ranking all other nodes by ``-d(u, .)``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from memopt.manifolds import ManifoldParameter, PoincareBall
from memopt.manifolds.poincare import dist_arcosh


class PoincareEmbedding(nn.Module):
    """``num_nodes`` points of the ``dim``-dimensional Poincaré ball (curvature -1)."""

    def __init__(self, num_nodes: int, dim: int, *, generator: torch.Generator, init: float = 1e-3) -> None:
        super().__init__()
        data = (torch.rand(num_nodes, dim, generator=generator) * 2 - 1) * init
        self.weight = ManifoldParameter(data, PoincareBall())

    def distances(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Hyperbolic distances between the points of the index tensors ``u`` and ``v`` (broadcast)."""
        return dist_arcosh(self.weight[u], self.weight[v], 1.0)

    def loss(self, edges: torch.Tensor, negatives: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mean softmax loss of ``edges`` (B x 2) against ``negatives`` (B x K, ``valid`` marks usable ones)."""
        candidates = torch.cat([edges[:, 1:], negatives], dim=1)
        logits = -self.distances(edges[:, :1], candidates)
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        logits = logits.masked_fill(~mask, float("-inf"))
        return nn.functional.cross_entropy(logits, torch.zeros(len(edges), dtype=torch.long))


class NegativeSampler:
    """Uniform negatives ``w`` for a child ``u``: ``w != u`` and ``(u, w)`` not an edge of the closure."""

    def __init__(self, edges: torch.Tensor, num_nodes: int, *, rounds: int = 10) -> None:
        self.num_nodes = num_nodes
        self.adjacency = torch.zeros(num_nodes, num_nodes, dtype=torch.bool)
        self.adjacency[edges[:, 0], edges[:, 1]] = True
        self.adjacency.fill_diagonal_(True)
        self.rounds = rounds

    def __call__(self, u: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(negatives, valid)``, both ``len(u) x count``."""
        negatives = torch.randint(self.num_nodes, (len(u), count), generator=generator)
        invalid = self.adjacency[u[:, None], negatives]
        for _ in range(self.rounds):
            if not bool(invalid.any()):
                break
            fresh = torch.randint(self.num_nodes, (int(invalid.sum()),), generator=generator)
            negatives[invalid] = fresh
            invalid = self.adjacency[u[:, None], negatives]
        return negatives, ~invalid


def batches(edges: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """The edges in a random order, ``batch_size`` at a time (the last batch may be smaller)."""
    order = torch.randperm(len(edges), generator=generator)
    for start in range(0, len(edges), batch_size):
        yield edges[order[start : start + batch_size]]


def _all_distances(points: torch.Tensor, block: int = 1024) -> torch.Tensor:
    rows = [dist_arcosh(points[i : i + block, None, :], points[None, :, :], 1.0) for i in range(0, len(points), block)]
    return torch.cat(rows)


@torch.no_grad()
def reconstruction(points: torch.Tensor, edges: torch.Tensor) -> tuple[float, float]:
    """``(mean rank, MAP)`` of the embedding ``points`` for the closure ``edges`` (module docstring)."""
    n = len(points)
    distances = _all_distances(points.double())
    distances.fill_diagonal_(float("inf"))  # a node is not ranked against itself
    labels = torch.zeros(n, n, dtype=torch.bool)
    labels[edges[:, 0], edges[:, 1]] = True
    order = distances.argsort(dim=1, stable=True)
    sorted_labels = labels.gather(1, order)
    positions = torch.arange(1, n + 1, dtype=torch.float64).expand(n, n)
    hits = sorted_labels.cumsum(1).to(torch.float64)  # k for the k-th neighbour in distance order
    # rank of a neighbour among the non-neighbours: its position minus the neighbours ahead of it
    ranks = (positions - hits + 1)[sorted_labels]
    precision = (hits / positions) * sorted_labels
    has_neighbours = labels.any(1)
    ap = precision.sum(1)[has_neighbours] / labels.sum(1)[has_neighbours]
    return float(ranks.mean()), float(ap.mean())
