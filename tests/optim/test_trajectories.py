"""Every registry optimizer stays bit-identical to the code before the one-optimizer-contract refactor.

The golden digests and the half-way checkpoints were written by :mod:`tests.optim.trajectories` from commit
9af95be (the tree before the refactor); regenerate them only for an intended change of results.
"""

from __future__ import annotations

import json

import pytest
import torch
from tests.optim import trajectories

GOLDEN = json.loads(trajectories.GOLDEN.read_text())
CASES = {case: (name, dtype, options) for case, name, dtype, options in trajectories.cases()}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_registry_optimizer_has_golden_values():
    assert set(CASES) <= set(GOLDEN), sorted(set(CASES) - set(GOLDEN))


@pytest.mark.parametrize("case", sorted(GOLDEN))
def test_trajectory_is_bit_identical_to_the_pre_refactor_code(case):
    name, dtype, options = CASES[case]
    got = trajectories.run_case(name, dtype, options)
    assert got == GOLDEN[case]


@pytest.mark.parametrize("case", trajectories.CHECKPOINT_CASES)
def test_a_checkpoint_of_the_pre_refactor_code_resumes_bit_exactly(case):
    name, dtype, options = CASES[case]
    old = torch.load(trajectories.OLD_CHECKPOINTS, weights_only=True)[case]
    got = trajectories.run_case(name, dtype, options, resume=old)
    assert got == GOLDEN[case]
