"""Progress of a run: a bar on a terminal, plain lines elsewhere, and hooks that see every event."""

from __future__ import annotations

import io

from memopt.harness.train.loop import Trainer
from memopt.harness.train.progress import Progress, ProgressDisplay, plain_line


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def events(total: int = 4, eval_every: int = 2) -> list[Progress]:
    made = [Progress("start", "adamw", 0, total, 0)]
    for step in range(1, total + 1):
        made.append(Progress("train", "adamw", step, total, 100 * step, 0.1 * step, loss=5.0, tokens_per_s=1000.0))
        if step % eval_every == 0:
            made.append(Progress("eval", "adamw", step, total, 100 * step, 0.1 * step, val_loss=4.5))
    return [*made, Progress("end", "adamw", total, total, 100 * total, 0.5)]


def test_without_a_terminal_one_plain_line_per_evaluation_and_no_bar():
    stream = io.StringIO()
    display = ProgressDisplay(stream)
    for progress in events():
        display(progress)
    lines = stream.getvalue().splitlines()
    assert lines == [
        "adamw step 2/4 (50%): 200 tokens, val loss 4.5000, 0 s",
        "adamw step 4/4 (100%): 400 tokens, val loss 4.5000, 0 s",
    ]
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()


def test_on_a_terminal_a_bar():
    stream = Terminal()
    display = ProgressDisplay(stream)
    for progress in events():
        display(progress)
    assert "\r" in stream.getvalue() and "4/4" in stream.getvalue()
    assert "val loss" not in stream.getvalue()  # the bar replaces the plain lines
    assert display.bar is None  # closed at the end


def test_plain_line_has_what_is_known():
    line = plain_line(Progress("eval", "adamw_sn", 3, 12, 3072, 7.4, loss=5.25, tokens_per_s=1234.5, val_loss=5.5))
    assert line == "adamw_sn step 3/12 (25%): 3,072 tokens, loss 5.2500, val loss 5.5000, 1,234 tokens/s, 7 s"


def test_trainer_calls_its_progress_hook_for_every_step_and_evaluation(tiny):
    seen: list[Progress] = []
    trainer = Trainer(tiny(max_steps=6, eval_every=3), progress=seen.append)
    trainer.run()
    assert [p.event for p in seen] == ["start", *["train"] * 3, "eval", *["train"] * 3, "eval", "end"]
    assert [p.step for p in seen if p.event == "train"] == [1, 2, 3, 4, 5, 6]
    assert all(p.total_steps == 6 and p.optimizer == "adamw" for p in seen)
    assert seen[-2].tokens == 6 * 8 * 32 and seen[-2].val_loss == trainer.evaluate()


def test_a_run_that_is_not_quiet_writes_plain_lines_when_stderr_is_not_a_terminal(tiny, capsys):
    Trainer(tiny(max_steps=4, eval_every=2, quiet=False)).run()
    err = capsys.readouterr().err
    assert [line.split(":")[0] for line in err.splitlines()] == ["adamw step 2/4 (50%)", "adamw step 4/4 (100%)"]
