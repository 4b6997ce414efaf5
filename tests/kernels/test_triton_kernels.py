"""The Triton kernels equal the engine's torch path: bit-identical 8-bit codes and block maxima, parameters
and float states to rounding. On the CPU they run in Triton's interpreter, in a subprocess started with
``TRITON_INTERPRET=1`` (:mod:`tests.kernels.triton_interpreter_cases`); on a CUDA device, compiled, through
the engine's dispatch."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.kernels.triton_interpreter_cases import CODEC_CASES, ENGINE_CASES, codec_case_name, codec_input

from memopt.kernels import triton as kernel_set
from memopt.kernels import triton_steps
from memopt.kernels.triton import blockwise
from memopt.state import quantization, sharding
from memopt.state.formats import QuantizedState

ROOT = Path(__file__).resolve().parents[2]
HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install -e .[dev])")
needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and HAS_TRITON), reason="needs a CUDA device and triton to run the compiled kernels"
)


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory):
    """The interpreter's results of every case (one subprocess, about 10 CPU-seconds)."""
    out = tmp_path_factory.mktemp("triton") / "cases.pt"
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.triton_interpreter_cases", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return torch.load(out)


def _assert_same_states(fast: dict, slow: dict, *, rtol: float) -> None:
    assert fast.keys() == slow.keys()
    for key in fast:
        if key.endswith((".codes", ".maxima")):  # 8-bit states: the same codes and block maxima, bit for bit
            assert torch.equal(fast[key], slow[key]), f"{key}: {(fast[key] != slow[key]).sum()} differ"
        else:  # float states: subset sums of squares are added in another order
            torch.testing.assert_close(fast[key], slow[key], rtol=rtol, atol=0, msg=key)


@needs_triton
@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_interpreted_kernels_equal_the_torch_path(interpreted, case):
    result = interpreted["engine"][case]
    kernel = "subset_norm_step" if "_sn" in case and "8bit" not in case else "adamw8bit_step"
    if case == "adamw_sn_8bit_state":  # a Subset-Norm group with 8-bit momentum: the torch update, Triton codec
        assert result["calls"] == {"quantize_blockwise": 4, "dequantize_blockwise": 4}
    else:
        assert result["calls"] == {kernel: 4}, "the engine did not hand every step to the Triton kernel"
    fast, slow = result["triton"], result["reference"]
    _assert_same_states(fast["state"], slow["state"], rtol=1e-5)
    # the parameters: the same operations, but the torch path's CPU kernels fuse a multiply-add only in their
    # vectorized loops, so a parameter may differ by an ulp or two (of the largest parameter, about 3e-8 here)
    torch.testing.assert_close(fast["param"], slow["param"], rtol=4e-7, atol=1e-7)


@needs_triton
@pytest.mark.parametrize("signed,n,block,start", CODEC_CASES)
def test_interpreted_codec_is_bit_identical(interpreted, signed, n, block, start):
    outputs = interpreted["codec"][codec_case_name(signed, n, block, start)]
    for key in ("codes", "maxima", "against", "values"):
        assert torch.equal(outputs["triton"][key], outputs["reference"][key]), key


_P32, _PU8, _I32, _F32 = "*fp32", "*u8", "i32", "fp32"
_TABLE = blockwise.table_constants()
_SUBSETS = dict(grad=_P32, exp_avg=_P32, stat=_P32, rows=_I32, cols=_I32, beta1_weight=_F32)
_APPLY = dict(param=_P32, numerator=_P32, denom=_P32, n=_I32, cols=_I32, decay=_F32, neg_step_size=_F32)
_QUANTIZE = dict(
    value=_P32, codes=_PU8, absmax=_P32, n=_I32, start=_I32, block_size=_I32, first_block=_I32, table=_PU8,
    midpoints=_P32,
)  # fmt: skip
#: kernel -> (argument types, constexprs) of a launch, as the launchers make them
COMPILED = {
    "adamw8bit_kernel": (
        dict(
            param=_P32, grad=_P32, m_codes=_PU8, m_absmax=_P32, v_codes=_PU8, v_absmax=_P32, n=_I32,
            block_size=_I32, signed_map=_P32, unsigned_map=_P32, signed_table=_PU8, signed_mid=_P32,
            unsigned_table=_PU8, unsigned_mid=_P32, beta1_weight=_F32, beta2=_F32, one_minus_beta2=_F32, eps=_F32,
            decay=_F32, neg_step_size=_F32, root_correction=_F32,
        ),
        dict(BLOCK=256, **_TABLE),
    ),
    "dequantize_kernel": (
        dict(codes=_PU8, absmax=_P32, out=_P32, n=_I32, start=_I32, block_size=_I32, first_block=_I32, code_map=_P32),
        dict(BLOCK=1024),
    ),
    "quantize_kernel": (_QUANTIZE, dict(COMPUTE_MAX=True, BLOCK=128, **_TABLE)),
    "subset_rows_kernel": (_SUBSETS, dict(HAS_MOMENTUM=True, ROWS=2, COLS=512)),
    "subset_cols_kernel": (_SUBSETS, dict(HAS_MOMENTUM=False, ROWS=32, COLS=32)),
    "subset_apply_kernel": (_APPLY, dict(PER_ROW=False, DECAY_AFTER=True, BLOCK=1024)),
}  # fmt: skip


