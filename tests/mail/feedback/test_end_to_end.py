"""SES feedback end to end: a real code sent through sesv2 (moto), a real-shaped SES event for
its message id published to SNS, read by the delivery worker from SQS (raw and envelope)."""

from __future__ import annotations

from typing import Any

import pytest

from taxease_auth.store.models import DeliveryState, OutboxStatus
from tests.conftest import SENDER, RunningApp, SesInbox, SettingsFactory, StartApp
from tests.mail.feedback import examples
from tests.mail.feedback.conftest import FeedbackQueues
from tests.mail.feedback.helpers import (
    events,
    eventually,
    row_by_id,
    send_code,
    sent_row,
    suppressed,
)


async def feedback_app(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    queues: FeedbackQueues,
    form: str,
    **overrides: Any,
) -> RunningApp:
    ses.verify_identity(SENDER)
    settings = ses_settings(
        ses_feedback_queue_url=queues.queue(form),
        ses_feedback_topic_arn=queues.topic_arn,
        aws_ses_configuration_set="otp-events",
        **overrides,
    )
    return await start_app(settings)


@pytest.mark.parametrize("form", ["raw", "envelope"])
async def test_permanent_bounce_suppresses_and_the_next_code_is_not_sent(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
    form: str,
) -> None:
    running = await feedback_app(start_app, ses, ses_settings, feedback_queues, form)
    email = "gone@example.org"
    message_id = await send_code(running, email)

    feedback_queues.publish(examples.for_message(examples.BOUNCE_PERMANENT, message_id, email))

    async def bounced() -> bool:
        return bool(await events(running))

    await eventually(bounced)
    [event] = await events(running)
    assert (event.event_type, event.category, event.subtype) == ("bounce", "Permanent", "General")
    assert event.status == "5.1.1"
    assert event.diagnostic == "smtp; 550 5.1.1 user unknown"
    row = await row_by_id(running, event.outbox_id)
    assert row.delivery_state == DeliveryState.BOUNCED
    entry = (await suppressed(running))[email]
    assert entry.reason == "bounce"
    assert entry.source_event_id == event.id
    await eventually(lambda: _empty(feedback_queues, feedback_queues.queue(form)))

    # The next code for that address is not sent: its row ends suppressed.
    answer = await running.client.post(
        "/api/v1/auth/request-otp", json={"email": email, "purpose": "email_verification"}
    )
    assert answer.status_code == 202
    await running.settled_outbox()
    rows = [r for r in await running.outbox() if r.recipient == email]
    assert [r.status for r in rows] == [OutboxStatus.SENT, OutboxStatus.SUPPRESSED]
    assert rows[-1].html_body is None
    assert len(ses.messages(email)) == 1


async def _empty(queues: FeedbackQueues, queue_url: str) -> bool:
    return queues.left(queue_url) == 0


async def test_every_event_type_moves_its_mail_on(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
) -> None:
    running = await feedback_app(start_app, ses, ses_settings, feedback_queues, "raw")
    cases = {
        "delivered@example.org": (examples.DELIVERY, DeliveryState.DELIVERED, None),
        "full@example.org": (examples.BOUNCE_TRANSIENT, DeliveryState.BOUNCED, None),
        "spam@example.org": (examples.COMPLAINT, DeliveryState.COMPLAINED, "complaint"),
        "slow@example.org": (examples.DELIVERY_DELAY, DeliveryState.DELAYED, None),
        "rejected@example.org": (examples.REJECT, DeliveryState.REJECTED, None),
    }
    for email, (event, _, _) in cases.items():
        message_id = await send_code(running, email)
        feedback_queues.publish(examples.for_message(event, message_id, email))

    async def all_recorded() -> bool:
        return len(await events(running)) == len(cases)

    await eventually(all_recorded)
    listed = await suppressed(running)
    for email, (_, state, reason) in cases.items():
        row = await sent_row(running, email)
        assert row.delivery_state == state, email
        assert (listed[email].reason if email in listed else None) == reason, email


async def test_suppressed_address_answers_as_an_unknown_address(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
) -> None:
    running = await feedback_app(start_app, ses, ses_settings, feedback_queues, "raw")
    email = "complains@example.org"
    message_id = await send_code(running, email)
    feedback_queues.publish(examples.for_message(examples.COMPLAINT, message_id, email))

    async def listed() -> bool:
        return email in await suppressed(running)

    await eventually(listed)

    def comparable(answer: Any) -> tuple[int, Any, dict[str, str]]:
        headers = {
            k: v for k, v in answer.headers.items() if k.lower() not in {"date", "x-request-id"}
        }
        return answer.status_code, answer.json(), headers

    answers = {}
    for address in (email, "nobody-ever@example.org"):
        for purpose in ("email_verification", "password_reset"):
            path = (
                "/api/v1/auth/request-otp"
                if purpose == "email_verification"
                else "/api/v1/auth/password-reset/request"
            )
            body: dict[str, str] = {"email": address}
            if purpose == "email_verification":
                body["purpose"] = purpose
            answers[address, purpose] = comparable(await running.client.post(path, json=body))
    for purpose in ("email_verification", "password_reset"):
        assert answers[email, purpose] == answers["nobody-ever@example.org", purpose]
