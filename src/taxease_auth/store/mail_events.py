"""SES feedback events, recorded against the outbox row they concern (DESIGN.md §10).

An event names SES's message id and one recipient; it is kept in ``mail_events`` (purged with
its outbox row: ON DELETE CASCADE) and moves the row's delivery state forward. What an event
*means* (which state, whether it suppresses the address) is ``mail/feedback``'s business; this
module only stores it, once: the same event read twice (an SQS redelivery, a duplicate SNS
publication) has the same ``dedupe_key`` and changes nothing the second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store.models import (
    EMAIL_MAX_LENGTH,
    FEEDBACK_DIAGNOSTIC_MAX_LENGTH,
    DeliveryState,
    MailEvent,
)
from taxease_auth.store.sql import Statement, Transaction

# A state only moves forward: a delivery read after the complaint it preceded (SQS does not
# keep order) leaves the row "complained"; a late delay never hides the delivery after it.
STATE_RANK = {
    DeliveryState.ACCEPTED: 0,
    DeliveryState.DELAYED: 1,
    DeliveryState.DELIVERED: 2,
    DeliveryState.REJECTED: 3,
    DeliveryState.BOUNCED: 3,
    DeliveryState.COMPLAINED: 4,
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    """One event for one recipient, as parsed from SES's JSON."""

    provider_message_id: str
    recipient: str  # lowercased
    event_type: str
    state: DeliveryState  # the delivery state this event implies
    occurred_at: datetime
    dedupe_key: str
    category: str | None = None
    subtype: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    expires_at: datetime | None = None
    feedback_id: str | None = None
    sqs_message_id: str | None = None


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # this very event was recorded before
    UNKNOWN = "unknown"  # no outbox row with that message id and recipient (another sender, purged)


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: Outcome
    event_id: int | None = None
    outbox_id: int | None = None


_FIND_ROW = Statement("""
    SELECT id, recipient FROM email_outbox
    WHERE provider_message_id = :message_id
""")
_INSERT = Statement("""
    INSERT INTO mail_events (outbox_id, recipient, event_type, category, subtype, status,
                             diagnostic, occurred_at, recorded_at, expires_at, feedback_id,
                             sqs_message_id, dedupe_key)
    VALUES (:outbox_id, :recipient, :event_type, :category, :subtype, :status, :diagnostic,
            :occurred_at, :now, :expires_at, :feedback_id, :sqs_message_id, :dedupe_key)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id
""")
_RANK_SQL = " ".join(f"WHEN '{state.value}' THEN {rank}" for state, rank in STATE_RANK.items())
# The rank is compared in the UPDATE itself: of two events for one row applied at once by two
# workers (PostgreSQL re-reads the row after the other's commit), the later state wins.
_SET_STATE = Statement(f"""
    UPDATE email_outbox SET delivery_state = :state, updated_at = :now
    WHERE id = :id AND (CASE delivery_state {_RANK_SQL} ELSE -1 END) < :rank
""")  # noqa: S608 - the fragments are this module's constants


# PostgreSQL: the three steps in one statement, one round trip instead of three (each event is
# a transaction of its own, and on a busy host every round trip costs). Its result says which
# outcome it was: no row found (UNKNOWN), a row but no insert (DUPLICATE), or both.
_RECORD_POSTGRES = Statement(f"""
    WITH target AS (
        SELECT id FROM email_outbox
        WHERE provider_message_id = CAST(:message_id AS VARCHAR)
          AND lower(recipient) = CAST(:recipient AS VARCHAR)
        ORDER BY id LIMIT 1
    ), inserted AS (
        INSERT INTO mail_events (outbox_id, recipient, event_type, category, subtype, status,
                                 diagnostic, occurred_at, recorded_at, expires_at, feedback_id,
                                 sqs_message_id, dedupe_key)
        SELECT target.id, CAST(:recipient AS VARCHAR), CAST(:event_type AS VARCHAR),
               CAST(:category AS VARCHAR), CAST(:subtype AS VARCHAR), CAST(:status AS VARCHAR),
               CAST(:diagnostic AS VARCHAR), CAST(:occurred_at AS TIMESTAMPTZ),
               CAST(:now AS TIMESTAMPTZ), CAST(:expires_at AS TIMESTAMPTZ),
               CAST(:feedback_id AS VARCHAR), CAST(:sqs_message_id AS VARCHAR),
               CAST(:dedupe_key AS VARCHAR)
        FROM target
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id, outbox_id
    ), moved AS (
        UPDATE email_outbox SET delivery_state = CAST(:state AS VARCHAR),
                                updated_at = CAST(:now AS TIMESTAMPTZ)
        FROM inserted
        WHERE email_outbox.id = inserted.outbox_id
          AND (CASE email_outbox.delivery_state {_RANK_SQL} ELSE -1 END) < CAST(:rank AS INTEGER)
        RETURNING email_outbox.id
    )
    SELECT (SELECT id FROM target), (SELECT id FROM inserted), (SELECT count(*) FROM moved)
""")  # noqa: S608 - the fragments are this module's constants


