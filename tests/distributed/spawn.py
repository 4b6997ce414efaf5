"""Start CPU process groups (gloo) for the distributed tests, and collect what their rank 0 reports."""

from __future__ import annotations

import datetime
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    """A TCP port that is free now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _entry(rank: int, world: int, port: int, fn: Callable[..., Any], args: tuple, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=300))
    try:
        result = fn(rank, world, *args)
        if rank == 0:
            Path(out, "result.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_spawned(fn: Callable[..., Any], world: int, *args: Any) -> Any:
    """Run ``fn(rank, world, *args)`` in ``world`` fresh processes joined in a gloo group; return what rank
    0's call returned (JSON-serializable). An exception in any process fails the call with its traceback."""
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_entry, args=(world, free_port(), fn, args, out), nprocs=world, join=True)
        return json.loads(Path(out, "result.json").read_text())
