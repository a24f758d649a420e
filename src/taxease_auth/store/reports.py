"""Read-only questions an operator asks of the outbox and the codes (`taxease-auth outbox`,
`taxease-auth why`).

Every query names its columns: code hashes, pending password hashes and mail bodies (which
hold live codes) are never even loaded, so no report can print them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store import mail_events, suppression
from taxease_auth.store.models import (
    EmailOutbox,
    MailEvent,
    Otp,
    OutboxStatus,
    SuppressedAddress,
    User,
)
from taxease_auth.store.outbox import pending_summary


@dataclass(frozen=True, slots=True)
class MailRow:
    """One outbox row, without its body."""

    id: int
    recipient: str
    kind: str
    otp_id: int | None
    status: str
    attempts: int
    created_at: datetime
    updated_at: datetime
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    send_before: datetime | None
    sent_at: datetime | None
    last_error: str | None
    provider_message_id: str | None
    idempotency_key: str
    has_body: bool
    delivery_state: str | None = None


_MAIL_COLUMNS = (
    EmailOutbox.id,
    EmailOutbox.recipient,
    EmailOutbox.kind,
    EmailOutbox.otp_id,
    EmailOutbox.status,
    EmailOutbox.attempts,
    EmailOutbox.created_at,
    EmailOutbox.updated_at,
    EmailOutbox.next_attempt_at,
    EmailOutbox.lease_expires_at,
    EmailOutbox.send_before,
    EmailOutbox.sent_at,
    EmailOutbox.last_error,
    EmailOutbox.provider_message_id,
    EmailOutbox.idempotency_key,
    (EmailOutbox.html_body.is_not(None) & EmailOutbox.text_body.is_not(None)).label("has_body"),
    EmailOutbox.delivery_state,
)


async def outbox_rows(
    session: AsyncSession, *, status: OutboxStatus | None = None, limit: int = 20
) -> list[MailRow]:
    """The newest ``limit`` outbox rows, optionally of one status, newest first."""
    query = select(*_MAIL_COLUMNS).order_by(EmailOutbox.id.desc()).limit(limit)
    if status is not None:
        query = query.where(EmailOutbox.status == status)
    return [MailRow(**row._mapping) for row in await session.execute(query)]


@dataclass(frozen=True, slots=True)
class OutboxStats:
    by_status: dict[str, int]
    pending_due: int
    pending_in_flight: int
    pending_waiting: int
    oldest_pending_created_at: datetime | None
    # The most frequent last errors of rows that failed recently, most frequent first.
    recent_failures: list[tuple[str, int]]


async def outbox_stats(
    session: AsyncSession, *, now: datetime, failures_since: timedelta = timedelta(days=1)
) -> OutboxStats:
    """Counts by status; pending rows split into due now, being sent (leased) and waiting for a
    retry; the oldest pending row's age; the commonest recent failure reasons."""
    counts = await session.execute(
        select(EmailOutbox.status, func.count(EmailOutbox.id)).group_by(EmailOutbox.status)
    )
    by_status = {str(status): int(count) for status, count in counts}
    pending = EmailOutbox.status == OutboxStatus.PENDING
    leased = EmailOutbox.lease_expires_at.is_not(None) & (EmailOutbox.lease_expires_at > now)
    in_flight = await session.scalar(select(func.count(EmailOutbox.id)).where(pending, leased))
    due = await session.scalar(
        select(func.count(EmailOutbox.id)).where(
            pending, ~leased, EmailOutbox.next_attempt_at <= now
        )
    )
    _, oldest = await pending_summary(session)
    failures = await session.execute(
        select(EmailOutbox.last_error, func.count(EmailOutbox.id).label("n"))
        .where(
            EmailOutbox.status == OutboxStatus.FAILED,
            EmailOutbox.updated_at >= now - failures_since,
        )
        .group_by(EmailOutbox.last_error)
        .order_by(func.count(EmailOutbox.id).desc())
        .limit(5)
    )
    pending_count = by_status.get(OutboxStatus.PENDING, 0)
    return OutboxStats(
        by_status=by_status,
        pending_due=int(due or 0),
        pending_in_flight=int(in_flight or 0),
        pending_waiting=pending_count - int(due or 0) - int(in_flight or 0),
        oldest_pending_created_at=oldest,
        recent_failures=[(error or "(no reason recorded)", int(n)) for error, n in failures],
    )


@dataclass(frozen=True, slots=True)
class AccountSummary:
    email_verified: bool
    email_verified_at: datetime | None
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class CodeRow:
    """One code, without its hash, and the mails that carried it."""

    id: int
    purpose: str
    created_at: datetime
    expires_at: datetime
    attempts: int
    used: bool
    used_at: datetime | None
    retired_at: datetime | None
    mails: list[MailRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class AddressReport:
    """Everything stored about one canonical address: "why didn't they get their code?" """

    email: str
    account: AccountSummary | None
    codes: list[CodeRow]
    # Mail to the address not tied to a code shown above: notices, or codes already purged.
    other_mails: list[MailRow]
    # SES's feedback events by outbox row id, oldest first; the suppression entry, if any.
    events: dict[int, list[MailEvent]] = field(default_factory=dict)
    suppressed: SuppressedAddress | None = None


async def address_report(session: AsyncSession, email: str, *, limit: int = 10) -> AddressReport:
    """The account, the newest ``limit`` codes with their mails (joined on
    ``email_outbox.otp_id``) and the newest ``limit`` other mails for canonical ``email``."""
    account_row = (
        await session.execute(
            select(
                User.email_verified, User.email_verified_at, User.created_at, User.last_login_at
            ).where(User.email == email)
        )
    ).first()
    account = AccountSummary(**account_row._mapping) if account_row is not None else None
    code_rows = await session.execute(
        select(
            Otp.id,
            Otp.purpose,
            Otp.created_at,
            Otp.expires_at,
            Otp.attempts,
            Otp.used,
            Otp.used_at,
            Otp.retired_at,
        )
        .where(Otp.email == email)
        .order_by(Otp.created_at.desc(), Otp.id.desc())
        .limit(limit)
    )
    codes = [CodeRow(**row._mapping) for row in code_rows]
    by_id = {code.id: code for code in codes}
    if by_id:
        linked = await session.execute(
            select(*_MAIL_COLUMNS)
            .where(EmailOutbox.otp_id.in_(by_id))
            .order_by(EmailOutbox.id.desc())
        )
        for row in linked:
            mail = MailRow(**row._mapping)
            if mail.otp_id is not None:
                by_id[mail.otp_id].mails.append(mail)
    others = await session.execute(
        select(*_MAIL_COLUMNS)
        .where(
            EmailOutbox.recipient == email,
            EmailOutbox.otp_id.is_(None) | EmailOutbox.otp_id.not_in(by_id or [0]),
        )
        .order_by(EmailOutbox.id.desc())
        .limit(limit)
    )
    other_mails = [MailRow(**row._mapping) for row in others]
    mail_ids = [mail.id for code in codes for mail in code.mails] + [m.id for m in other_mails]
    events: dict[int, list[MailEvent]] = {}
    for event in await mail_events.for_rows(session, mail_ids):
        events.setdefault(event.outbox_id, []).append(event)
    return AddressReport(
        email=email,
        account=account,
        codes=codes,
        other_mails=other_mails,
        events=events,
        suppressed=await suppression.get(session, email),
    )
