"""``memopt compare``: seeds and statistics, tuning, the table and summary, the default run's budget."""

from __future__ import annotations

import json
import os

import pytest

from memopt.harness.bench import compare_recipe
from memopt.harness.bench.compare import CompareConfig, base_config, format_table, run_compare, tokens_to_reach
from memopt.harness.bench.frontier import pareto_front
from memopt.harness.bench.plots import plot_compare
from memopt.harness.cli import main
from memopt.harness.train.errors import ConfigError

TINY = {
    "data": "builtin:python-reference",
    "vocab_size": 512,
    "seq_len": 32,
    "batch_size": 8,
    "max_steps": 16,
    "eval_every": 4,
    "eval_batches": 2,
    "quiet": True,
}


def test_tokens_to_reach_interpolates_the_first_crossing():
    curve = [(100, 5.0), (200, 4.0), (300, 3.0), (400, 3.5), (500, 2.5)]
    assert tokens_to_reach(curve, 3.5) == pytest.approx(250.0)
    assert tokens_to_reach(curve, 5.5) == 100.0
    assert tokens_to_reach(curve, 3.0) == 300.0
    assert tokens_to_reach(curve, 2.0) is None


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("compare") / "run"
    base = base_config("tiny", {**TINY, "cache_dir": cache_dir}, str(out))
    config = CompareConfig(
        optimizers=["adamw", "adamw_groups", "adamw_sn"], base=base, out=str(out), seeds=2, frontier=True
    )
    lines = []
    summary = run_compare(config, log=lines.append, command="memopt compare --preset tiny")
    return out, summary, lines


def test_frontier_plots_the_rows_and_names_the_pareto_front(comparison):
    out, summary, _lines = comparison
    points = {r["optimizer"]: (r["state_bytes"], r["final_val_loss"]) for r in summary["rows"]}
    assert summary["frontier"] == pareto_front(points) and summary["frontier"]
    assert json.loads((out / "summary.json").read_text())["frontier"] == summary["frontier"]
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_holds_what_the_table_shows(comparison):
    out, summary, _lines = comparison
    saved = json.loads((out / "summary.json").read_text())
    assert saved["table"] == summary["table"] == format_table(saved)
    assert saved["baseline"] == "adamw" and saved["command"] == "memopt compare --preset tiny"
    header, _rule, *rows = saved["table"].splitlines()
    assert header.split()[:6] == ["optimizer", "lr", "state", "MiB", "%", "adamw"]
    assert "passes" in header and header.rstrip().endswith("verdict")
    assert len(rows) == 3
    for line, row in zip(rows, saved["rows"], strict=True):
        cells = line.split()
        assert cells[0] == row["optimizer"]
        lr, plain = row["hparams"]["lr"], row["hparams"].get("plain_lr")
        assert cells[1] == (f"{lr:.3g}" if plain in (None, lr) else f"{lr:.3g}/{plain:.3g}")
        assert float(cells[2]) == pytest.approx(row["state_mib"], abs=5e-4)
        mean, sd = cells[4].split("±")  # mean and spread over the two seeds
        assert float(mean) == pytest.approx(row["final_val_loss"], abs=5e-5)
        assert float(sd) == pytest.approx(row["final_val_loss_sd"], abs=5e-5)
        assert float(cells[5].split("±")[0]) == pytest.approx(row["best_val_loss"], abs=5e-5)
        assert float(cells[10]) == pytest.approx(row["passes"], abs=5e-4)
        assert row["passes"] == pytest.approx(16 * 8 * 32 / saved["train_block_tokens"])
        assert float(cells[11].split("±")[0]) == pytest.approx(1000 * row["median_step_time_s"], abs=0.05)
        assert " ".join(cells[12:]) == row["verdict"]
    baseline = saved["rows"][0]
    assert baseline["state_pct_of_baseline"] == 100.0 and baseline["verdict"] == "baseline"
    assert baseline["tokens_to_target_fraction"] == 1.0 and baseline["tokens_to_target_fraction_sd"] == 0.0
    assert saved["target_val_loss_per_seed"] == [r["final_val_loss"] for r in baseline["runs"]]
    assert saved["target_val_loss"] == pytest.approx(baseline["final_val_loss"])


