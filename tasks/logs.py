"""The logger for a step, and how far a long step (training, embedding) has got."""

from __future__ import annotations

import logging
import sys
import time

PROGRESS_EVERY_S = 30.0  # without a terminal: one progress line in the log at most this often


def step_logger(name: str = "fashion_sim"):
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)


def watched_on_a_terminal() -> bool:
    """A person watches this process's stderr: it is a terminal, and this is not a deployment's run
    (whose progress belongs in the run's log, where a bar would not be kept)."""
    if not sys.stderr.isatty():
        return False
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return not (context and context.flow_run and context.flow_run.deployment_id)


class Progress:
    """How far a step of `total` units has got. On a terminal, a bar with the rate and the time left
    (tqdm, on stderr, cleared when done); otherwise a log line at most every `every_s` seconds with
    the time so far and an estimate of the time left. Use as a context manager."""

    def __init__(self, what: str, total: int, unit: str, log=None, every_s: float = PROGRESS_EVERY_S,
                 terminal: bool | None = None):
        self.what, self.total, self.unit, self.every_s = what, total, unit, every_s
        self.log = log or step_logger()
        self.done = 0
        self.started = self.reported = time.monotonic()
        self.bar = None
        if watched_on_a_terminal() if terminal is None else terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def advance(self, count: int = 1, **figures) -> None:
        """`count` more units done; `figures` (e.g. loss="0.53") are shown beside the bar or line."""
        self.done += count
        if self.bar is not None:
            if figures:
                self.bar.set_postfix(figures, refresh=False)
            self.bar.update(count)
            return
        now = time.monotonic()
        if now - self.reported < self.every_s or self.done >= self.total:
            return
        self.reported = now
        elapsed = now - self.started
        shown = "".join(f", {name} {value}" for name, value in figures.items())
        self.log.info("%s: %d/%d %ss (%.0f%%)%s, %.0f s so far, about %.0f s left", self.what, self.done,
                      self.total, self.unit, 100 * self.done / self.total, shown, elapsed,
                      elapsed * (self.total - self.done) / self.done)

    def note(self, message: str, *args) -> None:
        """A log line that leaves the bar whole (it is cleared while the line is written)."""
        if self.bar is None:
            self.log.info(message, *args)
            return
        with self.bar.external_write_mode(file=sys.stderr):
            self.log.info(message, *args)
