"""Operator changes to stored state: send a failed mail again (`taxease-auth outbox retry`) and
enforce retention (`taxease-auth purge`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store import audit
from taxease_auth.store.models import EmailOutbox, Otp, OutboxStatus, Session
from taxease_auth.store.outbox import clear_dead_bodies

FINAL_STATUSES = (
    OutboxStatus.SENT,
    OutboxStatus.FAILED,
    OutboxStatus.EXPIRED,
    OutboxStatus.SUPPRESSED,
)


class RetryRefused(Exception):
    """The row cannot be sent again; the message says why (safe to print)."""


async def retry_failed(
    session: AsyncSession, row_id: int, *, now: datetime, max_attempts: int
) -> None:
    """Set failed outbox row ``row_id`` back to pending, due now.

    Refuses (``RetryRefused``) unless the row failed, still has its body, and its code is still
    worth sending: not expired, not used, not replaced by a newer code, not killed by
    ``max_attempts`` wrong tries. The update re-checks status, body and expiry itself, so a
    concurrent change cannot slip between the checks and the write.
    """
    row = (
        await session.execute(
            select(
                EmailOutbox.status,
                EmailOutbox.send_before,
                EmailOutbox.otp_id,
                (EmailOutbox.html_body.is_not(None) & EmailOutbox.text_body.is_not(None)),
            ).where(EmailOutbox.id == row_id)
        )
    ).first()
    if row is None:
        raise RetryRefused(f"no outbox row {row_id}")
    status, send_before, otp_id, has_body = row
    if status != OutboxStatus.FAILED:
        raise RetryRefused(f"outbox row {row_id} is {status}: only failed rows are retried")
    if send_before is not None and send_before <= now:
        raise RetryRefused(
            f"the code in outbox row {row_id} expired at {send_before:%Y-%m-%d %H:%M:%S} UTC: "
            "the user must ask for a new one"
        )
    if not has_body:
        raise RetryRefused(f"outbox row {row_id} has no body any more: nothing to send")
    if otp_id is not None:
        await _check_code_still_useful(session, otp_id, row_id=row_id, max_attempts=max_attempts)
    result = await session.execute(
        update(EmailOutbox)
        .where(
            EmailOutbox.id == row_id,
            EmailOutbox.status == OutboxStatus.FAILED,
            EmailOutbox.html_body.is_not(None),
            EmailOutbox.text_body.is_not(None),
            EmailOutbox.send_before.is_(None) | (EmailOutbox.send_before > now),
        )
        .values(
            status=OutboxStatus.PENDING,
            next_attempt_at=now,
            lease_expires_at=None,
            leased_by=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    changed: int = result.rowcount  # type: ignore[attr-defined]
    if changed != 1:
        raise RetryRefused(f"outbox row {row_id} changed meanwhile: look at it again")


async def _check_code_still_useful(
    session: AsyncSession, otp_id: int, *, row_id: int, max_attempts: int
) -> None:
    code = (
        await session.execute(
            select(Otp.used, Otp.retired_at, Otp.attempts).where(Otp.id == otp_id)
        )
    ).first()
    if code is None:
        raise RetryRefused(f"the code of outbox row {row_id} is gone (purged)")
    used, retired_at, attempts = code
    if used:
        raise RetryRefused(f"the code in outbox row {row_id} was already used")
    if retired_at is not None:
        raise RetryRefused(
            f"the code in outbox row {row_id} was replaced by a newer one: sending it would "
            "only confuse the user"
        )
    if attempts >= max_attempts:
        raise RetryRefused(f"the code in outbox row {row_id} is dead (too many wrong tries)")


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    codes: int
    outbox_rows: int
    bodies_cleared: int
    audit_events: int
    sessions: int


async def purge(
    session: AsyncSession,
    *,
    now: datetime,
    codes_older_than: timedelta,
    outbox_older_than: timedelta,
    audit_older_than: timedelta,
    session_idle: timedelta,
) -> PurgeCounts:
    """Delete codes that expired more than ``codes_older_than`` ago (used, retired or not) and
    final outbox rows (sent, failed, expired, suppressed) last changed more than
    ``outbox_older_than`` ago (their mail events with them), and audit events older than
    ``audit_older_than``; clear the bodies of failed rows whose code has expired; delete
    sessions (their refresh tokens with them) that ended, reached their maximum age or went
    idle for ``session_idle`` more than ``codes_older_than`` ago — nothing can revive them, and
    the audit trail keeps how each ended. Returns the counts.

    Call inside a transaction; a dry run is this call followed by a rollback, so its counts are
    exactly what a real run would remove.
    """
    bodies = await clear_dead_bodies(session, now=now)
    outbox_result = await session.execute(
        delete(EmailOutbox)
        .where(
            EmailOutbox.status.in_(FINAL_STATUSES),
            EmailOutbox.updated_at < now - outbox_older_than,
        )
        .execution_options(synchronize_session=False)
    )
    # Outbox rows still kept point at their code with ON DELETE SET NULL: `why` then lists
    # them among the address's other mails.
    codes_result = await session.execute(
        delete(Otp)
        .where(Otp.expires_at < now - codes_older_than)
        .execution_options(synchronize_session=False)
    )
    dead_before = now - codes_older_than
    sessions_result = await session.execute(
        delete(Session)
        .where(
            or_(
                Session.ended_at < dead_before,
                Session.expires_at < dead_before,
                Session.last_used_at < dead_before - session_idle,
            )
        )
        .execution_options(synchronize_session=False)
    )
    return PurgeCounts(
        codes=int(codes_result.rowcount),  # type: ignore[attr-defined]
        outbox_rows=int(outbox_result.rowcount),  # type: ignore[attr-defined]
        bodies_cleared=bodies,
        audit_events=await audit.purge_before(session, now - audit_older_than),
        sessions=int(sessions_result.rowcount),  # type: ignore[attr-defined]
    )
