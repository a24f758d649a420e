"""The reputation guard (rates, gauges, one warning per crossing) and doctor's feedback checks:
"could not check" where moto cannot answer, never a false PASS."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from taxease_auth import metrics
from taxease_auth.cli import app as cli
from taxease_auth.config import Settings
from taxease_auth.mail.feedback.reputation import ReputationGuard, measure
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailEvent
from taxease_auth.store.sql import Database, database_for
from tests.conftest import REGION, SENDER, SesInbox, SettingsFactory
from tests.mail.feedback.conftest import FeedbackQueues

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _empty_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)


@pytest.fixture
async def database(database_url: str, make_settings: SettingsFactory) -> AsyncIterator[Database]:
    engine = make_engine(make_settings())
    db = database_for(engine, pool_size=1)
    yield db
    await db.close()
    await engine.dispose()


async def add_mails(settings: Settings, count: int, events: dict[int, tuple[str, str]]) -> None:
    """``count`` accepted mails; ``events`` maps the n-th to (event_type, category)."""
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine).begin() as session:
            rows = []
            for n in range(count):
                row = EmailOutbox(
                    recipient=f"r{n}-{secrets.token_hex(3)}@example.org",
                    kind="login",
                    subject="s",
                    status="sent",
                    attempts=1,
                    next_attempt_at=NOW,
                    idempotency_key=secrets.token_hex(16),
                    provider_message_id=secrets.token_hex(8),
                    delivery_state="accepted",
                    created_at=NOW,
                    updated_at=NOW,
                )
                session.add(row)
                rows.append(row)
            await session.flush()
            for n, (event_type, category) in events.items():
                session.add(
                    MailEvent(
                        outbox_id=rows[n].id,
                        recipient=rows[n].recipient,
                        event_type=event_type,
                        category=category,
                        occurred_at=NOW,
                        recorded_at=NOW,
                        dedupe_key=secrets.token_hex(32),
                    )
                )
    finally:
        await engine.dispose()


async def test_rates_count_permanent_bounces_and_complaints_over_the_window(
    make_settings: SettingsFactory, database: Database
) -> None:
    settings = make_settings(mail_reputation_window=20)
    # Older mails, out of the window: their bounces do not count.
    await add_mails(settings, 10, dict.fromkeys(range(10), ("bounce", "Permanent")))
    await add_mails(
        settings,
        20,
        {0: ("bounce", "Permanent"), 1: ("bounce", "Transient"), 2: ("complaint", "abuse")},
    )

    rates = await measure(database, settings)

    assert (rates.accepted, rates.permanent_bounces, rates.complaints) == (20, 1, 1)
    assert rates.bounce_rate == 0.05
    assert rates.complaint_rate == 0.05


async def test_guard_sets_the_gauges_and_warns_once_per_crossing(
    make_settings: SettingsFactory, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(mail_reputation_window=100)
    guard = ReputationGuard(settings)
    caplog.set_level(logging.INFO, "taxease_auth.mail.feedback.reputation")
    await add_mails(settings, 10, {0: ("bounce", "Permanent")})  # 10 %

    await guard.refresh(database)
    await guard.refresh(database)
    assert metrics.MAIL_BOUNCE_RATE._value.get() == pytest.approx(0.1)
    assert caplog.text.count("bounce rate above its warn level") == 1

    await add_mails(settings, 90, {})  # 1 %: back under 2.5 %
    await guard.refresh(database)
    assert "bounce rate back under" in caplog.text
    assert metrics.MAIL_BOUNCE_RATE._value.get() == pytest.approx(0.01)

    await add_mails(settings, 10, dict.fromkeys(range(5), ("bounce", "Permanent")))
    await guard.refresh(database)
    assert caplog.text.count("bounce rate above its warn level") == 2
    assert metrics.MAIL_COMPLAINT_RATE._value.get() == 0


# --- doctor ----------------------------------------------------------------------------------


def doctor(env: dict[str, str]) -> tuple[Result, dict[str, str]]:
    result = CliRunner().invoke(cli, ["doctor"], env={"COLUMNS": "200", **env})
    lines = {}
    for line in result.stdout.splitlines():
        status, _, rest = line.partition(" ")
        for name in (
            "SES feedback",
            "event destination",
            "feedback queue",
            "account suppression",
            "reputation",
        ):
            if rest.strip().startswith(name):
                lines[name] = f"{status} {rest.strip()[len(name) :].strip()}"
    return result, lines


def ses_env(ses: SesInbox, database_url: str, **extra: str) -> dict[str, str]:
    return {
        "DEVELOPMENT_MODE": "true",
        "DATABASE_URL": database_url,
        "EMAIL_BACKEND": "ses",
        "AWS_SES_FROM_EMAIL": SENDER,
        "AWS_ENDPOINT_URL": ses.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        **extra,
    }


def with_dead_letter_queue(queues: FeedbackQueues) -> None:
    dead = queues.sqs.create_queue(QueueName=f"dlq-{secrets.token_hex(4)}")["QueueUrl"]
    arn = queues.sqs.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queues.sqs.set_queue_attributes(
        QueueUrl=queues.raw_queue,
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "5"})
        },
    )


def test_doctor_without_feedback_says_it_is_not_set_up(ses: SesInbox, database_url: str) -> None:
    ses.verify_identity(SENDER)
    result, lines = doctor(ses_env(ses, database_url))

    assert lines["SES feedback"].startswith("UNKNOWN not set up (SES_FEEDBACK_QUEUE_URL unset)")
    assert lines["reputation"].startswith("PASS no mail accepted")
    assert result.exit_code == 0, result.output


def test_doctor_with_feedback_set_up_in_moto(
    ses: SesInbox, feedback_queues: FeedbackQueues, database_url: str
) -> None:
    ses.verify_identity(SENDER)
    ses.client().create_configuration_set(ConfigurationSetName="otp-events")
    with_dead_letter_queue(feedback_queues)

    result, lines = doctor(
        ses_env(
            ses,
            database_url,
            AWS_SES_CONFIGURATION_SET="otp-events",
            SES_FEEDBACK_QUEUE_URL=feedback_queues.raw_queue,
        )
    )

    # moto cannot tell: never a PASS for what was not seen.
    assert lines["event destination"].startswith("UNKNOWN could not check otp-events")
    assert lines["account suppression"].startswith("UNKNOWN could not check")
    assert lines["feedback queue"].startswith("PASS reachable, 0 waiting, dead-letter queue set")
    assert lines["reputation"].startswith("PASS")
    assert "Traceback" not in result.output


def test_doctor_fails_a_queue_without_dead_letter_queue_or_unreachable(
    ses: SesInbox, feedback_queues: FeedbackQueues, database_url: str
) -> None:
    ses.verify_identity(SENDER)
    no_dlq, no_dlq_lines = doctor(
        ses_env(ses, database_url, SES_FEEDBACK_QUEUE_URL=feedback_queues.raw_queue)
    )
    gone, gone_lines = doctor(
        ses_env(ses, database_url, SES_FEEDBACK_QUEUE_URL=f"{ses.endpoint}/123456789012/nope")
    )

    assert no_dlq_lines["feedback queue"].startswith("FAIL reachable")
    assert "without a dead-letter queue" in no_dlq_lines["feedback queue"]
    # No configuration set: nothing would ever publish to the queue.
    assert no_dlq_lines["event destination"].startswith("FAIL AWS_SES_CONFIGURATION_SET is unset")
    assert no_dlq.exit_code == 1
    assert gone_lines["feedback queue"].startswith("FAIL SES_FEEDBACK_QUEUE_URL cannot be read")
    assert gone.exit_code == 1


async def test_doctor_fails_past_a_warn_level(
    ses: SesInbox, database_url: str, make_settings: SettingsFactory
) -> None:
    ses.verify_identity(SENDER)
    await add_mails(make_settings(), 100, {0: ("complaint", "abuse")})  # 1 % > 0.05 %

    # In a thread: the command runs an event loop of its own.
    result, lines = await asyncio.to_thread(doctor, ses_env(ses, database_url))

    assert lines["reputation"].startswith("FAIL bounce rate 0.00%")
    assert "complaint rate 1.000%" in lines["reputation"]
    assert result.exit_code == 1


async def test_events_are_purged_with_their_row_and_suppressed_rows_are_purged_too(
    make_settings: SettingsFactory,
) -> None:
    from datetime import timedelta

    from sqlalchemy import func, select, update

    from taxease_auth.store import housekeeping

    settings = make_settings()
    await add_mails(settings, 3, {0: ("delivery", ""), 1: ("bounce", "Permanent")})
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine).begin() as session:
            first = await session.scalar(select(func.min(EmailOutbox.id)))
            assert first is not None
            last = first + 2
            await session.execute(
                update(EmailOutbox).where(EmailOutbox.id == last).values(status="suppressed")
            )
            counts = await housekeeping.purge(
                session,
                now=NOW + timedelta(days=30),
                codes_older_than=timedelta(days=1),
                outbox_older_than=timedelta(days=7),
                audit_older_than=timedelta(days=90),
                session_idle=timedelta(days=14),
            )
            left_events = await session.scalar(select(func.count(MailEvent.id)))
    finally:
        await engine.dispose()
    assert counts.outbox_rows == 3
    assert left_events == 0
