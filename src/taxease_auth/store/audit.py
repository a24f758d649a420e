"""The audit trail: security events with time, email fingerprint, client address, outcome."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store.models import IP_MAX_LENGTH, AuditEvent
from taxease_auth.store.sql import Statement, Transaction

_INSERT = Statement("""
    INSERT INTO audit_events (occurred_at, event, purpose, email_hash, ip, outcome, detail)
    VALUES (:now, :event, :purpose, :email_hash, :ip, :outcome, :detail)
""")


def stored_ip(ip: str | None) -> str | None:
    """``ip`` as its column holds it: PostgreSQL refuses a string longer than the column
    (SQLite stores it whole), and an IPv6 address forwarded with a zone ("fe80::1%eth0") may
    be of any length."""
    return ip[:IP_MAX_LENGTH] if ip else ip


async def record(
    tx: Transaction,
    *,
    now: datetime,
    event: str,
    email_hash: str,
    ip: str | None,
    outcome: str,
    purpose: str | None = None,
    detail: str | None = None,
) -> None:
    """Add an event to the caller's transaction (it commits or rolls back with the action)."""
    await tx.run(
        _INSERT,
        now=now,
        event=event,
        purpose=purpose,
        email_hash=email_hash,
        ip=stored_ip(ip),
        outcome=outcome,
        detail=detail[:100] if detail else None,
    )


async def recent(
    session: AsyncSession, *, email_hashes: Sequence[str] | None, limit: int
) -> list[AuditEvent]:
    """Newest first; only those for the given fingerprints when given."""
    query = select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
    if email_hashes is not None:
        query = query.where(AuditEvent.email_hash.in_(email_hashes))
    return list((await session.execute(query.limit(limit))).scalars())


async def purge_before(session: AsyncSession, cutoff: datetime) -> int:
    result = await session.execute(delete(AuditEvent).where(AuditEvent.occurred_at < cutoff))
    deleted: int = result.rowcount  # type: ignore[attr-defined]
    return deleted
