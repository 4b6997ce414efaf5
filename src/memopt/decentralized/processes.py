"""DADAO on real processes: one process per node, point-to-point messages over ``torch.distributed`` (gloo).

Each process owns one node ``i``: its state ``(x, x~, y, y~, z, z~)``, its gradient clock and the clocks of its
incident edges, seeded exactly as in :class:`~memopt.decentralized.events.EventQueue` (a clock is a function of
``(seed, kind, index)`` only). It walks through *its own* events in time order, with no global clock and no
barrier:

* gradient event: integrate the node's ODE to the event time, jump (purely local, no message);
* communication event on edge ``(i, j)``: integrate to the event time, post ``y_i + z_i`` to ``j``
  (``isend``), receive ``y_j + z_j`` from ``j`` (``recv``, tagged with the edge's event number), jump.

A communication is therefore a pairwise rendezvous between the two neighbours only; the processes otherwise
run at their own pace. It cannot deadlock: the pending communication with the smallest time has both ends
waiting for it once each has finished its (earlier) events. Because both ends apply the same jump to the same
states at the same times, the run reproduces the single-process simulation event for event (up to
floating-point rounding of the message buffers, which are float64).

:func:`run_dadao_processes` spawns ``graph.n`` processes on 127.0.0.1 (a free port) and collects the result.
"""

from __future__ import annotations

import datetime
import json
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from memopt.decentralized.dadao import (
    GRADIENT,
    DADAOParameters,
    Flow,
    LocalOracle,
    X,
    communication_jump,
    gradient_jump,
    initial_state,
    message,
)
from memopt.decentralized.events import EventQueue
from memopt.decentralized.graphs import Graph


def node_loop(
    rank: int,
    graph: Graph,
    oracle: LocalOracle,
    mu: float,
    L: float,
    t_max: float,
    seed: int,
    comm_rate: float | None = None,
    x0: np.ndarray | None = None,
) -> dict:
    """Run node ``rank`` of DADAO until time ``t_max`` inside an initialised process group (rank = node).

    Returns the node's final ``x`` (integrated to ``t_max``) and its event counts.
    """
    if dist.get_world_size() != graph.n:
        raise ValueError(f"the process group must have one rank per node: world {dist.get_world_size()} != {graph.n}.")
    rate = graph.quantities.sufficient_rate if comm_rate is None else comm_rate
    params = DADAOParameters.for_graph(mu, L, graph, rate)
    flow = Flow(params)
    edges = graph.incident_edges(rank)
    queue = EventQueue(graph, seed, comm_rate=rate, nodes=[rank], edge_indices=edges)
    x0_row = None if x0 is None else (np.asarray(x0)[rank] if np.ndim(x0) == 2 else x0)
    state = initial_state(1, oracle.dim, x0_row)[0]
    last = 0.0
    gradients = communications = 0
    per_edge = dict.fromkeys(edges, 0)
    inbox = torch.empty(oracle.dim, dtype=torch.float64)
    waited = 0.0
    start = time.perf_counter()
    for event in queue.until(t_max):
        state = flow(state, event.time - last)
        last = event.time
        if event.kind == GRADIENT:
            gradient_jump(state, oracle.grad(rank, state[X]), params)
            gradients += 1
            continue
        i, j = event.nodes
        other = j if i == rank else i
        own = message(state)
        tag = per_edge[event.index]
        per_edge[event.index] += 1
        before = time.perf_counter()
        request = dist.isend(torch.from_numpy(own.copy()), other, tag=tag)
        dist.recv(inbox, other, tag=tag)
        request.wait()
        waited += time.perf_counter() - before
        communication_jump(state, own, inbox.numpy(), params)
        communications += 1
    state = flow(state, t_max - last)
    return {
        "x": state[X].tolist(),
        "gradients": gradients,
        "communications": communications,
        "seconds": time.perf_counter() - start,
        "seconds_in_exchanges": waited,
    }


@dataclass
class ProcessRun:
    """What :func:`run_dadao_processes` collected: final ``x`` per node ``(n, dim)``, local gradients per node,
    communication events per node (each edge event is counted at both ends, so the number of edge activations
    is half their sum), and the wall time of the slowest node's loop."""

    x: np.ndarray
    gradients: list[int]
    communications: list[int]
    seconds: float
    seconds_in_exchanges: list[float]

    @property
    def edge_activations(self) -> int:
        return sum(self.communications) // 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world: int, port: int, out: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    try:
        result = node_loop(rank, *args)
        Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def run_dadao_processes(
    graph: Graph,
    oracle: LocalOracle,
    mu: float,
    L: float,
    t_max: float,
    seed: int = 0,
    comm_rate: float | None = None,
    x0: np.ndarray | None = None,
) -> ProcessRun:
    """Spawn ``graph.n`` processes (gloo on 127.0.0.1), run :func:`node_loop` on each, gather the nodes' results.

    ``oracle`` must be picklable (it is sent to every process).
    """
    if not t_max > 0:
        raise ValueError(f"t_max must be > 0, got {t_max}.")
    if oracle.n != graph.n:
        raise ValueError(f"oracle.n ({oracle.n}) must equal the number of graph nodes ({graph.n}).")
    with tempfile.TemporaryDirectory() as out:
        args = (graph, oracle, mu, L, t_max, seed, comm_rate, x0)
        mp.spawn(_entry, args=(graph.n, _free_port(), out, args), nprocs=graph.n, join=True)
        results = [json.loads(Path(out, f"rank{r}.json").read_text()) for r in range(graph.n)]
    return ProcessRun(
        x=np.array([r["x"] for r in results]),
        gradients=[r["gradients"] for r in results],
        communications=[r["communications"] for r in results],
        seconds=max(r["seconds"] for r in results),
        seconds_in_exchanges=[r["seconds_in_exchanges"] for r in results],
    )
