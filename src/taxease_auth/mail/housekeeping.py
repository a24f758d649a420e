"""The delivery worker's housekeeping: every pass it expires queued codes that can no longer
leave, clears dead bodies and updates the outbox gauges; when due it applies the retention
rules of `taxease-auth purge` (HOUSEKEEPING_INTERVAL_SECONDS; DESIGN.md "Retention").

The worker calls ``Housekeeping.run()`` once a poll interval (``DeliveryWorker._maintain``)
and after ``run_once()``; it goes through the ORM sessions, not the worker's SQL text.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth import metrics
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.store import housekeeping as retention_rules
from taxease_auth.store import outbox

logger = logging.getLogger(__name__)

# Codes are kept this long past their expiry (as `taxease-auth purge --code-margin-hours`'s
# default), so `why` can still explain yesterday's failure.
PURGE_CODES_AFTER = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Retention:
    """The retention rules of `taxease-auth purge`, applied by the worker every ``every``
    (HOUSEKEEPING_INTERVAL_SECONDS): codes expired more than ``codes_older_than`` ago, final
    outbox rows older than OUTBOX_RETENTION_DAYS, audit events older than
    AUDIT_RETENTION_DAYS, sessions dead (ended, expired, idle SESSION_IDLE_DAYS) for longer
    than ``codes_older_than``."""

    every: timedelta
    outbox_older_than: timedelta
    audit_older_than: timedelta
    session_idle: timedelta
    codes_older_than: timedelta = PURGE_CODES_AFTER

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention | None:
        """None when HOUSEKEEPING_INTERVAL_SECONDS is 0 (the purge runs from cron instead)."""
        if not settings.housekeeping_interval_seconds:
            return None
        return cls(
            every=timedelta(seconds=settings.housekeeping_interval_seconds),
            outbox_older_than=timedelta(days=settings.outbox_retention_days),
            audit_older_than=timedelta(days=settings.audit_retention_days),
            session_idle=timedelta(days=settings.session_idle_days),
        )


class Housekeeping:
    """One worker's housekeeping. ``retention`` (None: no purge) is applied at the first pass,
    then every ``retention.every`` by ``clock``; ``worker_id`` names the worker in its logs."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        retention: Retention | None,
        worker_id: str,
    ) -> None:
        self._sessions = sessions
        self._clock = clock
        self._retention = retention
        self._worker_id = worker_id
        self._purge_at: datetime | None = None  # None: due at the next pass

    async def run(self) -> None:
        """Expire pending rows whose code expired, clear the bodies of failed rows whose code
        expired, update the outbox gauges, and apply the retention rules when they are due."""
        now = self._clock.now()
        async with self._sessions.begin() as session:
            expired = await outbox.expire_overdue(session, now=now)
            await outbox.clear_dead_bodies(session, now=now)
            pending, oldest = await outbox.pending_summary(session)
        for kind in expired:
            metrics.MAILS.labels(kind=kind, outcome="expired").inc()
        if expired:
            logger.warning(
                "%d queued mails expired with their codes before they could leave", len(expired)
            )
        metrics.OUTBOX_PENDING.set(pending)
        metrics.OUTBOX_OLDEST_PENDING_SECONDS.set(
            max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0
        )
        await self._purge_if_due(now)

    async def _purge_if_due(self, now: datetime) -> None:
        """The retention purge, when due by this worker's clock.

        With several workers (PostgreSQL) each one purges on its own schedule, where one
        would be enough; that is harmless: the deletes are idempotent (whoever comes second
        finds nothing left), and should two overlap and PostgreSQL pick one as a deadlock
        victim, it is logged and done at the next interval.
        """
        retention = self._retention
        if retention is None or (self._purge_at is not None and now < self._purge_at):
            return
        # Scheduled before running: a purge that fails is tried again at the next interval,
        # not at every pass.
        self._purge_at = now + retention.every
        async with self._sessions.begin() as session:
            counts = await retention_rules.purge(
                session,
                now=now,
                codes_older_than=retention.codes_older_than,
                outbox_older_than=retention.outbox_older_than,
                audit_older_than=retention.audit_older_than,
                session_idle=retention.session_idle,
            )
        metrics.PURGED.labels(table="otps").inc(counts.codes)
        metrics.PURGED.labels(table="email_outbox").inc(counts.outbox_rows)
        metrics.PURGED.labels(table="audit_events").inc(counts.audit_events)
        metrics.PURGED.labels(table="sessions").inc(counts.sessions)
        deleted = counts.codes + counts.outbox_rows + counts.audit_events + counts.sessions
        logger.log(
            logging.INFO if deleted else logging.DEBUG,
            "retention purge by %s: deleted %d code(s), %d outbox row(s), %d audit event(s), "
            "%d session(s); next in %s",
            self._worker_id,
            counts.codes,
            counts.outbox_rows,
            counts.audit_events,
            counts.sessions,
            retention.every,
        )