def test_adamw_groups_is_adamw_with_the_presets_groups(comparison):
    _out, summary, _ = comparison
    rows = {r["optimizer"]: r for r in summary["rows"]}
    groups = rows["adamw_groups"]
    assert groups["registry_name"] == "adamw" and groups["hparams"]["plain_lr"] == 2e-2
    assert groups["hparams"]["lr"] == rows["adamw"]["hparams"]["lr"]
    assert groups["hparam_sources"]["plain_lr"] == "variant adamw_groups"
    assert groups["final_val_loss"] != rows["adamw"]["final_val_loss"]  # the embeddings' rate matters
    assert groups["state_bytes"] == rows["adamw"]["state_bytes"]


def test_rows_get_a_second_verdict_against_adamw_with_the_presets_groups(comparison):
    """With adamw as the baseline and adamw_groups compared, adamw_sn's lead is also tested against
    adamw_groups, the same Welch test on the same seeds, and the table's notes say it."""
    from memopt.harness.bench.statistics import welch_verdict

    _out, summary, _ = comparison
    rows = {r["optimizer"]: r for r in summary["rows"]}
    groups = [run["final_val_loss"] for run in rows["adamw_groups"]["runs"]]
    sn = [run["final_val_loss"] for run in rows["adamw_sn"]["runs"]]
    expected = welch_verdict(sn, groups)
    assert rows["adamw_sn"]["verdict_vs_groups_p"] == expected.p_value
    assert rows["adamw_sn"]["verdict_vs_groups_label"] == expected.label
    assert "verdict_vs_groups" not in rows["adamw"] and "verdict_vs_groups" not in rows["adamw_groups"]
    assert rows["adamw_sn"]["verdict_vs_groups"] == expected.text
    assert f"verdict against adamw_groups (the same test): adamw_sn {expected.text}" in summary["notes"]


def test_compare_writes_runs_per_seed_plot_and_machine(comparison):
    out, summary, lines = comparison
    for row in summary["rows"]:
        assert [r["seed"] for r in row["runs"]] == [0, 1]
        for seed in (0, 1):
            folder = out / row["optimizer"] / f"seed-{seed}"
            assert (folder / "metrics.jsonl").exists() and not (folder / "checkpoint.pt").exists()
        assert row["tokens"] == 16 * 8 * 32 and [e["step"] for e in row["evals"]] == [4, 8, 12, 16]
        assert [c["n"] for c in row["curve"]] == [2, 2, 2, 2]
        assert row["runs"][0]["final_val_loss"] != row["runs"][1]["final_val_loss"]  # seeds differ
        assert row["runs"][0]["load"]["busy"] in (True, False)
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_compare(summary, out / "again.png") == {"curves": 3, "bands": 3}
    assert summary["machine"]["torch"] and summary["machine"]["cpu_count"] >= 1
    assert lines[0].startswith("memopt compare: adamw, adamw_groups, adamw_sn on pydoc_data.topics")
    assert summary["notes"][1].startswith("verdict: Welch's t-test of final val loss over 2 seed(s) against adamw")


def test_tune_seeds_and_verdicts_end_to_end(tmp_path, cache_dir, capsys):
    """The acceptance run: --tune lr --seeds 3 --optimizers adamw,adamw_snsm --preset tiny, tiny budgets."""
    out = tmp_path / "tuned"
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k not in ("quiet", "max_steps")]
    acceptance = ["compare", "--tune", "lr", "--seeds", "3", "--optimizers", "adamw,adamw_snsm", "--preset", "tiny"]
    tiny = [*flags, "--max-steps", "8", "--grid-points", "3", "--cache-dir", cache_dir, "--out", str(out)]
    status = main([*acceptance, *tiny])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    summary = json.loads((out / "summary.json").read_text())
    sweeps = summary["tuning"]["sweeps"]
    assert [(s["optimizer"], s["key"]) for s in sweeps] == [("adamw", "lr"), ("adamw_snsm", "lr")]
    for sweep, row in zip(sweeps, summary["rows"], strict=True):
        assert len(sweep["values"]) == len(sweep["losses"]) == 3
        assert sweep["chosen"] == row["hparams"]["lr"] == sweep["values"][sweep["chosen_index"]]
        finite = [loss for loss in sweep["losses"] if not isinstance(loss, str)]
        assert sweep["losses"][sweep["chosen_index"]] == min(finite)
        assert sweep["at_edge"] == (sweep["chosen_index"] in (0, 2))
        assert (sweep["warning"] is not None) == sweep["at_edge"]
        assert row["hparam_sources"]["lr"] == "--tune (this run)"
        assert [r["seed"] for r in row["runs"]] == [0, 1, 2]
    assert summary["rows"][0]["verdict"] == "baseline"
    assert summary["rows"][1]["verdict_label"] in ("better", "worse", "not significant")
    assert summary["rows"][1]["verdict"].startswith(summary["rows"][1]["verdict_label"] + " (p=")
    assert summary["tuning"]["tokens_per_run"] == 8 * 8 * 32 and summary["tuning"]["seeds"] == 1
    assert len(list((out / "tune" / "adamw").iterdir())) == 3
    assert (out / "sweep.png").exists() and (out / "compare.png").exists()
    assert plot_compare(summary, tmp_path / "bands.png")["bands"] == 2
    assert summary["table"] in printed.out and "compare: run 12/12" in printed.err  # 6 sweep runs + 6 runs
    for sweep in sweeps:
        assert (sweep["warning"] or "<none>") in printed.out or not sweep["at_edge"]


