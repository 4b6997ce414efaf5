"""META-STORM and STORM+: fully adaptive recursive-momentum (STORM) variance reduction.

Both keep the STORM estimator (Cutkosky & Orabona 2019)::

    d_1 = g(x_1; xi_1),    d_t = g(x_t; xi_t) + (1 - a_t) (d_{t-1} - g(x_{t-1}; xi_t)),

whose correction needs the gradient of the *same* minibatch ``xi_t`` at the current and at the previous
iterate, and step ``x_{t+1} = x_t - lr * d_t / b_t``. They differ in how the momentum weight ``a`` and the
step denominator ``b`` adapt (``S`` are running sums; ``^`` marks the bias-corrected EMA of the heuristic
variant below)::

    STORM+ (Levy, Kavis & Cevher, NeurIPS 2021, arXiv 2111.01040):
        S_a += ||g(x_t; xi_t)||^2;          a_{t+1} = (1 + S_a / a0)^(-2/3)
        S_b += ||d_t||^2 / a_{t+1};         b_t = (b0 + S_b)^(1/3)
    META-STORM-SG (variant="sg": bounded stochastic gradients):
        S_a += ||g(x_t; xi_t)||^2;          a_{t+1} = (1 + S_a / a0)^(-2/3)
        S_b += ||d_t||^2;                   b_t = (b0 + S_b)^p / a_{t+1}^q,   q = (1 - p) / 2
    META-STORM (variant="general": bounded variance only; a_1 = 1):
        S_a += ||g(x_{t-1}; xi_{t-1}) - g(x_{t-1}; xi_t)||^2;   a_t = (1 + S_a / a0)^(-2/3)   (t >= 2)
        S_b += ||d_t||^2;                   b_t = (b0 + S_b)^p / a_t^q

In the general variant the difference of two independent minibatch gradients at the same point is an
unbiased estimate of twice the gradient variance; it comes free, since ``g(x_{t-1}; xi_t)`` is the
correction gradient STORM computes anyway (one extra buffer keeps ``g(x_{t-1}; xi_{t-1})``).

**Heuristic variant for deep learning** (``per_coordinate=True``, ``ema=True``): the norms become squares
per coordinate, so ``a`` and ``b`` are tensors shaped like the parameter, and the sums become exponential
moving averages ``S <- beta S + (1 - beta) v`` (``betas[0]`` for ``S_a``, ``betas[1]`` for ``S_b``), with
Adam-style bias correction ``S / (1 - beta^n)`` when ``bias_correction=True``. With ``p = 1/2`` the step
is then Adam-like: ``lr * d / (sqrt(b0 + S_b^) a^(-1/4))``.

**What was verified, and where.** Liu, Nguyen, Nguyen, Ene & Nguyen, "META-STORM: Generalized
Fully-Adaptive Variance Reduced SGD for Unbounded Functions", arXiv 2209.14853 (ICLR 2023 submission
1KtU2ya2zh5). The stored copy of the paper we could read (the ICLR 2023 text dump, via the search tool's
``pages`` corpus) stops after the abstract and introduction, so the algorithm boxes themselves could not
be read. The rules above were instead checked line by line against the authors' public experiment code,
``timmytonga/fastr-public`` (co-author T. H. Nguyen; the method was called FASTR there):
``optimizers/fastr_d.py`` (general variant: "difference of norm version", ``a = (1 + (1/a_0) sum
||grad f(x_i, xi_i) - grad f(x_i, xi_{i+1})||^2)^(-2/3)``, ``a_1 = 1``), ``optimizers/fastr_n.py`` (SG
variant: "norm version"), ``optimizers/stormplus.py`` and ``optimizers/stormplus_reproduce.py`` (STORM+),
``optimizers/storm_base_class.py`` (``q = (1 - p)/2``, i.e. ``p + 2q = 1``; the per-coordinate, EMA and
bias-correction options), ``utils/args_utils.py`` (defaults ``b_0 = 1e-8``, ``a_0 = 1``, ``beta = 0.99``,
``p = 1/2``; "valid range [0.1771, 0.5] for fastrd and [0.25, 0.5] for fastrn", i.e. ``p`` from
``(3 - sqrt 7)/2`` for the general variant) and ``scripts/wandb_sweeps/meta_storm_sweep.yaml`` (``p``
swept from 0.1772). We follow that code's conventions where a paper transcription might differ:
``a0`` divides the sum directly (a paper's ``a_0^2`` is our ``a0``), ``b0`` is added as is (a paper's
``b_0^(1/p)`` is our ``b0``), and ``b_t`` uses the momentum weight available before the step (``a_t`` in
the general variant: the next minibatch, which an ``a_{t+1}`` would need, is not known at step ``t``).
Scalar accumulators are kept per parameter tensor, as in that code; for a model with one parameter tensor
this is exactly the norm of the algorithm.

**The authors' conventions** (``conventions="authors"``; fastr-public commit ``f5dcb0f``). Their code
departs from the recursion above in three ways, which this option reproduces (``"paper"``, the default,
keeps the recursion as written):

1. *The first step is taken twice.* Their loop (``train/train.py`` lines 107-128) calls ``step()``, which
   moves ``x <- x - lr d / b`` with the stored ``d`` and ``b`` (``optimizers/storm_base_class.py`` line
   97), and only then ``update_momentum_and_lr()`` with the gradient at the new point, which skips the
   first call (lines 105 and 116-118); the second minibatch's ``step()`` therefore repeats the first move.
   Here the first step moves twice (``x_prev`` is the point after the first move) and each later step
   applies its new estimate at once, so our parameters after step ``t`` are theirs after step ``t + 1``'s
   move, and from step 2 on the loss the closure returns is the one their loop logs (the loss at the new
   point).
2. *EMA accumulators start at the first value with full weight*: ``sum_d`` and ``sum_g`` are set to the
   first ``||d||^2`` / ``||g||^2`` (``optimizers/fastr_n.py`` lines 32-34, ``optimizers/stormplus.py``
   lines 21-24, ``optimizers/fastr_d.py`` line 29; ``sum_diff_g`` starts at 0, line 22), not to
   ``(1 - beta)`` times it.
3. *Bias correction counts calls to* ``step()``: ``1 / (1 - beta^k)`` with ``k = step_count``
   (``storm_base_class.py`` lines 98 and 150-152), one count for every accumulator (``sum_diff_g``, one
   term behind, included), and it multiplies the accumulator even without EMA (``fastr_d.py`` lines 49
   and 55, ``stormplus.py`` line 42). Here: ``S / (1 - beta^t)`` at step ``t`` for every accumulator.

Tested against a literal transcription of their loop, ``tests/accelerated/authors_storm.py``.

**Closure API.** ``step(closure)`` is mandatory (``needs_closure = True``). The closure zeroes the
gradients, recomputes the loss on the current minibatch at the current parameters, calls ``backward`` and
returns the loss. Each step calls it at the current parameters, then (from the second step on) once more
with the previous iterate written into the parameters, replaying the random generators so that dropout
masks agree; afterwards ``.grad`` again holds the gradient at the current parameters. Cost: two
forward/backward passes per step; memory: ``d`` and ``x_prev`` (+ ``g_prev`` for the general variant, +
two accumulators per coordinate for the heuristic variant) per parameter, and two transient copies during
the step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch

from memopt.accelerated.base import DEFAULT_BLOCK, DEFAULT_STORAGE, AcceleratedBase, storage_options
from memopt.accelerated.closure import RngSnapshot, evaluate, gradients, missing_closure_error, parameters_at
from memopt.estimators.base import ParamStep
from memopt.optim.template import StateSlot, raw
from memopt.state import sharding, storage
from memopt.validation import check_betas, check_choice, check_non_negative, check_positive

Params = Iterable[torch.Tensor] | Iterable[dict]

#: the smallest p of the general variant, (3 - sqrt 7) / 2
P_MIN_GENERAL = (3 - math.sqrt(7)) / 2
P_MIN_SG = 0.25
#: ``"paper"``: the recursion as written (default); ``"authors"``: the conventions of timmytonga/fastr-public
CONVENTIONS = ("paper", "authors")


def _square(v: torch.Tensor, per_coordinate: bool, spec: sharding.ShardSpec) -> torch.Tensor:
    """``v^2`` per coordinate, or ``||v||^2`` of the whole tensor (``v`` being this rank's piece)."""
    return v * v if per_coordinate else spec.all_reduce((v * v).sum())


class _RecursiveMomentum(AcceleratedBase):
    """The STORM recursion with a closure-based two-point gradient; subclasses choose ``a`` and ``b``."""

    needs_closure: ClassVar[bool] = True
    #: "meta_storm" or "storm_plus"
    rule: ClassVar[str]

    def _complete_group(self, group: dict) -> None:
        group.setdefault("conventions", "paper")  # checkpoints saved before the option existed

    def _check_hyperparameters(self, group: dict) -> None:
        check_non_negative("lr", group["lr"])
        check_positive("a0", group["a0"])
        check_positive("b0", group["b0"])
        check_non_negative("weight_decay", group["weight_decay"])
        check_choice("conventions", group["conventions"], CONVENTIONS)
        if isinstance(group["betas"], list):
            group["betas"] = tuple(group["betas"])
        check_betas(group["betas"], allow_beta2_one=False)

    def _uses_g_prev(self, group: dict) -> bool:
        return self.rule == "meta_storm" and group["variant"] == "general"

    def state_template(self, param: torch.Tensor, group: dict) -> dict[str, StateSlot]:
        """``d``, ``x_prev`` (and ``g_prev``) like the parameter; the accumulators ``a``, ``sum_a``, ``sum_b``
        per coordinate (elementwise states) or per tensor (reduced 0-d tensors)."""
        shape = tuple(param.shape)
        kind, acc = ("elementwise", shape) if group["per_coordinate"] else ("reduced", ())
        template = {"step": raw(0), "d": StateSlot("elementwise", shape), "x_prev": StateSlot("elementwise", shape)}
        for key, init in (("a", 1.0), ("sum_a", 0.0), ("sum_b", 0.0)):
            template[key] = StateSlot(kind, acc, init=init, non_negative=True, sharded=group["per_coordinate"])
        if self._uses_g_prev(group):
            template["g_prev"] = StateSlot("elementwise", shape)
        return template

    def _previous_iterate(self, param: torch.Tensor) -> torch.Tensor:
        """``x_prev`` as a tensor laid out like ``param`` (decoded when it is stored in another format)."""
        stored = self.state[param]["x_prev"]
        # a tensor entry is read in its own dtype (the stored tensor itself); an 8-bit one is decoded
        dtype = stored.dtype if torch.is_tensor(stored) else storage.compute_dtype(param)
        value = storage.load(sharding.local_state(param, self.state[param]), "x_prev", dtype)
        if value is sharding.local(stored):
            return stored
        return sharding.spec_of(param).wrap(value.to(storage.compute_dtype(param)), param.shape, sharded=True)

    # -------------------------------------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step; ``closure`` is required (see the module docstring for what it must do)."""
        if closure is None:
            raise missing_closure_error(
                type(self).__name__, "evaluates the gradient of the same minibatch at the current and previous iterate"
            )
        snapshot = RngSnapshot()
        loss = evaluate(closure)
        active = [
            (group, self._params_with_grad(group, group_index)) for group_index, group in enumerate(self.param_groups)
        ]
        params = [p for _, group_params in active for _, p, _ in group_params]
        raw = gradients(params)
        current = dict(zip(params, raw))
        # the correction gradients g(x_{t-1}; xi_t), for parameters that have a previous iterate
        with_prev = [p for p in params if self.state[p].get("step", 0) > 0]
        correction: dict[torch.Tensor, torch.Tensor] = {}
        if with_prev:
            previous = [self._previous_iterate(p) for p in with_prev]
            with parameters_at(with_prev, previous), snapshot.replay():
                evaluate(closure)
                correction = dict(zip(with_prev, gradients(with_prev)))
        for group, group_params in active:
            for index, param, name in group_params:
                state, fresh = self._advance(param, group)
                ps = self._param_step(param, state, group, index, name, grad=current[param])
                self._update(ps, fresh, correction.get(param), group)
        for param, grad in zip(params, raw):  # .grad is the gradient at the current parameters again
            if param.grad is not None:
                param.grad.copy_(grad)
        return loss

    @staticmethod
    def _accumulate(ps: ParamStep, key: str, value: torch.Tensor, beta: float, count: int, group: dict):
        """Add ``value`` to the sum (or EMA) ``key``; return the (bias-corrected) accumulator.

        With ``conventions="authors"`` the first step sets the accumulator to ``value`` (full weight, no
        correction), and the bias correction ``1 / (1 - beta^t)`` counts the step ``t`` (``ps.step``) for
        every accumulator and applies to plain sums too."""
        acc = ps.load(key, value.dtype)
        if group["conventions"] == "authors":
            t = ps.step
            if t == 1:
                ps.store(key, value)
                return value
            if group["ema"]:
                acc.mul_(beta).add_(value, alpha=1 - beta)
            else:
                acc.add_(value)
            ps.store(key, acc)
            return acc / (1 - beta**t) if group["bias_correction"] else acc
        if group["ema"]:
            acc.mul_(beta).add_(value, alpha=1 - beta)
            ps.store(key, acc)
            if group["bias_correction"]:
                return acc / (1 - beta**count)
            return acc
        acc.add_(value)
        ps.store(key, acc)
        return acc

    def _update(self, ps: ParamStep, fresh: bool, corr: torch.Tensor | None, group: dict) -> None:
        """One STORM step of ``ps`` (its state created now when ``fresh``); ``corr`` is the correction
        gradient ``g(x_{t-1}; xi_t)`` from the second closure call (None at the first step)."""
        spec, work, cdtype = ps.shard, ps.work, ps.work.dtype
        g = ps.grad
        wd = group["weight_decay"]
        if wd != 0:
            g = g.add(work, alpha=wd)
        per_coordinate = group["per_coordinate"]
        beta_a, beta_b = group["betas"]
        uses_g_prev = self._uses_g_prev(group)
        if fresh:
            ps.store("d", g)
            ps.store("x_prev", work)
            if uses_g_prev:
                ps.store("g_prev", g)
        t = ps.step
        d, a = ps.load("d", cdtype), ps.load("a", cdtype)
        if t > 1:
            if corr is None:  # pragma: no cover - x_prev exists whenever t > 1
                raise RuntimeError("internal error: no correction gradient for a parameter with a previous iterate")
            c = sharding.local(corr).to(cdtype)
            if wd != 0:
                c = c.add(ps.load("x_prev", cdtype), alpha=wd)
            if uses_g_prev:
                diff = ps.load("g_prev", cdtype) - c
                sum_a = self._accumulate(ps, "sum_a", _square(diff, per_coordinate, spec), beta_a, t - 1, group)
                a.copy_((1 + sum_a / group["a0"]).pow(-2.0 / 3.0))
                ps.store("g_prev", g)
            # d_t = g_t + (1 - a_t)(d_{t-1} - c_t)
            d.sub_(c).mul_(1 - a).add_(g)
        if not uses_g_prev:  # a_{t+1} from the gradients up to g_t
            sum_a = self._accumulate(ps, "sum_a", _square(g, per_coordinate, spec), beta_a, t, group)
            a.copy_((1 + sum_a / group["a0"]).pow(-2.0 / 3.0))
        ps.store("a", a)
        ps.store("d", d)
        if self.rule == "storm_plus":
            sum_b = self._accumulate(ps, "sum_b", _square(d, per_coordinate, spec) / a, beta_b, t, group)
            b = (group["b0"] + sum_b).pow(1.0 / 3.0)
        else:
            p = group["p"]
            sum_b = self._accumulate(ps, "sum_b", _square(d, per_coordinate, spec), beta_b, t, group)
            b = (group["b0"] + sum_b).pow(p) / a.pow((1 - p) / 2)
        if t == 1 and group["conventions"] == "authors":  # their first step is taken twice
            work.add_(d / b, alpha=-group["lr"])
        ps.store("x_prev", work)
        work.add_(d / b, alpha=-group["lr"])
        ps.write_back()


class MetaSTORM(_RecursiveMomentum):
    """META-STORM (Liu et al., arXiv 2209.14853): STORM with ``a`` and ``b`` adapted, ``p + 2q = 1``.

    Args:
        params: parameters or parameter groups.
        lr: the step scale ``eta``.
        p: the exponent of ``b``; ``[(3 - sqrt 7)/2, 1/2]`` for ``variant="general"``, ``[1/4, 1/2]`` for
            ``"sg"`` (the authors' ranges). ``q = (1 - p)/2``.
        a0: scale of the sum in ``a`` (> 0): large ``a0`` keeps ``a`` near 1 (little momentum) for longer.
        b0: initial value of the denominator's sum (> 0, keeps ``b > 0``).
        variant: ``"general"`` (variance estimated from two minibatches at one point) or ``"sg"`` (uses
            the stochastic gradient norms; assumes bounded stochastic gradients).
        per_coordinate: per-coordinate ``a`` and ``b`` (the paper's deep-learning heuristic).
        ema: exponential moving averages instead of sums (the paper's deep-learning heuristic).
        betas: EMA factors for the ``a`` and ``b`` accumulators.
        bias_correction: divide the EMAs by ``1 - beta^n`` (Adam-style).
        weight_decay: L2 penalty added to both gradients of a step (coupled, so the STORM correction still
            telescopes on the penalised objective).
        conventions: ``"paper"`` (the recursion as written) or ``"authors"`` (the first step taken twice,
            full-weight first accumulator values, bias correction counted by steps for every accumulator:
            the authors' fastr-public code; see the module docstring).
        state_storage: how the states shaped like the parameter (``d``, ``x_prev``, ``g_prev`` and the
            per-coordinate accumulators) are held: ``"default"`` (the compute dtype), ``"float32"``,
            ``"bfloat16"``, ``"8bit"`` or ``"4bit"``.
        quant_block_size: elements per 8-bit block.
        stochastic_rounding: round bfloat16 states and parameters stochastically.

    ``step(closure)`` requires a closure; see the module docstring for the update and what was verified.
    """

    rule = "meta_storm"

    def __init__(
        self,
        params: Params,
        lr: float = 0.1,
        p: float = 0.5,
        a0: float = 1.0,
        b0: float = 1e-8,
        *,
        variant: str = "general",
        per_coordinate: bool = False,
        ema: bool = False,
        betas: tuple[float, float] = (0.99, 0.99),
        bias_correction: bool = False,
        weight_decay: float = 0.0,
        conventions: str = "paper",
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            p=p,
            a0=a0,
            b0=b0,
            variant=variant,
            per_coordinate=per_coordinate,
            ema=ema,
            betas=betas,
            bias_correction=bias_correction,
            weight_decay=weight_decay,
            conventions=conventions,
            **storage_options(state_storage, quant_block_size, stochastic_rounding),
        )
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: dict) -> None:
        check_choice("variant", group["variant"], ("general", "sg"))
        super()._check_hyperparameters(group)
        p = group["p"]
        low = P_MIN_GENERAL if group["variant"] == "general" else P_MIN_SG
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not (low - 1e-12 <= p <= 0.5):
            interval = "[(3 - sqrt 7)/2 ~ 0.1771, 1/2]" if group["variant"] == "general" else "[1/4, 1/2]"
            raise ValueError(
                f"Invalid p: {p!r}. For variant={group['variant']!r}, p must lie in {interval} (META-STORM's "
                "admissible range); p = 1/2 is the default and the Adam-like choice."
            )


