"""``memopt experiment psgd --quick``: every arm trains through the harness and the outputs are complete."""

from __future__ import annotations

import argparse
import json

from memopt.harness import experiments


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="memopt")
    experiments.add_subparser(top.add_subparsers(dest="command"))
    return top


def test_quick_psgd_study_writes_every_arm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEMOPT_CACHE_DIR", str(tmp_path / "cache"))
    args = parser().parse_args(["experiment", "psgd", "--quick", "--out", str(tmp_path)])
    args.func(args)
    payload = json.loads((tmp_path / "psgd.json").read_text())
    assert (tmp_path / "psgd.png").stat().st_size > 0
    summary = payload["data"]["summary"]
    assert set(summary) == {"sgd", "adamw", "psgd_kron"}
    for name, runs in payload["data"]["runs"].items():
        assert len(runs) == 1 and len(runs[0]["losses"]) == 8, name
        assert [step for step, _ in runs[0]["evals"]] == [4, 8]
    # PSGD-Kron keeps momentum plus its Kronecker factors: more state than AdamW's two moments on this model
    assert summary["psgd_kron"]["state_bytes"] > summary["adamw"]["state_bytes"] > summary["sgd"]["state_bytes"]
    assert "psgd_kron: final validation loss" in capsys.readouterr().out
