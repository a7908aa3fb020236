"""One log line per failure: the error's class and message, and what happens next.

SQLAlchemy's error text carries the statement and its parameters (kilobytes for a batch);
the runtime logs them, with the traceback, at DEBUG only.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import StatementError


def brief(exc: BaseException) -> str:
    """``Class: first line of the message`` of ``exc``, or of the driver's error that a
    SQLAlchemy error wraps (without its statement and parameters)."""
    inner = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def log_failure(
    logger: logging.Logger, level: int, what: str, exc: BaseException, then: str
) -> None:
    """Log ``"<what> failed (<brief>); <then>"`` at ``level``; the whole error (statement,
    parameters, traceback) at DEBUG."""
    logger.log(level, "%s failed (%s); %s", what, brief(exc), then)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("%s failed: the whole error", what, exc_info=exc)
