"""Progress of a training run: events that the trainer reports, and the display of one run.

The trainer calls its progress hooks with a :class:`Progress` when the run starts, after every step and
evaluation, and when it ends; a caller that trains several runs (``memopt compare``) can add its own hook to
show overall progress. :class:`ProgressDisplay` is the hook that shows one run: a tqdm bar when stderr is
a terminal, otherwise one plain line per evaluation (logs and CI output get no bar's control characters).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm


@dataclass(frozen=True)
class Progress:
    """Where a run stands.

    Attributes:
        event: ``"start"``, ``"train"`` (a step was taken), ``"eval"`` (an evaluation) or ``"end"``.
        optimizer: the run's optimizer.
        step: optimizer steps taken.
        total_steps: the run's step limit.
        tokens: training tokens seen.
        elapsed: seconds since this invocation's loop started.
        loss: the last step's training loss (``"train"`` events and later).
        tokens_per_s: the last step's speed.
        val_loss: the last evaluation's validation loss, if any.
    """

    event: str
    optimizer: str
    step: int
    total_steps: int
    tokens: int
    elapsed: float = 0.0
    loss: float | None = None
    tokens_per_s: float | None = None
    val_loss: float | None = None


ProgressHook = Callable[[Progress], None]


class ProgressDisplay:
    """Shows one run's progress on ``stream``: a tqdm bar on a terminal, else a line per evaluation."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream if stream is not None else sys.stderr
        self.bar: tqdm | None = None

    def __call__(self, progress: Progress) -> None:
        if progress.event == "start" and self.stream.isatty():
            self.bar = tqdm(
                total=progress.total_steps,
                initial=min(progress.step, progress.total_steps),
                unit="step",
                dynamic_ncols=True,
                desc=progress.optimizer,
                file=self.stream,
            )
        elif progress.event == "train" and self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{progress.loss:.3f}", tok_s=f"{progress.tokens_per_s:,.0f}", refresh=False)
        elif progress.event == "eval" and self.bar is not None:
            self.bar.set_postfix(val=f"{progress.val_loss:.3f}", refresh=False)
        elif progress.event == "eval":
            print(plain_line(progress), file=self.stream, flush=True)
        elif progress.event == "end" and self.bar is not None:
            self.bar.close()
            self.bar = None


def plain_line(progress: Progress) -> str:
    """One line for a log: ``adamw step 25/300 (8%): 51,200 tokens, loss 5.1234, val loss 5.2000, ...``."""
    share = 100 * progress.step / progress.total_steps if progress.total_steps else 100.0
    parts = [f"{progress.tokens:,} tokens"]
    if progress.loss is not None:
        parts.append(f"loss {progress.loss:.4f}")
    if progress.val_loss is not None:
        parts.append(f"val loss {progress.val_loss:.4f}")
    if progress.tokens_per_s is not None:
        parts.append(f"{progress.tokens_per_s:,.0f} tokens/s")
    parts.append(f"{progress.elapsed:.0f} s")
    return f"{progress.optimizer} step {progress.step}/{progress.total_steps} ({share:.0f}%): {', '.join(parts)}"