def _clip(value: str | None, length: int) -> str | None:
    return value[:length] if value else value


def _values(event: NewEvent, now: datetime) -> dict[str, object]:
    return {
        "recipient": event.recipient[:EMAIL_MAX_LENGTH],
        "event_type": event.event_type,
        "category": _clip(event.category, 64),
        "subtype": _clip(event.subtype, 64),
        "status": _clip(event.status, 32),
        "diagnostic": _clip(event.diagnostic, FEEDBACK_DIAGNOSTIC_MAX_LENGTH),
        "occurred_at": event.occurred_at,
        "now": now,
        "expires_at": event.expires_at,
        "feedback_id": _clip(event.feedback_id, 255),
        "sqs_message_id": _clip(event.sqs_message_id, 128),
        "dedupe_key": event.dedupe_key,
    }


async def record(tx: Transaction, event: NewEvent, *, now: datetime) -> Recorded:
    """Record ``event`` in the caller's transaction and move its row's delivery state forward.

    UNKNOWN when no outbox row has the event's message id for that recipient (nothing is
    written); DUPLICATE when an event with the same ``dedupe_key`` is already recorded.
    """
    if tx.dialect == "postgresql":
        found, event_id, _ = await tx.one(  # type: ignore[misc]
            _RECORD_POSTGRES,
            message_id=event.provider_message_id,
            state=event.state.value,
            rank=STATE_RANK[event.state],
            **_values(event, now),
        )
        if found is None:
            return Recorded(Outcome.UNKNOWN)
        if event_id is None:
            return Recorded(Outcome.DUPLICATE, outbox_id=int(found))
        return Recorded(Outcome.RECORDED, event_id=int(event_id), outbox_id=int(found))
    row = await tx.one(_FIND_ROW, message_id=event.provider_message_id)
    if row is None or str(row[1]).lower() != event.recipient:
        return Recorded(Outcome.UNKNOWN)
    outbox_id = int(row[0])
    inserted = await tx.one(_INSERT, outbox_id=outbox_id, **_values(event, now))
    if inserted is None:
        return Recorded(Outcome.DUPLICATE, outbox_id=outbox_id)
    await tx.run(
        _SET_STATE, state=event.state.value, now=now, id=outbox_id, rank=STATE_RANK[event.state]
    )
    return Recorded(Outcome.RECORDED, event_id=int(inserted[0]), outbox_id=outbox_id)


async def for_rows(session: AsyncSession, outbox_ids: Sequence[int]) -> list[MailEvent]:
    """The events of these outbox rows, oldest first (by SES's time)."""
    if not outbox_ids:
        return []
    query = (
        select(MailEvent)
        .where(MailEvent.outbox_id.in_(outbox_ids))
        .order_by(MailEvent.occurred_at, MailEvent.id)
    )
    return list((await session.execute(query)).scalars())


@dataclass(frozen=True, slots=True)
class ReputationCounts:
    """Over the last ``window`` mails SES accepted: how many, and how many of them bounced
    permanently or drew a complaint."""

    accepted: int
    permanent_bounces: int
    complaints: int


_REPUTATION = Statement("""
    SELECT count(DISTINCT recent.id),
           count(DISTINCT CASE WHEN e.event_type = 'bounce' AND e.category = 'Permanent'
                               THEN e.outbox_id END),
           count(DISTINCT CASE WHEN e.event_type = 'complaint' THEN e.outbox_id END)
    FROM (SELECT id FROM email_outbox WHERE delivery_state IS NOT NULL
          ORDER BY id DESC LIMIT :window) AS recent
    LEFT JOIN mail_events AS e
      ON e.outbox_id = recent.id AND e.event_type IN ('bounce', 'complaint')
""")


async def reputation_counts(tx: Transaction, *, window: int) -> ReputationCounts:
    """Counts for the bounce and complaint rates (DESIGN.md §10, "Reputation")."""
    row = await tx.one(_REPUTATION, window=window)
    assert row is not None
    return ReputationCounts(int(row[0]), int(row[1]), int(row[2]))
