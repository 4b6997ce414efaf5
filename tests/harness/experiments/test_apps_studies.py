"""``--quick`` runs of the application studies (wildfire, mri, inversion): each finishes, its JSON is strict,
and its numbers are in range."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from memopt.harness.experiments import studies
from memopt.harness.experiments.common import Options


def _needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {missing} (pip install 'memopt[apps]')")


def _quick(name: str, tmp_path):
    result = studies()[name].run(Options(out=tmp_path, seeds=1, quick=True))
    json.dumps(result.data, allow_nan=True)
    assert result.lines and result.figure is not None
    return result


@_needs("pytorchfire")
def test_quick_wildfire(tmp_path):
    result = _quick("wildfire", tmp_path)
    rows = {(r["arm"], r["noise"]): r for r in result.data["rows"]}
    assert ("adamw", "noise-free") in rows and any(arm.startswith("paper") for arm, _ in rows)
    for row in rows.values():
        assert all(0 <= e < 1.5 for e in row["final_error"])  # started at 1.0 (defaults vs the truth)
    assert rows[("adamw", "noise-free")]["final_error"][0] < 0.6
    assert all(0 <= v <= 1 for curve in result.data["forecast_iou"].values() for v in curve)
    assert all(ms > 0 for ms in result.data["step_ms"].values())


@_needs("skimage", "sigpy", "pywt")
def test_quick_mri(tmp_path):
    result = _quick("mri", tmp_path)
    summary = result.data["summary"]
    assert {"zero-filled", "CIRIM implicit DC (adamw)", "CIRIM explicit DC (adamw)"} <= set(summary)
    for by_setting in summary.values():
        assert set(by_setting) == {"cartesian 4x", "cartesian 8x", "poisson 4x", "poisson 8x"}
        assert all(math.isfinite(v["psnr"][0]) and 0 < v["ssim"][0] <= 1 for v in by_setting.values())
    cs = next(v for k, v in summary.items() if k.startswith("CS"))
    assert cs["poisson 4x"]["psnr"][0] > summary["zero-filled"]["poisson 4x"]["psnr"][0]


def test_quick_inversion(tmp_path):
    result = _quick("inversion", tmp_path)
    rows = result.data["per_seed"][0]
    assert len(rows) == 4 and any(name.startswith("learned landscape") for name in rows)
    for row in rows.values():
        assert row["median_curve"][-1] < row["median_curve"][0]  # every arm lowers the error
