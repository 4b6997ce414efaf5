"""Runs that never get stuck: bad --out folders, a run that died before its first checkpoint, a finished run
extended, stale temporary files, divergence advice that fits the settings, readable non-finite metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from memopt.harness.cli import main
from memopt.harness.train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from memopt.harness.train.errors import ConfigError, NonFiniteLossError
from memopt.harness.train.loop import Trainer, divergence_advice, perplexity, train
from memopt.harness.train.metrics import METRICS_NAME, format_metric, read_metrics, without_timing
from memopt.harness.train.run_folder import check_out, stale_temporaries


def cli(capsys, *argv: str) -> tuple[int, str]:
    status = main(list(argv))
    return status, capsys.readouterr().err


# ------------------------------------------------------------------------------------------ bad --out


def _bad_outs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    return {
        "file": (a_file, "this is a file, not a folder"),  # one line, the flag named, one full stop
        "under a file": (a_file / "run", f"{a_file} is a file, so no folder can be made under it"),
    }


@pytest.mark.parametrize("case", ["file", "under a file"])
@pytest.mark.parametrize("command", ["train", "compare"])
def test_a_bad_out_is_one_line_naming_the_flag(capsys, tmp_path, case, command):
    out, reason = _bad_outs(tmp_path)[case]
    status, err = cli(capsys, command, "--preset", "tiny", "--out", str(out), "--quiet")
    assert status == 2
    fix = "a folder for the run" if case == "file" else "another --out"
    assert err == f"memopt: error: --out {out}: {reason}; choose {fix}.\n"
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_a_read_only_folder_is_refused_before_anything_runs(capsys, tmp_path, monkeypatch):
    # tests run as root, who may write anywhere: the folder's permission is what os.access reports
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    status, err = cli(capsys, "train", "--preset", "tiny", "--out", str(locked / "run"), "--quiet")
    assert status == 2
    assert err == (
        f"memopt: error: --out {locked / 'run'}: the folder {locked} is not writable; choose another --out or fix "
        "its permissions.\n"
    )
    assert not (locked / "run").exists()
    with pytest.raises(ConfigError, match=r"^--out .*locked: this folder is not writable"):
        check_out(locked)


def test_a_folder_that_cannot_be_created_is_a_one_line_error(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(ConfigError, match=r"^--out .*new: cannot create the folder \(Read-only file system\); "
                       r"choose another --out\.$"):  # fmt: skip
        check_out(tmp_path / "new", create=True)


# ------------------------------------------------------------------------------------------ died early


class _Killed(BaseException):
    """Stands for a kill: nothing after it runs in the training loop."""


def _die_at(step: int):
    def hook(progress):
        if progress.event == "train" and progress.step == step:
            raise _Killed

    return hook


def test_a_run_that_died_before_its_first_checkpoint_can_be_restarted(tiny):
    config = tiny(out="early", max_steps=6, eval_every=2)
    with pytest.raises(_Killed):
        Trainer(config, progress=_die_at(3)).run()
    folder = Path(config.out)
    (folder / "notes.txt").write_text("mine")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.jsonl", "notes.txt"]
    with pytest.raises(ConfigError, match=r"already holds a run \(metrics\.jsonl, config\.json\)\. It stopped before "
                       r"its first checkpoint; start it again with --restart \(this removes those files\), or "
                       r"choose another --out; nothing was changed\.$"):  # fmt: skip
        Trainer(config)
    with pytest.raises(ConfigError, match=r"^--resume: the run in .*early stopped before its first checkpoint "
                       r"\(it holds metrics\.jsonl, config\.json\), so there is nothing to continue\. Start it "
                       r"again with --restart instead of --resume"):  # fmt: skip
        Trainer(dataclasses.replace(config, resume=True))
    with pytest.raises(ConfigError, match="--resume and --restart: choose one"):
        Trainer(dataclasses.replace(config, resume=True, restart=True))

    restarted = Trainer(dataclasses.replace(config, restart=True))
    result = restarted.run()
    assert restarted.notices == [f"--restart: removed the earlier run's metrics.jsonl, config.json from {folder}."]
    assert (folder / "notes.txt").read_text() == "mine"  # nothing but the run's own files is removed
    straight = train(tiny(out="straight", max_steps=6, eval_every=2))
    assert result.steps == 6
    assert without_timing(read_metrics(folder / METRICS_NAME)) == without_timing(
        read_metrics(Path(straight.out) / METRICS_NAME)
    )


def test_restart_on_the_command_line(capsys, tmp_path):
    common = ["train", "--preset", "tiny", "--data", "builtin:python-reference", "--vocab-size", "400",
              "--seq-len", "16", "--batch-size", "2", "--eval-batches", "1", "--cache-dir",
              str(tmp_path / "cache"), "--max-steps", "2", "--out", str(tmp_path / "run")]  # fmt: skip
    assert main([*common, "--quiet"]) == 0
    capsys.readouterr()
    status, err = cli(capsys, *common, "--quiet")
    assert status == 2 and "Continue it with --resume, or choose another --out; nothing was changed.\n" in err
    status, err = cli(capsys, *common, "--restart")
    assert status == 0, err
    assert "memopt train: --restart: removed the earlier run's checkpoint.pt, metrics.jsonl, config.json, " in err


# ------------------------------------------------------------------------------------------ extended


def test_a_finished_run_is_extended_on_its_kept_schedule(tiny):
    first = train(tiny(out="extended", max_steps=4, eval_every=2))
    assert first.steps == 4
    config = tiny(out="extended", max_steps=7, eval_every=2, resume=True)
    trainer = Trainer(config)
    assert trainer.notices == [
        "steps 5-7 run past the end of the 4-step cosine schedule the run started with, at the cosine's floor "
        "(--min-lr-ratio x --lr); the schedule itself is kept (for a schedule over all 7 steps, start a new run "
        "with --schedule-steps 7)."
    ]
    extended = trainer.run()
    straight = train(tiny(out="straight", max_steps=7, eval_every=2, schedule_steps=4))
    assert extended.steps == straight.steps == 7
    a, b = (load_checkpoint(Path(r.out) / CHECKPOINT_NAME)["model"] for r in (extended, straight))
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = without_timing(read_metrics(Path(extended.out) / METRICS_NAME))
    assert records == without_timing(read_metrics(Path(straight.out) / METRICS_NAME))
    peak = trainer.hparams["lr"]
    lrs = [r["lr"] for r in records if r["event"] == "train"]
    assert lrs[4:] == pytest.approx([0.1 * peak] * 3, rel=1e-6)  # held at the floor, never rising again
    assert lrs[3] > lrs[4]


def test_an_sgdr_schedule_keeps_restarting_past_its_end(tiny):
    straight = train(tiny(out="sgdr", max_steps=9, schedule_steps=4, schedule="sgdr", warmup_steps=0,
                          restart_steps=2, eval_every=0))  # fmt: skip
    lrs = [r["lr"] for r in read_metrics(Path(straight.out) / METRICS_NAME) if r["event"] == "train"]
    assert lrs[4] == lrs[0] and lrs[6] == lrs[0] and lrs[5] < lrs[4]


# ------------------------------------------------------------------------------------------ temporaries

_KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from memopt.harness.train.checkpoint import atomic_write_bytes

def write(file):
    file.write(b"x" * 4096)
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of a checkpoint write

atomic_write_bytes(Path(sys.argv[1]) / "checkpoint.pt", write)
"""


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_start_removes(tiny, tmp_path):
    config = tiny(out="killed", max_steps=2, eval_every=0)
    train(config)
    folder = Path(config.out)
    before = (folder / CHECKPOINT_NAME).read_bytes()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[3] / "src"), *sys.path])}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_WRITER), str(folder)], env=env, timeout=120)
    assert done.returncode == -signal.SIGKILL
    (stale,) = stale_temporaries(folder)
    assert stale.name.startswith(".checkpoint.pt.") and stale.stat().st_size == 4096
    assert (folder / CHECKPOINT_NAME).read_bytes() == before  # the checkpoint itself is intact
    trainer = Trainer(dataclasses.replace(config, max_steps=3, resume=True))
    trainer.run()
    assert not stale.exists() and stale_temporaries(folder) == []
    assert f"removed 1 unfinished temporary file(s) of a killed run: {stale.name}." in trainer.notices


