"""Outbox rows: mail the API promised to send, written in the same transaction as its code.

The worker claims due rows under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
ignores the clause, so there one worker runs, held to it by ``SqliteWorkerLock``), then records
one final or retry outcome per row. A row whose lease ran out (its worker died) is claimed
again. Bodies hold live codes: they are cleared as soon as a row is sent or expired, and for a
failed row once its code has expired.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.config import Settings
from taxease_auth.store.mail_rows import RenderedMail
from taxease_auth.store.models import DeliveryState, EmailOutbox, OutboxStatus
from taxease_auth.store.sql import Statement, Transaction, utc, utc_required

LAST_ERROR_MAX = 500


_ENQUEUE = Statement("""
    INSERT INTO email_outbox (recipient, kind, otp_id, subject, html_body, text_body, status,
                              attempts, next_attempt_at, send_before, idempotency_key,
                              created_at, updated_at)
    VALUES (:recipient, :kind, :otp_id, :subject, :html_body, :text_body, 'pending',
            0, :now, :send_before, :idempotency_key, :now, :now)
""")


def new_idempotency_key() -> str:
    """A queued mail's key: random, unique (the column is), logged and tagged on the send."""
    return secrets.token_hex(16)


async def enqueue(
    tx: Transaction,
    *,
    recipient: str,
    kind: str,
    mail: RenderedMail,
    otp_id: int | None,
    send_before: datetime,
    now: datetime,
) -> str:
    """Queue a mail; its idempotency key (in the worker's logs and the SES tags)."""
    idempotency_key = new_idempotency_key()
    await tx.run(
        _ENQUEUE,
        recipient=recipient,
        kind=kind,
        otp_id=otp_id,
        subject=mail.subject,
        html_body=mail.html,
        text_body=mail.text,
        now=now,
        send_before=send_before,
        idempotency_key=idempotency_key,
    )
    return idempotency_key


@dataclass(frozen=True, slots=True)
class ClaimedMail:
    """A row as the worker claimed it: what sending it and recording its outcome need."""

    id: int
    recipient: str
    kind: str
    subject: str
    html_body: str | None
    text_body: str | None
    attempts: int
    next_attempt_at: datetime
    send_before: datetime | None
    last_error: str | None
    idempotency_key: str
    # On the suppression list when claimed: the worker ends the row instead of sending it.
    suppressed: bool = False


_CLAIM = """
    {due}
    UPDATE email_outbox
    SET lease_expires_at = :lease_until, leased_by = :worker_id, updated_at = :now
    WHERE id IN ({ids})
    RETURNING id, recipient, kind, subject, html_body, text_body, attempts, next_attempt_at,
              send_before, last_error, idempotency_key,
              EXISTS (SELECT 1 FROM suppressed_addresses
                      WHERE suppressed_addresses.email = email_outbox.recipient)
"""
_DUE = """
    SELECT id FROM email_outbox
    WHERE status = 'pending' AND next_attempt_at <= :now
      AND (lease_expires_at IS NULL OR lease_expires_at < :now)
    ORDER BY next_attempt_at, id
    LIMIT :limit
"""
# PostgreSQL: rows another worker's claim holds are skipped, never waited for. The locking
# choice runs once, in a materialised CTE: as an IN subquery the planner may run it again for
# each row it updates, and each run skips the rows the statement itself just locked and takes
# the next ones, so a claim of 4 leased 10 (CI, tests/store/test_postgres_races.py). SQLite has
# no row locks (and no such clause): there one worker claims, held to it by SqliteWorkerLock.
_CLAIMS = {
    "sqlite": Statement(_CLAIM.format(due="", ids=_DUE)),
    "postgresql": Statement(
        _CLAIM.format(
            due=f"WITH due AS MATERIALIZED ({_DUE} FOR UPDATE SKIP LOCKED)",
            ids="SELECT id FROM due",
        )
    ),
}


async def claim_due(
    tx: Transaction, *, worker_id: str, now: datetime, lease: timedelta, limit: int
) -> list[ClaimedMail]:
    """Lease up to ``limit`` due pending rows to ``worker_id``, oldest due first: rows never
    leased, or whose worker let the lease run out (it died).

    SQL text on the driver (``store/sql.py``), like the request path: the claim and the
    outcome run once per mail, and through the ORM they cost more CPU than the send itself
    (`make bench`, request-otp, where the worker shares the server's core).
    """
    rows = await tx.all(
        _CLAIMS[tx.dialect], lease_until=now + lease, worker_id=worker_id, now=now, limit=limit
    )
    claimed = [
        ClaimedMail(
            id=row[0],
            recipient=row[1],
            kind=row[2],
            subject=row[3],
            html_body=row[4],
            text_body=row[5],
            attempts=row[6],
            next_attempt_at=utc_required(row[7]),
            send_before=utc(row[8]),
            last_error=row[9],
            idempotency_key=row[10],
            suppressed=bool(row[11]),
        )
        for row in rows
    ]
    return sorted(claimed, key=lambda mail: (mail.next_attempt_at, mail.id))


def _unleased(now: datetime) -> ColumnElement[bool]:
    """No worker holds the row: never leased, or its worker let the lease run out (died)."""
    return (EmailOutbox.lease_expires_at.is_(None)) | (EmailOutbox.lease_expires_at < now)


def _outcome(changes: str = "") -> Statement:
    """Every outcome ends the lease, and applies only to a row still pending: a worker whose
    lease ran out while SES was slow never overwrites what the worker that took the row over
    recorded."""
    # The fragments are this module's constants, never input.
    return Statement(f"""
        UPDATE email_outbox
        SET {changes}lease_expires_at = NULL, leased_by = NULL, updated_at = :now
        WHERE id = :id AND status = 'pending'
    """)  # noqa: S608


