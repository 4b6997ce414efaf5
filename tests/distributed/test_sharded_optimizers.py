"""Every registry optimizer on FSDP2 and DDP (2 CPU processes, gloo) against one process, and
``torch.distributed.checkpoint`` checkpoints that move between 2 ranks and 1.

One process group runs everything (``sharded_runs.run_all``), so its start-up is paid once; the tests
below check what it measured. "Relative" is ``max |a - b| / max |b|`` for the worst parameter tensor.
"""

from __future__ import annotations

import pytest
from tests.distributed import sharded_runs
from tests.distributed.spawn import run_spawned

import memopt

pytestmark = pytest.mark.distributed

TOLERANCE = 1e-6
NAMES = list(sharded_runs.CONFIGS)


@pytest.fixture(scope="module")
def measured() -> dict:
    return run_spawned(sharded_runs.run_all, 2, NAMES)


def test_every_registry_preset_is_run():
    run = {registry for registry, _ in sharded_runs.CONFIGS.values()}
    assert set(memopt.list_optimizers()) <= run | set(sharded_runs.REFUSED)
    assert not run & set(sharded_runs.REFUSED)


@pytest.mark.parametrize("name", NAMES)
def test_fsdp2_matches_one_process(measured, name):
    result = measured[name]
    error, where = result["fsdp"]
    assert error <= TOLERANCE, f"{name}: {where} differs by {error:.2e} relative"
    if name in sharded_runs.ELEMENTWISE:
        assert result["fsdp_exact"] == [True, ""], f"{name}: {result['fsdp_exact'][1]} is not bit-identical"


@pytest.mark.parametrize("name", NAMES)
def test_ddp_matches_one_process_exactly(measured, name):
    assert measured[name]["ddp_exact"] == [True, ""], measured[name]["ddp_exact"][1]


@pytest.mark.parametrize("direction", ["to_one", "to_two"])
@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_moves_between_two_ranks_and_one(measured, name, direction):
    """``to_one``: saved by 2 FSDP2 ranks after 10 steps, loaded into one process; ``to_two``: saved by one
    process, loaded into 2 FSDP2 ranks. The loaded state equals the saved one bit for bit (quantized codes,
    projector bases and indices, counters included), and the 10 more steps match the uninterrupted run."""
    result = measured[name]
    assert result[f"{direction}_state"] == [True, ""], f"loaded state differs at {result[f'{direction}_state'][1]}"
    error, where = result[direction]
    assert error <= TOLERANCE, f"{name}: {where} differs by {error:.2e} relative"
    if name in sharded_runs.ELEMENTWISE:
        assert error == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_each_rank_holds_part_of_the_state(measured, name):
    result = measured[name]
    whole, per_rank = result["state_bytes_one_process"], result["state_bytes_per_rank"]
    assert max(per_rank) <= whole
    # the state template predicts every rank's part (sharded or replicated entries) without allocating
    assert result["template_bytes_per_rank"] == per_rank
    assert result["template_bytes_one_process"] == whole
    if name in sharded_runs.ELEMENTWISE:  # all but the step counters is cut in two
        assert max(per_rank) < 0.55 * whole


@pytest.mark.parametrize("name", list(sharded_runs.GROKFAST))
def test_grokfast_filters_sharded_gradients_exactly(measured, name):
    assert measured[name] == {"fsdp_exact": [True, ""], "ddp_exact": [True, ""]}


def test_unsupported_sharding_and_unsharded_state_are_clear_errors(measured):
    errors = measured["errors"]
    assert "Shard(dim=1)" in errors["shard1"] and "fully_shard" in errors["shard1"]
    assert "plain tensor" in errors["plain_state"] and "torch.distributed.checkpoint" in errors["plain_state"]
    for name in sharded_runs.REFUSED:  # PSGD: the preconditioner needs the whole gradient tensor
        assert "FSDP2 shard (DTensor)" in errors[name] and "whole gradient tensor" in errors[name], errors[name]


def test_8bit_maxima_are_cut_with_the_codes_where_each_shard_is_whole_blocks(measured):
    """The square 64 x 64 matrix splits into whole blocks: its maxima are sharded (no communication); the
    other quantized tensors have a block cut by the shard boundary: replicated maxima."""
    layouts = measured["maxima_layouts"]["layouts"]
    square = {f"square:{key}_absmax" for key in ("exp_avg", "exp_avg_sq")}
    assert {k for k, v in layouts.items() if v == "Shard"} == square
    assert len(layouts) == len(square) + 6 and set(layouts.values()) == {"Shard", "Replicate"}
    # the C kernel takes exactly the shards made of whole blocks: rank 0's 32 x 64 half, in both steps
    assert measured["maxima_layouts"]["kernel_shapes"] == [[32, 64], [32, 64]]
    assert measured["maxima_layouts"]["square_exact"]  # 20 kernel steps by halves = 20 on the whole matrix


def test_communication_per_step_is_what_docs_distributed_md_states(measured):
    """One ordinary step on the test model: AdamW none; Subset-Norm one all-reduce of n floats per wide
    matrix (64 x 69, 31 x 64, 11 x 64, 1 x 64: n = 69 + 64 + 64 + 64); 8-bit one all-reduce(MAX) of the
    ceil(numel / 256) block maxima per quantized state whose shard boundary cuts a block (2 states of 4416,
    4416 and 4223 elements; none for the 64 x 64 matrix, whose halves are whole blocks); AdaGrad-Norm over
    the model one all-reduce of a float per tensor (15 tensors)."""
    assert measured["collectives"] == {
        "adamw": [0, 0],
        "adamw_sn": [4, 4 * (69 + 64 + 64 + 64)],
        "adamw8bit": [6, 4 * 2 * (18 + 18 + 17)],
        "adagrad_norm[global]": [1, 4 * 15],
    }
