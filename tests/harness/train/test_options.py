"""Run settings are declared once: the ``train`` and ``compare`` flags are generated from :class:`TrainConfig`,
parsed back into its fields, and every fixed choice is checked by one function with "did you mean"."""

from __future__ import annotations

import dataclasses

import pytest

from memopt.harness.cli import build_parser
from memopt.harness.train.choices import PARALLEL, PARAM_DTYPES, check_choice, listing
from memopt.harness.train.config import TrainConfig, make_config
from memopt.harness.train.errors import ConfigError
from memopt.harness.train.options import options, settings_from


def subparser(command: str):
    parser, _ = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[command]


@pytest.mark.parametrize("command", ["train", "compare"])
def test_every_declared_setting_is_a_flag_and_parses_back_into_its_field(command):
    flags = {a.dest: a for a in subparser(command)._actions}
    declared = options(TrainConfig, command)
    assert declared and all(option.dest in flags for option in declared)
    assert {o.dest for o in declared} <= {f.name for f in dataclasses.fields(TrainConfig)}
    for option in declared:
        assert flags[option.dest].default in (None, [])  # a flag not given falls through to the recipe
        assert flags[option.dest].choices == option.flag.choices
    args = subparser(command).parse_args(["--seq-len", "64", "--max-tokens", "2M", "--param-dtype", "bf16-sr"])
    settings = settings_from(args, declared)
    assert settings.keys() == {o.dest for o in declared}
    config = make_config(**settings)
    assert (config.seq_len, config.max_tokens, config.param_dtype) == (64, 2_000_000, "bf16-sr")


def test_train_only_flags_are_not_compare_flags():
    train_only = {"optimizer", "save_every", "resume", "trust_checkpoint"}
    assert train_only <= {o.dest for o in options(TrainConfig, "train")}
    assert not train_only & {o.dest for o in options(TrainConfig, "compare")}


def test_the_choices_come_from_one_list():
    declared = {o.dest: o.flag.choices for o in options(TrainConfig, "train")}
    assert declared["param_dtype"] is PARAM_DTYPES and declared["parallel"] is PARALLEL


def test_check_choice_names_the_flag_the_choices_and_the_closest():
    assert listing(["a"]) == "a" and listing(["a", "b", "c"]) == "a, b or c"
    assert listing(["a", "b", "c", "d"]) == "one of a, b, c or d"
    check_choice("--dtype", "bf16", ("auto", "fp32", "bf16"))
    with pytest.raises(ConfigError, match=r"^--dtype 'bf61': choose auto, fp32 or bf16 \(did you mean 'bf16'\?\)\.$"):
        check_choice("--dtype", "bf61", ("auto", "fp32", "bf16"))
    unknown = r"^--schedule 'cosin': unknown schedule \(did you mean 'cosine'\?\); choose cosine or sgdr\.$"
    with pytest.raises(ConfigError, match=unknown):
        check_choice("--schedule", "cosin", ("cosine", "sgdr"), unknown="schedule")


def test_a_configuration_checks_every_declared_choice(tiny):
    for field, value in [("parallel", "fsdpp"), ("tokenizer", "bytes"), ("schedule", "cosin")]:
        with pytest.raises(ConfigError, match=rf"--{field} '{value}': choose .*did you mean"):
            dataclasses.replace(tiny(), **{field: value}).validate()
