"""The feedback consumer on bad input and bad days: each case loses nothing and stops nothing."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from taxease_auth import metrics
from taxease_auth.clock import SystemClock
from taxease_auth.config import Settings
from taxease_auth.mail.feedback.consumer import FeedbackConsumer, sqs_client
from taxease_auth.store.models import DeliveryState
from taxease_auth.store.sql import Database
from tests.conftest import SENDER, RunningApp, SesInbox, SettingsFactory, StartApp
from tests.mail.feedback import examples
from tests.mail.feedback.conftest import FeedbackQueues
from tests.mail.feedback.helpers import (
    events,
    eventually,
    register,
    send_code,
    sent_row,
    suppressed,
)
from tests.mail.feedback.relay import Relay

EMAIL = "person@example.org"


@dataclass
class Setup:
    running: RunningApp
    queues: FeedbackQueues
    settings: Settings

    @property
    def database(self) -> Database:
        database: Database = self.running.app.state.worker._database
        return database

    def consumer(self, **settings: Any) -> FeedbackConsumer:
        return FeedbackConsumer(
            self.settings.model_copy(update=settings), clock=SystemClock(), wait_seconds=1
        )

    async def handle(self, consumer: FeedbackConsumer, queue: str | None = None) -> int:
        """Receive what the queue holds now and handle it; how many were deleted."""
        messages = self.queues.receive(queue or self.queues.raw_queue)
        assert messages, "nothing in the queue"
        return await consumer.handle_batch(self.database, messages)


@pytest.fixture
async def setup(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
) -> Setup:
    """An app sending through SES with no consumer of its own: each test drives one."""
    ses.verify_identity(SENDER)
    running = await start_app(ses_settings())
    settings = running.settings.model_copy(
        update={
            "ses_feedback_queue_url": feedback_queues.raw_queue,
            "ses_feedback_topic_arn": feedback_queues.topic_arn,
        }
    )
    return Setup(running, feedback_queues, settings)


def counted(event_type: str, outcome: str) -> float:
    value = metrics.FEEDBACK_EVENTS.labels(event_type=event_type, outcome=outcome)._value.get()
    return float(value)


async def test_malformed_json_is_left_for_the_redrive_policy_and_the_rest_is_applied(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = await send_code(setup.running, EMAIL)
    setup.queues.send_body(setup.queues.raw_queue, '{"eventType": "Bounce", "mail": {"messa')
    setup.queues.publish(examples.for_message(examples.DELIVERY, message_id, EMAIL))
    unreadable_before = metrics.FEEDBACK_UNREADABLE._value.get()
    consumer = setup.consumer()

    messages: list[dict[str, Any]] = []
    for _ in range(20):
        messages += setup.queues.receive(setup.queues.raw_queue)
        if len(messages) == 2:
            break
    assert await consumer.handle_batch(setup.database, messages) == 1

    assert [e.event_type for e in await events(setup.running)] == ["delivery"]
    assert metrics.FEEDBACK_UNREADABLE._value.get() == unreadable_before + 1
    assert setup.queues.left(setup.queues.raw_queue) == 1  # comes back after its timeout
    assert "cannot be read" in caplog.text
    assert EMAIL not in caplog.text


async def test_a_256_kb_message_with_unknown_fields_is_applied(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    event = examples.for_message(examples.BOUNCE_PERMANENT, message_id, EMAIL)
    event["padding"] = ""
    room = 256 * 1024 - len(json.dumps(event).encode()) - 16
    event["padding"] = "x" * room
    assert 250 * 1024 < len(json.dumps(event).encode()) <= 256 * 1024
    setup.queues.publish(event)

    assert await setup.handle(setup.consumer()) == 1
    assert (await sent_row(setup.running, EMAIL)).delivery_state == DeliveryState.BOUNCED


async def test_an_event_for_an_unknown_message_id_is_counted_and_dropped(setup: Setup) -> None:
    before = counted("bounce", "unknown")
    setup.queues.publish(examples.for_message(examples.BOUNCE_PERMANENT, "not-ours-000", EMAIL))

    assert await setup.handle(setup.consumer()) == 1
    assert counted("bounce", "unknown") == before + 1
    assert await events(setup.running) == []
    assert await suppressed(setup.running) == {}
    assert setup.queues.left(setup.queues.raw_queue) == 0


async def test_the_same_message_twice_changes_nothing_the_second_time(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    event = examples.for_message(examples.COMPLAINT, message_id, EMAIL)
    setup.queues.publish(event)
    consumer = setup.consumer()
    messages = setup.queues.receive(setup.queues.raw_queue)
    before = counted("complaint", "duplicate")

    # The same SQS message handled twice (a redelivery), then the same event published again.
    assert await consumer.handle_batch(setup.database, messages) == 1
    assert await consumer.handle_batch(setup.database, messages) == 1
    setup.queues.publish(event)
    assert await setup.handle(consumer) == 1

    assert len(await events(setup.running)) == 1
    assert counted("complaint", "duplicate") == before + 2
    assert list(await suppressed(setup.running)) == [EMAIL]


async def test_an_address_in_another_case_is_the_same_address(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    setup.queues.publish(
        examples.for_message(examples.BOUNCE_PERMANENT, message_id, "Person@EXAMPLE.org")
    )

    assert await setup.handle(setup.consumer()) == 1
    assert list(await suppressed(setup.running)) == [EMAIL]


async def test_an_envelope_from_a_foreign_topic_is_ignored_and_deleted(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    event = examples.for_message(examples.BOUNCE_PERMANENT, message_id, EMAIL)
    foreign = "arn:aws:sns:ca-central-1:123456789012:someone-else"
    setup.queues.send_body(setup.queues.raw_queue, examples.envelope(event, foreign))

    assert await setup.handle(setup.consumer()) == 1
    assert await events(setup.running) == []
    assert await suppressed(setup.running) == {}
    assert setup.queues.left(setup.queues.raw_queue) == 0


async def test_envelopes_from_the_configured_topic_are_applied(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    setup.queues.publish(examples.for_message(examples.DELIVERY, message_id, EMAIL))

    assert await setup.handle(setup.consumer(), setup.queues.envelope_queue) == 1
    assert (await sent_row(setup.running, EMAIL)).delivery_state == DeliveryState.DELIVERED


async def test_sqs_unreachable_for_a_while_codes_still_go_and_events_catch_up(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay(setup.queues.endpoint)
    try:
        settings = setup.settings.model_copy(update={"aws_endpoint_url": relay.endpoint})
        consumer = FeedbackConsumer(
            settings,
            clock=SystemClock(),
            wait_seconds=1,
            retry_first_seconds=0.05,
            client=sqs_client(settings, wait_seconds=1),
        )
        relay.up = False
        task = asyncio.create_task(consumer.run(setup.database))
        try:
            # Codes go out while the queue is away, and their events wait in it.
            ids = [await send_code(setup.running, f"user{n}@example.org") for n in range(3)]
            for n, message_id in enumerate(ids):
                setup.queues.publish(
                    examples.for_message(examples.DELIVERY, message_id, f"user{n}@example.org")
                )
            await asyncio.sleep(0.5)
            assert "feedback queue unreachable" in caplog.text
            assert await events(setup.running) == []

            relay.up = True

            async def caught_up() -> bool:
                return len(await events(setup.running)) == 3

            await eventually(caught_up)
            assert "reachable again" in caplog.text
        finally:
            await consumer.stop()
            await task
    finally:
        relay.close()


async def test_a_state_never_goes_back_when_events_come_out_of_order(setup: Setup) -> None:
    message_id = await send_code(setup.running, EMAIL)
    consumer = setup.consumer()
    for event in (examples.COMPLAINT, examples.DELIVERY, examples.DELIVERY_DELAY):
        setup.queues.publish(examples.for_message(event, message_id, EMAIL))
        assert await setup.handle(consumer) == 1

    assert len(await events(setup.running)) == 3
    assert (await sent_row(setup.running, EMAIL)).delivery_state == DeliveryState.COMPLAINED


async def test_the_worker_sends_codes_while_its_queue_is_away_and_then_catches_up(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    feedback_queues: FeedbackQueues,
) -> None:
    """The consumer inside a delivery worker (as build_worker wires it), SQS behind a relay
    that is down: codes still leave through SES; once SQS is back, the events are applied."""
    from taxease_auth.mail.backends.ses import SesBackend
    from taxease_auth.mail.worker import DeliveryWorker
    from taxease_auth.store.db import make_sessionmaker

    ses.verify_identity(SENDER)
    running = await start_app(ses_settings(embedded_worker=False))
    relay = Relay(feedback_queues.endpoint)
    relay.up = False
    settings = running.settings.model_copy(
        update={"ses_feedback_queue_url": feedback_queues.raw_queue}
    )
    consumer = FeedbackConsumer(
        settings,
        clock=SystemClock(),
        wait_seconds=1,
        retry_first_seconds=0.05,
        client=sqs_client(
            settings.model_copy(update={"aws_endpoint_url": relay.endpoint}), wait_seconds=1
        ),
    )
    backend = SesBackend(settings)
    worker = DeliveryWorker(
        sessions=make_sessionmaker(running.app.state.engine),
        backend=backend,
        sender=SENDER,
        clock=SystemClock(),
        lease_seconds=60,
        max_send_rate=1000.0,
        poll_interval=0.05,
        feedback=consumer,
    )
    task = asyncio.create_task(worker.run())
    try:
        emails = [f"away{n}@example.org" for n in range(3)]
        for email in emails:
            await register(running, email)
        rows = [await sent_row(running, email) for email in emails]  # sent while SQS is away
        for email, row in zip(emails, rows, strict=True):
            assert row.provider_message_id
            setup_event = examples.for_message(examples.DELIVERY, row.provider_message_id, email)
            feedback_queues.publish(setup_event)
        await asyncio.sleep(0.3)
        assert await events(running) == []

        relay.up = True

        async def caught_up() -> bool:
            return len(await events(running)) == 3

        await eventually(caught_up)
    finally:
        worker.wake()
        await worker.stop()
        await task
        await backend.aclose()
        relay.close()
