"""The delivery worker applies the retention rules of `taxease-auth purge` on a schedule
(HOUSEKEEPING_INTERVAL_SECONDS): at its first housekeeping pass, then once per interval by its
clock. Time is a ManualClock; rows are written as the store writes them.
"""

from __future__ import annotations

import asyncio
import io
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth.clock import ManualClock
from taxease_auth.config import ConfigError, Settings, load_settings
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.worker import DeliveryWorker, Retention
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import AuditEvent, EmailOutbox, Otp, OutboxStatus
from tests.api.conftest import register
from tests.conftest import SENDER, SettingsFactory, StartApp

START = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
async def sessions(
    make_settings: SettingsFactory,
) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(make_settings())
    yield make_sessionmaker(engine)
    await engine.dispose()


def worker(
    sessions: async_sessionmaker[AsyncSession], clock: ManualClock, settings: Settings
) -> DeliveryWorker:
    return DeliveryWorker(
        sessions=sessions,
        backend=ConsoleBackend(stream=io.StringIO()),
        sender=SENDER,
        clock=clock,
        lease_seconds=settings.outbox_lease_seconds,
        retention=Retention.from_settings(settings),
    )


async def seed(sessions: async_sessionmaker[AsyncSession], now: datetime, tag: str) -> None:
    """For each table, one row past its retention ("old") and one within it ("recent"), with
    the default rules: codes 24 h past expiry, outbox 7 days, audit 90 days."""
    async with sessions.begin() as session:
        old_code = Otp(
            email=f"{tag}-old@example.com",
            purpose="email_verification",
            code_hash=secrets.token_hex(32),
            expires_at=now - timedelta(days=2),
            used=False,
            attempts=0,
            created_at=now - timedelta(days=2, minutes=5),
        )
        session.add(old_code)
        session.add(
            Otp(
                email=f"{tag}-recent@example.com",
                purpose="email_verification",
                code_hash=secrets.token_hex(32),
                expires_at=now - HOUR,
                used=True,
                attempts=1,
                created_at=now - HOUR - timedelta(minutes=5),
            )
        )
        await session.flush()
        for age, name in ((timedelta(days=8), "old"), (timedelta(days=1), "recent")):
            session.add(
                EmailOutbox(
                    recipient=f"{tag}-{name}@example.com",
                    kind="email_verification",
                    # The recent mail's code is the old one: the purge deletes the code and
                    # keeps the mail (the key is set to NULL).
                    otp_id=old_code.id if name == "recent" else None,
                    subject="Verify your email",
                    status=OutboxStatus.SENT,
                    attempts=1,
                    next_attempt_at=now - age,
                    idempotency_key=secrets.token_hex(16),
                    created_at=now - age,
                    updated_at=now - age,
                    sent_at=now - age,
                )
            )
        for age, name in ((timedelta(days=100), "old"), (timedelta(days=10), "recent")):
            session.add(
                AuditEvent(
                    occurred_at=now - age,
                    event="code_issued",
                    email_hash=secrets.token_hex(32),
                    outcome="ok",
                    detail=f"{tag}-{name}",
                )
            )


async def stored(sessions: async_sessionmaker[AsyncSession]) -> dict[str, set[str]]:
    """What is left in each table, by the tag-and-age names ``seed`` gave the rows."""
    async with sessions() as session:
        codes = set((await session.execute(select(Otp.email))).scalars())
        mails = set((await session.execute(select(EmailOutbox.recipient))).scalars())
        events = set((await session.execute(select(AuditEvent.detail))).scalars())
    return {
        "codes": {email.split("@")[0] for email in codes},
        "mails": {recipient.split("@")[0] for recipient in mails},
        "events": {str(detail) for detail in events},
    }


def both(tag: str) -> set[str]:
    return {f"{tag}-old", f"{tag}-recent"}


def recent(*tags: str) -> set[str]:
    return {f"{tag}-recent" for tag in tags}


def purged(table: str) -> float:
    return REGISTRY.get_sample_value("taxease_purged_rows_total", {"table": table}) or 0.0


