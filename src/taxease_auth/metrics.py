"""Prometheus metrics. Defined once per process (the client's registry is global); labels
never carry an email, a code or any other user data."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
