"""Errors a user can cause and act on. Each message is one line that says what happened and what to
do; the command lines print it as their one `error:` line, without a traceback (a traceback on the
terminal is for bugs; Prefect's run logs keep it either way)."""

from __future__ import annotations


class UserError(Exception):
    """Marker base: the message is for the user, complete in one line."""
