"""The worker's side of the suppression list: a claimed row whose recipient is suppressed ends
``suppressed`` instead of being sent (DESIGN.md §10).

The claim itself says whether the recipient is suppressed (``store/outbox.claim_due``), so the
check costs no query of its own, happens in the worker just before the send and never in the
request path: the API answers a suppressed address exactly as any other.
"""

from __future__ import annotations

import logging

from taxease_auth import metrics
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.store import outbox
from taxease_auth.store.outbox import ClaimedMail
from taxease_auth.store.sql import Database

logger = logging.getLogger(__name__)


async def end_suppressed(database: Database, row: ClaimedMail, *, clock: Clock) -> None:
    """Mark ``row`` suppressed (final, body cleared), count and log it."""
    async with database.single_statement() as tx:
        await outbox.mark_suppressed(tx, row.id, now=clock.now())
    metrics.MAILS.labels(kind=row.kind, outcome="suppressed").inc()
    logger.warning(
        "outbox %s (%s to %s, key %s) not sent: the address is on the suppression list "
        "(`taxease-auth why` says why)",
        row.id,
        row.kind,
        mask_email(row.recipient),
        row.idempotency_key,
    )
