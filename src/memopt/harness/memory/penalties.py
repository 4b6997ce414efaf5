"""The loss penalties that memopt has measured, per choice of ``memopt fit``, each with the study that measured it.

A penalty is the change of final validation loss (nats; positive = worse) against the reference choice of
its axis (AdamW for the optimizer, fp32 parameters for the precision, no sparsity, one microbatch, no
checkpointing), measured by memopt's own recorded studies at equal tokens. An entry that no study
measured says so (``nats=None``): ``memopt fit`` ranks a configuration that contains such a choice after
every configuration whose choices were all measured, and prints "unmeasured" for it.

The figures are copied from the studies' tables; each entry names the section of ``docs/results.md`` or
``docs/memory.md`` that holds the command, the runs and the spread. They were measured on small models
(the ``small`` preset, 1.3M parameters, 163,840 to 614,400 tokens): they say what memopt observed, not
what a 7B run will do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: penalties closer than this to the best are ties (nats): the seed-to-seed spread (standard deviation over
#: three seeds) of the optimizer study was 0.08 to 0.15
RESOLUTION = 0.1

_SMALL_STUDY = 'docs/results.md, "The study: six optimizers, tuned, three seeds (`small`)"'
_LM_MEMORY_STUDY = 'docs/memory.md, "Language model: the harness\'s `small` preset"'


@dataclass(frozen=True)
class Penalty:
    """One choice's measured loss penalty.

    Attributes:
        nats: final validation loss minus the reference's (mean over the study's seeds); None if unmeasured.
        spread: the seed-to-seed standard deviation of the study (nats), where it had several seeds.
        seeds: seeds behind ``nats``.
        study: where the measurement is recorded (file and section).
        hparams: the hyperparameters it was measured with, which ``memopt fit``'s command repeats.
        note: what the number means and does not.
    """

    nats: float | None
    study: str = "unmeasured"
    spread: float | None = None
    seeds: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.nats is not None


UNMEASURED = Penalty(None)

#: the optimizer axis: ``memopt fit``'s optimizer choices (see :data:`memopt.harness.memory.fit.OPTIMIZERS`)
OPTIMIZER_PENALTIES: dict[str, Penalty] = {
    "adamw": Penalty(0.0, _SMALL_STUDY, 0.088, 3, note="the reference (5.7035 +- 0.0877)"),
    "adamw8bit": Penalty(
        -0.0388, _SMALL_STUDY, 0.084, 3, note="5.6647 +- 0.0839, not significantly different (p=0.61)"
    ),
    "adafactor": Penalty(
        -0.1425, _SMALL_STUDY, 0.109, 3, {"lr": 3.162e-3},
        note="5.5610 +- 0.1086 at its tuned lr 3.162e-3 (not significant, p=0.15); at the registry's 1e-2 it was "
        "0.29 worse (seed 0)",
    ),
    "adamw_sn": Penalty(
        -0.8369, _SMALL_STUDY, 0.117, 3,
        note="4.8666 +- 0.1167 (p=0.00083); the lead is the larger rate on embeddings and norms: against AdamW "
        "with the same two groups, each at its own tuned rates, not significant (4.5866 vs 4.5552, p=0.74; "
        "docs/results.md, \"Three seeds at each optimizer's own embeddings-and-norms rate\")",
    ),
    "adamw_snsm": Penalty(
        -0.8536, _SMALL_STUDY, 0.146, 3,
        note="4.8499 +- 0.1459 (p=0.0023); the same caveat as adamw_sn (against AdamW with the same groups: "
        "4.5385 vs 4.5552, p=0.87)",
    ),
    "adamw4bit": UNMEASURED,
    "adamw_snsm8bit": UNMEASURED,
}  # fmt: skip

#: the precision axis (how parameters are held, or bf16 autocast)
PRECISION_PENALTIES: dict[str, Penalty] = {
    "fp32": Penalty(0.0, note="the reference"),
    "bf16-sr": Penalty(
        -0.0047, _LM_MEMORY_STUDY, None, 1, note="5.2606 against 5.2653 (one seed, 150 steps of AdamW)"
    ),
    "bf16-master": UNMEASURED,
    "bf16-autocast": UNMEASURED,
}

#: microbatching and checkpointing compute the same step up to rounding
EXACT_TECHNIQUES = Penalty(
    0.0, _LM_MEMORY_STUDY, None, 1,
    note="microbatches 4 and checkpointing gave the baseline's loss to 1e-6 (the same computation up to rounding)",
)  # fmt: skip

#: the sparsity axis (magnitude pruning at initialisation, compact storage)
SPARSITY_PENALTIES: dict[float, Penalty] = {
    0.0: Penalty(0.0, note="the reference"),
    0.5: Penalty(-0.06, _LM_MEMORY_STUDY, None, 1, note="5.20 against 5.27 (one seed, 150 steps of AdamW)"),
}


def optimizer_penalty(name: str) -> Penalty:
    """The optimizer choice's penalty (``UNMEASURED`` for a choice no study measured)."""
    return OPTIMIZER_PENALTIES.get(name, UNMEASURED)


def precision_penalty(precision: str) -> Penalty:
    """The precision's penalty (``UNMEASURED`` if no study measured it)."""
    return PRECISION_PENALTIES.get(precision, UNMEASURED)


def sparsity_penalty(sparsity: float) -> Penalty:
    """The sparsity level's penalty (``UNMEASURED`` if no study measured it)."""
    return SPARSITY_PENALTIES.get(float(sparsity), UNMEASURED)


def combined(parts: list[Penalty]) -> Penalty:
    """The penalty of a configuration made of ``parts``: their sum (assumed additive, which no study
    tested), unmeasured if any part is."""
    if not all(p.measured for p in parts):
        return UNMEASURED
    total = sum(p.nats for p in parts)  # type: ignore[misc]
    studies = sorted({p.study for p in parts if p.nats})
    return Penalty(total, "; ".join(studies) or "the reference")