_SENT = _outcome(
    "status = 'sent', attempts = attempts + 1, provider_message_id = :provider_id, "
    "sent_at = :now, html_body = NULL, text_body = NULL, last_error = NULL, "
    "delivery_state = :delivery_state, "
)
_RELEASE = _outcome()
_RETRY = _outcome("attempts = attempts + 1, next_attempt_at = :retry_at, last_error = :error, ")
# The body stays until the code expires, so an operator can still retry the row.
_FAILED = _outcome("status = 'failed', attempts = attempts + 1, last_error = :error, ")
_EXPIRED = _outcome("status = 'expired', html_body = NULL, text_body = NULL, ")
_SUPPRESSED = _outcome("status = 'suppressed', html_body = NULL, text_body = NULL, ")


async def mark_sent(
    tx: Transaction, row_id: int, *, provider_message_id: str | None, now: datetime
) -> None:
    # Accepted by the provider when it gave an id: SES's events move the state on from there.
    state = DeliveryState.ACCEPTED.value if provider_message_id else None
    await tx.run(_SENT, id=row_id, provider_id=provider_message_id, delivery_state=state, now=now)


async def release(tx: Transaction, row_id: int, *, now: datetime) -> None:
    """Give a claimed row back untried (the worker stops, or got no sending turn in time):
    it is due again at once, for any worker."""
    await tx.run(_RELEASE, id=row_id, now=now)


async def mark_retry(
    tx: Transaction, row_id: int, *, error: str, retry_at: datetime, now: datetime
) -> None:
    await tx.run(_RETRY, id=row_id, error=error[:LAST_ERROR_MAX], retry_at=retry_at, now=now)


async def mark_failed(tx: Transaction, row_id: int, *, error: str, now: datetime) -> None:
    await tx.run(_FAILED, id=row_id, error=error[:LAST_ERROR_MAX], now=now)


async def mark_expired(tx: Transaction, row_id: int, *, now: datetime) -> None:
    await tx.run(_EXPIRED, id=row_id, now=now)


async def mark_suppressed(tx: Transaction, row_id: int, *, now: datetime) -> None:
    """Final: not sent, the recipient is on the suppression list (its body cleared)."""
    await tx.run(_SUPPRESSED, id=row_id, now=now)


def _final(now: datetime) -> dict[str, object]:
    return {"lease_expires_at": None, "leased_by": None, "updated_at": now}


async def expire_overdue(session: AsyncSession, *, now: datetime) -> list[str]:
    """Mark expired every pending row whose code expired while no worker held it (the breaker
    was open, or no worker ran), clearing its body; returns the kinds of the rows expired."""
    result = await session.execute(
        update(EmailOutbox)
        .where(
            EmailOutbox.status == OutboxStatus.PENDING,
            EmailOutbox.send_before <= now,
            _unleased(now),
        )
        .values(status=OutboxStatus.EXPIRED, html_body=None, text_body=None, **_final(now))
        .returning(EmailOutbox.kind)
    )
    return list(result.scalars())


async def clear_dead_bodies(session: AsyncSession, *, now: datetime) -> int:
    """Clear the bodies of failed rows whose code has expired (no retry could send them any
    more); returns how many were cleared."""
    result = await session.execute(
        update(EmailOutbox)
        .where(
            EmailOutbox.status == OutboxStatus.FAILED,
            EmailOutbox.send_before <= now,
            (EmailOutbox.html_body.is_not(None)) | (EmailOutbox.text_body.is_not(None)),
        )
        .values(html_body=None, text_body=None, updated_at=now)
        .returning(EmailOutbox.id)
    )
    return len(result.scalars().all())


async def pending_summary(session: AsyncSession) -> tuple[int, datetime | None]:
    """How many rows are pending, and when the oldest of them was queued."""
    count = await session.scalar(
        select(func.count(EmailOutbox.id)).where(EmailOutbox.status == OutboxStatus.PENDING)
    )
    # ORDER BY + LIMIT rather than min(): the column's type (UTC restored on SQLite) applies.
    oldest = await session.scalar(
        select(EmailOutbox.created_at)
        .where(EmailOutbox.status == OutboxStatus.PENDING)
        .order_by(EmailOutbox.created_at)
        .limit(1)
    )
    return int(count or 0), oldest


class OutboxLocked(Exception):
    """Another delivery worker already delivers from this SQLite database."""


class SqliteWorkerLock:
    """One delivery worker per SQLite database: an exclusive ``flock`` on a file beside it.

    SQLite has no ``SKIP LOCKED``, so two workers could claim the same row. The kernel drops
    the lock when its process dies, however it dies, so a crash never leaves a stale lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ``OutboxLocked`` at once when another worker holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxLocked(
                "another delivery worker already runs on this SQLite database (it holds "
                f"{self.path}): run one worker only (one `serve` process with EMBEDDED_WORKER, "
                "or EMBEDDED_WORKER=false and one `taxease-auth worker`), or use PostgreSQL"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (also done by the kernel when the process ends)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None


def sqlite_worker_lock(settings: Settings) -> SqliteWorkerLock | None:
    """The single-worker lock for a file SQLite database; None for PostgreSQL (rows are
    claimed with SKIP LOCKED) and for an in-memory database (no other process sees it)."""
    if not settings.is_sqlite:
        return None
    database = make_url(settings.database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    path = Path(database)
    return SqliteWorkerLock(path.with_name(f"{path.name}.worker-lock"))
