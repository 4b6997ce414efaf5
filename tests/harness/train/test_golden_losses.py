"""Golden losses: short runs give the losses, gradient norms, learning rates and evaluations recorded in
``golden_losses.json`` before the training loop was restructured (issue 15), so the restructuring changed no
result. The file was written by the loop as it stood before, with one torch thread (reductions split over
several threads round differently); the runs here use one thread too. The comparison is exact where torch
and the CPU's vector instructions are those of the recording, and within 1e-5 relative elsewhere (other
kernels round differently)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from memopt.harness.train.loop import train
from memopt.harness.train.metrics import METRICS_NAME, read_metrics, without_timing

GOLDEN = json.loads((Path(__file__).with_name("golden_losses.json")).read_text())
SAME_KERNELS = GOLDEN["recorded_with"] == {
    "torch": torch.__version__,
    "cpu_capability": torch.backends.cpu.get_cpu_capability(),
}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", sorted(GOLDEN["runs"]))
def test_short_runs_give_the_recorded_losses(tiny, case, one_thread):
    golden = GOLDEN["runs"][case]
    settings = {**GOLDEN["settings"], **golden["overrides"]}
    settings.pop("preset")
    result = train(tiny(out=case, **settings))
    records = without_timing(read_metrics(os.path.join(result.out, METRICS_NAME)))
    if SAME_KERNELS:
        assert records == golden["records"]
    else:
        assert len(records) == len(golden["records"])
        for got, want in zip(records, golden["records"], strict=True):
            assert got.keys() == want.keys()
            for key, value in want.items():
                assert got[key] == (pytest.approx(value, rel=1e-5) if isinstance(value, float) else value), key
