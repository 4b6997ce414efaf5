"""TrAct: train the first layer's pre-activations instead of its weights, for any optimizer.

Petersen, Borgelt & Ermon, "TrAct: Making First-layer Pre-Activations Trainable", NeurIPS 2024, arXiv
2410.23970. The weight gradient of a first layer is proportional to its input (pixel values), so contrast
and brightness scale its updates. TrAct takes the gradient step on the pre-activations ``z = x W^T`` and
picks the weights closest to that proposal, regularised; for a batch of ``b`` input rows ``x`` (b x n) the
layer's weight gradient becomes::

    grad_W = grad_z^T x (x^T x / b + lambda I_n)^-1                       (direct form, an n x n system)
           = grad_z^T (x x^T / b + lambda I_b)^-1 x                        (Woodbury / push-through form)

The second is used when ``b < n`` (a b x b system instead of n x n); both are the same matrix. The input
and bias gradients are the ordinary ones, and only the weight gradient changes, so any optimizer (SGD,
AdamW, memopt's) steps on it unchanged. As ``lambda -> inf``, ``lambda grad_W`` tends to the plain gradient
``grad_z^T x``; for inputs with ``x^T x / b = I`` it is the plain gradient divided by ``1 + lambda``.
The paper's default is ``lambda = 0.1``.

* ``nn.Linear``: inputs with more than two dims are read as rows of ``in_features`` (a ViT's tokens: b =
  batch x tokens).
* ``nn.Conv2d``: the input is unfolded into patches (``F.unfold``), one row per output position, so ``b =
  batch x output positions`` and ``n = in_channels x kernel height x kernel width``. Stride, padding
  (numbers, ``"valid"`` and ``"same"``), dilation and every ``padding_mode`` are honoured; grouped
  convolutions are refused.

:func:`tract` returns a **replacement module that shares the layer's Parameter objects** (a
:class:`TrActLinear` or :class:`TrActConv2d`, subclasses of ``nn.Linear`` / ``nn.Conv2d``): put it where the
layer was (``model.conv1 = memopt.tract(model.conv1)``). Its ``state_dict`` has the layer's keys and
nothing else, so checkpoints move freely between the plain and the TrAct model, and an optimizer built
before the swap still holds the right parameters. The systems are solved by Cholesky factorisation (the
matrices are symmetric positive definite for ``lambda > 0``), in float32 at least (a 16-bit input under
autocast is solved in float32 and the gradient returned in the weight's dtype). Works under
``torch.compile`` (the autograd Function is traced, backward included).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["FORMS", "TrActConv2d", "TrActLinear", "tract", "tract_weight_grad"]

#: how the weight gradient is computed: the rule above (``"auto"``), or one form always
FORMS = ("auto", "direct", "woodbury")


def _check_lambda(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Invalid lambda_: {value!r}. TrAct's regulariser lambda_ must be a finite number > 0 "
            "(the paper's default is 0.1; larger values move the gradient towards the plain one, scaled by 1/lambda_)."
        )
    return float(value)


def _check_form(form: Any) -> str:
    if form not in FORMS:
        raise ValueError(f"Invalid form: {form!r}. Choose one of {list(FORMS)}.")
    return form


def _spd_solve_right(rhs: torch.Tensor, gram: torch.Tensor, lambda_: float) -> torch.Tensor:
    """``rhs (gram + lambda_ I)^-1`` for a symmetric positive semi-definite ``gram`` (Cholesky)."""
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    factor = torch.linalg.cholesky(gram + lambda_ * eye)
    # (A^-1 rhs^T)^T = rhs A^-1 since A is symmetric
    return torch.cholesky_solve(rhs.transpose(0, 1), factor).transpose(0, 1)


def tract_weight_grad(rows: torch.Tensor, grad_rows: torch.Tensor, lambda_: float, form: str = "auto") -> torch.Tensor:
    """TrAct's weight gradient ``grad_rows^T rows (rows^T rows / b + lambda_ I)^-1`` (out x n).

    Args:
        rows: the layer's input rows ``x`` (b x n): samples (x tokens), or unfolded patches.
        grad_rows: the gradient of the loss for the pre-activations, one row per input row (b x out).
        lambda_: the regulariser (> 0).
        form: ``"direct"`` (an n x n system), ``"woodbury"`` (a b x b system) or ``"auto"`` (the smaller).
    """
    b, n = rows.shape
    compute = torch.promote_types(rows.dtype, torch.float32)
    x, g = rows.to(compute), grad_rows.to(compute)
    with torch.autocast(rows.device.type, enabled=False):  # a backward() under autocast would run these in 16 bits
        if form == "woodbury" or (form == "auto" and b < n):
            # push-through identity: x (x^T x / b + lambda I)^-1 = (x x^T / b + lambda I)^-1 x
            solved = _spd_solve_right(x.transpose(0, 1), x @ x.transpose(0, 1) / b, lambda_)
            return g.transpose(0, 1) @ solved.transpose(0, 1)
        return _spd_solve_right(g.transpose(0, 1) @ x, x.transpose(0, 1) @ x / b, lambda_)


class _TrActLinearFunction(torch.autograd.Function):
    """``x W^T + bias`` with TrAct's weight gradient; ``x`` is 2-D (rows of in_features)."""

    @staticmethod
    def forward(ctx, x, weight, bias, lambda_, form):
        ctx.save_for_backward(x, weight)
        ctx.lambda_, ctx.form, ctx.has_bias = lambda_, form, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_out @ weight if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = tract_weight_grad(x, grad_out, ctx.lambda_, ctx.form).to(weight.dtype)
        grad_b = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None


