"""Parsing SES's feedback events (mail/feedback/events.py) on AWS's documented examples."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from taxease_auth.mail.feedback.events import (
    EventType,
    Recipient,
    UnreadableMessage,
    parse,
    parse_event,
    unwrap,
)
from tests.mail.feedback import examples

pytestmark = pytest.mark.database_independent

MESSAGE_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
TOPIC = "arn:aws:sns:ca-central-1:123456789012:ses-feedback"


def test_permanent_bounce() -> None:
    event = parse_event(examples.BOUNCE_PERMANENT)
    assert event.event_type is EventType.BOUNCE
    assert event.message_id == MESSAGE_ID
    assert (event.category, event.subtype) == ("Permanent", "General")
    assert event.occurred_at == datetime(2017, 8, 5, 0, 41, 2, 669000, tzinfo=UTC)
    assert event.recipients == (
        Recipient("recipient@example.com", "5.1.1", "smtp; 550 5.1.1 user unknown"),
    )
    assert event.feedback_id == examples.BOUNCE_PERMANENT["bounce"]["feedbackId"]


def test_transient_bounce() -> None:
    event = parse_event(examples.BOUNCE_TRANSIENT)
    assert (event.category, event.subtype) == ("Transient", "MailboxFull")
    assert event.recipients[0].status == "4.2.2"


def test_complaint() -> None:
    event = parse_event(examples.COMPLAINT)
    assert event.event_type is EventType.COMPLAINT
    assert event.category == "abuse"
    assert event.recipients == (Recipient("recipient@example.com"),)


def test_delivery_keeps_the_smtp_response() -> None:
    event = parse_event(examples.DELIVERY)
    assert event.event_type is EventType.DELIVERY
    assert event.occurred_at == datetime(2016, 10, 19, 23, 20, 52, 240000, tzinfo=UTC)
    assert event.recipients == (
        Recipient("recipient@example.com", diagnostic="250 2.6.0 Message received"),
    )


def test_delivery_delay_keeps_until_when_ses_tries() -> None:
    event = parse_event(examples.DELIVERY_DELAY)
    assert event.event_type is EventType.DELIVERY_DELAY
    assert event.category == "MailboxFull"
    assert event.expires_at == datetime(2020, 6, 16, 0, 25, 40, 914000, tzinfo=UTC)


def test_reject_and_rendering_failure_name_the_destination() -> None:
    reject = parse_event(examples.REJECT)
    failure = parse_event(examples.RENDERING_FAILURE)
    assert reject.event_type is EventType.REJECT
    assert reject.detail == "Bad content"
    assert failure.event_type is EventType.RENDERING_FAILURE
    assert [r.address for r in reject.recipients + failure.recipients] == [
        "recipient@example.com"
    ] * 2


def test_identity_notification_is_read_by_its_notification_type() -> None:
    event = parse_event(examples.NOTIFICATION_BOUNCE)
    assert event.event_type is EventType.BOUNCE
    assert event.category == "Permanent"


def test_other_published_types_are_tolerated() -> None:
    assert parse_event(examples.SEND).event_type is EventType.OTHER
    future = dict(examples.SEND, eventType="SomethingNew")
    assert parse_event(future).event_type is EventType.OTHER


def test_unknown_fields_are_tolerated() -> None:
    event = json.loads(json.dumps(examples.BOUNCE_PERMANENT))
    event["newTopLevel"] = {"x": 1}
    event["bounce"]["remoteMtaIp"] = "192.0.2.1"
    event["bounce"]["bouncedRecipients"][0]["extra"] = [1, 2]
    assert parse_event(event).category == "Permanent"


def test_raw_body_and_sns_envelope_give_the_same_event() -> None:
    raw, raw_topic = parse(json.dumps(examples.COMPLAINT))
    wrapped, topic = parse(examples.envelope(examples.COMPLAINT, TOPIC))
    assert raw == wrapped
    assert (raw_topic, topic) == (None, TOPIC)


def test_recipient_in_another_case_or_with_a_name_is_read_canonical() -> None:
    event = json.loads(json.dumps(examples.DELIVERY))
    event["delivery"]["recipients"] = ["Someone <Recipient@Example.COM>"]
    assert parse_event(event).recipients[0].address == "recipient@example.com"


def test_one_event_and_recipient_has_one_dedupe_key() -> None:
    first = parse_event(examples.BOUNCE_PERMANENT)
    again = parse_event(json.loads(json.dumps(examples.BOUNCE_PERMANENT)))
    other = parse_event(examples.BOUNCE_TRANSIENT)
    assert first.dedupe_key(first.recipients[0]) == again.dedupe_key(again.recipients[0])
    assert first.dedupe_key(first.recipients[0]) != other.dedupe_key(other.recipients[0])


def _without(event: dict[str, Any], *path: str) -> dict[str, Any]:
    event = json.loads(json.dumps(event))
    target = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return event


@pytest.mark.parametrize(
    "body",
    [
        "{not json",
        "[1, 2]",
        json.dumps({"Type": "SubscriptionConfirmation", "Message": "x", "TopicArn": TOPIC}),
        # moto's identity notifications: Message is an object, not a string.
        json.dumps({"Type": "Notification", "Message": {"notificationType": "Bounce"}}),
        json.dumps({"Type": "Notification", "Message": "{broken", "TopicArn": TOPIC}),
        json.dumps(_without(examples.BOUNCE_PERMANENT, "eventType")),
        json.dumps(_without(examples.BOUNCE_PERMANENT, "mail", "messageId")),
        json.dumps(_without(examples.BOUNCE_PERMANENT, "bounce")),
        json.dumps(_without(examples.BOUNCE_PERMANENT, "bounce", "timestamp")),
        json.dumps(_without(examples.DELIVERY, "delivery", "recipients")),
        json.dumps(examples.for_message(examples.COMPLAINT, "m", "not-an-address")),
    ],
)
def test_malformed_messages_raise_a_safe_error(body: str) -> None:
    with pytest.raises(UnreadableMessage) as raised:
        parse(body)
    assert "@" not in str(raised.value)


def test_unwrap_leaves_a_raw_event_alone() -> None:
    message = unwrap(json.dumps(examples.DELIVERY))
    assert message.document == examples.DELIVERY
    assert message.topic_arn is None
