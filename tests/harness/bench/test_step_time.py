"""The step-time benchmark: the rows of ``--device cuda``, skipped candidates, and ``--shapes``."""

from __future__ import annotations

import pytest

from memopt.harness.bench import step_time

TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=1, num_attention_heads=4, vocab_size=128)


def test_the_gpu_rows_are_the_issue_list_with_fused_adamw_first():
    names = list(step_time.gpu_candidates(rank=4))
    assert names[0] == "torch AdamW fused"
    for name in (
        "memopt adamw_sn",
        "memopt adamw_snsm randomized",
        "memopt adamw8bit",
        "memopt adamw_snsm8bit randomized",
    ):
        assert name in names
    # the installed peers (dev dependencies)
    assert {"bitsandbytes AdamW8bit", "torchao AdamW8bit"} <= set(names)


def test_a_candidate_that_cannot_run_is_skipped_with_its_reason():
    def broken(model):
        raise RuntimeError("no kernel for this device\nsecond line")

    rows = step_time.gpu_candidates(rank=4)
    candidates = {name: rows[name] for name in ("torch AdamW fused", "memopt adamw_sn", "memopt adamw8bit")}
    candidates["peer without a CPU kernel"] = broken
    skipped: dict[str, str] = {}
    model = step_time.llama_shapes_model(TINY)
    results = step_time.benchmark(model, candidates, rounds=1, steps_per_round=1, skipped=skipped)
    assert [r.name for r in results] == ["torch AdamW fused", "memopt adamw_sn", "memopt adamw8bit"]
    assert results[0].ratio_to_baseline == 1.0
    assert all(r.median_ms > 0 and r.state_mib > 0 for r in results)
    assert skipped == {"peer without a CPU kernel": "RuntimeError: no kernel for this device"}
    with pytest.raises(RuntimeError, match="no kernel"):  # without a place for reasons, the error is raised
        step_time.benchmark(model, {"torch AdamW fused": rows["torch AdamW fused"], "x": broken}, rounds=1)


def test_unknown_shapes_are_a_clear_error():
    with pytest.raises(SystemExit, match="--shapes '60m,2b': unknown shape \\['2b'\\]; choose from 60m, 130m"):
        step_time.main(["--shapes", "60m,2b"])
