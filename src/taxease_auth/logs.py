"""Logging set-up: human-readable lines or one JSON object per line (LOG_FORMAT).

What is logged is decided at each call site: codes, passwords, tokens and keys are never passed
to a logger, and emails go through ``mask_email``. Messages are rendered with ``%r``-safe
escaping of control characters, so CR/LF in user input cannot forge a log line.

Every line logged while a request is handled carries its request id (``REQUEST_ID``, set by
``api.observability.RequestObservability``); lines logged outside a request (the delivery
worker, start-up) carry none.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime

from taxease_auth.config import LogFormat, Settings

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}

# The id of the request being handled in this context (None outside a request). Tasks and
# worker threads started while handling a request inherit it, as contextvars do.
REQUEST_ID: ContextVar[str | None] = ContextVar("taxease_request_id", default=None)


def _escape(text: str) -> str:
    return text.translate(_CONTROL)


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (``record.request_id``, maybe None)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class ConsoleFormatter(logging.Formatter):
    """``time LEVEL [request-id] logger: message``; the bracket only inside a request, before
    the logger name, so the rest of the line keeps its shape for grep."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self._with_request_id = logging.PercentStyle(
            "%(asctime)s %(levelname)-7s [%(request_id)s] %(name)s: %(message)s"
        )

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        record.message = _escape(record.message)
        if getattr(record, "request_id", None) is None:
            return super().formatMessage(record)
        return self._with_request_id.format(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure_logging(settings: Settings) -> None:
    # Neither format shows the thread or the process, and looking them up is a third of a
    # record's cost (each request logs one access line).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter() if settings.log_format is LogFormat.JSON else ConsoleFormatter()
    )
    handler.setFormatter(formatter)
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # coredis (Redis) logs a retry at INFO whenever the limits library first loads its script.
    for noisy in ("botocore", "boto3", "urllib3", "aiosqlite", "asyncio", "coredis"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
