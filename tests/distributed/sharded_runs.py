"""What each process of the sharded-optimizer tests runs (see ``test_sharded_optimizers.py``).

For every configuration (each registry preset, and variants that exercise other code paths) on a small
model whose shapes do not split evenly over 2 ranks, rank 0 runs 20 reference steps in one process, and
all ranks run the same 20 steps with FSDP2 (``fully_shard`` per block) and with DDP. Every rank trains on
the same minibatch, so the gradients that FSDP2's reduce-scatter and DDP's all-reduce average are equal
and their average is the single-process gradient bit for bit (``(g + g) / 2 = g``): differences in the
parameters then come from the optimizer's sharded math alone.

Checkpoints: the FSDP2 run is saved with ``torch.distributed.checkpoint`` after 10 steps and loaded into
one process (2 ranks -> 1), and the reference run's checkpoint after 10 steps is loaded into a fresh FSDP2
model on 2 ranks (1 -> 2); both continue to step 20. Rank 0 returns the measured differences.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

import memopt
from memopt.state.accounting import template_bytes
from memopt.state.formats import QuantizedState

STEPS, HALF = 20, 10
VOCAB = 11
_SM = {"rank": 4, "update_proj_gap": 5}

#: name -> (registry name, hyperparameters). Every registry preset appears under its own name.
CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "sgd": ("sgd", {"lr": 0.05, "momentum": 0.9}),
    "adagrad": ("adagrad", {"lr": 0.05}),
    "rmsprop": ("rmsprop", {"lr": 1e-3}),
    "adam": ("adam", {"lr": 1e-2, "weight_decay": 0.01}),
    "adamw": ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
    "adamw_sn": ("adamw_sn", {"lr": 1e-2}),
    "adamw_snsm": ("adamw_snsm", {"lr": 1e-2, **_SM}),
    "adagrad_sn": ("adagrad_sn", {"lr": 1e-2}),
    "adagrad_snsm": ("adagrad_snsm", {"lr": 1e-2, **_SM}),
    "rmsprop_sn": ("rmsprop_sn", {"lr": 1e-3}),
    # foreach=False: the torch path on every rank (the single-process default, a fused C kernel, rounds the
    # parameter update differently by an ulp, and it takes only shards made of whole blocks)
    "adamw8bit": ("adamw8bit", {"lr": 1e-2, "foreach": False}),
    "adamw_snsm8bit": ("adamw_snsm8bit", {"lr": 1e-2, **_SM}),
    "adagrad_norm": ("adagrad_norm", {"lr": 0.1, "momentum": 0.9}),
    "adafactor": ("adafactor", {}),
    "et_adagrad": ("et_adagrad", {"lr": 0.1}),
    "et_adam": ("et_adam", {"lr": 1e-2}),
    "nag_gs": ("nag_gs", {"lr": 0.05}),
    "meta_storm": ("meta_storm", {"lr": 1e-3, "per_coordinate": True, "ema": True, "bias_correction": True}),
    "storm_plus": ("storm_plus", {"lr": 1e-3, "per_coordinate": True, "ema": True, "bias_correction": True}),
    "quasar_agd": ("quasar_agd", {"lr": 0.01, "gamma": 0.5}),
    "nesterov_agd": ("nesterov_agd", {"lr": 0.01}),
    "asgd": ("asgd", {"lr": 0.01}),
    "lion": ("lion", {"lr": 1e-3, "weight_decay": 0.1}),
    "muon": ("muon", {"lr": 1e-2, "weight_decay": 0.1}),
    "apollo": ("apollo", {"lr": 1e-2, "weight_decay": 0.1, "rank": 4, "update_proj_gap": 5}),
    "apollo_mini": ("apollo_mini", {"lr": 1e-2, "update_proj_gap": 5}),
    "adam_mini": ("adam_mini", {"lr": 1e-2, "weight_decay": 0.1}),
    "galore": ("galore", {"lr": 1e-2, "weight_decay": 0.1, "rank": 4, "update_proj_gap": 5}),
    # Riemannian optimizers on plain (Euclidean) parameters; manifold parameters cannot be sharded
    "riemannian_sgd": ("riemannian_sgd", {"lr": 0.05, "momentum": 0.9}),
    "riemannian_adam": ("riemannian_adam", {"lr": 1e-2, "weight_decay": 0.01}),
    "riemannian_amsgrad": ("riemannian_amsgrad", {"lr": 1e-2}),
    "riemannian_adagrad": ("riemannian_adagrad", {"lr": 0.05}),
    # other code paths: contiguous subsets across shard boundaries, every projector, a global norm,
    # Adafactor with momentum and an external lr, ET on natural modes, STORM with whole-tensor norms
    "adamw_sn[subset=-2]": ("adamw_sn", {"lr": 1e-2, "subset_size": -2}),
    "adamw_sn[subset=48]": ("adamw_sn", {"lr": 1e-2, "subset_size": 48}),
    "adamw_snsm[randomized]": ("adamw_snsm", {"lr": 1e-2, **_SM, "proj_type": "randomized"}),
    "adamw_snsm[topk,transform]": ("adamw_snsm", {"lr": 1e-2, **_SM, "proj_type": "topk", "proj_policy": "transform"}),
    "adamw_snsm[uniform,keep]": ("adamw_snsm", {"lr": 1e-2, **_SM, "proj_type": "uniform", "proj_policy": "keep"}),
    "adamw_snsm[svd,transform]": ("adamw_snsm", {"lr": 1e-2, **_SM, "proj_policy": "transform"}),
    "adagrad_norm[global]": ("adagrad_norm", {"lr": 0.1, "global_norm": True}),
    "adafactor[beta1,lr]": (
        "adafactor",
        {"lr": 1e-2, "relative_step": False, "scale_parameter": False, "beta1": 0.9, "weight_decay": 0.01},
    ),
    "et_adam[natural]": ("et_adam", {"lr": 1e-2, "et_order": None}),
    "meta_storm[norms]": ("meta_storm", {"lr": 1e-3}),
    "storm_plus[norms]": ("storm_plus", {"lr": 1e-3}),
}

#: registry optimizers that refuse FSDP2-sharded parameters with a ValueError (PSGD fits its preconditioner to the
#: whole gradient tensor; memopt.curvature.base): ``error_messages`` records each one's message
REFUSED = ("psgd_kron", "psgd_lra", "psgd_diag")

#: configurations whose update is elementwise (no sum over a sharded dim): FSDP2 must equal one process
#: exactly. 8-bit blocks cut by shards take the MAX of both pieces, which is exact too. Muon orthogonalizes the
#: gathered whole matrix on every rank (the same input, the same result) and keeps its rows: exact as well.
ELEMENTWISE = {
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamw8bit", "nag_gs", "meta_storm", "storm_plus", "asgd", "lion",
    "muon",
}  # fmt: skip


class Block(nn.Module):
    """A residual MLP block (the unit ``fully_shard`` wraps)."""

    def __init__(self, width: int, hidden: int, *, bias: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.up = nn.Linear(width, hidden, bias=bias)
        self.down = nn.Linear(hidden, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.down(torch.tanh(self.up(self.norm(x))))


class Net(nn.Module):
    """A small language model whose shapes split unevenly over 2 ranks: matrices with odd row counts
    (tall and wide), one with a single row (rank 1 holds none of it), 8-bit-quantized matrices (>= 4096
    elements) whose shard boundary falls inside an 8-bit block, a quantized 1-d tensor of 4223 elements
    whose halves cut a block too, a square 64 x 64 matrix whose halves are whole blocks, plus an
    embedding, biases and norms.

    Every rank's first element sits at a multiple of 16 elements of its tensor: torch's CPU kernels
    (e.g. the fused AdamW one) round the last ``numel % vector width`` elements of a tensor in scalar code,
    slightly differently from their vector code, so pieces that start mid-vector would differ from the
    whole tensor by an ulp for reasons that are not the optimizer's math.
    """

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 64)
        self.block1 = Block(64, 69, bias=False)  # up 69 x 64 (tall), down 64 x 69 (wide): 4416 elements each
        self.block2 = Block(64, 31, bias=True)  # up 31 x 64 (wide) with a bias of 31, down 64 x 31 (tall)
        self.out = nn.Linear(64, VOCAB, bias=False)  # 11 x 64 (wide)
        self.head = nn.Linear(64, 1)  # 1 x 64
        self.table = nn.Parameter(torch.randn(4223) * 0.1)
        # 64 x 64: 4096 elements, each rank 2048 of them = 8 whole 8-bit blocks of 256
        self.square = nn.Parameter(torch.randn(64, 64) * 0.1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(self.embed(ids)))
        next_token = nn.functional.cross_entropy(self.out(x).flatten(0, 1), ids.roll(-1, dims=1).flatten())
        penalties = 0.01 * ((self.table * self.table.roll(1)).sum() + (self.square * self.square.roll(1, 0)).sum())
        return next_token + 0.1 * self.head(x).square().mean() + penalties


def make_model(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net()


def batch(step: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (4, 8), generator=torch.Generator().manual_seed(1000 + step))


def shard(model: Net) -> Net:
    """FSDP2 over the whole model as one unit: every parameter is sharded as with one unit per block (as
    the training harness wraps), with the fewest collectives per step (fast tests)."""
    fully_shard(model, reshard_after_forward=False)
    return model


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        ids = batch(step)

        def closure(ids: torch.Tensor = ids) -> torch.Tensor:
            optimizer.zero_grad(set_to_none=True)
            loss = model(ids)
            loss.backward()
            return loss

        if getattr(optimizer, "needs_closure", False):
            optimizer.step(closure)
        else:
            closure()
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def full(value: Any) -> Any:
    return value.full_tensor() if isinstance(value, DTensor) else value


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    model = model.module if isinstance(model, DistributedDataParallel) else model
    return {name: full(p.detach()).clone() for name, p in model.named_parameters()}


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[tuple[str, str], Any]:
    """The optimizer state by (parameter name, key), as whole tensors (a collective for DTensors)."""
    _, osd = get_state_dict(model, optimizer)
    out = {}
    for fqn, entries in sorted(osd["state"].items()):
        for key, value in sorted(entries.items()):
            value = full(value)
            out[(fqn, key)] = value.clone() if torch.is_tensor(value) else value
    return out


def relative_error(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> tuple[float, str]:
    """``max |a - b| / max |b|`` of the worst parameter, and its name."""
    worst, where = 0.0, ""
    for name, b in expected.items():
        a = actual[name]
        scale = b.abs().max().item() or 1.0
        error = (a - b).abs().max().item() / scale if b.numel() else 0.0
        if not math.isfinite(error) or error > worst:
            worst, where = (error if math.isfinite(error) else float("inf")), name
    return worst, where


def exactly_equal(actual: dict, expected: dict) -> tuple[bool, str]:
    if actual.keys() != expected.keys():
        return False, f"keys differ: {sorted(set(actual) ^ set(expected))[:4]}"
    for key, b in expected.items():
        a = actual[key]
        same = torch.equal(a, b) if torch.is_tensor(b) else a == b
        if not same:
            return False, str(key)
    return True, ""


def save(model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, *, no_dist: bool = False) -> None:
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path), no_dist=no_dist)


def load(model: nn.Module, optimizer: memopt.MemoptOptimizer, path: Path, *, no_dist: bool = False) -> None:
    optimizer.prepare_state()  # the state template that dcp.load fills in place
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path), no_dist=no_dist)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def build(model: nn.Module, name: str, hparams: dict[str, Any]) -> torch.optim.Optimizer:
    return memopt.build_optimizer(model, name, **hparams)


def check(rank: int, world: int, registry_name: str, hparams: dict[str, Any], folder: Path) -> dict[str, Any] | None:
    """One configuration's runs; rank 0 returns the differences it measured."""
    result: dict[str, Any] = {}
    lead = rank == 0
    if lead:  # the single-process reference, with a checkpoint after HALF steps
        reference = make_model(0)
        optimizer = build(reference, registry_name, hparams)
        train(reference, optimizer, range(HALF))
        reference_half = full_state(reference, optimizer)
        save(reference, optimizer, folder / "one", no_dist=True)
        train(reference, optimizer, range(HALF, STEPS))
        expected = full_params(reference)
        result["state_bytes_one_process"] = memopt.state_bytes(optimizer)
        result["template_bytes_one_process"] = template_bytes(optimizer)
    dist.barrier()

    model = shard(make_model(0))
    optimizer = build(model, registry_name, hparams)
    train(model, optimizer, range(HALF))
    fsdp_half = full_state(model, optimizer)
    save(model, optimizer, folder / "two")
    train(model, optimizer, range(HALF, STEPS))
    fsdp_final = full_params(model)
    per_rank = memopt.state_bytes_per_rank(optimizer)
    template_per_rank: list[Any] = [None] * world  # the template's prediction of each rank's part
    dist.all_gather_object(template_per_rank, template_bytes(optimizer))

    ddp = DistributedDataParallel(make_model(0))
    ddp_optimizer = build(ddp, registry_name, hparams)
    train(ddp, ddp_optimizer, range(STEPS))
    ddp_final = full_params(ddp)

    if lead:  # 2 ranks -> 1: load the FSDP2 checkpoint into one process and continue
        single = make_model(1)
        single_optimizer = build(single, registry_name, hparams)
        load(single, single_optimizer, folder / "two", no_dist=True)
        result["to_one_state"] = exactly_equal(full_state(single, single_optimizer), fsdp_half)
        train(single, single_optimizer, range(HALF, STEPS))
        result["to_one"] = relative_error(full_params(single), expected)
    dist.barrier()

    # 1 -> 2 ranks: load the single-process checkpoint into a fresh FSDP2 model and continue
    resumed = shard(make_model(1))
    resumed_optimizer = build(resumed, registry_name, hparams)
    load(resumed, resumed_optimizer, folder / "one")
    loaded_half = full_state(resumed, resumed_optimizer)
    train(resumed, resumed_optimizer, range(HALF, STEPS))
    resumed_final = full_params(resumed)

    if not lead:
        return None
    result["fsdp"] = relative_error(fsdp_final, expected)
    result["fsdp_exact"] = exactly_equal(fsdp_final, expected)
    result["ddp"] = relative_error(ddp_final, expected)
    result["ddp_exact"] = exactly_equal(ddp_final, expected)
    result["to_two_state"] = exactly_equal(loaded_half, reference_half)
    result["to_two"] = relative_error(resumed_final, expected)
    result["state_bytes_per_rank"] = per_rank
    result["template_bytes_per_rank"] = template_per_rank
    return result


