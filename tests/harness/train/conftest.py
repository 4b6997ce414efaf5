"""Shared fixtures for the harness tests: a per-session data cache and tiny, fast run configurations."""

from __future__ import annotations

import pytest

from memopt.harness.train.config import TrainConfig, make_config


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One tokenized-data cache for the whole session, so the tokenizer is trained once."""
    return str(tmp_path_factory.mktemp("memopt-cache"))


@pytest.fixture
def tiny(cache_dir, tmp_path):
    """Factory of tiny-preset configurations (a few ms per step) writing under ``tmp_path``."""

    def make(out: str = "run", **overrides) -> TrainConfig:
        settings = {
            "data": "builtin:python-reference",  # small: tokenized in a second (the default corpus takes a minute)
            "vocab_size": 512,
            "seq_len": 32,
            "batch_size": 8,
            "max_steps": 12,
            "eval_every": 4,
            "eval_batches": 2,
            "cache_dir": cache_dir,
            "out": str(tmp_path / out),
            "quiet": True,
        }
        settings.update(overrides)
        return make_config("tiny", **settings)

    return make
