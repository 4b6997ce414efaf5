"""Communication graphs and the spectral quantities that set DADAO's gossip rate.

Graphs: :func:`ring`, :func:`grid`, :func:`complete`, :func:`star`, :func:`path`, :func:`random_geometric`.

Quantities (Nabli & Oyallon, DADAO, arXiv 2208.00779, abstract; conventions of the authors' code
``AdelNabli/DADAO`` ``utils.py``, where every edge is sampled uniformly so the probability-weighted Laplacian is
``L_norm = L_G / |E|``):

* ``chi1 = 1 / lambda_min^+(L_norm)``, the inverse smallest positive eigenvalue;
* ``chi2 = max_{(i,j) in E} 1/2 (e_i - e_j)^T L_norm^+ (e_i - e_j)``, half the largest edge resistance;
* the total communication rate ``sqrt(2 chi1 chi2)`` (authors' ``main.py``), which makes the rescaled
  Laplacian ``Lambda = rate * L_norm`` satisfy ``2 chi1(Lambda) chi2(Lambda) = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Graph:
    """An undirected simple graph on nodes ``0..n-1`` with edges ``(i, j)``, ``i < j``, in a fixed order."""

    n: int
    edges: tuple[tuple[int, int], ...]
    name: str = "graph"

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ValueError(f"n must be >= 2 nodes, got {self.n}.")
        seen = set()
        for i, j in self.edges:
            if not (0 <= i < j < self.n):
                raise ValueError(f"edges must be pairs (i, j) with 0 <= i < j < n={self.n}, got {(i, j)}.")
            if (i, j) in seen:
                raise ValueError(f"edges must not repeat, got {(i, j)} twice.")
            seen.add((i, j))
        if not self.edges:
            raise ValueError("edges must not be empty: a graph without edges cannot reach consensus.")

    @property
    def num_edges(self) -> int:
        return len(self.edges)

    def neighbours(self, i: int) -> list[int]:
        """Neighbours of node ``i`` in increasing order."""
        return sorted([b for a, b in self.edges if a == i] + [a for a, b in self.edges if b == i])

    def incident_edges(self, i: int) -> list[int]:
        """Indices (into :attr:`edges`) of the edges at node ``i``."""
        return [k for k, (a, b) in enumerate(self.edges) if i in (a, b)]

    def laplacian(self) -> np.ndarray:
        """``L_G = D - A`` (float64, ``n x n``)."""
        lap = np.zeros((self.n, self.n))
        for i, j in self.edges:
            lap[i, i] += 1
            lap[j, j] += 1
            lap[i, j] -= 1
            lap[j, i] -= 1
        return lap

    def is_connected(self) -> bool:
        reached, frontier = {0}, [0]
        adjacency: dict[int, list[int]] = {i: [] for i in range(self.n)}
        for i, j in self.edges:
            adjacency[i].append(j)
            adjacency[j].append(i)
        while frontier:
            node = frontier.pop()
            for other in adjacency[node]:
                if other not in reached:
                    reached.add(other)
                    frontier.append(other)
        return len(reached) == self.n

    @cached_property
    def quantities(self) -> GraphQuantities:
        return graph_quantities(self)


@dataclass(frozen=True)
class GraphQuantities:
    """Spectral quantities of a connected graph (see the module docstring for the definitions)."""

    lambda_min_plus: float  # smallest positive eigenvalue of L_G
    lambda_max: float  # largest eigenvalue of L_G
    chi1: float  # 1 / lambda_min^+(L_G / |E|)
    chi2: float  # max over edges of 1/2 R_ij(L_G / |E|)
    max_resistance: float  # max over edges of the effective resistance in L_G

    @property
    def sufficient_rate(self) -> float:
        """Total communication rate ``sqrt(2 chi1 chi2)`` (authors' default, the sufficient rate)."""
        return math.sqrt(2 * self.chi1 * self.chi2)

    @property
    def condition_number(self) -> float:
        """``lambda_max / lambda_min^+`` of ``L_G`` (the gossip condition number of synchronous methods)."""
        return self.lambda_max / self.lambda_min_plus


def graph_quantities(graph: Graph) -> GraphQuantities:
    """Eigenvalues and effective resistances of ``graph``; raises ValueError if it is not connected."""
    if not graph.is_connected():
        raise ValueError(f"graph {graph.name!r} must be connected (DADAO needs lambda_min^+ > 0).")
    lap = graph.laplacian()
    eigenvalues = np.linalg.eigvalsh(lap)
    lam_plus, lam_max = float(eigenvalues[1]), float(eigenvalues[-1])
    pinv = np.linalg.pinv(lap, hermitian=True)
    resistance = max(pinv[i, i] + pinv[j, j] - 2 * pinv[i, j] for i, j in graph.edges)
    m = graph.num_edges
    # L_norm = L_G / m: eigenvalues divide by m, the pseudo-inverse (and resistances) multiply by m.
    return GraphQuantities(
        lambda_min_plus=lam_plus,
        lambda_max=lam_max,
        chi1=m / lam_plus,
        chi2=0.5 * m * float(resistance),
        max_resistance=float(resistance),
    )


def _check_n(n: int, least: int) -> None:
    if not isinstance(n, int) or n < least:
        raise ValueError(f"n must be an int >= {least}, got {n!r}.")


def ring(n: int) -> Graph:
    """The cycle ``0 - 1 - ... - (n-1) - 0`` (``n >= 3``)."""
    _check_n(n, 3)
    return Graph(n, tuple(sorted((min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n))), f"ring{n}")


def path(n: int) -> Graph:
    """The path ``0 - 1 - ... - (n-1)``."""
    _check_n(n, 2)
    return Graph(n, tuple((i, i + 1) for i in range(n - 1)), f"path{n}")


def complete(n: int) -> Graph:
    """All ``n (n-1) / 2`` edges."""
    _check_n(n, 2)
    return Graph(n, tuple((i, j) for i in range(n) for j in range(i + 1, n)), f"complete{n}")


def star(n: int) -> Graph:
    """Node 0 joined to every other node."""
    _check_n(n, 2)
    return Graph(n, tuple((0, j) for j in range(1, n)), f"star{n}")


def grid(rows: int, cols: int) -> Graph:
    """The ``rows x cols`` 2-D grid (4-neighbourhood), node ``r * cols + c``."""
    if rows < 1 or cols < 1 or rows * cols < 2:
        raise ValueError(f"rows and cols must be >= 1 with rows * cols >= 2, got {rows} x {cols}.")
    edges = []
    for r in range(rows):
        for c in range(cols):
            k = r * cols + c
            if c + 1 < cols:
                edges.append((k, k + 1))
            if r + 1 < rows:
                edges.append((k, k + cols))
    return Graph(rows * cols, tuple(sorted(edges)), f"grid{rows}x{cols}")


def random_geometric(n: int, radius: float, seed: int = 0, max_tries: int = 1000) -> Graph:
    """Points uniform in the unit square, joined when closer than ``radius``; redrawn until connected.

    The first connected draw of ``np.random.default_rng(seed)`` is returned, so the graph is a function of
    ``(n, radius, seed)``.
    """
    _check_n(n, 2)
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}.")
    rng = np.random.default_rng(seed)
    for _ in range(max_tries):
        points = rng.random((n, 2))
        dist = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
        edges = tuple((i, j) for i in range(n) for j in range(i + 1, n) if dist[i, j] < radius)
        if edges:
            graph = Graph(n, edges, f"rgg{n}(r={radius:g})")
            if graph.is_connected():
                return graph
    raise ValueError(
        f"no connected random geometric graph with n={n}, radius={radius} in {max_tries} draws; increase radius."
    )


def by_name(name: str, n: int, seed: int = 0) -> Graph:
    """``"ring" | "path" | "complete" | "star" | "grid" | "rgg"`` on about ``n`` nodes (grid: the nearest
    ``r x c`` with ``r = floor(sqrt(n))``; rgg: radius ``sqrt(2 log(n) / n)``, above the connectivity threshold)."""
    if name == "ring":
        return ring(n)
    if name == "path":
        return path(n)
    if name == "complete":
        return complete(n)
    if name == "star":
        return star(n)
    if name == "grid":
        rows = max(1, math.isqrt(n))
        return grid(rows, max(1, round(n / rows)))
    if name == "rgg":
        return random_geometric(n, math.sqrt(2 * math.log(n) / n), seed)
    raise ValueError(f"graph name must be one of ring, path, complete, star, grid, rgg; got {name!r}.")