@needs_triton
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="the interpreter's kernels are not compiled")
def test_kernels_compile_for_a_hopper_gpu_with_ieee_division_and_no_contraction(tmp_path, monkeypatch):
    """What the interpreter cannot see (types, the IR the GPU runs), checked without a GPU: every kernel
    compiles to a cubin for sm_90 with the launchers' options, divides and takes square roots to nearest,
    and fuses multiply-adds only where it says so."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path))
    source = kernel_set.kernels()
    ptx = {}
    for name, (types, constants) in COMPILED.items():
        signature = {**types, **{c: "constexpr" for c in constants}}
        compiled = triton.compile(
            ASTSource(getattr(source, name), signature, constexprs=constants),
            target=GPUTarget("cuda", 90, 32),
            options=kernel_set.LAUNCH,
        )
        assert compiled.asm.get("cubin"), name
        ptx[name] = compiled.asm["ptx"]
    assert "div.rn.f32" in ptx["adamw8bit_kernel"] and "sqrt.rn.f32" in ptx["adamw8bit_kernel"]
    assert "div.rn.f32" in ptx["quantize_kernel"]
    assert "fma.rn" not in ptx["dequantize_kernel"] + ptx["quantize_kernel"] + ptx["subset_cols_kernel"]
    assert "fma.rn" in ptx["subset_rows_kernel"]  # lerp's, explicit


@needs_triton
def test_what_the_subset_norm_kernel_takes(monkeypatch):
    monkeypatch.setattr(kernel_set, "DEVICES", frozenset({"cpu"}))  # eligibility only: nothing is launched
    param, grad = torch.zeros(8, 4), torch.zeros(8, 4)
    state = {"exp_avg": torch.zeros(8, 4), "subset_sq": torch.zeros(8, 1)}
    assert triton_steps.subset_norm_eligible(param, grad, state)
    assert not triton_steps.subset_norm_eligible(param, grad, sharding.LocalState(state))  # an FSDP2 parameter
    assert not triton_steps.subset_norm_eligible(param.double(), grad.double(), state)
    assert not triton_steps.subset_norm_eligible(param.t(), grad, state)
    assert not triton_steps.subset_norm_eligible(param, grad, {**state, "exp_avg": torch.zeros(8, 4).bfloat16()})


def test_the_cpu_is_a_kernel_device_only_under_the_interpreter():
    expected = {"cuda", "cpu"} if os.environ.get("TRITON_INTERPRET") == "1" else {"cuda"}
    assert kernel_set.DEVICES == expected
    cpu = torch.zeros(4)
    assert blockwise.codec(cpu) is (blockwise if "cpu" in expected and HAS_TRITON else quantization)


def test_memopt_imports_and_steps_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None\n"  # an import of triton now raises ImportError
        "import torch, memopt\n"
        "from memopt.kernels import triton as kernel_set\n"
        "p = torch.zeros(64, 128, requires_grad=True); o = memopt.AdamW8bit([p]); p.grad = torch.ones_like(p)\n"
        "o.step(); print('available', kernel_set.available(), 'moved', bool((p != 0).all()))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "available False moved True" in result.stdout


# ------------------------------------------------------------------------------------------- CUDA


def _cuda_run(make, shape, hparams, *, reference: bool):
    generator = torch.Generator(device="cuda").manual_seed(0)
    param = (torch.randn(shape, generator=generator, device="cuda") * 0.1).requires_grad_()
    optimizer = make([param], lr=1e-2, **hparams)
    optimizer.param_groups[0]["foreach"] = False if reference else None
    for _ in range(5):
        param.grad = torch.randn(shape, generator=generator, device="cuda") * 0.01 + 0.002
        optimizer.step()
    return param.detach(), optimizer.state[param]


@needs_cuda
@pytest.mark.parametrize("case", list(ENGINE_CASES))
def test_cuda_dispatch_runs_the_compiled_kernels_and_equals_the_torch_path(case, monkeypatch):
    make, shape, hparams = ENGINE_CASES[case]
    calls = []
    for name in ("adamw8bit_step", "subset_norm_step"):
        original = getattr(triton_steps, name)
        monkeypatch.setattr(triton_steps, name, lambda *a, _f=original, _n=name: (calls.append(_n), _f(*a))[1])
    fast, fast_state = _cuda_run(make, shape, hparams, reference=False)
    if case != "adamw_sn_8bit_state":
        assert len(calls) == 5
    with monkeypatch.context() as patch:
        patch.setattr(kernel_set, "DEVICES", frozenset())  # the torch path on the GPU
        slow, slow_state = _cuda_run(make, shape, hparams, reference=True)
    for key, value in fast_state.items():
        if isinstance(value, QuantizedState):
            assert torch.equal(value.codes, slow_state[key].codes), key
            assert torch.equal(value.maxima, slow_state[key].maxima), key
        elif torch.is_tensor(value) and key != "step":
            torch.testing.assert_close(value, slow_state[key], rtol=1e-5, atol=0)
    torch.testing.assert_close(fast, slow, rtol=4e-7, atol=1e-7)


@needs_cuda
@pytest.mark.parametrize("signed,n,block,start", CODEC_CASES)
def test_cuda_codec_is_bit_identical(signed, n, block, start):
    x = codec_input(signed, n, torch.Generator().manual_seed(1)).cuda()
    codes, maxima = blockwise.quantize_blockwise(x, signed=signed, block_size=block, start=start)
    ref_codes, ref_maxima = quantization.quantize_blockwise(x, signed=signed, block_size=block, start=start)
    assert torch.equal(codes, ref_codes) and torch.equal(maxima, ref_maxima)
    values = blockwise.dequantize_blockwise(codes, maxima, signed=signed, block_size=block, start=start)
    assert torch.equal(
        values, quantization.dequantize_blockwise(codes, maxima, signed=signed, block_size=block, start=start)
    )