# ------------------------------------------------------------------------------------------ divergence


def test_divergence_advice_fits_the_settings(tiny):
    off, tight, loose = (tiny(clip=c, optimizer="adamw") for c in (0.0, 1.0, 5.0))
    assert "(--clip 1.0)" in divergence_advice(off, 0.01)
    assert "--clip" not in divergence_advice(tight, 0.01)
    assert "a longer warm-up (--warmup-steps 10; this run warms up for 1)" in divergence_advice(tight, 0.01)
    assert "tighter gradient clipping (--clip 1.0; this run clips at 5)" in divergence_advice(loose, 0.01)
    assert "(--dtype fp32)" in divergence_advice(tiny(dtype="bf16"), 0.01)
    assert "--dtype" not in divergence_advice(tight, 0.01)


@pytest.mark.parametrize("clip", [0.0, 1.0])
def test_a_divergence_names_the_checkpoint_step_and_never_a_missing_norm(tiny, clip):
    config = tiny(out=f"nan{clip}", max_steps=2, schedule_steps=8, clip=clip)
    train(config)
    trainer = Trainer(dataclasses.replace(config, max_steps=8, resume=True))
    trainer.model.register_forward_hook(lambda module, args, output: setattr(output, "loss", output.loss * math.inf))
    with pytest.raises(NonFiniteLossError) as info:
        trainer.run()
    message = str(info.value)
    assert message.startswith("step 3: the loss is ")
    assert "(step 2), is intact." in message and "None" not in message and ".." not in message
    assert ("--clip 1.0" in message) == (clip == 0.0)


