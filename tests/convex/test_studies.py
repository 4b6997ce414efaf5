"""``memopt experiment convex`` and ``memopt experiment saddle`` in their --quick form: strict JSON and numbers."""

from __future__ import annotations

import argparse
import json

import pytest

from memopt.harness import experiments


def _run(name: str, tmp_path) -> dict:
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    args = top.parse_args(["experiment", name, "--quick", "--out", str(tmp_path)])
    assert args.func(args) == 0
    payload = json.loads((tmp_path / f"{name}.json").read_text(), parse_constant=_reject)
    assert payload["study"] == name and payload["options"]["quick"] is True and payload["summary"]
    assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    return payload["data"]


def _reject(constant: str):
    raise ValueError(f"non-strict JSON constant {constant}")


def test_studies_are_registered():
    assert {"convex", "saddle"} <= set(experiments.STUDY_NAMES)
    assert {"convex", "saddle"} <= set(experiments.studies())


def test_convex_study_quick(tmp_path):
    data = _run("convex", tmp_path)
    assert abs(data["sublinear"]["gd_slope"] + 1) <= 0.1
    assert abs(data["sublinear"]["agd_slope"] + 2) <= 0.2
    for row in data["linear"]["runs"].values():
        assert abs(row["measured"] / row["predicted"] - 1) <= 0.1
    assert abs(data["frank_wolfe"]["hard_slope"] + 1) <= 0.1
    ns = data["nonsmooth"]
    assert all(v <= b for v, b in zip(ns["mirror_descent"], ns["mirror_descent_bound"]))
    assert data["lasso"]["max_abs_difference"] < 1e-6
    assert data["stochastic"]["svrg_epoch_factor"] <= 0.9


def test_saddle_study_quick(tmp_path):
    data = _run("saddle", tmp_path)
    sc = data["scaling"]
    assert all(a < b for a, b in zip(sc["gradients_to_eps"]["ALPD"], sc["gradients_to_eps"]["LPD"]))
    assert sc["lpd_over_alpd"] == sorted(sc["lpd_over_alpd"])
    assert sc["slopes"]["LPD"] == pytest.approx(1.0, abs=0.15)
    assert sc["slopes"]["ALPD"] == pytest.approx(0.5, abs=0.15)