#: Grokfast filters (not optimizers: they rewrite .grad before the step) over an optimizer
GROKFAST: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "grokfast[ema]+adamw": ({"filter": "ema", "alpha": 0.9, "lamb": 2.0}, "adamw", {"lr": 1e-2}),
    "grokfast[ma]+sgd": ({"filter": "ma", "window": 4, "lamb": 1.0}, "sgd", {"lr": 0.05, "momentum": 0.9}),
}


def check_grokfast(rank: int, settings: dict[str, Any], registry_name: str, hparams: dict[str, Any]):
    """Grokfast before the optimizer, under FSDP2 and DDP against one process (20 steps)."""

    def run(model: nn.Module) -> dict[str, torch.Tensor]:
        optimizer = build(model, registry_name, hparams)
        memopt.Grokfast(model.parameters(), **settings).attach(optimizer)
        train(model, optimizer, range(STEPS))
        return full_params(model)

    expected = run(make_model(0)) if rank == 0 else None
    fsdp, ddp = run(shard(make_model(0))), run(DistributedDataParallel(make_model(0)))
    if rank == 0:
        return {"fsdp_exact": exactly_equal(fsdp, expected), "ddp_exact": exactly_equal(ddp, expected)}
    return None


def error_messages(rank: int, world: int) -> dict[str, str]:
    """The errors for what memopt cannot take: a tensor-parallel Shard(1) parameter, and a state dict of
    plain tensors loaded into an optimizer of sharded parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    messages = {}
    mesh = init_device_mesh("cpu", (world,))
    column = nn.Parameter(distribute_tensor(torch.randn(4, 6), mesh, [Shard(1)]))
    try:
        memopt.AdamWSN([column])
    except ValueError as exc:
        messages["shard1"] = str(exc)
    model = shard(make_model(0))
    optimizer = build(model, "adamw_sn", {"lr": 1e-2})
    train(model, optimizer, range(1))
    plain = optimizer.state_dict()
    plain["state"] = {k: {n: full(v) for n, v in entry.items()} for k, entry in plain["state"].items()}
    try:
        build(model, "adamw_sn", {"lr": 1e-2}).load_state_dict(plain)
    except ValueError as exc:
        messages["plain_state"] = str(exc)
    for name in REFUSED:
        messages[name] = "no error"
        try:
            build(shard(make_model(0)), name, {})
        except ValueError as exc:
            messages[name] = str(exc)
    return messages


def collectives(rank: int, names: list[str]) -> dict[str, list[int]]:
    """The collectives (count, bytes this rank put in) of one ordinary FSDP2 step of each optimizer."""
    from memopt.harness.bench.collectives import CollectiveBytes

    out = {}
    for name in names:
        model = shard(make_model(0))
        optimizer = build(model, *CONFIGS[name])
        train(model, optimizer, range(1))
        model(batch(1)).backward()
        with CollectiveBytes() as comm:
            optimizer.step()
        out[name] = [comm.total_count, comm.total_bytes]
    return out


def maxima_layouts(rank: int) -> dict[str, Any]:
    """For each 8-bit state of ``adamw8bit`` (its default, the C kernel where it applies) on the sharded
    test model: how its block maxima are laid out (the placements of the ``*_absmax`` DTensor), the local
    shapes that the kernel updated in 2 steps, and whether the 64 x 64 matrix after 20 steps equals one
    process's bit for bit (its loss term involves it alone, and the kernel updates it whole in one process
    and by halves on 2 ranks)."""
    from memopt.kernels import adamw8bit as kernel

    config = ("adamw8bit", {"lr": 1e-2})
    reference = make_model(0)
    train(reference, build(reference, *config), range(STEPS))
    model = shard(make_model(0))
    optimizer = build(model, *config)
    stepped: list[list[int]] = []
    original = kernel.step

    def recording_step(steps, group):
        stepped.extend(list(ps.param.shape) for ps in steps)
        return original(steps, group)

    kernel.step = recording_step
    try:
        train(model, optimizer, range(2))
    finally:
        kernel.step = original
    train(model, optimizer, range(2, STEPS))
    square_exact = torch.equal(full(model.square.detach()), reference.square.detach())
    names = {id(p): n for n, p in model.named_parameters()}
    layouts = {  # an 8-bit state is one entry (codes, maxima, format); named as its checkpoint key
        f"{names[id(p)]}:{key}_absmax": type(value.maxima.placements[0]).__name__
        for p, entry in optimizer.state.items()
        for key, value in entry.items()
        if isinstance(value, QuantizedState)
    }
    return {"layouts": layouts, "kernel_shapes": stepped, "square_exact": square_exact}


def run_all(rank: int, world: int, names: list[str]) -> dict[str, Any]:
    """Every configuration in ``names`` (in one process group, so start-up is paid once), then the Grokfast
    runs and the error messages."""
    results: dict[str, Any] = {"errors": error_messages(rank, world)}
    results["collectives"] = collectives(rank, ["adamw", "adamw_sn", "adamw8bit", "adagrad_norm[global]"])
    results["maxima_layouts"] = maxima_layouts(rank)
    for name, (settings, registry_name, hparams) in GROKFAST.items():
        results[name] = check_grokfast(rank, settings, registry_name, hparams)
    with tempfile.TemporaryDirectory() as tmp:
        # one folder for all ranks: rank 0 creates it and shares its name
        holder = [tmp if rank == 0 else None]
        dist.broadcast_object_list(holder, src=0)
        base = Path(holder[0])
        for index, name in enumerate(names):
            registry_name, hparams = CONFIGS[name]
            folder = base / str(index)
            try:
                results[name] = check(rank, world, registry_name, hparams, folder)
            except Exception as exc:
                raise RuntimeError(f"configuration {name!r} failed on rank {rank}") from exc
        dist.barrier()
    return results


def _table(results: dict[str, Any]) -> str:
    """The measured differences as the Markdown table of docs/distributed.md."""

    def cell(value: float) -> str:
        return "0 (bit-identical)" if value == 0 else f"{value:.1e}"

    lines = [
        "| configuration | FSDP2 vs 1 process | saved on 2, continued on 1 | saved on 1, continued on 2 "
        "| loaded state bit-identical |",
        "|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        r = results[name]
        loaded = "yes" if r["to_one_state"][0] and r["to_two_state"][0] else "NO"
        cells = [f"`{name}`", cell(r["fsdp"][0]), cell(r["to_one"][0]), cell(r["to_two"][0]), loaded]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # PYTHONPATH=src python -m tests.distributed.sharded_runs
    from tests.distributed.spawn import run_spawned

    print(_table(run_spawned(run_all, 2, list(CONFIGS))))
