"""``memopt fit``: from a memory budget to training configurations that fit it, ranked, with their commands.

The search, for a model, a global batch (sequences per optimizer step) and a device:

1. **Enumerate** the configurations: the product of the axes (:class:`Axes`): the optimizer and its state
   format (:data:`OPTIMIZERS`), the parameter precision (fp32, bf16 autocast, bf16 with stochastic
   rounding, bf16 with an fp32 master copy), activation checkpointing, the microbatch size (every divisor of
   the global batch; gradient accumulation keeps the global batch), and sparsity only when levels are
   allowed, and where the optimizer state lives (``offload``: "none", "cpu" memory or "disk";
   :mod:`memopt.offload`). An axis the user fixed (``--optimizer``, ``--param-dtype``, ``--offload``, ...)
   has that one value. An offloaded configuration needs an engine optimizer
   (:func:`memopt.offload.engine_optimizers`) and parameters in fp32 (or bf16 autocast) or bf16 with a
   master (``memopt train --offload`` refuses bf16 and bf16-sr), and no sparsity (the offload accounting
   does not see pruned storage); other combinations are not enumerated. On a CPU device the host memory is
   the device memory: offload to "cpu" saves nothing and is not searched (a :class:`Fitter` on ``cpu``
   refuses it), and the budget is the process's memory of tensors, which the disk tier lowers to its window.
2. **Screen** every configuration with a decomposition of the planner's figures (:meth:`Fitter.screened`):
   parameters, master weights, gradients and the optimizer state (its template: ``template_bytes``) come
   from the meta device, nothing allocated; one planner estimate of one sample per precision, checkpointing
   and sparsity class (plain SGD, no state) gives a sample's largest activations and temporaries, which
   scale with the microbatch. The screened peak is the larger of the resident tensors (parameters, masters,
   gradients, state) and the resident tensors less the gradients (one microbatch) or with them (several)
   plus a microbatch's activations and temporaries. An offloaded configuration's resident tensors leave out
   the state and masters (:mod:`.offload`: they are on the host, or on disk less the window that a CPU
   device holds). A configuration whose screened peak exceeds the usable
   budget (the budget less the safety margin) is dropped; when a confirmation (step 4) finds a larger peak
   than the screen, the difference (or, for a peak inside the optimizer step, the peak itself as a floor)
   is added to the screen of every configuration with the same optimizer, precision and sparsity.
3. **Rank** the rest by expected quality (the measured loss penalties of :mod:`.penalties`, in steps of
   :data:`~memopt.harness.memory.penalties.RESOLUTION`; configurations with an unmeasured choice after
   all measured ones), then by modelled tokens/s (:mod:`.speed`), then by peak.
4. **Confirm** down the ranking with the full planner (:func:`memopt.harness.memory.profile.estimate`,
   fake tensors, two optimizer steps) until ``confirm`` configurations fit; a configuration whose planner
   peak exceeds the usable budget is dropped. A run of ``m >= 2`` microbatches of ``u`` samples is
   estimated as 2 microbatches of ``u``: every microbatch after the first holds the same tensors (the
   accumulated gradients and one microbatch's activations), so the peak is the same and the estimate costs
   two forward passes instead of ``m``. An offloaded configuration is estimated without offload and its
   device peak, host RAM and disk bytes come from :func:`memopt.harness.memory.offload.plan_offload`.

The fixed order (quality, then speed) makes the choice monotone in the budget: the first configuration
that fits a tighter budget also fits a looser one, so a looser budget never chooses a configuration whose
planner peak is smaller. When nothing fits, :func:`fit` reports the configuration with the smallest peak and
what would make one fit.

Budgets are bytes: ``24GiB`` is 24 x 2^30 bytes, ``24GB`` is 24 x 10^9 bytes (SI), and the same for
``K``, ``M``, ``T``; a bare number is bytes (:func:`parse_budget`).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from memopt.harness.memory import penalties
from memopt.harness.memory.offload import WINDOW, parameter_state_bytes, plan_offload
from memopt.harness.memory.penalties import Penalty
from memopt.harness.memory.profile import build_optimizer, estimate, prepare_model
from memopt.harness.memory.speed import SpeedModel
from memopt.harness.memory.techniques import Techniques
from memopt.harness.memory.workloads import Workload
from memopt.harness.train import optimizers as opt_lib
from memopt.harness.train.choices import closest
from memopt.harness.train.errors import ConfigError
from memopt.offload import engine_optimizers
from memopt.state.accounting import template_bytes

#: ``memopt fit``'s optimizer choices: name -> (registry name, hyperparameters that make the state format)
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "adamw": ("adamw", {}),
    "adamw8bit": ("adamw8bit", {}),
    "adamw4bit": ("adamw", {"state_storage": "4bit"}),
    "adafactor": ("adafactor", {}),
    "adamw_sn": ("adamw_sn", {}),
    "adamw_snsm": ("adamw_snsm", {}),
    "adamw_snsm8bit": ("adamw_snsm8bit", {}),
}
#: the precisions searched (``Techniques.precision``); bf16 rounded to nearest is left out (it stalls small
#: updates), and autocast is on fp32 parameters
FIT_PRECISIONS = ("fp32", "bf16-autocast", "bf16-sr", "bf16-master")
#: where the optimizer state lives (``memopt train --offload``)
OFFLOAD_TIERS = ("none", "cpu", "disk")
#: the precisions ``memopt train --offload`` accepts (it keeps an fp32 master of bf16 parameters itself)
OFFLOAD_PRECISIONS = ("fp32", "bf16-autocast", "bf16-master")
#: the default safety margin: the planner's peaks were within 3% of measured ones on CPU (docs/memory.md),
#: and it does not see allocator fragmentation or library workspaces
DEFAULT_MARGIN = 0.10
#: the largest model whose planner estimate was checked against a measurement (docs/memory.md: ``small``)
VALIDATED_PARAMS = 1_328_256

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_budget(text: str) -> int:
    """Bytes of a budget such as ``24GiB`` (binary: 2^30), ``24GB`` (SI: 10^9), ``512MiB`` or ``1e9``.

    Raises:
        ConfigError: not a positive size with a known unit.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"--budget {text!r}: give a size with a unit: B, KiB, MiB, GiB, TiB (powers of 1024) or kB, MB, GB, "
            "TB (powers of 1000), e.g. --budget 24GiB."
        )
    value = float(match.group(1)) * _UNITS[unit]
    if value < 1:
        raise ConfigError(f"--budget {text!r}: must be positive, e.g. --budget 24GiB.")
    return int(value)


