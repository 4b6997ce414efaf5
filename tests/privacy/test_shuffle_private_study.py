"""``memopt experiment shuffle_private --quick``: strict JSON with the three curves and the claims, and a PNG."""

from __future__ import annotations

import argparse
import json

from memopt.harness import experiments


def test_quick_shuffle_private_study_orders_the_models(tmp_path):
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    args = top.parse_args(["experiment", "shuffle_private", "--quick", "--seeds", "1", "--out", str(tmp_path)])
    assert args.func(args) == 0
    data = json.loads((tmp_path / "shuffle_private.json").read_text())["data"]
    assert data["claims"]["shuffle_noise_flat_in_batch"] and data["claims"]["local_noise_grows_sqrt_batch"]
    for row in data["rows"]:
        assert row["central_noise_sd"] < row["shuffle_noise_sd"] < row["local_noise_sd"]
        assert row["central"] < row["local"] and row["shuffle"] < row["local"]
    assert (tmp_path / "shuffle_private.png").read_bytes().startswith(b"\x89PNG")
