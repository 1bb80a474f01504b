"""Progress callbacks shared by every long-running mlcore function.

A progress callback is ``progress(done, total, message)``; workers forward it to ``job.meta``, the
CLI to a tqdm bar in the terminal.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int, str], None]


def null_progress(done: int, total: int, message: str = "") -> None:
    """A progress callback that ignores every report."""


def tqdm_progress(desc: str = "") -> Progress:
    """Return a callback that drives a tqdm bar on the terminal.

    The bar is created on the first report and resized when ``total`` changes (functions that work
    in phases report a new total per phase); it closes itself when ``done >= total``.
    """
    from tqdm import tqdm

    state: dict = {"bar": None, "total": None}

    def report(done: int, total: int, message: str = "") -> None:
        bar = state["bar"]
        if bar is None or state["total"] != total:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, desc=desc, leave=True)
            state["total"] = total
        bar.n = done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()
        if done >= total:
            bar.close()
            state["bar"] = None

    return report


def report(progress: Progress | None, done: int, total: int, message: str = "") -> None:
    """Call ``progress`` if one was given (saves an ``if`` at every call site)."""
    if progress is not None:
        progress(done, total, message)
