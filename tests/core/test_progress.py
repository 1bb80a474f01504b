"""mlcore.progress.terminal_progress: a bar on a terminal, a handful of plain lines in a log."""

from __future__ import annotations

import io

from mlcore.progress import PlainProgress, TqdmProgress, terminal_progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_per_tenth_not_per_report():
    out = io.StringIO()
    progress = terminal_progress("training", out)
    assert isinstance(progress, PlainProgress)
    for step in range(1, 1001):
        progress(step, 1000, f"loss {1 / step:.4f}")
    lines = out.getvalue().splitlines()
    assert 10 <= len(lines) <= 12, lines
    assert all(line.startswith("training: ") for line in lines)
    assert lines[0] == "training: 0% (1/1000) loss 1.0000"
    assert "training: 50% (500/1000)" in out.getvalue()
    assert lines[-1].startswith("training: done, 100% (1000/1000)")


def test_each_phase_gets_a_line_and_the_last_says_done():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress("collage", out, clock=clock)
    progress(0, 0, "queued")
    progress(0, 0, "running")
    for done in range(1, 51):  # phase 1: a new total
        progress(done, 400, "matching tiles")
    for done in range(0, 1001, 5):  # phases 2 and 3: one total, named by the message prefix
        progress(done, 1000, f"{'corrections' if done < 50 else 'training'}: step {done}")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["collage: queued", "collage: running"]
    assert lines[2] == "collage: 0% (1/400) matching tiles"
    assert "collage: 0% (0/1000) corrections: step 0" in lines
    assert "collage: 5% (50/1000) training: step 50" in lines
    assert lines[-1] == "collage: done, 100% (1000/1000) training: step 1000"
    assert len(lines) <= 20, lines


def test_a_slow_step_still_shows_life_every_interval():
    out, clock = io.StringIO(), Clock()
    progress = PlainProgress("scoring", out, interval=30.0, clock=clock)
    for done in range(100):  # 1% a minute: the 10% rule alone would be silent for ten minutes
        clock.now = 60.0 * done
        progress(done, 10_000, "scoring on Spark")
    lines = out.getvalue().splitlines()
    assert len(lines) == 100 and lines[1] == "scoring: 0% (1/10000) scoring on Spark"
    progress(100, 10_000, "scoring on Spark")  # no time has passed: no line
    assert len(out.getvalue().splitlines()) == 100


def test_a_terminal_gets_a_tqdm_bar():
    tty = Tty()
    progress = terminal_progress("uploading", tty)
    assert isinstance(progress, TqdmProgress)
    for done in range(0, 101):
        progress(done, 100, "bytes")
    assert "uploading" in tty.getvalue() and "100/100" in tty.getvalue()
    assert "\r" in tty.getvalue()  # redrawn in place