async def test_the_first_pass_purges_what_is_past_retention_and_keeps_the_rest(
    sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    clock = ManualClock(START)
    await seed(sessions, clock.now(), "a")
    before = {table: purged(table) for table in ("otps", "email_outbox", "audit_events")}

    await worker(sessions, clock, make_settings()).housekeeping()

    assert await stored(sessions) == {
        "codes": recent("a"),
        "mails": recent("a"),
        "events": recent("a"),
    }
    async with sessions() as session:
        [kept_mail] = (await session.execute(select(EmailOutbox))).scalars()
    assert kept_mail.otp_id is None  # its code went; the mail stays for `why`
    after = {table: purged(table) for table in before}
    assert {table: after[table] - before[table] for table in before} == {
        "otps": 1,
        "email_outbox": 1,
        "audit_events": 1,
    }


async def test_the_next_purge_waits_for_the_interval_on_the_workers_clock(
    sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    clock = ManualClock(START)
    delivery = worker(sessions, clock, make_settings(housekeeping_interval_seconds=3600))
    await delivery.housekeeping()  # the first pass: nothing to purge yet

    clock.advance(HOUR - timedelta(seconds=1))
    await seed(sessions, clock.now(), "b")
    await delivery.housekeeping()  # the outbox part runs every pass, the purge is not due
    assert await stored(sessions) == {"codes": both("b"), "mails": both("b"), "events": both("b")}

    clock.advance(timedelta(seconds=1))
    await delivery.housekeeping()
    assert await stored(sessions) == {
        "codes": recent("b"),
        "mails": recent("b"),
        "events": recent("b"),
    }


async def test_interval_zero_leaves_the_purge_to_the_command(
    sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    clock = ManualClock(START)
    settings = make_settings(housekeeping_interval_seconds=0)
    assert Retention.from_settings(settings) is None
    await seed(sessions, clock.now(), "c")

    delivery = worker(sessions, clock, settings)
    await delivery.housekeeping()
    clock.advance(timedelta(days=365))
    await delivery.housekeeping()

    assert await stored(sessions) == {"codes": both("c"), "mails": both("c"), "events": both("c")}


async def test_several_workers_purging_one_database_is_harmless(
    sessions: async_sessionmaker[AsyncSession], make_settings: SettingsFactory
) -> None:
    """Each worker purges on its own schedule (PostgreSQL runs several): the deletes are
    idempotent, so whoever comes second finds nothing left and nothing fails."""
    clock = ManualClock(START)
    settings = make_settings()
    await seed(sessions, clock.now(), "d")
    first, second = worker(sessions, clock, settings), worker(sessions, clock, settings)
    before = purged("otps")

    await asyncio.gather(first.housekeeping(), second.housekeeping())

    assert await stored(sessions) == {
        "codes": recent("d"),
        "mails": recent("d"),
        "events": recent("d"),
    }
    assert purged("otps") - before == 1  # counted once: the second worker deleted nothing


async def test_the_running_app_purges_on_its_workers_schedule(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    """End to end: the embedded worker's loop does it, with the settings' rules."""
    clock = ManualClock(datetime.now(UTC) - timedelta(days=30))
    running = await start_app(make_settings(housekeeping_interval_seconds=3600), clock=clock)
    sessions = make_sessionmaker(running.app.state.engine)
    await register(running.client, "month-old@example.com")
    await running.console_mail("month-old@example.com")
    await running.settled_outbox()
    assert (await stored(sessions))["codes"] == {"month-old"}

    clock.advance(timedelta(days=30))  # a month later: the code and the mail are past retention

    deadline = asyncio.get_running_loop().time() + 10
    while (left := await stored(sessions))["codes"] or left["mails"]:
        assert asyncio.get_running_loop().time() < deadline, left
        await asyncio.sleep(0.05)
    async with sessions() as session:
        events = list((await session.execute(select(AuditEvent.event))).scalars())
    assert events == ["code_issued"]  # the audit trail keeps 90 days


def test_a_negative_interval_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="HOUSEKEEPING_INTERVAL_SECONDS"):
        load_settings(_env_file=None, development_mode=True, housekeeping_interval_seconds=-1)
