"""The overall progress line of ``memopt compare``: run k of n, tokens, elapsed time and ETA."""

from __future__ import annotations

import io

from memopt.harness.bench.progress import CompareProgress, format_duration, format_tokens


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_on_a_log_file_say_run_tokens_and_eta():
    clock, stream = Clock(), io.StringIO()
    progress = CompareProgress(total_runs=4, total_tokens=4000, stream=stream, tty=False, every_s=30, clock=clock)
    progress.start_run("adamw seed 0", steps=10)
    clock.now = 10.0
    progress.update(5, 500)  # less than every_s since the start: no line
    assert stream.getvalue() == ""
    clock.now = 40.0
    progress.update(10, 1000)
    progress.end_run()
    lines = stream.getvalue().splitlines()
    assert lines[0] == ("compare: run 1/4 (adamw seed 0) step 10/10 | 1.0k/4.0k tokens (25%) | elapsed 0:40, ETA 2:00")
    assert len(lines) == 2  # one at 40 s (every_s passed) and one at the run's end
    progress.start_run("adamw seed 1", steps=10)
    clock.now = 60.0
    progress.update(10, 1000)
    progress.end_run()
    assert stream.getvalue().splitlines()[-1].startswith("compare: run 2/4 (adamw seed 1) step 10/10 | 2.0k/4.0k")
    assert stream.getvalue().splitlines()[-1].endswith("elapsed 1:00, ETA 1:00")


def test_a_terminal_line_is_redrawn_in_place_and_log_lines_do_not_mix_in():
    clock, stream = Clock(), io.StringIO()
    progress = CompareProgress(total_runs=1, total_tokens=100, stream=stream, tty=True, clock=clock)
    progress.start_run("sgd seed 0", steps=2)
    clock.now = 1.0
    progress.update(1, 50)
    logged = []
    progress.log("  sgd: done", logged.append)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r\033[K") == 3 and "\n" not in text  # two draws and one erase before the log line
    assert logged == ["  sgd: done"]


def test_formats():
    assert format_duration(75) == "1:15" and format_duration(3725) == "1:02:05"
    assert format_tokens(1_234_567) == "1.23M" and format_tokens(45_600) == "45.6k" and format_tokens(12) == "12"
