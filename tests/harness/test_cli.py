"""The ``memopt`` command line: list, train, compare, and clear errors for bad input."""

from __future__ import annotations

import argparse
import json
import re

import pytest

import memopt
from memopt.harness.cli import count, duration, main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture
def small_run(tmp_path, tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("cli-cache"))
    return [
        "--preset",
        "tiny",
        "--data",
        "builtin:python-reference",
        "--vocab-size",
        "400",
        "--seq-len",
        "32",
        "--batch-size",
        "4",
        "--eval-every",
        "3",
        "--eval-batches",
        "1",
        "--cache-dir",
        cache,
        "--quiet",
    ]


def test_list_prints_every_registry_optimizer(capsys):
    status, out, _ = run(capsys, "list")
    assert status == 0
    for name, description in memopt.list_optimizers().items():
        assert any(line.split()[0] == name and description in line for line in out.splitlines())


def test_count_and_duration_parsers():
    assert count("200k") == 200_000 and count("1.3B") == 1_300_000_000 and count("512") == 512
    assert duration("90") == 90 and duration("5m") == 300 and duration("1.5h") == 5400
    with pytest.raises(argparse.ArgumentTypeError):
        count("lots")


def test_train_resume_and_opt_flags(capsys, tmp_path, small_run):
    out = str(tmp_path / "run")
    status, text, err = run(
        capsys,
        "train",
        *small_run,
        "--optimizer",
        "adamw",
        "--opt",
        "weight_decay=0.05",
        "--opt",
        "betas=(0.9,0.95)",
        "--max-steps",
        "3",
        "--schedule-steps",
        "6",
        "--out",
        out,
    )
    assert status == 0, err
    assert "adamw: 3 steps, 384 tokens (stopped by max_steps)" in text
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["identity"]["hparams"] == {
        "lr": saved["identity"]["hparams"]["lr"],
        "weight_decay": 0.05,
        "betas": [0.9, 0.95],
    }
    status, text, err = run(
        capsys,
        "train",
        *small_run,
        "--optimizer",
        "adamw",
        "--opt",
        "weight_decay=0.05",
        "--opt",
        "betas=(0.9,0.95)",
        "--max-steps",
        "6",
        "--schedule-steps",
        "6",
        "--out",
        out,
        "--resume",
    )
    assert status == 0, err
    assert "6 steps, 768 tokens" in text


def test_compare_prints_the_table_and_writes_the_summary(capsys, tmp_path, small_run):
    out = tmp_path / "cmp"
    status, text, err = run(
        capsys,
        "compare",
        *small_run,
        "--optimizers",
        "adamw,adamw_sn",
        "--max-steps",
        "6",
        "--opt",
        "adamw_sn:lr=0.005",
        "--out",
        str(out),
    )
    assert status == 0, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table"] in text
    assert summary["rows"][1]["hparams"]["lr"] == 0.005
    assert summary["rows"][1]["hparam_sources"]["lr"] == "--opt adamw_sn:"
    assert summary["command"].startswith("memopt compare --preset tiny")
    assert summary["seeds"] == [0, 1, 2]  # compare's default: three seeds
    assert (out / "compare.png").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "/no/such/file.txt"], "--data /no/such/file.txt: no such file or directory"),
        (
            ["train", "--optimizer", "adamw_snn"],
            r"--optimizer 'adamw_snn': unknown optimizer \(did you mean 'adamw_sn'",
        ),
        (["compare", "--optimizers", "adamw,adamwsn"], r"unknown optimizer \(did you mean 'adamw_sn'"),
        (["train", "--preset", "65m"], r"--preset '65m': unknown model preset \(did you mean '60m'"),
        (["train", "--opt", "rank"], "--opt 'rank': expected KEY=VALUE"),
        (["train", "--max-steps", "0"], "--max-steps 0: must be positive"),
        (["compare", "--threads", "0"], "--threads 0: must be at least 1"),
        (["train", "--opt", "adamw_sn:lr=1"], "this run trains adamw; drop the 'adamw_sn:' prefix"),
    ],
)
def test_bad_input_gives_a_clear_error(capsys, tmp_path, argv, message):
    status, _, err = run(capsys, *argv, "--out", str(tmp_path / "never"), "--quiet")
    assert status == 2
    assert err.startswith("memopt: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "never" / "checkpoint.pt").exists()


def test_resume_needs_out_and_a_checkpoint(capsys, tmp_path):
    status, _, err = run(capsys, "train", "--resume")
    assert status == 2 and "memopt: error: --resume: give --out DIR, the folder of the run to continue." in err
    status, _, err = run(
        capsys,
        "train",
        "--resume",
        "--preset",
        "tiny",
        "--data",
        "builtin:python-reference",
        "--out",
        str(tmp_path / "none"),
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert status == 2 and "--resume: no checkpoint at" in err and "leave out --resume to start a new run" in err


def test_empty_data_file(capsys, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    status, _, err = run(capsys, "train", "--data", str(empty), "--out", str(tmp_path / "x"))
    assert status == 2 and "empty.txt: no text found" in err


def test_argparse_rejects_malformed_numbers(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--max-steps", "ten"])
    assert exit_info.value.code == 2
    assert "argument --max-steps: invalid int value: 'ten'" in capsys.readouterr().err


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"memopt {metadata.version('memopt')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--opt", "lr=-1"],  # the library's message ends in its own full stop
        ["train", "--opt", "rank"],
        ["train", "--optimizer", "adamw_snn"],
        ["compare", "--optimizers", "adamw,adamwsn"],
        ["train", "--resume", "--restart"],
        ["train", "--max-steps", "ten"],  # argparse's own usage error
        ["train", "--schedule", "linear"],
    ],
)
def test_every_error_ends_in_exactly_one_full_stop(capsys, tmp_path, small_run, argv):
    try:
        status = main([*argv, *small_run, "--max-steps", "1", "--out", str(tmp_path / "run")])
    except SystemExit as exit_info:
        status = exit_info.code
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err.endswith(".") and not err.endswith(".."), err
    assert ".." not in err.replace("...", ""), err


def test_help_states_the_default_corpus(capsys):
    for command in ("compare", "train"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "pydoc_data" not in text and "language reference" not in text
        assert "(default: builtin:sympy, the Python source of the installed SymPy package)" in text