def format_bytes(n: float) -> str:
    """``n`` bytes in GiB (or MiB below 1 GiB)."""
    return f"{n / 2**30:,.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:,.1f} MiB"


@dataclass(frozen=True)
class Candidate:
    """One training configuration.

    Attributes:
        choice: a key of :data:`OPTIMIZERS`.
        precision: a :data:`FIT_PRECISIONS` value.
        checkpointing: activation checkpointing.
        microbatch: samples per microbatch (``memopt train --batch-size``).
        microbatches: microbatches per optimizer step (``--grad-accum``).
        sparsity: fraction of the linear weights pruned.
        offload: where the optimizer state (and masters) live: an :data:`OFFLOAD_TIERS` value.
    """

    choice: str
    precision: str
    checkpointing: bool
    microbatch: int
    microbatches: int
    sparsity: float = 0.0
    offload: str = "none"

    def techniques(self, microbatches: int | None = None) -> Techniques:
        return Techniques(
            microbatches=self.microbatches if microbatches is None else microbatches,
            checkpointing=self.checkpointing,
            precision=self.precision,
            sparsity=self.sparsity,
        )

    @property
    def optimizer(self) -> str:
        """The registry name."""
        return OPTIMIZERS[self.choice][0]

    def hparams(self) -> dict[str, Any]:
        """The state format's hyperparameters and those the penalty was measured with."""
        return {**OPTIMIZERS[self.choice][1], **penalties.optimizer_penalty(self.choice).hparams}

    def penalty(self) -> Penalty:
        """The expected loss penalty (:mod:`.penalties`)."""
        return penalties.combined([
            penalties.optimizer_penalty(self.choice),
            penalties.precision_penalty(self.precision),
            penalties.sparsity_penalty(self.sparsity),
        ])  # fmt: skip

    def label(self) -> str:
        parts = [self.choice, self.precision, f"{self.microbatch}x{self.microbatches}"]
        if self.checkpointing:
            parts.append("ckpt")
        if self.sparsity:
            parts.append(f"sparsity {self.sparsity:g}")
        if self.offload != "none":
            parts.append(f"offload {self.offload}")
        return " ".join(parts)

    def train_flags(self) -> list[str]:
        """The ``memopt train`` flags of this configuration."""
        flags = ["--batch-size", str(self.microbatch), "--grad-accum", str(self.microbatches),
                 "--optimizer", self.optimizer]  # fmt: skip
        hparams = self.hparams()
        if "lr" in hparams:
            flags += ["--lr", f"{hparams.pop('lr'):g}"]
        for key, value in hparams.items():
            flags += ["--opt", f"{key}={value}"]
        if self.precision == "bf16-autocast":
            flags += ["--dtype", "bf16"]
        else:
            flags += ["--dtype", "fp32"]
            if self.precision != "fp32":
                flags += ["--param-dtype", self.precision]
        if self.checkpointing:
            flags.append("--activation-checkpointing")
        if self.sparsity:
            flags += ["--sparsity", f"{self.sparsity:g}"]
        if self.offload != "none":
            flags += ["--offload", self.offload]
        return flags

    def offloadable(self) -> bool:
        """Whether ``memopt train --offload`` takes this configuration (see the module docstring)."""
        return (self.optimizer in engine_optimizers() and self.precision in OFFLOAD_PRECISIONS
                and not self.sparsity)  # fmt: skip