class STORMPlus(_RecursiveMomentum):
    """STORM+ (Levy, Kavis & Cevher, arXiv 2111.01040): the baseline META-STORM generalises.

    ``a_{t+1} = (1 + sum ||g_i||^2 / a0)^(-2/3)``, ``b_t = (b0 + sum ||d_i||^2 / a_{i+1})^(1/3)``,
    ``x_{t+1} = x_t - lr d_t / b_t``; the options ``per_coordinate``, ``ema``, ``betas``,
    ``bias_correction``, ``weight_decay``, ``conventions`` and the storage options are those of
    :class:`MetaSTORM`.
    ``step(closure)`` requires a closure.
    """

    rule = "storm_plus"

    def __init__(
        self,
        params: Params,
        lr: float = 0.1,
        a0: float = 1.0,
        b0: float = 1.0,
        *,
        per_coordinate: bool = False,
        ema: bool = False,
        betas: tuple[float, float] = (0.99, 0.99),
        bias_correction: bool = False,
        weight_decay: float = 0.0,
        conventions: str = "paper",
        state_storage: str = DEFAULT_STORAGE,
        quant_block_size: int = DEFAULT_BLOCK,
        stochastic_rounding: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            a0=a0,
            b0=b0,
            per_coordinate=per_coordinate,
            ema=ema,
            betas=betas,
            bias_correction=bias_correction,
            weight_decay=weight_decay,
            conventions=conventions,
            **storage_options(state_storage, quant_block_size, stochastic_rounding),
        )
        super().__init__(params, defaults)
