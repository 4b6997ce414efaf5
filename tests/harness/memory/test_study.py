"""The memory study's pieces: its data split, its training loop and its summary arithmetic."""

from __future__ import annotations

import pytest
import torch

from memopt.harness.bench.memory_study import Mix, digits_split, format_rows, image_mixes, summarize, train_image
from memopt.harness.bench.memory_study_lm import lm_mixes
from memopt.harness.memory.techniques import Techniques


def test_digits_split_is_stratified_80_20_and_standardised():
    x_train, y_train, x_test, y_test = digits_split(0)
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert torch.bincount(y_test).tolist() == [36, 36, 35, 37, 36, 37, 36, 36, 35, 36]
    assert int((torch.bincount(y_train) - 4 * torch.bincount(y_test)).abs().max()) <= 4  # stratified
    assert abs(float(x_train.mean())) < 1e-5 and abs(float(x_train.std()) - 1.0) < 1e-5


def test_two_epochs_of_the_image_loop_learns_the_digits():
    accuracy = train_image(Mix("baseline", Techniques()), digits_split(0), depth=10, widen=1, epochs=2,
                           batch_size=128, seed=0)["accuracy"]  # fmt: skip
    assert accuracy > 0.85  # chance is 0.1; seeds 0 and 1 reach 0.94 and 0.93


def test_summary_gives_reduction_and_change_against_the_first_row():
    rows = [{"mix": "baseline", "peak": 8 * 2**20, "accuracy": [0.9, 0.8]},
            {"mix": "half", "peak": 2 * 2**20, "accuracy": [0.84, 0.84]}]  # fmt: skip
    summarize(rows, "accuracy")
    assert rows[1]["reduction"] == 4.0
    assert rows[1]["mean"] == pytest.approx(0.84) and rows[1]["delta"] == pytest.approx(-0.01)
    assert format_rows(rows, "accuracy").splitlines()[-1] == "| half | 2.00 | 4.0x | 84.00 | -1.00 |"


@pytest.mark.parametrize("mixes", [image_mixes, lm_mixes])
def test_study_mixes_are_distinct_and_start_with_the_baseline(mixes):
    names = [mix.name for mix in mixes()]
    assert names[0].startswith("baseline") and len(set(names)) == len(names)
