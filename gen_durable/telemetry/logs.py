"""The log output of ``gen-durable run``: text lines, or one JSON object per line.

A JSON line holds the record's time, level, logger and message, the exception's
traceback if any, and every ``extra=`` field: the telemetry events logged on
``gen_durable.events`` carry their name (``event``) and all their fields that way.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["LOG_FORMATS", "TEXT_FORMAT", "JsonFormatter", "configure_logging", "verbosity"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The text line format."""
LOG_FORMATS = ("text", "json")

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time``, ``level``, ``logger``, ``message``,
    ``exception`` (a traceback, when there is one) and the record's extra fields (values
    JSON cannot hold are written as their ``str``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        return json.dumps(line, default=str)


def verbosity(count: int) -> int:
    """``-v`` flags to a level: none WARNING, ``-v`` INFO, ``-vv`` (or more) DEBUG."""
    return (logging.WARNING, logging.INFO)[count] if count < 2 else logging.DEBUG


def configure_logging(level: int, log_format: str = "text") -> None:
    """Log to stderr at ``level`` in ``log_format`` (``"text"`` or ``"json"``), replacing
    the root logger's handlers."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler], force=True)
