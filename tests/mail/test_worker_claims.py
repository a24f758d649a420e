"""How much the delivery worker claims at once: a claim takes one second's sending turns (one
transaction for many mails, not one per mail), never a backlog it cannot send soon, and the
rows it claimed and did not start go back to the queue when it stops.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.clock import SystemClock
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.render import MailRenderer
from taxease_auth.mail.worker import DeliveryWorker
from taxease_auth.store import outbox
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailKind, OutboxStatus
from tests.conftest import SENDER, SettingsFactory
from tests.support import transaction_on

ROWS = 30
# Paced at 5/s (4 turns a second after the headroom), 10 sends at once allowed: a claim of
# every free slot would lease 10 rows, a second's turns lease 4.
RATE = 5.0
TURNS_PER_SECOND = 4
CONCURRENCY = 10
WAIT_SECONDS = 10.0


@pytest.fixture
async def engine(make_settings: SettingsFactory) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(make_settings(embedded_worker=False))
    yield engine
    await engine.dispose()


async def queue(engine: AsyncEngine, count: int) -> None:
    now = SystemClock().now()
    mail = MailRenderer("TaxEase").render(MailKind.PASSWORD_CHANGED, first_name="Ada")
    async with transaction_on(engine) as tx:
        for i in range(count):
            await outbox.enqueue(
                tx,
                recipient=f"claims{i}@example.org",
                kind=MailKind.PASSWORD_CHANGED,
                mail=mail,
                otp_id=None,
                send_before=now + timedelta(minutes=5),
                now=now,
            )


async def rows(engine: AsyncEngine) -> list[EmailOutbox]:
    async with make_sessionmaker(engine)() as session:
        return list(await session.scalars(select(EmailOutbox)))


async def test_a_claim_takes_a_second_of_turns_and_stopping_gives_back_the_rest(
    engine: AsyncEngine,
) -> None:
    await queue(engine, ROWS)
    console = io.StringIO()
    worker = DeliveryWorker(
        sessions=make_sessionmaker(engine),
        backend=ConsoleBackend(stream=console),
        sender=SENDER,
        clock=SystemClock(),
        lease_seconds=60,
        concurrency=CONCURRENCY,
        max_send_rate=RATE,
        poll_interval=0.05,
    )
    task = asyncio.create_task(worker.run())
    most_leased = 0
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while console.getvalue().count("Mail (") < 2:
            assert asyncio.get_running_loop().time() < deadline, "no mail left in time"
            leased = [
                row
                for row in await rows(engine)
                if row.status == OutboxStatus.PENDING and row.leased_by is not None
            ]
            most_leased = max(most_leased, len(leased))
            await asyncio.sleep(0.01)
    finally:
        await worker.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)

    final = await rows(engine)
    sent = [row for row in final if row.status == OutboxStatus.SENT]
    pending = [row for row in final if row.status == OutboxStatus.PENDING]
    assert worker.send_rate == RATE
    # Claimed in batches of a second's turns (not one row a time, not every free slot); the send
    # in flight is leased as well.
    assert TURNS_PER_SECOND - 1 <= most_leased <= TURNS_PER_SECOND + 1
    assert len(sent) >= 2
    assert len(sent) + len(pending) == ROWS
    # What the worker claimed and never started is free for any worker at once, not held
    # until its lease runs out.
    assert all(row.leased_by is None and row.lease_expires_at is None for row in pending)