# ------------------------------------------------------------------------------------------ metrics


def test_non_finite_and_huge_metrics_print_readably(capsys):
    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(800.0) == math.inf and math.isnan(perplexity(math.nan))
    assert format_metric(math.inf, ".2f") == "inf" and format_metric(math.nan, ".4f") == "nan"
    assert format_metric(math.exp(207.0), ".2f") == "7.92e+89"  # not a 90-digit number
    assert format_metric(12.3456, ".2f") == "12.35" and format_metric(None) == "n/a"


def test_a_diverged_run_reports_inf_not_digits(capsys, tmp_path, monkeypatch):
    from memopt.harness import cli as cli_module
    from memopt.harness.train.loop import TrainResult

    result = TrainResult("adamw", {}, 3, 96, "max_steps", 800.0, perplexity(800.0), [], 0, 10, 0.1, 960.0, "x")
    report = cli_module._train_report(result)
    assert "val loss 800.0000, ppl inf;" in report
    result.final_val_ppl = math.exp(207.0)
    assert "ppl 7.92e+89;" in cli_module._train_report(result)
    assert json.loads(json.dumps({"ppl": format_metric(math.inf)})) == {"ppl": "inf"}


def test_a_killed_comparison_is_run_again_into_the_same_folder(capsys, tmp_path, cache_dir):
    out = tmp_path / "cmp"
    left = out / "adamw" / "seed-0"  # what a comparison killed in its first run leaves
    left.mkdir(parents=True)
    (left / "config.json").write_text("{}")
    (left / "metrics.jsonl").write_text("")
    argv = ["compare", "--preset", "tiny", "--data", "builtin:python-reference", "--vocab-size", "512",
            "--seq-len", "16", "--batch-size", "2", "--eval-batches", "1", "--cache-dir", cache_dir,
            "--optimizers", "adamw", "--seeds", "1", "--max-steps", "2", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["rows"][0]["optimizer"] == "adamw"
    assert [r["step"] for r in read_metrics(left / METRICS_NAME) if r["event"] == "train"] == [1, 2]


def test_a_blown_up_run_reports_inf_and_writes_valid_json(capsys, tmp_path, cache_dir):
    out = tmp_path / "blown"
    argv = ["train", "--preset", "tiny", "--data", "builtin:python-reference", "--vocab-size", "512",
            "--seq-len", "16", "--batch-size", "2", "--eval-batches", "1", "--cache-dir", cache_dir,
            "--max-steps", "8", "--lr", "50", "--out", str(out), "--quiet"]  # fmt: skip
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads((out / "result.json").read_text(), parse_constant=pytest.fail)  # no Infinity/NaN tokens
    assert result["final_val_loss"] > 709 and result["final_val_ppl"] == "inf"
    assert "ppl inf;" in captured.out
    (record,) = [r for r in read_metrics(out / METRICS_NAME) if r["event"] == "eval"]
    assert record["val_ppl"] == math.inf  # read back as a float