@dataclass(frozen=True)
class Axes:
    """The values searched on each axis; the product is the configurations (:meth:`candidates`)."""

    choices: tuple[str, ...] = tuple(OPTIMIZERS)
    precisions: tuple[str, ...] = FIT_PRECISIONS
    checkpointing: tuple[bool, ...] = (False, True)
    microbatches: tuple[int, ...] | None = None  # None: every divisor of the global batch
    sparsities: tuple[float, ...] = (0.0,)
    offload: tuple[str, ...] = ("none",)

    def validate(self) -> None:
        for choice in self.choices:
            if choice not in OPTIMIZERS:
                raise ConfigError(
                    f"--optimizers {choice!r}: not a choice of memopt fit{closest(choice, OPTIMIZERS)}; "
                    f"choose from {', '.join(OPTIMIZERS)}."
                )
        for precision in self.precisions:
            if precision not in FIT_PRECISIONS:
                raise ConfigError(f"--param-dtype {precision!r}: memopt fit searches {', '.join(FIT_PRECISIONS)}.")
        for sparsity in self.sparsities:
            Techniques(sparsity=sparsity).validate()
        for tier in self.offload:
            if tier not in OFFLOAD_TIERS:
                raise ConfigError(f"--offload {tier!r}: choose from {', '.join(OFFLOAD_TIERS)}.")

    def candidates(self, batch: int) -> list[Candidate]:
        """Every configuration for a global batch of ``batch`` samples."""
        splits = self.microbatches or tuple(d for d in range(1, batch + 1) if batch % d == 0)
        found = []
        for choice, precision, ckpt, count, sparsity, offload in itertools.product(
            self.choices, self.precisions, self.checkpointing, splits, self.sparsities, self.offload
        ):
            if batch % count:
                raise ConfigError(f"--grad-accum {count}: does not divide the global batch of {batch} samples.")
            candidate = Candidate(choice, precision, ckpt, batch // count, count, sparsity, offload)
            if offload == "none" or candidate.offloadable():
                found.append(candidate)
        if not found:
            raise ConfigError(
                f"--offload {'/'.join(self.offload)}: no configuration searched can be offloaded; offload takes the "
                f"engine optimizers ({', '.join(c for c in OPTIMIZERS if OPTIMIZERS[c][0] in engine_optimizers())}), "
                f"--param-dtype {' or '.join(p for p in OFFLOAD_PRECISIONS if p != 'bf16-autocast')} and no sparsity."
            )
        return found


@dataclass
class Scored:
    """A configuration with its screened peak, planner peak (once confirmed), penalty and speed."""

    candidate: Candidate
    screened: int
    penalty: Penalty
    tokens_per_s: float
    peak: int | None = None
    resident: int = 0
    in_step: bool = False  # the planner's peak falls in the optimizer step (no activations alive)
    host_ram: int = 0  # offloaded: host memory beyond the device's (0 on a CPU device: it is the device)
    disk: int = 0  # offloaded to disk: bytes of files

    def key(self) -> tuple:
        """The ranking: measured before unmeasured, then the penalty in steps of the resolution, then speed."""
        nats = self.penalty.nats
        tier = round(nats / penalties.RESOLUTION) if nats is not None else 0
        return (nats is None, tier, -self.tokens_per_s, self.screened, self.candidate.label())


@dataclass
class FitResult:
    """What :func:`fit` found.

    Attributes:
        budget, usable: the budget and the budget less the margin (bytes).
        fits: confirmed configurations, best first (planner peak within ``usable``).
        screened: how many configurations were screened, and how many passed the screen.
        estimates: full planner estimates made.
        closest: when nothing fits, the configuration with the smallest peak (planner-confirmed).
        advice: what would make a configuration fit (when nothing does).
        notes: where the estimates are outside the planner's validated range, and other caveats.
        seconds: wall time of the search.
    """

    budget: int
    usable: int
    margin: float
    fits: list[Scored]
    screened: tuple[int, int]
    estimates: int
    speed: SpeedModel
    closest: Scored | None = None
    advice: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Class:
    """The screening estimate of one (precision, checkpointing, sparsity) class: one sample, no state."""

    per_sample: int  # the most activations and the most temporaries of one sample


@dataclass
class _Model:
    """What a (precision, sparsity) model holds before any step: from the meta device, nothing allocated."""

    fixed: int  # parameters and buffers
    master: int  # fp32 master weights
    gradients: int
    states: dict[str, int] = field(default_factory=dict)  # optimizer choice -> state bytes


class Fitter:
    """The search of :func:`fit` for one model, global batch, axis set and device, with its estimates cached
    so that several budgets are searched at the cost of one (see the module docstring)."""

    def __init__(self, workload: Workload, batch: int, axes: Axes | None = None, device: str = "cpu",
                 speed: SpeedModel | None = None) -> None:  # fmt: skip
        if batch < 1:
            raise ConfigError(f"--batch-size {batch}: must be a positive integer.")
        self.axes = axes or Axes()
        self.axes.validate()
        self.workload, self.batch, self.device = workload, batch, device
        if device.startswith("cpu") and "cpu" in self.axes.offload:
            raise ConfigError(
                "--offload cpu with --device cpu: the host memory is the device's, so offloading to it saves "
                "nothing; use --offload disk (or none)."
            )
        self.hidden = workload.info.get("hidden_size")
        self.num_params = count_parameters(workload)
        self.speed = speed or SpeedModel.nominal(workload, self.num_params, device)
        self.estimates = 0
        self._models: dict[tuple, _Model] = {}
        self._classes: dict[tuple, _Class] = {}
        self._peaks: dict[Candidate, tuple[int, bool, int, int]] = {}  # peak, in the step, host RAM, disk
        self._sizes: dict[tuple, list[int]] = {}
        self._corrections: dict[tuple, tuple[int, int]] = {}  # family -> (floor, extra)
        self.scored = [self._score(c) for c in self.axes.candidates(batch)]
        self.scored.sort(key=Scored.key)

    # ------------------------------------------------------------------ the pieces, each computed once
    def _model(self, candidate: Candidate) -> _Model:
        key = (candidate.precision, candidate.sparsity)
        if key not in self._models:
            techniques = candidate.techniques(1)
            torch.manual_seed(0)
            with torch.device("meta"):
                model, master = prepare_model(self.workload, replace(techniques, sparsity=0.0))
                if candidate.sparsity:  # the kept entries only (pruning needs values; compact storage)
                    from memopt.harness.memory.sparsity import kept_count, prunable_weights

                    for module in prunable_weights(model):
                        kept = kept_count(module.weight.numel(), candidate.sparsity)
                        module.weight = torch.nn.Parameter(torch.empty(kept, dtype=module.weight.dtype))
            params = sum(p.numel() * p.element_size() for p in model.parameters())
            buffers = sum(b.numel() * b.element_size() for b in model.buffers())
            masters = sum(p.numel() * p.element_size() for p in master.parameters()) if master is not None else 0
            self._models[key] = _Model(params + buffers, masters, params)
            self._models[key].meta = (model, master)  # type: ignore[attr-defined]
        entry = self._models[key]
        if candidate.choice not in entry.states:
            model, master = entry.meta  # type: ignore[attr-defined]
            hparams = opt_lib.resolve_hparams(candidate.optimizer, candidate.hparams(), None, self.hidden)
            with torch.device("meta"):
                optimizer = build_optimizer(model, master, candidate.optimizer, hparams, candidate.techniques(1))
            entry.states[candidate.choice] = template_bytes(getattr(optimizer, "inner", optimizer))
        return entry

    def _class(self, candidate: Candidate) -> _Class:
        # the forward and backward of bf16-sr and bf16-master are those of bf16 parameters; plain SGD keeps
        # no state, so one step of one sample shows the activations and temporaries alone
        precision = "bf16" if candidate.precision in ("bf16-sr", "bf16-master") else candidate.precision
        key = (precision, candidate.checkpointing, candidate.sparsity)
        if key not in self._classes:
            techniques = Techniques(checkpointing=key[1], precision=precision, sparsity=key[2])
            plan = estimate(self.workload, "sgd", {"momentum": 0.0}, batch_size=1, techniques=techniques, steps=1,
                            device=self.device)  # fmt: skip
            self.estimates += 1
            # with one sample the peak is often at the end of backward (all gradients), so the sample's
            # share is taken from the largest activations and temporaries instead of the peak's composition
            self._classes[key] = _Class(plan["activations"] + plan["temporaries"])
        return self._classes[key]

    def _state_sizes(self, candidate: Candidate) -> list[int]:
        """Each parameter's offloaded bytes (state and the master the offloaded optimizer keeps)."""
        key = (candidate.choice, candidate.precision)
        if key not in self._sizes:
            hparams = opt_lib.resolve_hparams(candidate.optimizer, candidate.hparams(), None, self.hidden)
            self._sizes[key] = parameter_state_bytes(
                self.workload, candidate.techniques(1), candidate.optimizer, hparams, self.device
            )
        return self._sizes[key]

    def _score(self, candidate: Candidate) -> Scored:
        model = self._model(candidate)
        update = model.fixed + model.master + model.states[candidate.choice] + model.gradients
        resident, host, disk, moved = update, 0, 0, 0
        if candidate.offload != "none":  # the state and masters leave the device (module docstring of .offload)
            sizes = self._state_sizes(candidate)
            moved = sum(sizes)
            window = min(sum(sorted(sizes, reverse=True)[:WINDOW]), moved)
            on_host = self.device.startswith("cpu")
            resident = model.fixed + model.gradients + (window if on_host else 0)
            host = 0 if on_host else moved if candidate.offload == "cpu" else window
            disk = moved if candidate.offload == "disk" else 0
        tokens = self.speed.tokens_per_second(
            candidate.choice, candidate.precision, candidate.checkpointing, candidate.microbatch,
            candidate.microbatches, update, candidate.offload, moved, model.gradients,
        )  # fmt: skip
        return Scored(candidate, resident, candidate.penalty(), tokens, resident=resident, host_ram=host, disk=disk)

    def rescore(self) -> None:
        """Recompute every configuration's tokens/s (after the speed model changed) and re-rank."""
        self.scored = sorted((self._score(s.candidate) for s in self.scored), key=Scored.key)

    def screened(self, item: Scored) -> int:
        """``item``'s screened peak (see the module docstring), with what confirmations taught."""
        candidate, model = item.candidate, self._model(item.candidate)
        cls = self._class(candidate)
        # in the forward pass of one microbatch no gradient exists yet; from the second on, all do
        held = model.gradients if candidate.microbatches > 1 else 0
        during = item.resident - model.gradients + held + candidate.microbatch * cls.per_sample
        floor, extra = self._corrections.get(_family(candidate), (0, 0))
        item.screened = max(during + extra, item.resident, floor)
        return item.screened

    def confirm(self, item: Scored) -> int:
        """The planner's peak of ``item`` (fake tensors, two steps; see the module docstring)."""
        candidate = item.candidate
        if candidate not in self._peaks:
            count = min(candidate.microbatches, 2)
            hparams = opt_lib.resolve_hparams(candidate.optimizer, candidate.hparams(), None, self.hidden)
            plan = estimate(
                self.workload, candidate.optimizer, hparams, batch_size=candidate.microbatch * count,
                techniques=candidate.techniques(count), device=self.device,
            )  # fmt: skip
            self.estimates += 1
            peak, in_step, host, disk = plan.peak, plan.at_peak["activations"] == 0, 0, 0
            if candidate.offload != "none":
                offloaded = plan_offload(plan, candidate.offload, self._state_sizes(candidate))
                peak, host, disk = offloaded.device_peak, offloaded.host_ram, offloaded.disk
            self._peaks[candidate] = (peak, in_step, host, disk)
            if peak > item.screened:  # learn what the screen missed for this optimizer and precision
                family = _family(candidate)
                floor, extra = self._corrections.get(family, (0, 0))
                if in_step:  # the peak is in the optimizer step: a floor
                    floor = max(floor, peak)
                else:
                    extra = max(extra, peak - item.screened)
                self._corrections[family] = (floor, extra)
        item.peak, item.in_step, item.host_ram, item.disk = self._peaks[candidate]
        return item.peak

    # ------------------------------------------------------------------ the search
    def fit(self, budget: int, margin: float = DEFAULT_MARGIN, confirm_count: int = 1, top: int = 3,
            max_estimates: int = 6) -> FitResult:  # fmt: skip
        """Search ``budget`` bytes: confirm down the ranking until ``confirm_count`` fit, list up to ``top``."""
        began = time.perf_counter()
        if budget < 1:
            raise ConfigError(f"--budget {budget}: must be positive, e.g. --budget 24GiB.")
        if not 0.0 <= margin < 0.9:
            raise ConfigError(f"--margin {margin}: the share of the budget kept free must be in [0, 0.9), e.g. 0.1.")
        usable = int(budget * (1 - margin))
        start = self.estimates
        result = FitResult(budget, usable, margin, [], (len(self.scored), 0), 0, self.speed)
        passing = 0
        confirms = 0
        for item in self.scored:
            item.peak = None
            if item.resident > usable or self.screened(item) > usable:
                continue
            passing += 1
            if confirms < confirm_count and self.estimates - start < max_estimates:
                if self.confirm(item) > usable or self.screened(item) > usable:
                    continue
                confirms += 1
                result.fits.append(item)
            elif len(result.fits) < top and confirms >= confirm_count:
                result.fits.append(item)  # screened only
        result.screened = (len(self.scored), passing)
        if confirms == 0:
            result.fits = []
            closest = min(self.scored, key=lambda s: (s.resident, s.key()))
            closest = min((s for s in self.scored if s.resident == closest.resident),
                          key=lambda s: (self.screened(s), s.key()))  # fmt: skip
            self.confirm(closest)
            result.closest = closest
            if closest.peak <= usable:  # the screen passed over it (the estimate cap): it fits
                result.fits, result.closest = [closest], None
            else:
                result.advice = _advice(closest, result, self.workload, self.axes)
        result.estimates = self.estimates - start
        result.notes = _notes(self.workload, self.device, self.num_params)
        result.seconds = time.perf_counter() - began
        return result


def _family(candidate: Candidate) -> tuple:
    return (candidate.choice, candidate.precision, candidate.sparsity, candidate.offload)


def fit(
    workload: Workload,
    batch: int,
    budget: int,
    *,
    axes: Axes | None = None,
    device: str = "cpu",
    margin: float = DEFAULT_MARGIN,
    confirm_count: int = 1,
    top: int = 3,
    max_estimates: int = 6,
    speed: SpeedModel | None = None,
) -> FitResult:
    """Search the configurations of ``workload`` at a global batch of ``batch`` samples that fit ``budget``
    bytes on ``device`` (see the module docstring).

    Args:
        margin: the share of the budget kept free (0 to 0.9).
        confirm_count: configurations to confirm with the full planner; up to ``top`` are listed, those past
            ``confirm_count`` with their screened peak.
        max_estimates: at most this many full planner estimates in the confirmation.
        speed: the speed model (default: the nominal one for ``device``).

    Raises:
        ConfigError: a bad budget, margin, batch or axis.
    """
    return Fitter(workload, batch, axes, device, speed).fit(budget, margin, confirm_count, top, max_estimates)


def count_parameters(workload: Workload) -> int:
    """The model's parameters, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in workload.build().parameters())


def _advice(closest: Scored, result: FitResult, workload: Workload, axes: Axes) -> list[str]:
    """What would make a configuration fit, with the numbers behind it."""
    peak = closest.peak or closest.screened
    advice = [
        f"a budget of at least {format_bytes(peak / (1 - result.margin))} "
        f"(the smallest peak found, {format_bytes(peak)}, plus the {result.margin:.0%} margin)"
    ]
    if closest.candidate.offload != "none":
        offload = f"the state is offloaded to {closest.candidate.offload} already: a smaller model would"
    elif len(axes.offload) > 1 or not closest.candidate.offloadable():
        offload = ("a smaller model would (offloading needs an engine optimizer and --param-dtype fp32 or "
                   "bf16-master)")  # fmt: skip
    else:
        offload = "offloading the optimizer state (--offload cpu or disk) or a smaller model would"
    if closest.resident > result.usable:
        advice.append(
            f"no split of the batch can fit: parameters, gradients and optimizer state alone take "
            f"{format_bytes(closest.resident)}; {offload}"
        )
    elif closest.in_step:
        advice.append(
            f"no split of the batch can fit: the optimizer step itself peaks at {format_bytes(peak)} (parameters, "
            f"gradients, state and the step's temporaries); {offload}"
        )
    elif closest.candidate.microbatch > 1:
        advice.append(
            f"a smaller microbatch: {closest.candidate.microbatch} samples is the smallest this search allowed "
            "(drop --grad-accum, or give a global batch with more divisors)"
        )
    else:
        seq = workload.info.get("seq_len")
        room = result.usable - closest.resident
        per = peak - closest.resident
        what = f"shorter sequences (about --seq-len {max(1, int(seq * room / per))})" if seq and room > 0 else (
            "smaller samples")  # fmt: skip
        advice.append(
            f"{what}: one sample per microbatch already, and its activations and temporaries take {format_bytes(per)} "
            f"over the {format_bytes(closest.resident)} of parameters, gradients and state; a smaller global batch "
            "would not lower the peak"
        )
    if axes.sparsities == (0.0,):
        advice.append("allowing sparsity (--sparsity-levels 0.5,0.9) prunes weights, gradients and state")
    return advice


def _notes(workload: Workload, device: str, num_params: int) -> list[str]:
    notes = []
    if device.startswith("cuda"):
        notes.append(
            "CUDA: the planner's peak has not been checked against the CUDA allocator (no GPU measurement yet); it "
            "does not see the CUDA context, cuBLAS workspaces or fragmentation, which the margin must cover"
        )
    if num_params > VALIDATED_PARAMS:
        notes.append(
            f"outside the validated range: the planner's estimates were checked against measured peaks for models "
            f"up to {VALIDATED_PARAMS:,} parameters (docs/memory.md); this one has about {num_params:,}: parameters, "
            "gradients and optimizer state are exact counts, activations and temporaries are not checked at this size"
        )
    if not workload.info.get("seq_len"):
        notes.append("speed: not a language model; the FLOPs per sample are 2 x parameters (a rough guess)")
    return notes


def format_result(result: FitResult, command: list[str], top: int) -> str:
    """The report: the fitting configurations (or the closest), with peaks, penalties, speed, commands."""
    import shlex

    lines = [
        f"budget {format_bytes(result.budget)}, usable {format_bytes(result.usable)} after a {result.margin:.0%} "
        f"safety margin; {result.screened[0]} configurations screened, {result.screened[1]} pass the screen, "
        f"{result.estimates} planner estimates ({result.seconds:.1f} s)"
    ]
    speed_kind = "calibrated" if result.speed.calibrated else "modelled, uncalibrated (use --calibrate)"
    shown = result.fits[:top]
    if shown:
        lines.append(f"{'#':>2}  {'configuration':<42}{'peak':>13}{'':<7}  {'loss penalty (nats)':<22}{'tokens/s':>10}")
        for rank, item in enumerate(shown, 1):
            lines.append(_row(rank, item))
            if item.candidate.offload != "none":
                lines.append(f"    {_offload_line(item)}")
            lines.append("    " + shlex.join([*command, *item.candidate.train_flags()]))
        lines.append(
            f"tokens/s: {speed_kind}; peak: the planner's estimate (fake tensors, two steps), or where marked "
            "'screen' the screen's (not confirmed: --confirm N)"
        )
        lines.append("loss penalty: against AdamW in fp32, from the studies cited in memopt.harness.memory.penalties")
        best = penalties.optimizer_penalty(shown[0].candidate.choice)
        if best.measured:
            lines.append(f"  {shown[0].candidate.choice}: {best.note} ({best.study})")
    else:
        closest = result.closest
        lines.append("nothing fits.")
        if closest is not None:
            lines.append(f"closest: {closest.candidate.label()}, peak {format_bytes(closest.peak or 0)} (planner)")
            if closest.candidate.offload != "none":
                lines.append(f"    {_offload_line(closest)}")
            lines.append("    " + shlex.join([*command, *closest.candidate.train_flags()]))
        lines.append("what would make one fit:")
        lines.extend(f"  - {text}" for text in result.advice)
    lines.extend(f"note: {text}" for text in result.notes)
    return "\n".join(lines)


def _offload_line(item: Scored) -> str:
    return (f"offload to {item.candidate.offload}: host RAM {format_bytes(item.host_ram)}, disk "
            f"{format_bytes(item.disk)} (device peak above)")  # fmt: skip


def _row(rank: int, item: Scored) -> str:
    nats = item.penalty.nats
    penalty = "unmeasured" if nats is None else f"{nats:+.3f}"
    return (
        f"{rank:>2}  {item.candidate.label():<42}{format_bytes(item.peak or item.screened):>13}"
        f"{'' if item.peak else ' screen':<7}  {penalty:<22}"
        f"{item.tokens_per_s:>10,.0f}"
    )


def choices_from(items: Iterable[str]) -> tuple[str, ...]:
    """Split comma-separated choices (``--optimizers a,b``)."""
    return tuple(part.strip() for text in items for part in text.split(",") if part.strip())
