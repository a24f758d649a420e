"""What an SES event changes, applied in the caller's transaction (DESIGN.md §10).

Each recipient the event names is recorded against the outbox row with the event's message id
(``store/mail_events``): the row's delivery state moves forward, and a permanent bounce or any
complaint puts the address on the suppression list (``store/suppression``, audited). Transient
and undetermined bounces, delays and deliveries never suppress.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.mail.feedback.events import EventType, FeedbackEvent, Recipient
from taxease_auth.store import audit, mail_events, suppression
from taxease_auth.store.mail_events import NewEvent, Outcome
from taxease_auth.store.models import DeliveryState, SuppressionReason
from taxease_auth.store.sql import Transaction

STATES = {
    EventType.BOUNCE: DeliveryState.BOUNCED,
    EventType.COMPLAINT: DeliveryState.COMPLAINED,
    EventType.DELIVERY: DeliveryState.DELIVERED,
    EventType.DELIVERY_DELAY: DeliveryState.DELAYED,
    EventType.REJECT: DeliveryState.REJECTED,
    # SES did not send it: as far as the recipient is concerned, the mail was rejected.
    EventType.RENDERING_FAILURE: DeliveryState.REJECTED,
}
AUDIT_EVENT = "mail_suppression"


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of one recipient of an event."""

    recipient: str
    outcome: Outcome
    outbox_id: int | None
    suppressed: SuppressionReason | None = None


def suppression_for(event: FeedbackEvent) -> SuppressionReason | None:
    """The reason an event suppresses its recipients, or None when it does not."""
    if event.event_type is EventType.BOUNCE and event.category == "Permanent":
        return SuppressionReason.BOUNCE
    if event.event_type is EventType.COMPLAINT:
        return SuppressionReason.COMPLAINT
    return None


def suppression_detail(event: FeedbackEvent, recipient: Recipient) -> str:
    """A short line for the list: what SES said, never more than the event said."""
    kind = "/".join(part for part in (event.category, event.subtype) if part)
    parts = [f"{event.name} {kind}".strip(), recipient.status, recipient.diagnostic]
    return " ".join(part for part in parts if part)


async def apply(
    tx: Transaction,
    event: FeedbackEvent,
    *,
    sqs_message_id: str | None,
    now: datetime,
    secret_key: str,
) -> list[Applied]:
    """Record ``event`` for each recipient (in ``tx``) and suppress where it calls for it.

    Idempotent: an event recorded before is a DUPLICATE and changes nothing; one whose
    message id (and recipient) no outbox row has is UNKNOWN and changes nothing.
    """
    state = STATES.get(event.event_type)
    if state is None:  # EventType.OTHER: nothing to record
        return []
    reason = suppression_for(event)
    applied: list[Applied] = []
    for recipient in event.recipients:
        recorded = await mail_events.record(
            tx,
            NewEvent(
                provider_message_id=event.message_id,
                recipient=recipient.address,
                event_type=event.event_type.value,
                state=state,
                occurred_at=event.occurred_at,
                dedupe_key=event.dedupe_key(recipient),
                category=event.category,
                subtype=event.subtype,
                status=recipient.status,
                diagnostic=recipient.diagnostic or event.detail,
                expires_at=event.expires_at,
                feedback_id=event.feedback_id,
                sqs_message_id=sqs_message_id,
            ),
            now=now,
        )
        suppressed = None
        if recorded.outcome is Outcome.RECORDED and reason is not None:
            detail = suppression_detail(event, recipient)
            added = await suppression.add(
                tx,
                recipient.address,
                reason=reason,
                detail=detail,
                now=now,
                source_event_id=recorded.event_id,
            )
            if added:
                suppressed = reason
                await audit.record(
                    tx,
                    now=now,
                    event=AUDIT_EVENT,
                    email_hash=email_fingerprint(secret_key, recipient.address),
                    ip=None,
                    outcome="added",
                    detail=f"{reason.value}: {detail}",
                )
        applied.append(Applied(recipient.address, recorded.outcome, recorded.outbox_id, suppressed))
    return applied
