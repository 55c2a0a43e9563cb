"""Errors a user can cause and act on. Each message is one line that says what happened and what to
do; the command lines print it as their one `error:` line, without a traceback (a traceback on the
terminal is for bugs; Prefect's run logs keep it either way)."""

from __future__ import annotations

import errno

OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# how Lance (Rust's io errors, passed on as text) names a full disk or quota
OUT_OF_SPACE_MESSAGES = ("os error 28", "os error 122", "No space left on device", "Disk quota exceeded")


class UserError(Exception):
    """Marker base: the message is for the user, complete in one line."""


def is_out_of_space(error: BaseException) -> bool:
    """True for the ways a full disk (or quota) shows: ENOSPC/EDQUOT, or the catalogue engine's text for it."""
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE_ERRNOS:
        return True
    return any(message in str(error) for message in OUT_OF_SPACE_MESSAGES)