class _TrActConv2dFunction(torch.autograd.Function):
    """``conv2d(x, W, bias)`` (groups 1, explicit symmetric padding) with TrAct's weight gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, lambda_, form):
        ctx.save_for_backward(x, weight)
        ctx.conv = {"stride": stride, "padding": padding, "dilation": dilation}
        ctx.lambda_, ctx.form, ctx.has_bias = lambda_, form, bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, grad_out, **ctx.conv)
        if ctx.needs_input_grad[1]:
            patches = F.unfold(x, weight.shape[2:], **ctx.conv)  # (B, n, L), L = output positions
            rows = patches.transpose(1, 2).reshape(-1, patches.shape[1])  # (B*L, n), rows in (b, h, w) order
            grad_rows = grad_out.flatten(2).transpose(1, 2).reshape(-1, grad_out.shape[1])  # (B*L, C_out)
            grad_w = tract_weight_grad(rows, grad_rows, ctx.lambda_, ctx.form).reshape(weight.shape).to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None, None, None, None


class TrActLinear(nn.Linear):
    """An ``nn.Linear`` whose weight gradient is TrAct's (see the module docstring); build it with :func:`tract`."""

    lambda_: float
    form: str

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rows = input.reshape(-1, self.in_features)
        out = _TrActLinearFunction.apply(rows, self.weight, self.bias, self.lambda_, self.form)
        return out.reshape(*input.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_={self.lambda_}, form={self.form!r}"


class TrActConv2d(nn.Conv2d):
    """An ``nn.Conv2d`` (groups 1) whose weight gradient is TrAct's; build it with :func:`tract`."""

    lambda_: float
    form: str

    def _explicit_padding(self, input: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The input padded as the layer pads it, and the symmetric padding left for the convolution."""
        if isinstance(self.padding, str):
            if self.padding == "valid":
                return input, (0, 0)
            # "same" (stride 1): total padding dilation * (k - 1) per dim, the extra one on the right/bottom
            pads: list[int] = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            return F.pad(input, pads, mode=mode), (0, 0)
        if self.padding_mode != "zeros":
            return F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode), (0, 0)
        return input, tuple(self.padding)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x, padding = self._explicit_padding(input)
        return _TrActConv2dFunction.apply(
            x, self.weight, self.bias, tuple(self.stride), padding, tuple(self.dilation), self.lambda_, self.form
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_={self.lambda_}, form={self.form!r}"


def tract(layer: nn.Module, lambda_: float = 0.1, *, form: str = "auto") -> nn.Module:
    """The first layer ``layer`` with TrAct's weight gradient: a replacement sharing its parameters.

    Args:
        layer: an ``nn.Linear`` or an ``nn.Conv2d`` (groups 1): a ViT's patch embedding, a ResNet's stem.
        lambda_: the regulariser (> 0; the paper's default 0.1).
        form: ``"auto"`` (the Woodbury form when rows < input dim), ``"direct"`` or ``"woodbury"``.

    Returns:
        A :class:`TrActLinear` or :class:`TrActConv2d` holding the same ``weight`` and ``bias`` Parameter
        objects (and the same ``state_dict`` keys); ``layer`` itself is left unchanged. Assign the result
        where the layer was.

    Raises:
        TypeError: ``layer`` is not an ``nn.Linear`` or ``nn.Conv2d``.
        ValueError: ``lambda_`` is not a finite number > 0, ``form`` is unknown, the layer is already a TrAct
            layer, its weight is parametrized (apply ``tract`` first), or the convolution is grouped.
    """
    lambda_ = _check_lambda(lambda_)
    form = _check_form(form)
    if isinstance(layer, (TrActLinear, TrActConv2d)):
        raise ValueError(
            f"{type(layer).__name__} is a TrAct layer already; to change its regulariser set its lambda_ attribute."
        )
    if parametrize.is_parametrized(layer, "weight"):
        raise ValueError(
            f"tract: the {type(layer).__name__}'s weight is parametrized (e.g. weight_norm); apply tract first, "
            "then the parametrization to the layer tract returns."
        )
    if type(layer) is nn.Linear:
        new: nn.Module = TrActLinear(layer.in_features, layer.out_features, bias=False, device="meta")
    elif type(layer) is nn.Conv2d:
        if layer.groups != 1:
            raise ValueError(
                f"tract: a grouped Conv2d (groups={layer.groups}) has one input matrix per group; TrAct is for a "
                "model's first, ungrouped layer. Apply it to a Conv2d with groups=1."
            )
        new = TrActConv2d(
            layer.in_channels,
            layer.out_channels,
            layer.kernel_size,
            stride=layer.stride,
            padding=layer.padding,
            dilation=layer.dilation,
            bias=False,
            padding_mode=layer.padding_mode,
            device="meta",
        )
    else:
        raise TypeError(
            f"tract: got a {type(layer).__name__}; TrAct applies to a model's first nn.Linear or nn.Conv2d (a ViT's "
            "patch embedding, a ResNet's first convolution). Pass that layer, e.g. model.conv1."
        )
    new.weight = layer.weight
    new.bias = layer.bias  # a Parameter, or None (registered as such)
    new.train(layer.training)
    new.lambda_, new.form = lambda_, form
    return new
