"""State storage is orthogonal to the math: 8-bit block-wise and bfloat16 states."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import make_grads, make_params, run, save_and_reload

import memopt
from memopt.state import storage
from memopt.state.formats import QuantizedState, flatten_state


def _adamw_pair(shape, steps=100, lr=1e-3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(shape, generator=generator) * 0.1
    grads = [[torch.randn(shape, generator=generator) * 0.01] for _ in range(steps)]
    eight, opt8 = run(lambda ps: memopt.AdamW8bit(ps, lr=lr, weight_decay=0.01), [start], grads)
    full, opt32 = run(lambda ps: torch.optim.AdamW(ps, lr=lr, weight_decay=0.01, fused=True), [start], grads)
    return start, eight[0], full[0], opt8, opt32


def test_adamw8bit_tracks_float32_adamw():
    start, eight, full, opt8, opt32 = _adamw_pair((64, 256))
    # bitsandbytes-style tolerances: every parameter within 2 lr of float32 AdamW after 100 steps, and the
    # mean error a few percent of the distance travelled
    assert (eight - full).abs().max() <= 2e-3
    assert (eight - full).abs().mean() <= 0.05 * (full - start).abs().mean()
    state8 = opt8.state[opt8.param_groups[0]["params"][0]]
    state32 = opt32.state[opt32.param_groups[0]["params"][0]]
    assert state8["exp_avg"].codes.dtype == torch.uint8 and state8["exp_avg_sq"].codes.dtype == torch.uint8
    for key in ("exp_avg", "exp_avg_sq"):
        dequantized = storage.load(state8, key, torch.float32)
        error = (dequantized - state32[key]).abs().mean() / state32[key].abs().mean()
        assert error < 0.05, key


def test_small_tensors_keep_float32_state_and_equal_adamw():
    # 4095 elements: float32 moments, bit-identical to torch's fused AdamW; 4096: uint8 codes
    _, eight, full, opt8, _ = _adamw_pair((4095,), steps=20)
    assert torch.equal(eight, full)
    assert opt8.state[opt8.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.float32
    _, _, _, opt8, _ = _adamw_pair((4096,), steps=1)
    state = opt8.state[opt8.param_groups[0]["params"][0]]
    # one entry per logical state: codes, block maxima and the format together
    assert isinstance(state["exp_avg"], QuantizedState) and "exp_avg_absmax" not in state
    assert state["exp_avg"].codes.dtype == torch.uint8 and state["exp_avg"].maxima.shape == (16,)
    assert state["exp_avg"].format.tag == "signed/256" and state["exp_avg_sq"].format.tag == "unsigned/256"
    # and a checkpoint keeps the layout of every earlier version: codes, _absmax and _qmap
    saved = opt8.state_dict()["state"][0]
    assert set(saved) == {"step", *(f"{k}{s}" for k in ("exp_avg", "exp_avg_sq") for s in ("", "_absmax", "_qmap"))}
    assert saved["exp_avg"] is state["exp_avg"].codes and saved["exp_avg_absmax"] is state["exp_avg"].maxima
    assert saved["exp_avg_qmap"] == "signed/256" and saved["exp_avg_sq_qmap"] == "unsigned/256"


def test_block_size_is_a_parameter():
    param = torch.zeros(64, 128, requires_grad=True)
    optimizer = memopt.AdamW8bit([param], quant_block_size=2048)
    param.grad = torch.randn(64, 128)
    optimizer.step()
    assert optimizer.state[param]["exp_avg"].maxima.shape == (4,)


BIG = [(96, 64), (64, 80), (300,)]
STORAGE_PRESETS = {
    "adamw8bit": lambda ps: memopt.AdamW8bit(ps, lr=1e-3),
    "adamw_snsm8bit": lambda ps: memopt.AdamWSNSM8bit(
        [{"params": ps[:2]}, {"params": ps[2:], "rank": None, "subset_size": None}], lr=1e-2, rank=8, update_proj_gap=4
    ),
    "adamw_sn_bf16": lambda ps: memopt.AdamWSN(ps, lr=1e-2, state_storage="bfloat16"),
    "adamw_sn_bf16_stochastic": lambda ps: memopt.AdamWSN(
        ps, lr=1e-2, state_storage="bfloat16", stochastic_rounding=True
    ),
    "adagrad_8bit": lambda ps: memopt.Adagrad(
        [{"params": ps, "state_storage": "8bit", "initial_accumulator_value": 0.1}], lr=0.1
    ),
    "sgd_8bit": lambda ps: memopt.SGD([{"params": ps, "state_storage": "8bit"}], lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(STORAGE_PRESETS))
def test_save_load_continue_is_bit_identical(name):
    make = STORAGE_PRESETS[name]
    params, grads = make_params(BIG, torch.float32), make_grads(BIG, 10, torch.float32)
    straight, _ = run(make, params, grads)
    halfway, optimizer = run(make, params, grads[:4])
    new_params, new_optimizer = save_and_reload(optimizer, make, halfway)
    for p_old, p_new in zip(
        [p for g in optimizer.param_groups for p in g["params"]],
        [p for g in new_optimizer.param_groups for p in g["params"]],
    ):
        assert [type(v) for v in optimizer.state[p_old].values()] == [
            type(v) for v in new_optimizer.state[p_new].values()
        ]  # 8-bit states are rebuilt as one entry each
        for key, value in flatten_state(optimizer.state[p_old]).items():
            loaded = flatten_state(new_optimizer.state[p_new])[key]
            if torch.is_tensor(value):
                assert loaded.dtype == value.dtype and torch.equal(loaded, value), key  # no upcast on load
            else:
                assert loaded == value, key
    resumed, _ = run(make, new_params, grads[4:], optimizer=new_optimizer)
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)


def test_subspace_momentum_is_quantized_and_sn_accumulators_are_not():
    params, grads = make_params([(96, 64)], torch.float32), make_grads([(96, 64)], 3, torch.float32)
    _, optimizer = run(lambda ps: memopt.AdamWSNSM8bit(ps, rank=64), params, grads)
    state = optimizer.state[optimizer.param_groups[0]["params"][0]]
    assert state["sm_exp_avg"].codes.dtype == torch.uint8  # 96 x 64 projected momentum
    assert state["subset_sq"].dtype == torch.float32 and state["sm_basis"].dtype == torch.float32


def test_bfloat16_storage_tracks_float32():
    params, grads = make_params([(32, 16)], torch.float32), make_grads([(32, 16)], 30, torch.float32)
    low, optimizer = run(lambda ps: memopt.AdamWSN(ps, lr=1e-2, state_storage="bfloat16"), params, grads)
    high, _ = run(lambda ps: memopt.AdamWSN(ps, lr=1e-2), params, grads)
    assert optimizer.state[optimizer.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.bfloat16
    torch.testing.assert_close(low[0], high[0], rtol=0, atol=5e-3)


def test_build_optimizer_accepts_storage_for_any_engine_preset():
    model = torch.nn.Sequential(torch.nn.Embedding(100, 64), torch.nn.Linear(64, 128))
    optimizer = memopt.build_optimizer(model, "adamw_sn", state_storage="8bit", quant_block_size=128)
    assert all(g["state_storage"] == "8bit" and g["quant_block_size"] == 128 for g in optimizer.param_groups)
    with pytest.raises(ValueError, match=r"Invalid state_storage: 'int8'.*Choose one of"):
        memopt.build_optimizer(model, "adamw", state_storage="int8")


def test_8bit_presets_meet_the_llama_60m_memory_targets():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=512, intermediate_size=1376, num_hidden_layers=8, num_attention_heads=8, vocab_size=32000,
        tie_word_embeddings=False,
    )  # fmt: skip
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    rows = {r.name: r for r in memopt.state_memory_report(model, ["adamw8bit", "adamw_snsm8bit"])}
    assert rows["adamw8bit"].percent_of_reference <= 26.0
    assert rows["adamw_snsm8bit"].percent_of_reference <= 15.0


def test_meta_and_real_8bit_state_bytes_agree():
    small = torch.nn.Sequential(torch.nn.Embedding(300, 64), torch.nn.Linear(64, 96), torch.nn.Linear(96, 64))
    with torch.device("meta"):
        meta = torch.nn.Sequential(torch.nn.Embedding(300, 64), torch.nn.Linear(64, 96), torch.nn.Linear(96, 64))
    for name in ("adamw8bit", "adamw_snsm8bit"):
        real_rows = memopt.state_memory_report(small, [name], {name: {"rank": 8}} if "snsm" in name else None)
        meta_rows = memopt.state_memory_report(meta, [name], {name: {"rank": 8}} if "snsm" in name else None)
        assert [r.bytes for r in real_rows] == [r.bytes for r in meta_rows]


def test_stochastic_rounding_keeps_updates_below_half_a_bfloat16_ulp():
    """bfloat16 parameters at 1.0 (ulp 2^-7) moved by 1e-4 per step: rounding to nearest loses every step;
    stochastic rounding moves them by 100 x 1e-4 on average (E[round(x)] = x)."""

    def final_mean(stochastic: bool) -> float:
        param = torch.ones(20_000, dtype=torch.bfloat16, requires_grad=True)
        optimizer = memopt.SGD([{"params": [param], "stochastic_rounding": stochastic}], lr=1e-4)
        for _ in range(100):
            param.grad = torch.ones_like(param)
            optimizer.step()
        return param.double().mean().item()

    assert final_mean(False) == 1.0
    assert final_mean(True) == pytest.approx(1.0 - 100 * 1e-4, abs=2e-4)


def test_stochastic_rounding_of_bfloat16_state_is_unbiased():
    """An EMA of a constant gradient in bfloat16 state: with rounding to nearest it stalls where the update
    falls under half an ulp; with stochastic rounding its mean over coordinates follows float32."""
    grads = [[torch.full((10_000,), 1.0 + 2**-9)] for _ in range(60)]
    params = [torch.zeros(10_000, requires_grad=True)]

    def momentum(**storage_options) -> torch.Tensor:
        make = lambda ps: memopt.SGD([{"params": ps, **storage_options}], lr=0.0, momentum=0.99, dampening=0.99)
        _, optimizer = run(make, params, grads)
        return optimizer.state[optimizer.param_groups[0]["params"][0]]["momentum_buffer"].double()

    exact = momentum()
    nearest = momentum(state_storage="bfloat16")
    stochastic = momentum(state_storage="bfloat16", stochastic_rounding=True)
    assert exact.std() == 0  # float32 state: every coordinate equal
    assert abs(stochastic.mean() - exact.mean()) < 0.1 * abs(nearest.mean() - exact.mean())


def test_stochastic_rounding_is_validated_and_reaches_build_optimizer():
    model = torch.nn.Sequential(torch.nn.Embedding(100, 64), torch.nn.Linear(64, 128))
    optimizer = memopt.build_optimizer(model, "adamw_sn", state_storage="bfloat16", stochastic_rounding=True)
    assert all(g["stochastic_rounding"] for g in optimizer.param_groups)
    with pytest.raises(ValueError, match=r"Invalid stochastic_rounding: 'yes'. stochastic_rounding must be True"):
        memopt.AdamW([{"params": model.parameters(), "stochastic_rounding": "yes"}])


@pytest.mark.parametrize(
    ("shape", "ranks", "expected"),
    [
        ((512, 512), 2, True),  # LLaMA-60M attention: 256 rows x 512 = 512 blocks a rank
        ((1376, 512), 8, True),  # the MLP's up projection: 172 rows a rank
        ((512, 1376), 4, True),  # down: 128 rows x 1376 = 688 blocks a rank (a block spans rows)
        ((512, 512), 3, True),  # 171, 171, 170 rows: 342, 342, 340 blocks, as the maxima's own chunks
        ((64, 64), 2, True),
        ((64, 64), 3, False),  # 22 rows x 64 = 1408 elements: 5.5 blocks
        ((69, 64), 2, False),  # 35 rows end inside block 8
        ((4223,), 2, False),  # not whole blocks at all
        ((512, 512), 1, False),  # one rank: nothing is sharded
        ((8, 4096), 16, False),  # 8 ranks hold a row (16 blocks) each, but 16 chunks of maxima hold 8
    ],
)
def test_blocks_follow_shards_where_every_rank_holds_whole_blocks(shape, ranks, expected):
    assert storage.blocks_follow_shards(shape, 256, ranks) is expected
