"""The delivery loop: claim due outbox rows, send them concurrently at SES's pace, record each
outcome.

The request path only writes outbox rows and wakes this loop; SES latency and errors never
reach a client. One dispatcher takes a sending turn from the pacer (``pacing.py``: shared
with every other worker through the rate-limit storage), claims one due row under a lease and
hands it to one of ``concurrency`` sends in flight, so the pace is set by SES's MaxSendRate,
not by one round trip at a time. Every outcome falls in one class (DESIGN.md §4):

- sent: the row is final, its body cleared;
- transient (throttling, 5xx, timeouts): retried with full-jitter exponential backoff until
  the code expires; a retry after a failure that may have hidden an accepted message is
  logged with the row's idempotency key as a "retry of possibly-sent message" (the same mail,
  never a new code);
- permanent for this message: the row fails with the reason, no retry;
- account-wide (paused, suspended, unverified sender, bad credentials...): the row fails with
  the reason and the circuit breaker opens: nothing else is sent, the other rows stay pending,
  an error is logged and ``taxease_mail_circuit_open`` is 1; every ``probe_seconds`` one row
  is tried, and the first success closes the breaker.

A code whose expiry passed before it could leave is never sent: the row ends ``expired``.
``stop()`` lets the sends in flight finish and record their outcome; a worker that dies
instead leaves its rows leased, and they are claimed again once the lease runs out.

The loop's parts have modules of their own: the failed sends' recording (``outcomes.py``),
the breaker (``breaker.py``), where the pace comes from (``send_rate.py``), the periodic
expiry, gauges and retention purge (``housekeeping.py``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
from collections.abc import Awaitable
from datetime import timedelta
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth import metrics
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.mail.backends.base import (
    MailBackend,
    PermanentSendError,
    TransientSendError,
)
from taxease_auth.mail.breaker import CircuitBreaker
from taxease_auth.mail.feedback import feedback_consumer
from taxease_auth.mail.feedback.suppressed import end_suppressed
from taxease_auth.mail.housekeeping import Housekeeping, Retention
from taxease_auth.mail.message import Message
from taxease_auth.mail.outcomes import POSSIBLY_SENT, FailedSends, Outcome
from taxease_auth.mail.pacing import SendPacer, shared_pacer
from taxease_auth.mail.send_rate import SendRateSource
from taxease_auth.mail.stopping import until_stopped
from taxease_auth.store import outbox
from taxease_auth.store.outbox import ClaimedMail
from taxease_auth.store.sql import Database, database_for

if TYPE_CHECKING:
    # boto3 comes with it: imported by build_worker only when the feedback queue is set.
    from taxease_auth.mail.feedback.consumer import FeedbackConsumer

# Retention moved to housekeeping.py; still importable from here, as before.
__all__ = ["DeliveryWorker", "Outcome", "Retention", "build_worker"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class DeliveryWorker:
    """Delivers the outbox through ``backend``.

    ``max_send_rate`` (SES_MAX_SEND_RATE) overrides what the backend reports; a backend that
    reports nothing and no override means unpaced (the console). ``pacer`` shares the pace
    with other workers (``build_worker`` gives it the rate-limit storage); by default it paces
    this worker alone. ``lock`` (SQLite: one worker) must be held to deliver: ``run()`` waits
    for it when another worker has it, and releases it when it ends. ``retention`` (None: no
    purge) is applied by the housekeeping at its first pass, then every ``retention.every`` by
    ``clock``. Claims and outcomes go through ``database`` (SQL text, ``store/sql.py``; by
    default one of the worker's own on ``sessions``' engine), the housekeeping through
    ``sessions`` (the ORM: once a poll, not once a mail).
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        backend: MailBackend,
        sender: str,
        clock: Clock,
        lease_seconds: int,
        concurrency: int = 10,
        pacer: SendPacer | None = None,
        max_send_rate: float | None = None,
        breaker_probe_seconds: float = 30.0,
        poll_interval: float = 1.0,
        lock: outbox.SqliteWorkerLock | None = None,
        retention: Retention | None = None,
        database: Database | None = None,
        feedback: FeedbackConsumer | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._sessions = sessions
        self._owns_database = database is None
        self._database = database if database is not None else database_for(sessions.kw["bind"])
        self._backend = backend
        self._sender = sender
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._concurrency = concurrency
        self._pacer = pacer if pacer is not None else SendPacer()
        self.breaker = CircuitBreaker(breaker_probe_seconds)
        self._failures = FailedSends(
            database=self._database,
            clock=clock,
            breaker=self.breaker,
            close_breaker=self._close_breaker,
        )
        self._poll_interval = poll_interval
        self._lock = lock
        self.feedback = feedback  # SES_FEEDBACK_QUEUE_URL's consumer, run beside delivery
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._in_flight: set[asyncio.Task[Outcome]] = set()
        # Rows claimed and not yet started (a claim takes a second's turns: _next_row).
        self._claimed: collections.deque[ClaimedMail] = collections.deque()
        self.worker_id = f"worker-{secrets.token_hex(4)}"
        self._rate = SendRateSource(
            backend=backend, pacer=self._pacer, override=max_send_rate, worker_id=self.worker_id
        )
        self._housekeeping = Housekeeping(
            sessions=sessions, clock=clock, retention=retention, worker_id=self.worker_id
        )

    @property
    def send_rate(self) -> float | None:
        """The MaxSendRate this worker paces to (None: unpaced, or not known yet)."""
        return self._pacer.rate

    def wake(self) -> None:
        """Ask the loop to look for work now (called after a request queued a mail)."""
        self._wakeup.set()

    async def stop(self) -> None:
        """Stop claiming; ``run()`` returns once the sends in flight have finished."""
        self._stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until ``stop()``; sends in flight are finished and recorded before returning.

        Cancelling the task instead (a crash) leaves claimed rows leased: another worker
        claims them again once the lease runs out.
        """
        logger.info(
            "delivery worker %s started (backend %s, %d sends at once)",
            self.worker_id,
            self._backend.name,
            self._concurrency,
        )
        maintenance: asyncio.Task[None] | None = None
        feedback_task: asyncio.Task[None] | None = None
        database_away: tuple[type[Exception], ...] = (
            SQLAlchemyError,
            OSError,
            *self._database.errors,
        )
        try:
            if not await self._until_stopped(self._take_lock()):
                return
            maintenance = asyncio.create_task(self._maintain())
            maintenance.add_done_callback(self._maintenance_ended)
            if self.feedback is not None:
                feedback_task = asyncio.create_task(self.feedback.run(self._database))
            await self._until_stopped(self._rate.refresh())
            while not self._stopping.is_set():
                try:
                    if await self._dispatch() is None:
                        await self._idle()
                except database_away as error:
                    # The database is away: the rows wait in it; try again after a pause.
                    logger.error(
                        "delivery worker %s cannot claim mail: %s",
                        self.worker_id,
                        type(error).__name__,
                    )
                    await self._idle(self._poll_interval)
            try:
                await self._release_claimed()
            except database_away as error:  # they come back when their lease runs out
                logger.error(
                    "delivery worker %s cannot give back its claimed mail: %s",
                    self.worker_id,
                    type(error).__name__,
                )
            await self._drain()
        except asyncio.CancelledError:
            # Killed rather than stopped: abandon the sends in flight, as a crash would. Their
            # rows stay leased and are claimed again once the lease runs out.
            for task in self._in_flight:
                task.cancel()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
            raise
        finally:
            if maintenance is not None:
                maintenance.cancel()
                await asyncio.gather(maintenance, return_exceptions=True)
            if feedback_task is not None and self.feedback is not None:
                await self.feedback.stop()
                await asyncio.gather(feedback_task, return_exceptions=True)
            self._pacer.close()
            if self._lock is not None:
                self._lock.release()
            await self._close_database()
            logger.info("delivery worker %s stopped", self.worker_id)

    async def _take_lock(self) -> bool:
        """Hold the single-worker lock (SQLite), waiting while another worker has it."""
        if self._lock is None:
            return True
        waited = False
        while True:
            try:
                self._lock.acquire()
            except outbox.OutboxLocked:
                waited = True
                await asyncio.sleep(self._poll_interval)
            else:
                if waited:
                    logger.warning("delivery worker %s takes over the outbox", self.worker_id)
                return True

    async def run_once(self) -> int:
        """Deliver every row due now (``concurrency`` at a time, paced), wait for the outcomes,
        then do the housekeeping; returns how many rows were handled."""
        if self._lock is not None:
            self._lock.acquire()  # OutboxLocked when another worker delivers
        if not self._rate.known:
            await self._rate.refresh()
        handled = 0
        try:
            while await self._dispatch() is not None:
                handled += 1
            await self._release_claimed()
            await self._drain()
            await self.housekeeping()
        finally:
            await self._close_database()
        return handled

    async def _close_database(self) -> None:
        # Only the worker's own (reopened if it runs again); a database given is its owner's.
        if self._owns_database:
            await self._database.close()

    # --- dispatching ---------------------------------------------------------------------

    async def _dispatch(self) -> asyncio.Task[Outcome] | None:
        """Start one send: a free slot, a claimed row, a pacing turn. None when nothing was
        started (no due row, breaker open and no probe due, no turn in time, or stopping).

        The row is claimed before its turn is awaited, so no turn is used up by a worker with
        nothing to send. Only this one dispatcher waits for turns, one row at a time, and a
        claim takes no more than a second's turns (``_next_row``), so a claimed row waits about
        a second per worker sharing the pace, well inside its lease; should it not get a turn
        within half the lease, it goes back to the queue with the rest of its claim.
        """
        await self._slots.acquire()
        started: asyncio.Task[Outcome] | None = None
        try:
            probing = self.breaker.is_open
            if probing and self.breaker.seconds_to_probe() > 0:
                await self._release_claimed()  # claimed with the send that opened it
                return None
            row = await self._next_row(probing=probing)
            if row is None:
                return None
            if self._needs_turn(row):
                max_wait = self._lease.total_seconds() / 2
                turn = (
                    True  # unpaced (the console): no turn to wait for
                    if self._pacer.turns_per_second is None
                    else await self._until_stopped(self._pacer.acquire(max_wait))
                )
                if not turn or (self.breaker.is_open and not probing):
                    self._claimed.appendleft(row)
                    await self._release_claimed()
                    if turn is False:
                        logger.warning(
                            "delivery worker %s: no sending turn within %.0f s; outbox %s goes "
                            "back to the queue",
                            self.worker_id,
                            max_wait,
                            row.id,
                        )
                        await self._idle(self._poll_interval)
                    return None
            started = asyncio.create_task(self._deliver(row, probing=probing))
            self._in_flight.add(started)
            started.add_done_callback(self._finished)
        finally:
            if started is None:
                self._slots.release()
        if probing:
            # One probe at a time: its outcome decides whether the breaker closes.
            await asyncio.wait({started})
        return started

    def _needs_turn(self, row: ClaimedMail) -> bool:
        """Whether delivering ``row`` calls the backend (an expired or bodyless row does not)."""
        expired = row.send_before is not None and row.send_before <= self._clock.now()
        return not expired and row.html_body is not None and row.text_body is not None

    async def _next_row(self, *, probing: bool) -> ClaimedMail | None:
        """The next claimed row; when none is left, a new claim (one transaction per batch,
        not per mail) of one second's sending turns, at most ``concurrency`` (unpaced: that
        many; probing: one). Claimed rows wait for a slot and a turn: a second's worth keeps
        that wait short and far inside the lease, and leaves the rest to other workers."""
        if not self._claimed:
            turns = self._pacer.turns_per_second
            limit = (
                self._concurrency if turns is None else max(1, min(self._concurrency, int(turns)))
            )
            if probing:
                limit = 1
            async with self._database.single_statement() as tx:
                rows = await outbox.claim_due(
                    tx, worker_id=self.worker_id, now=self._clock.now(), lease=self._lease,
                    limit=limit,
                )  # fmt: skip
            self._claimed.extend(rows)
        return self._claimed.popleft() if self._claimed else None

    async def _release_claimed(self) -> None:
        """Give back the rows claimed and not started (stopping, breaker open, no turn)."""
        if not self._claimed:
            return
        rows, now = list(self._claimed), self._clock.now()
        self._claimed.clear()
        async with self._database.transaction() as tx:
            for row in rows:
                await outbox.release(tx, row.id, now=now)

    def _maintenance_ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "delivery worker %s: housekeeping stopped on an unexpected error",
                self.worker_id,
                exc_info=task.exception(),
            )

    def _finished(self, task: asyncio.Task[Outcome]) -> None:
        self._in_flight.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "delivery worker %s: a send ended with an unexpected error",
                self.worker_id,
                exc_info=task.exception(),
            )

    async def _drain(self) -> None:
        """Wait for every send in flight to finish and record its outcome."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _idle(self, seconds: float | None = None) -> None:
        """Wait for a wake-up, the next poll (or ``seconds``), a due probe, or stop."""
        if seconds is None:
            seconds = self._poll_interval
            to_probe = self.breaker.seconds_to_probe()
            if to_probe > 0:
                seconds = min(seconds, to_probe)
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout=seconds)
        except TimeoutError:
            pass
        else:
            if not self._stopping.is_set():
                self._wakeup.clear()

    def _until_stopped(self, awaitable: Awaitable[_T]) -> Awaitable[_T | None]:
        """``awaitable``'s result, or None (and it is cancelled) when stop() comes first."""
        return until_stopped(awaitable, self._stopping)

    # --- one row ---------------------------------------------------------------------------

    async def _deliver(self, row: ClaimedMail, *, probing: bool) -> Outcome:
        if row.suppressed:
            await end_suppressed(self._database, row, clock=self._clock)
            return Outcome.SUPPRESSED
        now = self._clock.now()
        context = (row.id, row.kind, mask_email(row.recipient), row.idempotency_key)
        if row.send_before is not None and row.send_before <= now:
            async with self._database.single_statement() as tx:
                await outbox.mark_expired(tx, row.id, now=now)
            metrics.MAILS.labels(kind=row.kind, outcome="expired").inc()
            logger.warning("outbox %s (%s to %s, key %s) expired before delivery", *context)
            return Outcome.EXPIRED
        if row.html_body is None or row.text_body is None:
            async with self._database.single_statement() as tx:
                await outbox.mark_failed(tx, row.id, error="body missing", now=now)
            metrics.MAILS.labels(kind=row.kind, outcome="failed").inc()
            metrics.MAIL_FAILURES.labels(kind=row.kind, reason_class="invalid").inc()
            logger.error("outbox %s (%s to %s, key %s) has no body: not sent", *context)
            return Outcome.FAILED
        if row.last_error is not None and row.last_error.startswith(POSSIBLY_SENT):
            logger.warning(
                "outbox %s (%s to %s, key %s): retry of possibly-sent message (attempt %d); "
                "the recipient may get this same mail twice",
                *context,
                row.attempts + 1,
            )
        message = Message(
            sender=self._sender,
            recipient=row.recipient,
            subject=row.subject,
            html=row.html_body,
            text=row.text_body,
            kind=row.kind,
            idempotency_key=row.idempotency_key,
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            result = await self._backend.send(message)
        except TransientSendError as error:
            return await self._failures.retry_later(row, error, context, probing=probing)
        except PermanentSendError as error:
            if error.account_wide:
                return await self._failures.account_wide(row, error, context, probing=probing)
            return await self._failures.fail(row, error, context, probing=probing)
        metrics.SEND_SECONDS.observe(loop.time() - started)
        # One statement each (claims, outcomes): on PostgreSQL without BEGIN and COMMIT, which
        # cost more CPU per mail than the rest of its delivery (`make bench`, request-otp).
        async with self._database.single_statement() as tx:
            await outbox.mark_sent(
                tx,
                row.id,
                provider_message_id=result.provider_message_id,
                now=self._clock.now(),
            )
        metrics.MAILS.labels(kind=row.kind, outcome="sent").inc()
        logger.info(
            "outbox %s (%s to %s, key %s) sent, provider id %s",
            *context,
            result.provider_message_id,
        )
        if probing:
            self._close_breaker()
        return Outcome.SENT

    def _close_breaker(self) -> None:
        if self.breaker.is_open:
            self.breaker.close()
            logger.warning("mail delivery resumed: SES accepts mail again")
            self._wakeup.set()

    # --- rate and housekeeping -----------------------------------------------------------

    async def _maintain(self) -> None:
        """Every poll interval: housekeeping and metrics; the rate when it is due again."""
        while True:
            await asyncio.sleep(self._poll_interval)
            if self._rate.due():
                await self._rate.refresh()
            try:
                await self.housekeeping()
            except (SQLAlchemyError, OSError) as error:
                logger.error("outbox housekeeping failed: %s", type(error).__name__)

    async def housekeeping(self) -> None:
        """One housekeeping pass (``mail/housekeeping.py``): expire, clear dead bodies, update
        the outbox gauges, and purge when the retention rules are due."""
        await self._housekeeping.run()


def build_worker(
    settings: Settings,
    *,
    sessions: async_sessionmaker[AsyncSession],
    backend: MailBackend,
    clock: Clock,
    standby: bool = True,
    database: Database | None = None,
) -> DeliveryWorker:
    """The delivery worker the settings describe, pacing through the rate-limit storage.

    On SQLite one worker delivers (``outbox.SqliteWorkerLock``). When another worker (another
    process, or another app in this one) already holds the database: with ``standby`` (the
    server's embedded worker) this one waits and takes over when that one stops, so the
    server still starts; without (``taxease-auth worker``) ``outbox.OutboxLocked`` is raised.
    """
    lock = outbox.sqlite_worker_lock(settings)
    if lock is not None:
        try:
            lock.acquire()
        except outbox.OutboxLocked as error:
            if not standby:
                raise
            logger.warning("%s. This process's delivery worker stands by meanwhile.", error)
    return DeliveryWorker(
        sessions=sessions,
        backend=backend,
        sender=settings.sender or "",
        clock=clock,
        lease_seconds=settings.outbox_lease_seconds,
        concurrency=settings.outbox_worker_concurrency,
        pacer=shared_pacer(settings.rate_limit_storage_url),
        max_send_rate=settings.ses_max_send_rate,
        breaker_probe_seconds=settings.mail_breaker_probe_seconds,
        lock=lock,
        retention=Retention.from_settings(settings),
        database=database,
        feedback=feedback_consumer(settings, clock=clock),
    )
