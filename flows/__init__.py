"""Prefect flows: compose the tasks; each module is runnable as `python -m flows.<name>`."""

import os

# Prefect's telemetry heartbeat races the ephemeral server's SQLite at start-up ("database is
# locked" tracebacks in every run); the product sends no telemetry.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
