"""A tokenized-data cache for the torchrun tests (the tokenizer is trained once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("memopt-dist-cache"))
