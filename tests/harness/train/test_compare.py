"""``memopt compare``: the summary holds what the table shows; tokens-to-target; bad input fails early."""

from __future__ import annotations

import json
import os

import pytest

from memopt.harness.bench.compare import CompareConfig, format_table, run_compare, tokens_to_reach
from memopt.harness.train.errors import ConfigError


def test_tokens_to_reach_interpolates_the_first_crossing():
    curve = [(100, 5.0), (200, 4.0), (300, 3.0), (400, 3.5), (500, 2.5)]
    assert tokens_to_reach(curve, 3.5) == pytest.approx(250.0)
    assert tokens_to_reach(curve, 5.5) == 100.0
    assert tokens_to_reach(curve, 3.0) == 300.0
    assert tokens_to_reach(curve, 2.0) is None


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, cache_dir):
    from memopt.harness.train.config import make_config

    out = tmp_path_factory.mktemp("compare") / "run"
    base = make_config(
        "tiny",
        vocab_size=512,
        seq_len=32,
        batch_size=8,
        max_steps=16,
        eval_every=4,
        eval_batches=2,
        cache_dir=cache_dir,
        quiet=True,
        save_checkpoints=False,
        out=str(out),
    )
    config = CompareConfig(optimizers=["adamw", "adamw_sn", "adamw_snsm"], base=base, out=str(out))
    lines = []
    summary = run_compare(config, log=lines.append, command="memopt compare --preset tiny")
    return out, summary, lines


def test_summary_holds_what_the_table_shows(comparison):
    out, summary, _lines = comparison
    saved = json.loads((out / "summary.json").read_text())
    assert saved["table"] == summary["table"] == format_table(saved)
    assert saved["baseline"] == "adamw" and saved["command"] == "memopt compare --preset tiny"
    header, _rule, *rows = saved["table"].splitlines()
    assert header.split()[:3] == ["optimizer", "state", "MiB"]
    assert len(rows) == 3
    for line, row in zip(rows, saved["rows"], strict=False):
        cells = line.split()
        assert cells[0] == row["optimizer"]
        assert float(cells[1]) == pytest.approx(row["state_mib"], abs=5e-4)
        assert float(cells[2]) == pytest.approx(row["state_pct_of_baseline"], abs=0.05)
        assert float(cells[3]) == pytest.approx(row["final_val_loss"], abs=5e-5)
        assert float(cells[4]) == pytest.approx(row["final_val_ppl"], abs=5e-3)
        if row["tokens_to_target"] is None:
            assert "not reached" in line
        else:
            assert float(cells[5].replace(",", "")) == pytest.approx(row["tokens_to_target"], abs=0.5)
            assert float(cells[6]) == pytest.approx(row["tokens_to_target_fraction"], abs=5e-4)
        assert float(cells[-2]) == pytest.approx(1000 * row["median_step_time_s"], abs=0.05)
        assert float(cells[-1].replace(",", "")) == pytest.approx(row["tokens_per_s"], abs=0.5)
    baseline = saved["rows"][0]
    assert baseline["state_pct_of_baseline"] == 100.0 and baseline["tokens_to_target_fraction"] == 1.0
    assert saved["target_val_loss"] == baseline["final_val_loss"]


def test_compare_writes_metrics_plot_and_machine(comparison):
    out, summary, lines = comparison
    for name in ("adamw", "adamw_sn", "adamw_snsm"):
        assert (out / name / "metrics.jsonl").exists() and not (out / name / "checkpoint.pt").exists()
        row = next(r for r in summary["rows"] if r["optimizer"] == name)
        assert row["tokens"] == 16 * 8 * 32 and [e["step"] for e in row["evals"]] == [4, 8, 12, 16]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["machine"]["torch"] and summary["machine"]["cpu_count"] >= 1
    assert lines[0].startswith("memopt compare: adamw, adamw_sn, adamw_snsm on pydoc_data.topics")


def test_compare_never_overwrites_and_checks_names_first(comparison, tmp_path):
    out, _summary, _ = comparison
    with pytest.raises(ConfigError, match="already holds a comparison"):
        run_compare(CompareConfig(base=summary_base(out), out=str(out)), log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"--optimizer 'adamw_sm': unknown optimizer \(did you mean"):
        CompareConfig(optimizers=["adamw", "adamw_sm"]).validate()
    with pytest.raises(ConfigError, match="--optimizers: adamw listed twice"):
        CompareConfig(optimizers=["adamw", "adamw"]).validate()
    with pytest.raises(ConfigError, match="--baseline sgd: not among --optimizers adamw,adamw_sn"):
        CompareConfig(optimizers=["adamw", "adamw_sn"], baseline="sgd").validate()
    with pytest.raises(ConfigError, match=r"--opt sgd:\.\.\.: 'sgd' is not among --optimizers"):
        CompareConfig(optimizers=["adamw"], hparams={"sgd": {"lr": 1.0}}).validate()
    assert not os.listdir(tmp_path)


def summary_base(out):
    from memopt.harness.train.config import TrainConfig

    return TrainConfig(out=str(out))
