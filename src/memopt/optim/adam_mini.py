"""Adam-mini: one second moment per block of parameters instead of one per coordinate.

Zhang, Chen, Li, Ding, Chen, Kingma, Sun & Luo, "Adam-mini: Use Fewer Learning Rates To Gain More",
arXiv 2406.16793. Each parameter is cut into blocks by the model's structure (``mini_block``, a group option
that :func:`adam_mini_blocks` sets per parameter, as the paper's Hessian-block partition):

* ``"head"``: the query and key matrices, one block per attention head (``head_rows`` rows each);
* ``"row"``: the other 2-D weights (value, output, MLP projections and the output head: one block per output
  neuron) and embeddings (one per token row);
* ``"tensor"``: norms and any other parameter: one block for the whole tensor;
* ``"coordinate"``: biases: plain Adam (one second moment per coordinate).

With ``B`` a block of ``|B|`` coordinates and ``t`` the step::

    v_B <- beta2 v_B + (1 - beta2) mean_{i in B} g_i^2                    (one number per block)
    W   <- W (1 - lr wd)
    m   <- beta1 m + (1 - beta1) g                                        (per coordinate, as Adam)
    W   <- W - lr / (1 - beta1^t) * m / (sqrt(v_B / (1 - beta2^t)) + eps)

Norms and biases take no weight decay, as in the authors' package. The arithmetic follows that package
(``adam-mini`` 1.1.1, ``Adam_mini``) op for op; ``tests/optim/test_adam_mini.py`` compares them.

On FSDP2 shards: row blocks are whole on every rank (the ``v`` of each row is row-sharded with it); head and
tensor blocks sum the squares of each rank's rows and all-reduce the block sums (their ``v`` is replicated).

State: ``exp_avg`` (elementwise, any ``state_storage``), ``exp_avg_sq`` (``reduced``: float32 for 16-bit
parameters; shape ``(m / head_rows, 1)``, ``(m, 1)``, ``()`` or the parameter's) and ``step``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from memopt.estimators.base import ParamStep
from memopt.optim.base import STORAGE_OPTIONS, MemoptBase, param_name
from memopt.state.template import StateSlot, like_param, raw
from memopt.validation import check_betas, check_choice, check_non_negative, check_positive_int

Params = Iterable[torch.Tensor] | Iterable[dict]
MINI_BLOCKS = ("head", "row", "tensor", "coordinate")


def adam_mini_blocks(model: nn.Module) -> Callable[[str, torch.Tensor], dict[str, Any]]:
    """The group settings of each parameter of ``model`` under Adam-mini's partition (module docstring).

    Query and key matrices are the ``q_proj`` / ``k_proj`` ``nn.Linear`` children of a module with a
    ``head_dim`` attribute (``transformers``' attention modules: LLaMA, Mistral, Qwen, ...); without one they
    are cut by rows like the other matrices. Norm parameters: those of modules whose class name contains
    ``Norm``; biases: parameters named ``bias``.
    """
    settings: dict[int, dict[str, Any]] = {}
    for module in model.modules():
        head_rows = getattr(module, "head_dim", None)
        if isinstance(head_rows, int):
            for attr in ("q_proj", "k_proj"):
                child = getattr(module, attr, None)
                if isinstance(child, nn.Linear):
                    settings[id(child.weight)] = {"mini_block": "head", "head_rows": head_rows}
        for attr, param in module.named_parameters(recurse=False):
            if id(param) in settings:
                continue
            if attr == "bias":
                settings[id(param)] = {"mini_block": "coordinate", "weight_decay": 0.0}
            elif "Norm" in type(module).__name__:
                settings[id(param)] = {"mini_block": "tensor", "weight_decay": 0.0}
            elif isinstance(module, (nn.Linear, nn.Embedding)) and param.ndim == 2:
                settings[id(param)] = {"mini_block": "row"}
    return lambda _name, param: settings.get(id(param), {"mini_block": "tensor"})


def _second_moment_shape(param: torch.Tensor, group: dict) -> tuple[int, ...]:
    block = group["mini_block"]
    if block == "head":
        return (param.shape[0] // group["head_rows"], 1)
    if block == "row":
        return (param.shape[0], 1)
    if block == "tensor":
        return ()
    return tuple(param.shape)


class AdamMini(MemoptBase):
    """Adam-mini (module docstring). ``memopt.build_optimizer(model, "adam_mini")`` sets each parameter's
    block kind from the model (:func:`adam_mini_blocks`); a plain ``AdamMini(params)`` treats every
    parameter as one block (``mini_block="tensor"``) unless its group says otherwise.

    Args:
        lr, betas, eps, weight_decay: Adam's (decoupled decay).
        mini_block: ``"head"``, ``"row"``, ``"tensor"`` or ``"coordinate"``; head_rows: rows per head block.
        state_storage, quant_block_size, stochastic_rounding: how the first moment is held.
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        mini_block: str = "tensor",
        head_rows: int = 1,
        state_storage: str = STORAGE_OPTIONS["state_storage"],
        quant_block_size: int = STORAGE_OPTIONS["quant_block_size"],
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, mini_block=mini_block, head_rows=head_rows,
            state_storage=state_storage, quant_block_size=quant_block_size, stochastic_rounding=stochastic_rounding,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _complete_group(self, group: dict) -> None:
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])

    def _validate_group(self, group: dict, group_index: int) -> None:
        super()._validate_group(group, group_index)
        for key in ("lr", "eps", "weight_decay"):
            check_non_negative(key, group[key])
        check_betas(group["betas"])
        check_choice("mini_block", group["mini_block"], MINI_BLOCKS)
        check_positive_int("head_rows", group["head_rows"])
        if group["mini_block"] not in ("head", "row"):
            return
        for position, param in enumerate(group["params"]):
            name = param_name(group, group_index, position, param)
            if param.ndim != 2:
                raise ValueError(
                    f"{name} has shape {tuple(param.shape)}, but mini_block={group['mini_block']!r} cuts matrices "
                    "(2-D) by rows. Put it in a group with mini_block='tensor' or 'coordinate'."
                )
            if group["mini_block"] == "head" and param.shape[0] % group["head_rows"]:
                raise ValueError(
                    f"{name} has {param.shape[0]} rows, not a multiple of head_rows={group['head_rows']}; give "
                    "head_rows the attention head size (hidden_size / num_attention_heads)."
                )

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        shape = _second_moment_shape(param, group)
        block = group["mini_block"]
        second = (
            like_param(param, non_negative=True)
            if block == "coordinate"
            else StateSlot("reduced", shape, sharded=block == "row")
        )
        return {"step": raw(0), "exp_avg": like_param(param), "exp_avg_sq": second}

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One step from the gradients in ``.grad`` (``closure``, if given, recomputes them first)."""
        return self._step_each(closure, _adam_mini_update)


def _block_mean_square(ps: ParamStep, group: dict) -> torch.Tensor:
    """``mean g^2`` over each block of ``ps``'s parameter (a collective for head and tensor blocks on shards)."""
    grad, spec, block = ps.grad, ps.shard, group["mini_block"]
    if block == "row":
        return torch.mean(grad * grad, dim=1, keepdim=True)
    if block == "tensor":
        return spec.all_reduce(torch.sum(grad * grad)) / spec.numel
    rows = group["head_rows"]
    if not spec.sharded:
        return torch.mean((grad * grad).view(-1, rows * grad.shape[1]), dim=1, keepdim=True)
    # head blocks cut by a shard boundary: each rank adds its rows' squares into the block sums
    sums = grad.new_zeros((spec.shape[0] // rows, 1))
    heads = torch.arange(spec.start, spec.stop, device=grad.device) // rows
    sums.index_add_(0, heads, (grad * grad).sum(dim=1, keepdim=True))
    return spec.all_reduce(sums) / (rows * spec.shape[1])


def _adam_mini_update(ps: ParamStep, group: dict) -> None:
    """One Adam-mini step of ``ps``, in the operation order of the authors' package."""
    lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    grad, block = ps.grad, group["mini_block"]
    exp_avg = ps.load("exp_avg", grad.dtype)
    exp_avg_sq = ps.load("exp_avg_sq", grad.dtype)
    if block == "coordinate":
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    else:
        exp_avg_sq.mul_(beta2).add_(_block_mean_square(ps, group), alpha=1 - beta2)
    if wd > 0.0:
        ps.work.mul_(1 - lr * wd)
    exp_avg.lerp_(grad, 1 - beta1)
    ps.store("exp_avg", exp_avg)
    ps.store("exp_avg_sq", exp_avg_sq)
    bias_correction1 = 1 - beta1**ps.step
    h = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2**ps.step)).add_(eps)
    if block == "coordinate":
        ps.work.addcdiv_(exp_avg, h, value=-lr / bias_correction1)
        return
    factor = (1 / bias_correction1) / h
    if block == "head" and ps.shard.sharded:  # this rank's rows of the replicated per-head factors
        heads = torch.arange(ps.shard.start, ps.shard.stop, device=grad.device) // group["head_rows"]
        update = exp_avg * factor.index_select(0, heads)
    elif block == "head":
        update = (exp_avg.view(h.shape[0], -1) * factor).view(exp_avg.shape)
    else:
        update = exp_avg * factor
    update.mul_(lr)
    ps.work.add_(-update)
