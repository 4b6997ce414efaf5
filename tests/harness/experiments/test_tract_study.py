"""``memopt experiment tract --quick``: every arm runs and is summarised, TrAct and weight norm reach the layers
they should, ``--optimizers`` takes any registry name (closure optimizers included) and rejects bad ones."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch
from torch.nn.utils import parametrize

from memopt.harness import experiments
from memopt.harness.experiments import tract as study
from memopt.harness.experiments.common import Options
from memopt.harness.train.reparam import apply_tract, apply_weight_norm
from memopt.wrappers.tract import TrActConv2d


def test_quick_study_runs_every_arm_and_writes_its_outputs(tmp_path, capsys):
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    args = top.parse_args(["experiment", "tract", "--quick", "--seeds", "1", "--out", str(tmp_path)])
    assert args.func(args) == 0
    payload = json.loads((tmp_path / "tract.json").read_text())
    summary = payload["data"]["summary"]
    assert set(summary) == set(study.MODELS)
    for by_arm in summary.values():
        assert list(by_arm) == ["sgd", "sgd+TrAct", "sgd+WN", "adamw", "adamw+TrAct"]
        for row in by_arm.values():
            assert 0 <= row["final_acc"] <= 1 and math.isfinite(row["final_loss"]) and row["cpu_seconds"] > 0
    runs = payload["data"]["runs"]["ViT"]["sgd"][0]
    assert len(runs["test_acc"]) == study.QUICK_EPOCHS == len(runs["train_loss"])
    # the arms differ: TrAct changes the first layer's updates, so the curves are not the baseline's
    resnet = payload["data"]["runs"]["ResNet (WRN-10-1)"]
    assert resnet["sgd+TrAct"][0]["train_loss"] != resnet["sgd"][0]["train_loss"]
    assert resnet["sgd+WN"][0]["train_loss"] != resnet["sgd"][0]["train_loss"]
    assert "ViT adamw+TrAct" in capsys.readouterr().out
    assert (tmp_path / "tract.png").read_bytes().startswith(b"\x89PNG")


def test_tract_and_weight_norm_reach_the_layers_they_should():
    for build, stem in ((study.MODELS["ResNet (WRN-10-1)"], "stem"), (study.ViT, "embed")):
        model = build()
        layer = apply_tract(model, 0.1)
        assert getattr(model, stem) is layer and isinstance(layer, TrActConv2d)
        normed = build()
        count = apply_weight_norm(normed)
        assert count == sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in normed.modules())
        assert parametrize.is_parametrized(getattr(normed, stem), "weight")


def test_data_is_the_upsampled_standardised_digits():
    data = study.digits(quick=False)
    assert data["train_x"].shape == (1347, 1, 16, 16) and data["test_x"].shape == (450, 1, 16, 16)
    assert abs(float(data["train_x"].mean())) < 1e-5 and float(data["train_x"].std()) == pytest.approx(1.0, abs=1e-4)
    assert torch.bincount(data["train_y"]).min() > 120  # stratified: every class present


def test_any_registry_optimizer_joins_and_closure_optimizers_get_a_closure():
    data = study.digits(quick=True)
    data = {k: v[:64] for k, v in data.items()}
    assert [label for label, _, _ in study.arms(("nesterov_agd",))] == ["nesterov_agd", "nesterov_agd+TrAct"]
    curve = study.train("ViT", "nesterov_agd", "tract", 0, data, 1)  # needs step(closure)
    assert math.isfinite(curve["train_loss"][0]) and len(curve["test_acc"]) == 1
    assert study.epochs_to([0.5, 0.91, 0.97], 0.9) == 2 and study.epochs_to([0.5], 0.9) is None


def test_runs_in_worker_processes_give_the_numbers_of_a_sequential_run():
    data = {k: v[:64] for k, v in study.digits(quick=True).items()}
    tasks = [("ViT", "sgd", "tract", seed, data, 1) for seed in range(2)]
    sequential, parallel = study._run_all(tasks, 1), study._run_all(tasks, 2)
    for a, b in zip(sequential, parallel):
        assert a.pop("cpu_seconds") > 0 and b.pop("cpu_seconds") > 0
        assert a == b
    assert sequential[0] != sequential[1]  # the seeds differ


def test_optimizers_and_jobs_options_are_checked(tmp_path):
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    args = top.parse_args(["experiment", "tract", "--quick", "--optimizers", "sgd,adamx", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"--optimizers: unknown registry name 'adamx'\. Did you mean"):
        args.func(args)
    args = top.parse_args(["experiment", "naggs", "--quick", "--optimizers", "sgd", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="the naggs study has a fixed set of methods; only tract take"):
        args.func(args)
    with pytest.raises(SystemExit):
        top.parse_args(["experiment", "tract", "--optimizers", ","])
    args = top.parse_args(["experiment", "naggs", "--quick", "--jobs", "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--jobs 2: the naggs study runs in one process"):
        args.func(args)
    args = top.parse_args(["experiment", "tract", "--quick", "--jobs", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--jobs must be >= 1, got 0"):
        args.func(args)
    assert Options(out=tmp_path).optimizers is None
