"""Fixtures for the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

#: folders whose tests are many tiny tensor ops, which a second thread only slows down: run single-threaded
ONE_THREAD_FOLDERS = tuple(
    TESTS / folder
    for folder in ("accelerated", "convex", "manifolds", "riemannian", "wrappers", "harness/experiments",
                   "harness/problems")
)  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread_for_tiny_ops(request: pytest.FixtureRequest):
    path = Path(request.node.path).resolve()
    if not any(path.is_relative_to(folder) for folder in ONE_THREAD_FOLDERS):
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``@pytest.mark.slow`` run only when asked for (``-m slow``); otherwise they are reported as
    skipped, with that reason."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
