"""Run a step that must end, without letting a hang (a decoder loop on bad data, an open() that waits
on a FIFO) hang the suite: a generous watchdog, never a timing assertion."""

from __future__ import annotations

import contextvars
import threading

import pytest

WATCHDOG_S = 300  # far above the seconds any guarded step takes: only a hang reaches it


def under_watchdog(work, progress: dict | None = None, seconds: float = WATCHDOG_S):
    """Run `work()` in a daemon thread and return its result (or raise its error); fail if it is still
    running after `seconds`, naming `progress` (what it was doing, kept up to date by `work`)."""
    outcome = {}

    def target():
        try:
            outcome["result"] = work()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            outcome["error"] = error

    context = contextvars.copy_context()  # Prefect's test-harness settings live in context variables
    thread = threading.Thread(target=context.run, args=(target,), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s, at {progress or 'the guarded step'}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]
