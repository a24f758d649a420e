"""The delivery loop: claim due outbox rows, send them concurrently, record each outcome.

The request path only writes outbox rows and wakes this loop; SES latency and errors never
reach a client. Transient failures are retried with exponential backoff and jitter until the
row's code expires; permanent ones mark the row failed with the reason; a code whose expiry
passed before it could leave is never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth import metrics
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.mail.backends.base import MailBackend, PermanentSendError, TransientSendError
from taxease_auth.mail.message import Message
from taxease_auth.store import outbox
from taxease_auth.store.models import EmailOutbox

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


def backoff_delay(attempt: int) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max, base * 2**attempt)]."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** min(attempt, 16))
    return random.uniform(0, ceiling)  # noqa: S311 - spreading retries, not a secret


class DeliveryWorker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        backend: MailBackend,
        sender: str,
        clock: Clock,
        lease_seconds: int,
        batch_size: int = 20,
        poll_interval: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._backend = backend
        self._sender = sender
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self.worker_id = f"worker-{secrets.token_hex(4)}"

    def wake(self) -> None:
        """Ask the loop to look for work now (called after a request queued a mail)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; a batch in flight is finished before returning."""
        logger.info("delivery worker %s started (backend %s)", self.worker_id, self._backend.name)
        while not self._stopping.is_set():
            self._wakeup.clear()
            handled = await self.run_once()
            if handled == 0:
                await self._idle()
        logger.info("delivery worker %s stopped", self.worker_id)

    async def stop(self) -> None:
        self._stopping.set()
        self._wakeup.set()

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver it; returns how many rows were handled."""
        async with self._sessions.begin() as session:
            rows = await outbox.claim_due(
                session,
                worker_id=self.worker_id,
                now=self._clock.now(),
                lease=self._lease,
                limit=self._batch_size,
            )
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    async def _idle(self) -> None:
        wakeup = asyncio.ensure_future(self._wakeup.wait())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wakeup, timeout=self._poll_interval)

    async def _deliver(self, row: EmailOutbox) -> None:
        now = self._clock.now()
        log_context = (row.id, row.kind, mask_email(row.recipient), row.idempotency_key)
        if row.send_before is not None and row.send_before <= now:
            async with self._sessions.begin() as session:
                await outbox.mark_expired(session, row.id, now=now)
            metrics.MAILS.labels(kind=row.kind, outcome="expired").inc()
            logger.warning("outbox %s (%s to %s, key %s) expired before delivery", *log_context)
            return
        if row.html_body is None or row.text_body is None:
            async with self._sessions.begin() as session:
                await outbox.mark_failed(session, row.id, error="body missing", now=now)
            return
        message = Message(
            sender=self._sender,
            recipient=row.recipient,
            subject=row.subject,
            html=row.html_body,
            text=row.text_body,
            kind=row.kind,
            idempotency_key=row.idempotency_key,
        )
        started = asyncio.get_running_loop().time()
        try:
            result = await self._backend.send(message)
        except TransientSendError as error:
            retry_at = self._clock.now() + timedelta(seconds=backoff_delay(row.attempts))
            async with self._sessions.begin() as session:
                await outbox.mark_retry(
                    session, row.id, error=error.reason, retry_at=retry_at, now=self._clock.now()
                )
            metrics.MAILS.labels(kind=row.kind, outcome="retried").inc()
            logger.warning(
                "outbox %s (%s to %s, key %s) attempt %d failed, will retry: %s",
                *log_context,
                row.attempts + 1,
                error.reason,
            )
            return
        except PermanentSendError as error:
            async with self._sessions.begin() as session:
                await outbox.mark_failed(session, row.id, error=error.reason, now=self._clock.now())
            metrics.MAILS.labels(kind=row.kind, outcome="failed").inc()
            logger.error(
                "outbox %s (%s to %s, key %s) failed permanently%s: %s",
                *log_context,
                " (affects every mail: check the SES set-up with `taxease-auth doctor`)"
                if error.account_wide
                else "",
                error.reason,
            )
            return
        metrics.SEND_SECONDS.observe(asyncio.get_running_loop().time() - started)
        async with self._sessions.begin() as session:
            await outbox.mark_sent(
                session,
                row.id,
                provider_message_id=result.provider_message_id,
                now=self._clock.now(),
            )
        metrics.MAILS.labels(kind=row.kind, outcome="sent").inc()
        logger.info(
            "outbox %s (%s to %s, key %s) sent, provider id %s",
            *log_context,
            result.provider_message_id,
        )
