"""Structured JSON logs, one object per line on standard error."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from couchops import pseudonym


def configure(level: str = "INFO", **context: Any) -> None:
    """JSON lines on stderr, with an ISO-8601 UTC timestamp and the run's fixed context."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            pseudonym.scrub_event,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(**context)


def logger() -> Any:
    return structlog.get_logger("couchops")
