"""Decentralized optimization over a graph of nodes (library code: numpy, torch and torch.distributed only).

* :mod:`~memopt.decentralized.graphs` — graphs (ring, grid, complete, star, path, random geometric) and the
  Laplacian quantities ``chi1``, ``chi2`` and the sufficient gossip rate.
* :mod:`~memopt.decentralized.events` — the continuous-time event queue of seeded Poisson clocks.
* :mod:`~memopt.decentralized.dadao` — DADAO (Nabli & Oyallon, arXiv 2208.00779), simulated exactly in its
  events.
* :mod:`~memopt.decentralized.baselines` — decentralized gradient descent with gossip and MSDA.
* :mod:`~memopt.decentralized.processes` — DADAO with one process per node over ``torch.distributed`` (gloo).
"""

from memopt.decentralized.dadao import DADAO, DADAOParameters, Trace
from memopt.decentralized.events import EventQueue, PoissonClock
from memopt.decentralized.graphs import Graph, complete, grid, path, random_geometric, ring, star

__all__ = [
    "DADAO",
    "DADAOParameters",
    "EventQueue",
    "Graph",
    "PoissonClock",
    "Trace",
    "complete",
    "grid",
    "path",
    "random_geometric",
    "ring",
    "star",
]
