r"""DADAO: Decoupled Accelerated Decentralized Asynchronous Optimization, simulated exactly in its events.

Nabli & Oyallon, arXiv 2208.00779 (ICML 2023). Problem: ``min_x sum_i f_i(x)`` over a connected graph, each
``f_i`` ``L``-smooth and ``mu``-strongly convex. Gradient steps and gossip are the events of independent
Poisson processes (:mod:`memopt.decentralized.events`). The paper body (theorem numbers, ICML constants) was
not available to us; the dynamics and constants below are restated from the authors' public code
(``AdelNabli/DADAO`` ``optimizers.py``, the arXiv v1 algorithm), and :mod:`tests.decentralized` checks that
they converge to the minimizer of the sum.

Each node ``i`` keeps six vectors ``(x, x~, y, y~, z, z~)``. With ``nu = mu/2`` and ``s = sqrt(nu/L)``:
``alpha = s/4, alpha~ = s/8, eta = eta~ = s/8, theta = 1/(2s), beta = 1/2, beta~ = 2 chi1* sqrt(L/nu),
delta = s/4, delta~ = 1, gamma = 1/(4L), gamma~ = 1/(4 sqrt(L nu))``, where ``chi1* = chi1 / rate`` is
``chi1`` of the rate-weighted Laplacian (``rate`` = total communication rate, by default
``sqrt(2 chi1 chi2)``, :class:`~memopt.decentralized.graphs.GraphQuantities`).

Between events (node-local linear ODE, integrated exactly with ``exp(A dt)``)::

    x' = eta (x~ - x)        x~' = eta~ (x - x~)
    y' = alpha (y~ - y)      y~' = -theta (nu x~ + y + z)
    z' = alpha (z~ - z)      z~' = alpha~ (z - z~)

Gradient event at node ``i`` (state taken at ``T-``): ``u = grad f_i(x) - nu x - y~``;
``x -= gamma u``, ``x~ -= gamma~ u``, ``y~ += (delta + delta~) u``.

Communication event on edge ``(i, j)``: each end sends ``y + z``; with ``m = (y_i + z_i) - (y_j + z_j)``,
``z_i -= beta m``, ``z~_i -= beta~ m`` and symmetrically at ``j`` with ``-m``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from memopt.decentralized.events import GRADIENT, EventQueue
from memopt.decentralized.graphs import Graph

X, X_T, Y, Y_T, Z, Z_T = range(6)


class LocalOracle(Protocol):
    """What a decentralized problem provides: node ``i``'s gradient at ``x`` (float64 arrays)."""

    n: int
    dim: int

    def grad(self, i: int, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class DADAOParameters:
    """The constants of DADAO (authors' code, v1) for ``mu``, ``L`` and ``chi1_star = chi1 / rate``."""

    mu: float
    L: float
    chi1_star: float

    def __post_init__(self) -> None:
        if not self.mu > 0:
            raise ValueError(f"mu must be > 0 (strong convexity), got {self.mu}.")
        if not self.L >= self.mu:
            raise ValueError(f"L must be >= mu, got L={self.L}, mu={self.mu}.")
        if not self.chi1_star > 0:
            raise ValueError(f"chi1_star must be > 0, got {self.chi1_star}.")

    @classmethod
    def for_graph(cls, mu: float, L: float, graph: Graph, comm_rate: float | None = None) -> DADAOParameters:
        """Constants for ``graph`` at total communication rate ``comm_rate`` (default: the sufficient rate)."""
        q = graph.quantities
        rate = q.sufficient_rate if comm_rate is None else comm_rate
        if not rate > 0:
            raise ValueError(f"comm_rate must be > 0, got {rate}.")
        return cls(mu, L, q.chi1 / rate)

    @property
    def nu(self) -> float:
        return self.mu / 2

    @property
    def s(self) -> float:
        return math.sqrt(self.nu / self.L)

    @property
    def alpha(self) -> float:
        return self.s / 4

    @property
    def alpha_t(self) -> float:
        return self.s / 8

    @property
    def eta(self) -> float:
        return self.s / 8

    @property
    def eta_t(self) -> float:
        return self.s / 8

    @property
    def theta(self) -> float:
        return 1 / (2 * self.s)

    @property
    def beta(self) -> float:
        return 0.5

    @property
    def beta_t(self) -> float:
        return 2 * self.chi1_star * math.sqrt(self.L / self.nu)

    @property
    def delta(self) -> float:
        return self.s / 4

    @property
    def delta_t(self) -> float:
        return 1.0

    @property
    def gamma(self) -> float:
        return 1 / (4 * self.L)

    @property
    def gamma_t(self) -> float:
        return 1 / (4 * math.sqrt(self.L * self.nu))

    def drift(self) -> np.ndarray:
        """The ``6 x 6`` matrix ``A`` of the between-event ODE ``S' = A S`` (rows x, x~, y, y~, z, z~)."""
        a = np.zeros((6, 6))
        a[X, X], a[X, X_T] = -self.eta, self.eta
        a[X_T, X], a[X_T, X_T] = self.eta_t, -self.eta_t
        a[Y, Y], a[Y, Y_T] = -self.alpha, self.alpha
        a[Y_T, X_T], a[Y_T, Y], a[Y_T, Z] = -self.theta * self.nu, -self.theta, -self.theta
        a[Z, Z], a[Z, Z_T] = -self.alpha, self.alpha
        a[Z_T, Z], a[Z_T, Z_T] = self.alpha_t, -self.alpha_t
        return a


class Flow:
    """``S -> exp(A dt) S`` for the drift ``A`` of :meth:`DADAOParameters.drift`.

    ``A`` is diagonalised once (``A = V diag(w) V^-1``). Its eigenvalue 0 is double (the averages of
    ``(x, x~)`` and of ``(z, z~)`` are conserved) and semisimple, which ``np.linalg.eig`` resolves badly, so
    those two columns of ``V`` are replaced by an orthonormal basis of the null space of ``A``. If ``V`` is
    still ill-conditioned the exact ``torch.linalg.matrix_exp`` is used per call instead.
    """

    def __init__(self, params: DADAOParameters) -> None:
        self.matrix = params.drift()
        w, v = np.linalg.eig(self.matrix)
        zero = np.abs(w) < 1e-12 * np.abs(self.matrix).max()
        null = np.linalg.svd(self.matrix)[2][-int(zero.sum()) :].T if zero.any() else None
        if null is not None and null.shape[1] == int(zero.sum()):
            w = np.where(zero, 0.0, w)
            v = v.copy()
            v[:, zero] = null
        self._diagonal = bool(np.linalg.cond(v) < 1e8)
        if self._diagonal:
            self._w, self._v, self._v_inv = w, v, np.linalg.inv(v)

    def propagator(self, dt: float) -> np.ndarray:
        if dt < 0:
            raise ValueError(f"dt must be >= 0 (events are processed in time order), got {dt}.")
        if self._diagonal:
            return ((self._v * np.exp(self._w * dt)) @ self._v_inv).real
        import torch

        return torch.linalg.matrix_exp(torch.from_numpy(self.matrix * dt)).numpy()

    def __call__(self, state: np.ndarray, dt: float) -> np.ndarray:
        return state if dt == 0 else self.propagator(dt) @ state


def gradient_jump(state: np.ndarray, grad: np.ndarray, params: DADAOParameters) -> None:
    """In place: ``u = grad - nu x - y~``; ``x -= gamma u``, ``x~ -= gamma~ u``, ``y~ += (delta + delta~) u``."""
    u = grad - params.nu * state[X] - state[Y_T]
    state[X] -= params.gamma * u
    state[X_T] -= params.gamma_t * u
    state[Y_T] += (params.delta + params.delta_t) * u


def message(state: np.ndarray) -> np.ndarray:
    """What a node sends on a communication event: ``y + z``."""
    return state[Y] + state[Z]


def communication_jump(state: np.ndarray, own: np.ndarray, other: np.ndarray, params: DADAOParameters) -> None:
    """In place, one end of an edge: ``m = own - other``; ``z -= beta m``, ``z~ -= beta~ m``."""
    m = own - other
    state[Z] -= params.beta * m
    state[Z_T] -= params.beta_t * m


def initial_state(n: int, dim: int, x0: np.ndarray | None) -> np.ndarray:
    """``(n, 6, dim)`` zeros with ``x = x~ = x0`` (``x0`` of shape ``(dim,)`` or ``(n, dim)``; default 0)."""
    state = np.zeros((n, 6, dim))
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape not in ((dim,), (n, dim)):
            raise ValueError(f"x0 must have shape ({dim},) or ({n}, {dim}), got {x0.shape}.")
        state[:, X] = x0
        state[:, X_T] = x0
    return state


@dataclass
class Trace:
    """What a run recorded: at each record, time, cumulative local gradients and communications (edge
    activations), and ``gap = 1/n sum_i ||x_i - x*||^2``; ``x`` is the final ``(n, dim)`` iterate."""

    time: list[float] = field(default_factory=list)
    gradients: list[int] = field(default_factory=list)
    communications: list[int] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    x: np.ndarray | None = None

    def record(self, time: float, gradients: int, communications: int, x: np.ndarray, x_star: np.ndarray | None):
        self.time.append(float(time))
        self.gradients.append(int(gradients))
        self.communications.append(int(communications))
        if x_star is not None:
            self.gap.append(float(((x - x_star) ** 2).sum(axis=1).mean()))

    def first_below(self, tol: float, counter: str = "gradients") -> float:
        """The ``counter`` value at the first record with ``gap <= tol`` (``inf`` if never)."""
        values = getattr(self, counter)
        for value, gap in zip(values, self.gap):
            if gap <= tol:
                return float(value)
        return math.inf

    def as_dict(self) -> dict:
        return {"time": self.time, "gradients": self.gradients, "communications": self.communications, "gap": self.gap}


class DADAO:
    """The event-exact simulation of DADAO on ``graph`` for the local functions of ``oracle``.

    ``seed`` fixes every clock (so a run is reproducible); ``grad_rate`` is each node's gradient rate
    (authors: 1), ``comm_rate`` the total gossip rate (default ``sqrt(2 chi1 chi2)``).
    """

    def __init__(
        self,
        graph: Graph,
        oracle: LocalOracle,
        mu: float,
        L: float,
        seed: int = 0,
        comm_rate: float | None = None,
        grad_rate: float = 1.0,
        x0: np.ndarray | None = None,
    ) -> None:
        if oracle.n != graph.n:
            raise ValueError(f"oracle.n ({oracle.n}) must equal the number of graph nodes ({graph.n}).")
        self.graph, self.oracle = graph, oracle
        self.comm_rate = graph.quantities.sufficient_rate if comm_rate is None else float(comm_rate)
        self.params = DADAOParameters.for_graph(mu, L, graph, self.comm_rate)
        self.flow = Flow(self.params)
        self.queue = EventQueue(graph, seed, grad_rate=grad_rate, comm_rate=self.comm_rate)
        self.state = initial_state(graph.n, oracle.dim, x0)
        self.last = np.zeros(graph.n)
        self.time = 0.0
        self.gradients = 0
        self.communications = 0

    def _advance(self, i: int, t: float) -> None:
        self.state[i] = self.flow(self.state[i], t - self.last[i])
        self.last[i] = t

    def positions(self, t: float | None = None) -> np.ndarray:
        """Every node's ``x`` advanced to time ``t`` (default: the current time), without changing the run."""
        t = self.time if t is None else t
        return np.stack([self.flow(self.state[i], t - self.last[i])[X] for i in range(self.graph.n)])

    def step(self) -> None:
        """Process the next event."""
        event = self.queue.pop()
        for i in event.nodes:
            self._advance(i, event.time)
        if event.kind == GRADIENT:
            i = event.index
            gradient_jump(self.state[i], self.oracle.grad(i, self.state[i, X]), self.params)
            self.gradients += 1
        else:
            i, j = event.nodes
            mi, mj = message(self.state[i]), message(self.state[j])
            communication_jump(self.state[i], mi, mj, self.params)
            communication_jump(self.state[j], mj, mi, self.params)
            self.communications += 1
        self.time = event.time

    def run(
        self,
        t_max: float,
        x_star: np.ndarray | None = None,
        records: int = 200,
        on_record: Callable[[DADAO], None] | None = None,
    ) -> Trace:
        """Process every event up to ``t_max``; record ``records`` evenly spaced times (plus ``t=0``)."""
        if not t_max > 0:
            raise ValueError(f"t_max must be > 0, got {t_max}.")
        if records < 1:
            raise ValueError(f"records must be >= 1, got {records}.")
        trace = Trace()
        start = self.time
        trace.record(start, self.gradients, self.communications, self.positions(start), x_star)
        for k in range(1, records + 1):
            t_rec = start + t_max * k / records
            while self.queue.peek_time() <= t_rec:
                self.step()
            trace.record(t_rec, self.gradients, self.communications, self.positions(t_rec), x_star)
            if on_record is not None:
                on_record(self)
        self.time = start + t_max
        trace.x = self.positions()
        return trace
