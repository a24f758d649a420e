"""What one send can come to (DESIGN.md §4), and how the delivery worker records a send that
SES refused or that failed on the way.

- transient (throttling, 5xx, timeouts): the row is retried with full-jitter exponential
  backoff; a failure that may have hidden an accepted message marks ``last_error`` with
  ``POSSIBLY_SENT``, so whichever worker retries it logs the possible second copy;
- permanent for this message: the row fails with the reason, no retry;
- account-wide: the row fails and the circuit breaker opens (``breaker.py``); while it is
  open, rows refused the same way go back to the queue, and a refused probe schedules the
  next one.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from datetime import timedelta

from taxease_auth import metrics
from taxease_auth.clock import Clock
from taxease_auth.mail.backends.base import PermanentSendError, TransientSendError
from taxease_auth.mail.breaker import CircuitBreaker
from taxease_auth.store import outbox
from taxease_auth.store.outbox import ClaimedMail
from taxease_auth.store.sql import Database

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
# Marks ``last_error`` when the failed attempt may have been accepted by SES, so whichever
# worker retries the row knows it may deliver a second copy.
POSSIBLY_SENT = "possibly sent: "


class Outcome(enum.Enum):
    SENT = "sent"
    RETRY = "retry"
    FAILED = "failed"
    ACCOUNT_WIDE = "account_wide"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**attempt)]."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 16))
    return random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret


class FailedSends:
    """Records failed sends through ``database`` and drives ``breaker``. ``close_breaker``
    is the worker's own (it logs the recovery and wakes the loop): called when a probe shows
    SES judging messages again. ``context`` in each call is the row's (id, kind, masked
    address, idempotency key) for the log lines."""

    def __init__(
        self,
        *,
        database: Database,
        clock: Clock,
        breaker: CircuitBreaker,
        close_breaker: Callable[[], None],
    ) -> None:
        self._database = database
        self._clock = clock
        self._breaker = breaker
        self._close_breaker = close_breaker

    async def retry_later(
        self,
        row: ClaimedMail,
        error: TransientSendError,
        context: tuple[object, ...],
        *,
        probing: bool,
    ) -> Outcome:
        now = self._clock.now()
        retry_at = now + timedelta(seconds=backoff_delay(row.attempts))
        reason = f"{POSSIBLY_SENT}{error.reason}" if error.possibly_sent else error.reason
        async with self._database.single_statement() as tx:
            await outbox.mark_retry(tx, row.id, error=reason, retry_at=retry_at, now=now)
        metrics.MAILS.labels(kind=row.kind, outcome="retried").inc()
        metrics.MAIL_FAILURES.labels(kind=row.kind, reason_class="transient").inc()
        logger.warning(
            "outbox %s (%s to %s, key %s) attempt %d failed, will retry%s: %s",
            *context,
            row.attempts + 1,
            " (SES may have accepted it)" if error.possibly_sent else "",
            error.reason,
        )
        if probing:
            self._breaker.probe_failed()
        return Outcome.RETRY

    async def fail(
        self,
        row: ClaimedMail,
        error: PermanentSendError,
        context: tuple[object, ...],
        *,
        probing: bool,
    ) -> Outcome:
        async with self._database.single_statement() as tx:
            await outbox.mark_failed(tx, row.id, error=error.reason, now=self._clock.now())
        metrics.MAILS.labels(kind=row.kind, outcome="failed").inc()
        metrics.MAIL_FAILURES.labels(kind=row.kind, reason_class="permanent").inc()
        logger.error("outbox %s (%s to %s, key %s) failed permanently: %s", *context, error.reason)
        if probing:
            # SES judged this message itself: the account-wide problem is gone.
            self._close_breaker()
        return Outcome.FAILED

    async def account_wide(
        self,
        row: ClaimedMail,
        error: PermanentSendError,
        context: tuple[object, ...],
        *,
        probing: bool,
    ) -> Outcome:
        metrics.MAIL_FAILURES.labels(kind=row.kind, reason_class="account_wide").inc()
        now = self._clock.now()
        breaker = self._breaker
        if breaker.is_open:
            # A probe, or a send that was already in flight when the breaker opened: the row
            # is not this message's fault. It goes back to the queue (its code may still
            # leave once SES is fixed, or it expires).
            async with self._database.single_statement() as tx:
                await outbox.mark_retry(tx, row.id, error=error.reason, retry_at=now, now=now)
            if probing:
                breaker.probe_failed()
                logger.error(
                    "mail delivery still stopped: SES refused the probe (outbox %s, key %s): "
                    "%s; next probe in %.0f s",
                    row.id,
                    row.idempotency_key,
                    error.reason,
                    breaker.probe_seconds,
                )
            return Outcome.ACCOUNT_WIDE
        # Opened before the next await, so the sends still in flight see it open.
        breaker.open()
        async with self._database.single_statement() as tx:
            await outbox.mark_failed(tx, row.id, error=error.reason, now=now)
        metrics.MAILS.labels(kind=row.kind, outcome="failed").inc()
        logger.error(
            "ALARM: mail delivery stopped: SES refuses every mail (%s). Outbox %s (%s to %s, "
            "key %s) failed; the other mails stay queued and expire with their codes. Probing "
            "SES every %.0f s; check the set-up with `taxease-auth doctor`.",
            error.reason,
            *context,
            breaker.probe_seconds,
        )
        return Outcome.ACCOUNT_WIDE
