"""Progress callbacks shared by every long-running mlcore function.

A progress callback is ``progress(done, total, message)``; workers forward it to ``job.meta``, a
person sees it through ``terminal_progress``: a tqdm bar on a terminal, a few plain lines in a log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

Progress = Callable[[int, int, str], None]


class NullProgress:
    """A progress callback that ignores every report (and closes like the others)."""

    def __call__(self, done: int, total: int, message: str = "") -> None:
        pass

    def close(self) -> None:
        pass


null_progress = NullProgress()


class TqdmProgress:
    """A callback that drives a tqdm bar on ``stream`` (default sys.stderr).

    The bar is created on the first report and resized when ``total`` changes (functions that work
    in phases report a new total per phase); it closes itself when ``done >= total``.
    """

    def __init__(self, desc: str = "", stream=None):
        self.desc, self.stream = desc, stream
        self.bar, self.total = None, None

    def __call__(self, done: int, total: int, message: str = "") -> None:
        from tqdm import tqdm

        if total <= 0:  # nothing to draw yet (a queued job)
            return
        if self.bar is None or self.total != total:
            self.close()
            self.bar = tqdm(total=total, desc=self.desc, leave=True, file=self.stream)
            self.total = total
        self.bar.n = done
        if message:
            self.bar.set_postfix_str(message[:60], refresh=False)
        self.bar.refresh()
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


class PlainProgress:
    """A callback that writes whole lines, for a log file or a pipe (a bar there is one line per
    redraw: hundreds of kilobytes for one training run).

    A line is written when a phase starts (a new ``total``, or a new ``"name: "`` prefix of the
    message, as one job with several steps reports them), when the fraction has moved by
    a step of ``every`` (10%, 20%...), when ``interval`` seconds have passed with news, and once
    when the phase is done. Without a total the message is all there is: each new one is a line.
    """

    def __init__(self, desc: str = "", stream=None, every: float = 0.1, interval: float = 30.0,
                 clock=time.monotonic):  # fmt: skip
        self.label = f"{desc}: " if desc else ""
        self.stream = stream if stream is not None else sys.stderr
        self.every, self.interval, self.clock = every, interval, clock
        self.phase, self.shown, self.at, self.last, self.finished = None, 0, 0.0, None, False

    def __call__(self, done: int, total: int, message: str = "") -> None:
        now = self.clock()
        head = message.split(": ", 1)[0] if ": " in message else ""
        phase = (total, head) if total > 0 else (total, message)
        frac = min(done / total, 1.0) if total > 0 else 0.0
        tenth = int(frac / self.every + 1e-9)  # lines fall on 10%, 20%... whatever the report size
        finished = total > 0 and done >= total
        if phase != self.phase:
            self.phase, self.finished = phase, False
        elif finished:
            if self.finished:
                return
        elif tenth <= self.shown:
            if now - self.at < self.interval or (done, message) == self.last:
                return
        self.shown, self.at, self.last, self.finished = tenth, now, (done, message), finished
        if finished:
            text = f"done, 100% ({done}/{total})" + (f" {message}" if message != "done" else "")
        elif total > 0:
            text = f"{100 * frac:.0f}% ({done}/{total}) {message}"
        else:
            text = message
        self.stream.write(f"{self.label}{text}".rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to close (the lines are written); here so both callbacks close alike."""


def terminal_progress(
    desc: str = "", stream=None, quiet: bool = False
) -> TqdmProgress | PlainProgress | NullProgress:
    """The callback for a person following a long step: a tqdm bar when ``stream`` (default
    sys.stderr) is a terminal, plain lines (PlainProgress) when it is a file or a pipe, nothing
    when ``quiet``. Each has ``close()`` for a step that ends early."""
    if quiet:
        return null_progress
    stream = stream if stream is not None else sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return TqdmProgress(desc, stream)
    return PlainProgress(desc, stream)


def report(progress: Progress | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given (saves an ``if`` at every call site)."""
    if progress is not None:
        progress(done, total, message)
