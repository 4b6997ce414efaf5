"""The C nearest-code search and 8-bit load/store kernel (memopt.kernels.quant8) equal the torch path bit for bit."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

import memopt
from memopt.kernels import quant8
from memopt.state import formats, quantization
from memopt.state.formats import Blockwise8bit, QuantizedState

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler to build the kernel"
)


def _dense_values() -> torch.Tensor:
    """Float32 values in [-1, 1]: every exponent from 0 (subnormals) to 1.0's, each with all patterns of its 12
    low and of its 12 high mantissa bits; every midpoint of both maps, the floats next to it on both sides,
    every code value; both signs; -0.0, 1 and -1."""
    exponents = torch.arange(0, 127, dtype=torch.int32).unsqueeze(1) << 23
    patterns = torch.arange(1 << 12, dtype=torch.int32).unsqueeze(0)
    bits = torch.cat([(exponents | patterns).reshape(-1), (exponents | (patterns << 11)).reshape(-1)])
    edges = [torch.tensor([1.0, 0.0])]
    for signed in (True, False):
        midpoints = quantization._midpoints(signed)[:-1]
        edges += [midpoints, quantization.dynamic_map(signed)]
        edges += [torch.nextafter(midpoints, torch.tensor(2.0)), torch.nextafter(midpoints, torch.tensor(-2.0))]
    positive = torch.cat([bits.view(torch.float32), *edges]).clamp(0.0, 1.0)
    return torch.cat([positive, -positive])


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("path", sorted(quant8.PATHS))
def test_nearest_codes_equal_the_torch_search_on_a_dense_set_of_floats(signed, path):
    values = _dense_values()
    assert values.numel() > 2_000_000
    expected = quantization.nearest_codes(values, signed).to(torch.uint8)
    got = quant8.nearest_codes(values, signed, path=path)
    mismatches = (got != expected).nonzero().flatten()
    assert mismatches.numel() == 0, [(values[i].item(), int(expected[i]), int(got[i])) for i in mismatches[:5]]


def test_nearest_codes_write_into_a_given_tensor_and_refuse_a_wrong_one():
    values = torch.linspace(-1, 1, 1001)
    out = torch.full((1001,), 7, dtype=torch.uint8)
    assert quant8.nearest_codes(values, True, out=out) is out
    assert torch.equal(out, quantization.nearest_codes(values, True).to(torch.uint8))
    for wrong in (torch.empty(1000, dtype=torch.uint8), torch.empty(1001, dtype=torch.int32)):
        with pytest.raises(ValueError, match="out must be a contiguous uint8 CPU tensor of 1001 elements"):
            quant8.nearest_codes(values, True, out=wrong)
    with pytest.raises(ValueError, match="path must be one of"):
        quant8.nearest_codes(values, True, path="table")


@pytest.mark.parametrize("signed", [True, False])
def test_the_decision_from_positions_equals_the_exact_search_on_every_float_in_the_unit_interval(signed):
    """All 2 x 1,065,353,217 float32 values in [-1, 1] (about 15 s per map): the codes the quantize kernels
    decide from positions equal those of the 8-lane search that compares with the exact midpoints (which the
    dense test above checks against torch)."""
    chunk, end = 1 << 26, 0x3F800001  # the bit patterns of +0.0 .. 1.0
    fast, exact = torch.empty(chunk, dtype=torch.uint8), torch.empty(chunk, dtype=torch.uint8)
    mismatched = 0
    for start in range(0, end, chunk):
        bits = torch.arange(start, min(start + chunk, end), dtype=torch.int32)
        for pattern in (bits, bits | -0x80000000):  # the values and their negatives
            values = pattern.view(torch.float32)
            k = values.numel()
            quant8.nearest_codes(values, signed, path="fast_vector", out=fast[:k])
            quant8.nearest_codes(values, signed, path="exact_vector", out=exact[:k])
            mismatched += int((fast[:k] != exact[:k]).sum())
    assert mismatched == 0


def test_ties_go_to_the_lower_code_as_in_torch():
    for signed in (True, False):
        midpoints = quantization._midpoints(signed)[:-1]
        for values in (midpoints, -midpoints):
            expected = quantization.nearest_codes(values, signed).to(torch.uint8)
            assert torch.equal(quant8.nearest_codes(values, signed), expected)
        # a positive value exactly on a midpoint keeps the code below it
        assert torch.equal(quant8.nearest_codes(midpoints[midpoints > 0], signed).int(),
                           torch.nonzero(midpoints > 0).flatten().int())  # fmt: skip


def _entry(shape, signed, block) -> QuantizedState:
    fmt = Blockwise8bit(signed, block)
    return fmt.create(torch.zeros(shape), shape, sharded=False)


def _with_kernel(kernel, fn):
    previous = formats.register_8bit_kernel(kernel)
    try:
        return fn()
    finally:
        formats.register_8bit_kernel(previous)


@pytest.mark.parametrize(
    ("shape", "block"),
    [((1,), 256), ((7,), 256), ((255,), 256), ((256,), 256), ((257,), 256), ((300, 70), 256), ((4109,), 64),
     ((50, 99), 2048), ((3, 5, 7), 8)],
)  # fmt: skip
@pytest.mark.parametrize("signed", [True, False])
def test_store_and_load_equal_the_torch_path(shape, block, signed):
    generator = torch.Generator().manual_seed(sum(shape) + block)
    value = torch.randn(shape, generator=generator) * torch.logspace(-9, 1, shape[-1])
    if not signed:
        value = value.abs()
    value.view(-1)[: min(block, value.numel()) // 2] = 0.0  # a block (or part of one) of zeros
    value.view(-1)[-1] = -value.abs().max() if signed else value.max()  # a block's maximum, exactly
    fast, slow = _entry(shape, signed, block), _entry(shape, signed, block)
    calls = []

    class Counting(quant8.CKernel):
        def store(self, *args):
            calls.append("store")
            return super().store(*args)

        def load(self, *args):
            calls.append("load")
            return super().load(*args)

    _with_kernel(Counting(), lambda: fast.format.store(fast, value))
    _with_kernel(None, lambda: slow.format.store(slow, value))
    assert torch.equal(fast.codes, slow.codes)
    assert torch.equal(fast.maxima, slow.maxima)
    loaded = _with_kernel(Counting(), lambda: fast.format.load(fast, torch.float32))
    assert torch.equal(loaded, _with_kernel(None, lambda: slow.format.load(slow, torch.float32)))
    assert loaded.shape == shape
    assert calls == ["store", "load"]


@pytest.mark.parametrize("scale", [1.0, 3.3e-3, 7.77, 1e-30, 1.5e-38, 1e-40, 3e38])
@pytest.mark.parametrize("signed", [True, False])
def test_stored_codes_equal_the_torch_path_where_value_over_maximum_meets_a_midpoint(scale, signed):
    """The store multiplies by 1 / maximum and decides most codes from positions; values whose quotient lies on,
    next to or between float neighbours of a midpoint must still get the reference's code (the division's);
    a maximum below FLT_MIN (whose reciprocal may overflow) goes the exact way."""
    midpoints = quantization._midpoints(signed)[:-1]
    around = [midpoints]
    for direction in (2.0, -2.0):
        step = midpoints
        for _ in range(3):
            step = torch.nextafter(step, torch.tensor(direction))
            around.append(step)
    quotients = torch.cat(around).clamp(-1.0, 1.0)
    quotients = quotients if not signed else torch.cat([quotients, -quotients])
    maximum = torch.tensor(scale, dtype=torch.float32)
    block = 256
    # each block holds its maximum first, then 255 values near midpoints scaled by it
    values = (quotients.double() * float(maximum)).float()
    pieces = []
    for start in range(0, values.numel(), block - 1):
        pieces += [maximum.reshape(1), values[start : start + block - 1]]
    value = torch.cat(pieces)
    fast, slow = _entry(value.shape, signed, block), _entry(value.shape, signed, block)
    _with_kernel(quant8.KERNEL, lambda: fast.format.store(fast, value))
    _with_kernel(None, lambda: slow.format.store(slow, value))
    assert torch.equal(fast.maxima, slow.maxima)
    mismatches = (fast.codes != slow.codes).nonzero().flatten()
    assert mismatches.numel() == 0, [(value[i].item(), int(slow.codes[i]), int(fast.codes[i])) for i in mismatches[:5]]


def test_values_the_kernel_does_not_take_use_the_torch_path():
    entry = _entry((64, 80), True, 256)
    value = torch.randn(80, 64).t()  # not contiguous
    for v in (value, value.double(), value.contiguous().bfloat16()):
        assert not quant8.KERNEL.store(entry.codes, entry.maxima, entry.format, v)
        _with_kernel(quant8.KERNEL, lambda: entry.format.store(entry, v))  # noqa: B023 - called at once
        codes, maxima = quantization.quantize_blockwise(v, signed=True)
        assert torch.equal(entry.codes, codes) and torch.equal(entry.maxima, maxima)
    assert quant8.KERNEL.load(entry.codes.t(), entry.maxima, entry.format) is None


@pytest.mark.parametrize(
    ("name", "keys", "options"), [("adamw_sn", ("exp_avg",), {}), ("adamw_snsm", ("sm_exp_avg",), {"rank": 16})]
)
def test_engine_optimizers_with_8_bit_state_step_as_on_the_torch_path(name, keys, options):
    def run(kernel):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(300, 257), nn.Linear(257, 70))
        optimizer = memopt.build_optimizer(model, name, lr=1e-2, state_storage="8bit", **options)
        generator = torch.Generator().manual_seed(1)

        def steps():
            for _ in range(4):
                for param in model.parameters():
                    param.grad = torch.randn(param.shape, generator=generator)
                optimizer.step()

        _with_kernel(kernel, steps)
        return model, optimizer

    (fast_model, fast), (slow_model, slow) = run(quant8.KERNEL), run(None)
    quantized = 0
    for a, b in zip(fast_model.parameters(), slow_model.parameters()):
        assert torch.equal(a, b)
        for key in keys:
            if isinstance(fast.state[a].get(key), QuantizedState):
                quantized += 1
                assert torch.equal(fast.state[a][key].codes, slow.state[b][key].codes)
                assert torch.equal(fast.state[a][key].maxima, slow.state[b][key].maxima)
    assert quantized == 2  # both weight matrices (the biases are too small to quantize)


def test_the_engine_registers_the_kernel():
    assert formats._8BIT_KERNEL is quant8.KERNEL
    assert quant8.available()


def test_the_vector_and_one_element_paths_agree_on_nan_and_infinity():
    values = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), 0.5, -0.5, 0.0, -0.0] * 2)
    for signed in (True, False):
        one = quant8.nearest_codes(values, signed, path="one_element")
        for path in ("exact_vector", "fast_vector"):
            assert torch.equal(quant8.nearest_codes(values, signed, path=path), one), path


def test_a_kernel_is_rebuilt_when_the_header_it_includes_changes():
    from pathlib import Path

    from memopt.kernels import build

    kernels = Path(build.__file__).parent
    for name in ("adamw8bit.c", "quant8.c"):
        assert build._local_includes(kernels / name) == [kernels / "quant8.h"]
