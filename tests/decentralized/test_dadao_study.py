"""``memopt experiment dadao --quick``: strict JSON with the claims and counts, and a PNG."""

from __future__ import annotations

import argparse
import json

from memopt.harness import experiments


def test_quick_dadao_study_writes_its_claims(tmp_path):
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    args = top.parse_args(["experiment", "dadao", "--quick", "--seeds", "1", "--out", str(tmp_path)])
    assert args.func(args) == 0
    payload = json.loads((tmp_path / "dadao.json").read_text())
    data = payload["data"]
    assert all(data["claims"].values()), data["claims"]
    assert {r["graph"] for r in data["graphs"]} == {"ring8", "grid2x4", "complete8"}
    for row in data["graphs"]:
        assert row["final_relative_gap"] < 1e-3 and row["gradients_to_tol"] > 0
    assert 0.2 < data["slope"] < 0.75
    assert (tmp_path / "dadao.png").read_bytes().startswith(b"\x89PNG")