def test_the_default_comparison_stays_within_one_pass_with_room_for_ten():
    """`memopt compare` with no flags: four optimizers including AdamW with per-group rates, three seeds,
    and a budget of which ten times still fits in one pass over the default corpus's training split."""
    config = CompareConfig(base=base_config(None, {}, "unused"))
    assert config.optimizers == ["adamw", "adamw_groups", "adamw_sn", "adamw_snsm"]
    assert compare_recipe.DEFAULT_SEEDS == 3
    assert config.base.preset == "small" and config.base.data is None  # sympy's source
    budget = config.base.total_steps() * config.base.tokens_per_step
    sympy_train_tokens = 9_201_976  # sympy 1.14.0, BPE 2048 (docs/results.md)
    assert budget * 10 <= sympy_train_tokens and budget == 160 * 8 * 128
    entries = {e.label: e for e in config.entries()}  # learning rates from the recorded sweep on this recipe
    assert entries["adamw_groups"].hparams == {"plain_lr": 0.4, "lr": 2e-3}
    assert entries["adamw_groups"].sources["plain_lr"].startswith("sweep for preset small")
    assert entries["adamw_sn"].hparams == {"lr": 2e-2, "plain_lr": 0.4}
    assert entries["adamw_snsm"].hparams == {"lr": 2e-2, "plain_lr": 0.1}
    untuned = CompareConfig(base=base_config(None, {}, "unused"), use_tuned=False).entries()
    assert [e.hparams for e in untuned][:2] == [{}, {"plain_lr": 2e-2}]
    explicit = base_config("small", {"max_tokens": 1000}, "unused")
    assert explicit.max_steps is None and explicit.total_steps() == 1  # a token budget replaces compare's steps


def test_compare_never_overwrites_and_checks_names_first(comparison, tmp_path):
    out, _summary, _ = comparison
    from memopt.harness.train.config import TrainConfig

    with pytest.raises(ConfigError, match="already holds a comparison"):
        run_compare(CompareConfig(base=TrainConfig(out=str(out)), out=str(out)), log=lambda *_: None)
    with pytest.raises(ConfigError, match=r"--optimizer 'adamw_sm': unknown optimizer \(did you mean"):
        CompareConfig(optimizers=["adamw", "adamw_sm"]).validate()
    with pytest.raises(ConfigError, match="--optimizers: adamw listed twice"):
        CompareConfig(optimizers=["adamw", "adamw"]).validate()
    with pytest.raises(ConfigError, match="--baseline sgd: not among --optimizers adamw,adamw_sn"):
        CompareConfig(optimizers=["adamw", "adamw_sn"], baseline="sgd").validate()
    with pytest.raises(ConfigError, match=r"sgd:\.\.\.: 'sgd' is not among --optimizers"):
        CompareConfig(optimizers=["adamw"], hparams={"sgd": {"lr": 1.0}}).validate()
    with pytest.raises(ConfigError, match="--seeds 0: must be at least 1"):
        CompareConfig(seeds=0).validate()
    with pytest.raises(ConfigError, match="--optimizers 'x=': write LABEL=NAME"):
        CompareConfig(optimizers=["adamw", "x="]).validate()
    labelled = CompareConfig(optimizers=["adamw", "fast=adamw"], hparams={"fast": {"lr": 0.01}})
    labelled.validate()
    assert [(e.label, e.optimizer, e.hparams) for e in labelled.entries()][1] == ("fast", "adamw", {"lr": 0.01})
    assert not os.listdir(tmp_path)
