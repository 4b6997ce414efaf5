"""The Triton kernels against the engine's torch path, run by Triton's interpreter on CPU tensors.

``TRITON_INTERPRET=1`` must be in the environment before Triton is first imported (``triton.jit`` and
Triton's own library functions read it when they are defined), so this runs in a fresh process:

    TRITON_INTERPRET=1 PYTHONPATH=src:. python -m tests.kernels.triton_interpreter_cases OUT.pt

Each case runs the same steps twice on the same data: with the Triton kernels (the engine's dispatch hands
them the CPU parameters, since the interpreter makes the CPU a kernel device) and with the torch path
(``memopt.kernels.triton.DEVICES`` without the CPU). It saves both results and how often each kernel ran;
``tests/kernels/test_triton_kernels.py`` compares them.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

import memopt
from memopt.kernels import triton as kernel_set
from memopt.kernels import triton_steps
from memopt.kernels.triton import blockwise
from memopt.state import quantization
from memopt.state.formats import QuantizedState

#: case -> (optimizer class, shape, hyperparameters). 8-bit states need tensors of 4096 elements or more.
#: The 8-bit cases' sizes are multiples of 64 but not of their block size: torch's CPU kernels compute the last
#: ``numel mod 2 * vector width`` elements without the fused multiply-add of their vectorized loop (torch's
#: CUDA kernels and the Triton kernel always fuse), and a value rounded differently there can change a code.
ENGINE_CASES: dict[str, tuple] = {
    "adamw8bit_blocks_odd": (memopt.AdamW8bit, (64, 70), {}),  # 4480 = 17.5 blocks of 256
    "adamw8bit_block96_decay": (memopt.AdamW8bit, (4160,), {"quant_block_size": 96, "betas": (0.8, 0.95)}),
    "adamw8bit_large_block_maximize": (memopt.AdamW8bit, (64, 99), {"quant_block_size": 2048, "maximize": True}),
    "adamw8bit_small_beta1": (memopt.AdamW8bit, (4224,), {"betas": (0.3, 0.9), "eps": 1e-6}),  # lerp's >= 1/2 side
    "adamw_sn_8bit_state": (memopt.AdamWSN, (33, 150), {"state_storage": "8bit", "quant_block_size": 128}),
    "adamw_sn_tall": (memopt.AdamWSN, (70, 33), {"weight_decay": 0.1}),
    "adamw_sn_wide": (memopt.AdamWSN, (20, 90), {"weight_decay": 0.1}),
    "adamw_sn_vector": (memopt.AdamWSN, (50,), {}),
    "adamw_sn_subsets_of_16": (memopt.AdamWSN, (40, 30), {"subset_size": 16}),
    "adamw_sn_3d": (memopt.AdamWSN, (6, 5, 7), {"eps_placement": "before_bias_correction"}),
    "adamw_sn_decay_after_update": (
        memopt.AdamWSN,
        (24, 40),
        {"weight_decay": 0.1, "weight_decay_placement": "after_update"},
    ),
    "rmsprop_sn": (memopt.RMSPropSN, (30, 45), {"weight_decay": 0.05}),
    "adagrad_sn": (memopt.AdaGradSN, (45, 30), {}),
}
#: (signed, numel, block size, flat start) of the direct (de)quantization cases; numel 0: the ties case, every
#: midpoint between two codes exactly (a block whose maximum is 1), which rounds to the lower code
CODEC_CASES = [
    (True, 1000, 256, 0),
    (False, 777, 64, 0),
    (True, 500, 256, 100),
    (False, 300, 128, 1000),
    (True, 0, 256, 0),
    (False, 0, 256, 0),
]


def codec_case_name(signed: bool, n: int, block: int, start: int) -> str:
    return f"{'signed' if signed else 'unsigned'}_{n or 'ties'}_{block}_{start}"


def codec_input(signed: bool, n: int, generator: torch.Generator) -> torch.Tensor:
    """Values of every magnitude down to the map's smallest, one zero; or (``n = 0``) the map's midpoints."""
    if n == 0:
        return torch.cat([quantization._midpoints(signed)[:-1], torch.ones(1)])
    x = torch.randn(n, generator=generator) * torch.logspace(-9, 0, n)
    x = x if signed else x.abs()
    x[3] = 0.0
    return x


STEPS = 4


@contextlib.contextmanager
def torch_path():
    """The engine's torch path: the CPU is not a kernel device."""
    saved = kernel_set.DEVICES
    kernel_set.DEVICES = frozenset({"cuda"})
    try:
        yield
    finally:
        kernel_set.DEVICES = saved


def run_engine(make, shape, hparams, *, reference: bool) -> dict:
    """``STEPS`` steps of ``make`` on one parameter: through the dispatch registry, or (``reference``) the
    engine's readable torch path (``foreach=False``), with 8-bit states (de)quantized by torch."""
    generator = torch.Generator().manual_seed(0)
    param = (torch.randn(shape, generator=generator) * 0.1).requires_grad_()
    optimizer = make([param], lr=1e-2, **hparams)
    optimizer.param_groups[0]["foreach"] = False if reference else None
    for step in range(STEPS):
        param.grad = torch.randn(shape, generator=generator) * 0.01 + 0.002
        optimizer.param_groups[0]["lr"] = 1e-2 * (1 + step % 3)  # a changing lr, as a scheduler would set
        optimizer.step()
    state = {}
    for key, value in optimizer.state[param].items():
        if isinstance(value, QuantizedState):
            state[key + ".codes"], state[key + ".maxima"] = value.codes.clone(), value.maxima.clone()
        elif torch.is_tensor(value) and key != "step":
            state[key] = value.clone()
    return {"param": param.detach().clone(), "state": state}


def counting(calls: dict):
    """Wrap the Triton launchers so that every launch is counted in ``calls``."""
    originals = {name: getattr(triton_steps, name) for name in ("adamw8bit_step", "subset_norm_step")}
    originals_codec = {name: getattr(blockwise, name) for name in ("quantize_blockwise", "dequantize_blockwise")}

    def wrap(module, name, function):
        def counted(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)

        setattr(module, name, counted)

    for name, function in originals.items():
        wrap(triton_steps, name, function)
    for name, function in originals_codec.items():
        wrap(blockwise, name, function)


def main(out: str) -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("run with TRITON_INTERPRET=1 in the environment")
    torch.set_num_threads(1)
    results: dict = {"engine": {}, "codec": {}}
    calls: dict[str, int] = {}
    counting(calls)
    for name, (make, shape, hparams) in ENGINE_CASES.items():
        calls.clear()
        triton = run_engine(make, shape, hparams, reference=False)
        used = dict(calls)
        with torch_path():
            reference = run_engine(make, shape, hparams, reference=True)
        results["engine"][name] = {"triton": triton, "reference": reference, "calls": used}
    generator = torch.Generator().manual_seed(1)
    for signed, n, block, start in CODEC_CASES:
        x = codec_input(signed, n, generator)
        given = quantization.block_maxima(x * 1.5, block_size=block, start=start)
        outputs = {}
        for label, module in (("triton", blockwise), ("reference", quantization)):
            codes, maxima = module.quantize_blockwise(x, signed=signed, block_size=block, start=start)
            against, _ = module.quantize_blockwise(x, signed=signed, block_size=block, start=start, absmax=given)
            values = module.dequantize_blockwise(codes, maxima, signed=signed, block_size=block, start=start)
            outputs[label] = {"codes": codes.to(torch.uint8), "maxima": maxima, "against": against, "values": values}
        results["codec"][codec_case_name(signed, n, block, start)] = outputs
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1])
