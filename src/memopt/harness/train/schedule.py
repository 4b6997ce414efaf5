"""Learning-rate schedules composed from ``torch.optim.lr_scheduler``.

* ``cosine``: linear warm-up (``LinearLR``) then cosine decay to ``min_lr_ratio * lr`` over the remaining
  steps (``CosineAnnealingLR``), as in the GaLore / Subset-Norm pretraining scripts.
* ``sgdr``: linear warm-up then cosine with warm restarts every ``restart_steps`` steps, the period
  multiplied by ``restart_mult`` after each restart (``CosineAnnealingWarmRestarts``).
* ``constant``: linear warm-up then a constant rate (``ConstantLR`` with factor 1).

The scheduler is stepped once per optimizer step; its ``state_dict`` round-trips through checkpoints.
Past the schedule's end (``--schedule-steps`` shorter than the run, or a finished run extended with
``--resume --max-steps``), :class:`HoldAfterEnd` keeps a cosine at its floor and a constant rate constant,
while SGDR goes on restarting.

When the optimizer's groups have different learning rates (the harness's ``plain_lr``), each group decays
to ``min_lr_ratio`` times its *own* rate: the decay is then a ``LambdaLR`` factor applied to every group's
peak, with the same cosine / SGDR shape (torch's cosine schedulers take one absolute floor for all groups,
which would send a group whose rate is below the floor upwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    LambdaLR,
    LinearLR,
    LRScheduler,
    SequentialLR,
)

from memopt.harness.train.choices import check_choice
from memopt.harness.train.errors import ConfigError

SCHEDULES = ("cosine", "sgdr", "constant")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule settings.

    Attributes:
        kind: one of :data:`SCHEDULES`.
        warmup_steps: steps of linear warm-up from ``lr / warmup_steps`` to ``lr``.
        min_lr_ratio: the cosine's floor as a fraction of the peak ``lr`` (``eta_min = min_lr_ratio * lr``).
        restart_steps: SGDR's first period in steps (None: a tenth of the steps after warm-up).
        restart_mult: SGDR's period multiplier after each restart.
    """

    kind: str = "cosine"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    restart_steps: int | None = None
    restart_mult: int = 1


def build_scheduler(optimizer: Optimizer, config: ScheduleConfig, total_steps: int, peak_lr: float) -> LRScheduler:
    """The scheduler for ``total_steps`` optimizer steps.

    Args:
        optimizer: its param groups' ``lr`` is the peak rate.
        config: the schedule settings.
        total_steps: the schedule's length in optimizer steps.
        peak_lr: the run's learning rate, for the cosine floor ``min_lr_ratio * peak_lr``.

    Raises:
        ConfigError: unknown kind or inconsistent step counts.
    """
    check_choice("--schedule", config.kind, SCHEDULES, unknown="schedule")
    warmup = config.warmup_steps
    if warmup < 0 or warmup >= total_steps:
        raise ConfigError(f"--warmup-steps {warmup}: must be at least 0 and below the schedule's {total_steps} steps.")
    if not 0.0 <= config.min_lr_ratio <= 1.0:
        raise ConfigError(f"--min-lr-ratio {config.min_lr_ratio}: must be between 0 and 1.")
    decay_steps = total_steps - warmup
    eta_min = config.min_lr_ratio * peak_lr
    period = _sgdr_period(config, decay_steps)
    if config.kind == "sgdr" and (period < 1 or config.restart_mult < 1):
        raise ConfigError(f"--restart-steps {period} / --restart-mult {config.restart_mult}: both must be at least 1.")
    main: LRScheduler
    if config.kind in ("cosine", "sgdr") and len({float(g["lr"]) for g in optimizer.param_groups}) > 1:
        main = LambdaLR(optimizer, _RelativeCosine(config, decay_steps))
    elif config.kind == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=decay_steps, eta_min=eta_min)
    elif config.kind == "sgdr":
        main = CosineAnnealingWarmRestarts(optimizer, T_0=period, T_mult=config.restart_mult, eta_min=eta_min)
    else:
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    ramp = LinearLR(optimizer, start_factor=1.0 / warmup, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, schedulers=[ramp, main], milestones=[warmup])


class HoldAfterEnd:
    """Steps ``scheduler`` once per optimizer step until the schedule's ``length`` steps are done; after
    that a cosine (or constant) schedule holds its last rate (the cosine's floor ``min_lr_ratio * lr``),
    since torch's cosine would rise again, and SGDR keeps stepping (its restarts are its shape).

    Whether the scheduler was stepped is its own ``last_epoch``, which checkpoints restore, so a resumed run
    holds where an uninterrupted one does.
    """

    def __init__(self, scheduler: LRScheduler, length: int, kind: str):
        self.scheduler = scheduler
        self.length = length
        self.kind = kind

    def step(self) -> None:
        """One optimizer step's scheduler step (none past the end of a cosine or constant schedule)."""
        if self.kind == "sgdr" or self.scheduler.last_epoch < self.length:
            self.scheduler.step()


def describe_extension(kind: str, length: int, total: int) -> str:
    """The rule that applies to a run of ``total`` steps on a schedule of ``length`` steps (a sentence)."""
    shape = {
        "cosine": "at the cosine's floor (--min-lr-ratio x --lr)",
        "constant": "at the constant rate",
        "sgdr": "on the SGDR restarts, which continue",
    }[kind]
    return (
        f"steps {length + 1}-{total} run past the end of the {length}-step {kind} schedule the run started "
        f"with, {shape}; the schedule itself is kept (for a schedule over all {total} steps, start a new run "
        f"with --schedule-steps {total})."
    )


def _sgdr_period(config: ScheduleConfig, decay_steps: int) -> int:
    return config.restart_steps or max(1, decay_steps // 10)


class _RelativeCosine:
    """The cosine (or SGDR) decay as a factor of each group's peak: ``r + (1 - r) (1 + cos(pi t / T)) / 2``
    with ``r = min_lr_ratio``, ``t`` the steps since the (last) restart and ``T`` the period."""

    def __init__(self, config: ScheduleConfig, decay_steps: int):
        self.ratio = config.min_lr_ratio
        self.sgdr = config.kind == "sgdr"
        self.period = _sgdr_period(config, decay_steps) if self.sgdr else decay_steps
        self.mult = config.restart_mult

    def __call__(self, step: int) -> float:
        t, period = step, self.period
        if self.sgdr:
            while t >= period:  # CosineAnnealingWarmRestarts' T_cur and T_i
                t, period = t - period, period * self.mult
        return self.ratio + (1.0 - self.ratio) * (1.0 + math.cos(math.pi * t / period)) / 2.0
