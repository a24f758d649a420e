"""Logging set-up: human-readable lines or one JSON object per line (LOG_FORMAT).

What is logged is decided at each call site: codes, passwords, tokens and keys are never passed
to a logger, and emails go through ``mask_email``. Messages are rendered with ``%r``-safe
escaping of control characters, so CR/LF in user input cannot forge a log line.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from taxease_auth.config import LogFormat, Settings

_CONTROL = {code: f"\\x{code:02x}" for code in (*range(32), 127)}


def _escape(text: str) -> str:
    return text.translate(_CONTROL)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's API
        record.message = _escape(record.message)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True)


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter() if settings.log_format is LogFormat.JSON else ConsoleFormatter()
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("botocore", "boto3", "urllib3", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
