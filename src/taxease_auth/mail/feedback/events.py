"""SES feedback events as SES publishes them, parsed into plain values (pure functions).

Both forms reach the queue: the raw SES JSON (SNS raw message delivery) and the SNS envelope
(``Type: Notification``, the SES JSON as the string ``Message``). Event publishing names the
event in ``eventType``, identity notifications in ``notificationType``; both are read. SES adds
fields over time: unknown fields and unknown event types are tolerated. Anything else that
cannot be read raises ``UnreadableMessage``, whose text never holds an address or the body.

Shapes: SES developer guide, "Contents of event data that Amazon SES publishes to Amazon SNS"
and "notification-contents" (SECURITY-AND-SES.md §2.10).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class UnreadableMessage(ValueError):
    """A queue message that is not an SES event this parser can read. The text says why and is
    safe to log (no address, no content)."""


class EventType(StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERY = "delivery"
    DELIVERY_DELAY = "delivery_delay"
    REJECT = "reject"
    RENDERING_FAILURE = "rendering_failure"
    # Published types without an effect here (Send, Open, Click, Subscription...), and types
    # SES may add: tolerated, counted, deleted from the queue.
    OTHER = "other"


_TYPES = {
    "bounce": EventType.BOUNCE,
    "complaint": EventType.COMPLAINT,
    "delivery": EventType.DELIVERY,
    "deliverydelay": EventType.DELIVERY_DELAY,
    "reject": EventType.REJECT,
    "renderingfailure": EventType.RENDERING_FAILURE,
}


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient an event names, with what the event says about it."""

    address: str  # lowercased; display names removed
    status: str | None = None  # an enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the remote server's answer, "smtp; 550 5.1.1 user unknown"


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One SES event: what happened to which recipients of which message, and when."""

    event_type: EventType
    name: str  # as SES spelled it ("Bounce", "DeliveryDelay", "Open"...)
    message_id: str
    occurred_at: datetime
    recipients: tuple[Recipient, ...]
    category: str | None = None  # bounceType, complaintFeedbackType, delayType
    subtype: str | None = None  # bounceSubType, complaintSubType
    feedback_id: str | None = None
    expires_at: datetime | None = None  # a delay: until when SES keeps trying
    detail: str | None = None  # smtpResponse, reject reason, rendering error

    def dedupe_key(self, recipient: Recipient) -> str:
        """The same event for the same recipient, however often it is read, has one key."""
        when = self.feedback_id or self.occurred_at.isoformat()
        text = f"{self.event_type}|{self.message_id}|{when}|{recipient.address}"
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """A queue message's SES document, and the SNS topic that sent it (None when raw)."""

    document: dict[str, Any]
    topic_arn: str | None


def unwrap(body: str) -> QueueMessage:
    """The SES document inside a queue message body: the body itself (raw delivery) or the
    string ``Message`` of an SNS ``Notification`` envelope. Raises ``UnreadableMessage``."""
    document = _object(body, "the message body")
    if "Type" in document and "Message" in document and "mail" not in document:
        if document.get("Type") != "Notification":
            raise UnreadableMessage(f"an SNS {_word(document.get('Type'))} is not an event")
        inner = document.get("Message")
        if not isinstance(inner, str):
            # moto's identity notifications put an object here (SECURITY-AND-SES.md §2.10).
            raise UnreadableMessage("the SNS envelope's Message is not a string")
        topic = document.get("TopicArn")
        return QueueMessage(
            _object(inner, "the SNS envelope's Message"), topic if isinstance(topic, str) else None
        )
    return QueueMessage(document, None)


def parse_event(document: dict[str, Any]) -> FeedbackEvent:
    """Read one SES event document. Raises ``UnreadableMessage``."""
    name = document.get("eventType", document.get("notificationType"))
    if not isinstance(name, str) or not name:
        raise UnreadableMessage("neither eventType nor notificationType names the event")
    mail = _section(document, "mail")
    message_id = mail.get("messageId")
    if not isinstance(message_id, str) or not message_id:
        raise UnreadableMessage("mail.messageId is missing")
    # AWS's own example spells one "Rendering Failure": spaces and case do not matter.
    event_type = _TYPES.get(name.replace(" ", "").replace("_", "").lower(), EventType.OTHER)
    mail_time = _time(mail.get("timestamp"), "mail.timestamp")
    if event_type is EventType.OTHER:
        return FeedbackEvent(EventType.OTHER, name[:64], message_id, mail_time, ())
    reader = _READERS[event_type]
    return reader(document, name, message_id, mail, mail_time)


def parse(body: str) -> tuple[FeedbackEvent, str | None]:
    """``unwrap`` then ``parse_event``: the event and the SNS topic it came from."""
    message = unwrap(body)
    return parse_event(message.document), message.topic_arn


# --- one reader per event type ---------------------------------------------------------------


