"""The logger for a step: Prefect's run logger inside a flow or task run, a plain logger outside."""

from __future__ import annotations

import logging


def step_logger(name: str = "fashion_sim"):
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
