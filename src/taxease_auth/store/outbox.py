"""Outbox rows: mail the API promised to send, written in the same transaction as its code.

The worker claims due rows under a lease (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
ignores the clause and runs a single worker), then records one final or retry outcome per row.
Bodies hold live codes, so they are cleared as soon as a row is sent or expired.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.mail.message import RenderedMail
from taxease_auth.store.models import EmailOutbox, OutboxStatus

LAST_ERROR_MAX = 500


async def enqueue(
    session: AsyncSession,
    *,
    recipient: str,
    kind: str,
    mail: RenderedMail,
    otp_id: int | None,
    send_before: datetime,
    now: datetime,
) -> EmailOutbox:
    row = EmailOutbox(
        recipient=recipient,
        kind=kind,
        otp_id=otp_id,
        subject=mail.subject,
        html_body=mail.html,
        text_body=mail.text,
        status=OutboxStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        send_before=send_before,
        idempotency_key=secrets.token_hex(16),
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return row


async def claim_due(
    session: AsyncSession, *, worker_id: str, now: datetime, lease: timedelta, limit: int
) -> list[EmailOutbox]:
    """Lease up to ``limit`` due pending rows to ``worker_id`` (call inside a transaction)."""
    due = (
        select(EmailOutbox.id)
        .where(
            EmailOutbox.status == OutboxStatus.PENDING,
            EmailOutbox.next_attempt_at <= now,
            (EmailOutbox.lease_expires_at.is_(None)) | (EmailOutbox.lease_expires_at < now),
        )
        .order_by(EmailOutbox.next_attempt_at, EmailOutbox.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await session.execute(due)).scalars())
    if not ids:
        return []
    await session.execute(
        update(EmailOutbox)
        .where(EmailOutbox.id.in_(ids))
        .values(lease_expires_at=now + lease, leased_by=worker_id, updated_at=now)
    )
    rows = await session.execute(
        select(EmailOutbox)
        .where(EmailOutbox.id.in_(ids))
        .order_by(EmailOutbox.id)
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars())


def _final(now: datetime) -> dict[str, object]:
    return {"lease_expires_at": None, "leased_by": None, "updated_at": now}


async def mark_sent(
    session: AsyncSession, row_id: int, *, provider_message_id: str | None, now: datetime
) -> None:
    await session.execute(
        update(EmailOutbox)
        .where(EmailOutbox.id == row_id)
        .values(
            status=OutboxStatus.SENT,
            attempts=EmailOutbox.attempts + 1,
            provider_message_id=provider_message_id,
            sent_at=now,
            html_body=None,
            text_body=None,
            last_error=None,
            **_final(now),
        )
    )


async def mark_retry(
    session: AsyncSession, row_id: int, *, error: str, retry_at: datetime, now: datetime
) -> None:
    await session.execute(
        update(EmailOutbox)
        .where(EmailOutbox.id == row_id)
        .values(
            attempts=EmailOutbox.attempts + 1,
            next_attempt_at=retry_at,
            last_error=error[:LAST_ERROR_MAX],
            **_final(now),
        )
    )


async def mark_failed(session: AsyncSession, row_id: int, *, error: str, now: datetime) -> None:
    # The body stays until the code expires, so an operator can still retry the row.
    await session.execute(
        update(EmailOutbox)
        .where(EmailOutbox.id == row_id)
        .values(
            status=OutboxStatus.FAILED,
            attempts=EmailOutbox.attempts + 1,
            last_error=error[:LAST_ERROR_MAX],
            **_final(now),
        )
    )


async def mark_expired(session: AsyncSession, row_id: int, *, now: datetime) -> None:
    await session.execute(
        update(EmailOutbox)
        .where(EmailOutbox.id == row_id)
        .values(status=OutboxStatus.EXPIRED, html_body=None, text_body=None, **_final(now))
    )
