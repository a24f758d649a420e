"""Prometheus metrics. Defined once per process (the client's registry is global); labels
never carry an email, a code or any other user data."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CODES_ISSUED = Counter("taxease_codes_issued_total", "One-time codes issued", ["purpose"])
CODES_CHECKED = Counter(
    "taxease_codes_checked_total", "Code submissions by outcome", ["purpose", "outcome"]
)
LOGINS = Counter("taxease_logins_total", "Login attempts by outcome", ["outcome"])
MAILS = Counter(
    "taxease_mails_total",
    "Outbox deliveries by outcome (sent, retried, failed, expired)",
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
