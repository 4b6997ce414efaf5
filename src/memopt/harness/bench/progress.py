"""Progress of a whole ``memopt compare``: one line for all its runs (run k of n, tokens, elapsed, ETA).

On a terminal the line is redrawn in place; elsewhere (a log file, CI) a full line is printed at the end of
each run and, during a long run, every ``every_s`` seconds, so the output stays readable in any terminal. The ETA
assumes the tokens still to train go at the rate measured so far (sweep and comparison runs together).

Per-step updates come from each run's Trainer through its progress hook
(:mod:`memopt.harness.train.progress`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_tokens(tokens: float) -> str:
    """``1234567`` -> ``"1.23M"``, ``45600`` -> ``"45.6k"``."""
    if tokens >= 1e6:
        return f"{tokens / 1e6:.2f}M"
    if tokens >= 1e3:
        return f"{tokens / 1e3:.1f}k"
    return f"{tokens:.0f}"


class CompareProgress:
    """The overall progress line of a comparison.

    Args:
        total_runs: runs planned (sweep points and comparison runs).
        total_tokens: training tokens of all those runs.
        stream: where the line goes (standard error by default).
        tty: redraw in place (default: whether ``stream`` is a terminal).
        every_s: seconds between lines when not on a terminal.
        clock: the time source (for tests).
    """

    def __init__(
        self,
        total_runs: int,
        total_tokens: int,
        stream: TextIO | None = None,
        tty: bool | None = None,
        every_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.total_runs = total_runs
        self.total_tokens = max(1, total_tokens)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.every_s = every_s
        self.clock = clock
        self.started = clock()
        self.run = 0
        self.label = ""
        self.run_steps = 0
        self.done_tokens = 0  # of finished runs
        self.run_tokens = 0  # of the current run
        self.step = 0
        self._last_print = self.started
        self._drawn = False

    def start_run(self, label: str, steps: int) -> None:
        """A run begins: ``label`` says what it is (e.g. ``"adamw seed 1"``), ``steps`` its length."""
        self.run += 1
        self.label = label
        self.run_steps = steps
        self.step = 0
        self.run_tokens = 0
        self._emit(force=self.tty)

    def update(self, step: int, tokens: int) -> None:
        """The current run has finished ``step`` steps and trained ``tokens`` tokens."""
        self.step = step
        self.run_tokens = tokens
        self._emit(force=False)

    def end_run(self) -> None:
        """The current run is over."""
        self.done_tokens += self.run_tokens
        self.run_tokens = 0
        self._emit(force=not self.tty)

    def line(self) -> str:
        """The progress line as it stands."""
        done = self.done_tokens + self.run_tokens
        elapsed = self.clock() - self.started
        eta = elapsed / done * (self.total_tokens - done) if done else None
        share = 100.0 * done / self.total_tokens
        return (
            f"compare: run {self.run}/{self.total_runs} ({self.label}) step {self.step}/{self.run_steps} | "
            f"{format_tokens(done)}/{format_tokens(self.total_tokens)} tokens ({share:.0f}%) | "
            f"elapsed {format_duration(elapsed)}, ETA {'?' if eta is None else format_duration(eta)}"
        )

    def log(self, text: str, log: Callable[[str], object] = print) -> None:
        """Print ``text`` through ``log`` without mixing it into the redrawn line."""
        self.clear()
        log(text)

    def clear(self) -> None:
        """Erase the redrawn line (on a terminal)."""
        if self.tty and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False

    def close(self) -> None:
        """End the line (on a terminal), leaving the last state visible."""
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def _emit(self, force: bool) -> None:
        now = self.clock()
        if self.tty:
            if force or now - self._last_print >= 0.5:
                self.stream.write("\r\033[K" + self.line())
                self.stream.flush()
                self._drawn = True
                self._last_print = now
        elif force or now - self._last_print >= self.every_s:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._last_print = now
