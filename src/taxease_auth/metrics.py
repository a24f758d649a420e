"""Prometheus metrics. Defined once per process (the client's registry is global); labels
never carry an email, a code or any other user data, and every label has a bounded set of
values (HTTP requests are labelled by route template, never by raw path).

Several processes (``serve --workers N``, a separate ``worker``) share their metrics through
prometheus_client's multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` is set before this
module is imported, every process writes its values to files there and ``render()`` adds them
up (the gauges below say how: ``livemax``). ``cli.serve`` sets it up for ``--workers`` > 1.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric

MULTIPROC_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

HTTP_REQUESTS = Counter(
    "taxease_http_requests_total",
    "HTTP requests by route template and status (route 'unmatched' when no route matched)",
    ["route", "status"],
)
HTTP_SECONDS = Histogram(
    "taxease_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template",
    ["route"],
    # Fast routes answer in milliseconds; the password routes take one argon2id hash (tens to
    # hundreds of ms), more while they queue for a hashing slot.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "taxease_rate_limited_total",
    "Requests refused with 429 by rate budget (names as in auth/limits.py)",
    ["budget"],
)
RATE_LIMIT_EVICTIONS = Counter(
    "taxease_rate_limit_evictions_total",
    "Rate-limit keys dropped from the in-process (memory://) windows at "
    "RATE_LIMIT_MEMORY_MAX_KEYS, the longest idle first",
)
PURGED = Counter(
    "taxease_purged_rows_total",
    "Rows deleted by the delivery worker's scheduled retention purge, by table",
    ["table"],
)

CODES_ISSUED = Counter("taxease_codes_issued_total", "One-time codes issued", ["purpose"])
CODES_CHECKED = Counter(
    "taxease_codes_checked_total", "Code submissions by outcome", ["purpose", "outcome"]
)
# Group commit of code checks (auth/verify_batch.py): checks per commit = checked / commits.
CODE_CHECK_COMMITS = Counter(
    "taxease_code_check_commits_total", "Transactions that committed code checks (each holds many)"
)
CODE_CHECKS_WAITING = Gauge(
    "taxease_code_checks_waiting",
    "Code submissions admitted and waiting for a transaction",
    multiprocess_mode="livesum",
)
LOGINS = Counter("taxease_logins_total", "Login attempts by outcome", ["outcome"])
MAILS = Counter(
    "taxease_mails_total",
    "Outbox deliveries by outcome (sent, retried, failed, expired, suppressed)",
    ["kind", "outcome"],
)
SEND_SECONDS = Histogram(
    "taxease_mail_send_seconds",
    "Time the mail backend took to accept one message",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Why mails did not go, by class (SECURITY-AND-SES.md §2.3): "transient" (retried later),
# "permanent" (this message), "account_wide" (every message: the breaker opens), "invalid"
# (a row the worker cannot send, such as one without a body).
MAIL_FAILURES = Counter(
    "taxease_mail_failures_total",
    "Failed delivery attempts by failure class",
    ["kind", "reason_class"],
)
# Gauges are computed from the shared outbox, so every process reports the same value:
# "livemax" keeps multiprocess mode from adding them up.
OUTBOX_PENDING = Gauge(
    "taxease_outbox_pending",
    "Outbox rows still to send (pending), as the delivery worker last counted",
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_PENDING_SECONDS = Gauge(
    "taxease_outbox_oldest_pending_age_seconds",
    "Age of the oldest pending outbox row (0 when none)",
    multiprocess_mode="livemax",
)
MAIL_CIRCUIT_OPEN = Gauge(
    "taxease_mail_circuit_open",
    "1 while an account-wide SES error has stopped delivery (the alarm), else 0",
    multiprocess_mode="livemax",
)
MAIL_SEND_RATE_LIMIT = Gauge(
    "taxease_mail_max_send_rate",
    "Messages per second the delivery worker paces to (SES MaxSendRate or SES_MAX_SEND_RATE; "
    "0 when unpaced)",
    multiprocess_mode="livemax",
)

# SES feedback (DESIGN.md §10). Events by SES type (bounce, complaint, delivery, ...) and what
# became of them: "recorded", "duplicate" (seen before), "unknown" (no such message id here),
# "ignored" (an event type without effect, or an envelope from a foreign topic).
FEEDBACK_EVENTS = Counter(
    "taxease_mail_feedback_events_total",
    "SES feedback events read from the queue, by event type and outcome",
    ["event_type", "outcome"],
)
FEEDBACK_UNREADABLE = Counter(
    "taxease_mail_feedback_unreadable_total",
    "Queue messages that could not be read as SES events (left for the redrive policy)",
)
MAIL_BOUNCE_RATE = Gauge(
    "taxease_mail_bounce_rate",
    "Permanent bounces / mails SES accepted, over the last MAIL_REPUTATION_WINDOW mails",
    multiprocess_mode="livemax",
)
MAIL_COMPLAINT_RATE = Gauge(
    "taxease_mail_complaint_rate",
    "Complaints / mails SES accepted, over the last MAIL_REPUTATION_WINDOW mails",
    multiprocess_mode="livemax",
)


def multiprocess_dir() -> str | None:
    """The shared metrics directory when multiprocess mode is on, else None."""
    return os.environ.get(MULTIPROC_DIR_VARIABLE) or None


class _SettledFilesCollector(multiprocess.MultiProcessCollector):
    """prometheus_client's collector, minus the files it cannot read yet.

    A process creates its file empty, then sizes it; a scrape between the two would fail on
    it (``struct.error``), and so would one reading a file whose process was just marked
    dead. Such a file holds nothing yet, or nothing live: it is left out of this scrape.
    """

    def __init__(self, registry: CollectorRegistry, path: str) -> None:
        super().__init__(registry, path)  # type: ignore[no-untyped-call]
        self._directory = Path(path)

    def collect(self) -> Iterable[Metric]:
        files = []
        for path in self._directory.glob("*.db"):
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_size > 0:
                    files.append(str(path))
        merged: Iterable[Metric] = self.merge(files, accumulate=True)  # type: ignore[no-untyped-call]
        return merged


def render() -> bytes:
    """The Prometheus text exposition: this process's registry, or in multiprocess mode the
    sum over every process that wrote to the shared directory."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest()
    registry = CollectorRegistry()
    _SettledFilesCollector(registry, directory)
    return generate_latest(registry)


def mark_process_dead() -> None:
    """In multiprocess mode, drop this process's live gauges (call when it stops): a stopped
    worker's last "circuit open" must not outlive it. Its counters stay, so totals never go
    down."""
    directory = multiprocess_dir()
    if directory is not None:
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]
