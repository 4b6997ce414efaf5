"""``memopt experiment NAME``: the sub-command, its outputs (strict JSON + PNG), ``python -m`` entry point."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memopt.harness import experiments
from memopt.harness.experiments.common import loglog_slope, mean_and_se, median


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    return top


def test_every_study_name_is_a_choice_and_has_a_study():
    assert set(experiments.studies()) == set(experiments.STUDY_NAMES)
    with pytest.raises(SystemExit):
        parser().parse_args(["experiment", "nagg"])


def test_quick_run_writes_strict_json_and_a_png_and_prints_a_summary(tmp_path, capsys):
    args = parser().parse_args(["experiment", "naggs", "--quick", "--out", str(tmp_path)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    payload = json.loads((tmp_path / "naggs.json").read_text(), parse_constant=_reject)
    assert payload["study"] == "naggs" and payload["options"]["quick"] is True
    assert payload["summary"] and payload["summary"][0] in printed
    assert payload["environment"]["torch_threads"] == 1
    assert payload["data"]["heavy_ball_max_relative_deviation"] < 1e-12
    png = (tmp_path / "naggs.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) < 300_000


def _reject(constant: str):
    raise ValueError(f"non-strict JSON constant {constant}")


def test_python_dash_m_entry_point(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path("src").resolve()), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "memopt.harness.experiments", "naggs", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "== naggs" in result.stdout and (tmp_path / "naggs.png").exists()


def test_bad_options_are_rejected(tmp_path):
    args = parser().parse_args(["experiment", "naggs", "--seeds", "0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="--seeds must be >= 1"):
        args.func(args)


def test_statistics_helpers():
    assert loglog_slope([1, 10, 100], [5, 50, 500]) == pytest.approx(1.0)
    assert loglog_slope([1, 100], [1, 10]) == pytest.approx(0.5)
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5
    mean, se = mean_and_se([1.0, 3.0])
    assert mean == 2.0 and se == pytest.approx(1.0)