def _bounce(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], _: datetime
) -> FeedbackEvent:
    bounce = _section(document, "bounce")
    recipients = tuple(
        Recipient(_address(item), _text(item.get("status")), _text(item.get("diagnosticCode")))
        for item in _items(bounce, "bouncedRecipients")
    )
    return FeedbackEvent(
        EventType.BOUNCE,
        name,
        message_id,
        _time(bounce.get("timestamp"), "bounce.timestamp"),
        recipients,
        category=_text(bounce.get("bounceType")) or "Undetermined",
        subtype=_text(bounce.get("bounceSubType")),
        feedback_id=_text(bounce.get("feedbackId")),
    )


def _complaint(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], _: datetime
) -> FeedbackEvent:
    complaint = _section(document, "complaint")
    recipients = tuple(
        Recipient(_address(item)) for item in _items(complaint, "complainedRecipients")
    )
    return FeedbackEvent(
        EventType.COMPLAINT,
        name,
        message_id,
        _time(complaint.get("timestamp"), "complaint.timestamp"),
        recipients,
        category=_text(complaint.get("complaintFeedbackType")),
        subtype=_text(complaint.get("complaintSubType")),
        feedback_id=_text(complaint.get("feedbackId")),
    )


def _delivery(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], _: datetime
) -> FeedbackEvent:
    delivery = _section(document, "delivery")
    response = _text(delivery.get("smtpResponse"))
    recipients = tuple(
        Recipient(_address(item), diagnostic=response) for item in _items(delivery, "recipients")
    )
    return FeedbackEvent(
        EventType.DELIVERY,
        name,
        message_id,
        _time(delivery.get("timestamp"), "delivery.timestamp"),
        recipients,
        detail=response,
    )


def _delay(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], _: datetime
) -> FeedbackEvent:
    delay = _section(document, "deliveryDelay")
    recipients = tuple(
        Recipient(_address(item), _text(item.get("status")), _text(item.get("diagnosticCode")))
        for item in _items(delay, "delayedRecipients")
    )
    expires = delay.get("expirationTime")
    return FeedbackEvent(
        EventType.DELIVERY_DELAY,
        name,
        message_id,
        _time(delay.get("timestamp"), "deliveryDelay.timestamp"),
        recipients,
        category=_text(delay.get("delayType")),
        expires_at=_time(expires, "deliveryDelay.expirationTime") if expires else None,
    )


def _reject(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], when: datetime
) -> FeedbackEvent:
    reason = _text(_section(document, "reject").get("reason"))
    recipients = tuple(Recipient(_address(item), diagnostic=reason) for item in _destination(mail))
    return FeedbackEvent(
        EventType.REJECT, name, message_id, when, recipients, category=reason, detail=reason
    )


def _rendering_failure(
    document: dict[str, Any], name: str, message_id: str, mail: dict[str, Any], when: datetime
) -> FeedbackEvent:
    failure = document.get("failure")
    error = _text(failure.get("errorMessage")) if isinstance(failure, dict) else None
    recipients = tuple(Recipient(_address(item), diagnostic=error) for item in _destination(mail))
    return FeedbackEvent(
        EventType.RENDERING_FAILURE, name, message_id, when, recipients, detail=error
    )


_READERS = {
    EventType.BOUNCE: _bounce,
    EventType.COMPLAINT: _complaint,
    EventType.DELIVERY: _delivery,
    EventType.DELIVERY_DELAY: _delay,
    EventType.REJECT: _reject,
    EventType.RENDERING_FAILURE: _rendering_failure,
}


# --- small readers ---------------------------------------------------------------------------


def _object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise UnreadableMessage(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise UnreadableMessage(f"{what} is not a JSON object")
    return value


def _section(document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise UnreadableMessage(f"the {key} section is missing")
    return value


def _items(section: dict[str, Any], key: str) -> list[Any]:
    value = section.get(key)
    if not isinstance(value, list) or not value:
        raise UnreadableMessage(f"{key} is missing or empty")
    return value


def _destination(mail: dict[str, Any]) -> list[Any]:
    value = mail.get("destination")
    if not isinstance(value, list) or not value:
        raise UnreadableMessage("mail.destination is missing or empty")
    return value


def _address(item: Any) -> str:
    """A recipient entry (``{"emailAddress": ...}`` or a plain string), lowercased."""
    raw = item.get("emailAddress") if isinstance(item, dict) else item
    if not isinstance(raw, str):
        raise UnreadableMessage("a recipient has no address")
    address = email.utils.parseaddr(raw)[1].strip().lower()
    if "@" not in address:
        raise UnreadableMessage("a recipient's address cannot be read")
    return address


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise UnreadableMessage(f"{what} is missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise UnreadableMessage(f"{what} is not a timestamp") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _word(value: Any) -> str:
    """A short, printable word from the message for a log line (an SNS Type)."""
    text = str(value)[:40]
    return text if text.isidentifier() else "message"
