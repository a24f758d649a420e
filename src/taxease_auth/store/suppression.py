"""The suppression list: addresses the delivery worker sends nothing to (DESIGN.md §10).

Filled by a permanent bounce or a complaint (``mail/feedback``), or by an operator
(``taxease-auth suppression add``); emptied only by an operator. Read by the worker just before
a send, never in the request path, so the API's answers cannot tell a suppressed address apart.
Addresses are stored canonical (lowercase): the caller canonicalises.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store.models import SuppressedAddress, SuppressionReason
from taxease_auth.store.sql import Statement, Transaction

DETAIL_MAX_LENGTH = 255

_ADD = Statement("""
    INSERT INTO suppressed_addresses (email, reason, detail, created_at, source_event_id)
    VALUES (:email, :reason, :detail, :now, :source_event_id)
    ON CONFLICT (email) DO NOTHING
""")
_REMOVE = Statement("DELETE FROM suppressed_addresses WHERE email = :email")
_IS = Statement("SELECT 1 FROM suppressed_addresses WHERE email = :email")


async def add(
    tx: Transaction,
    email: str,
    *,
    reason: SuppressionReason,
    detail: str | None,
    now: datetime,
    source_event_id: int | None = None,
) -> bool:
    """Suppress ``email``; False when it already was (the first reason is kept)."""
    changed = await tx.run(
        _ADD,
        email=email,
        reason=reason.value,
        detail=detail[:DETAIL_MAX_LENGTH] if detail else None,
        now=now,
        source_event_id=source_event_id,
    )
    return changed > 0


async def remove(tx: Transaction, email: str) -> bool:
    """Lift ``email``'s suppression; False when it was not suppressed."""
    return await tx.run(_REMOVE, email=email) > 0


async def is_suppressed(tx: Transaction, email: str) -> bool:
    return await tx.one(_IS, email=email) is not None


async def get(session: AsyncSession, email: str) -> SuppressedAddress | None:
    return await session.get(SuppressedAddress, email)


async def listed(session: AsyncSession, *, limit: int | None = None) -> list[SuppressedAddress]:
    """Newest first."""
    query = select(SuppressedAddress).order_by(
        SuppressedAddress.created_at.desc(), SuppressedAddress.email
    )
    if limit is not None:
        query = query.limit(limit)
    return list((await session.execute(query)).scalars())
