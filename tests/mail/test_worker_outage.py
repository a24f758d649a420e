"""The delivery worker outlives a database it cannot write to: the claim fails, the error is
logged (its class, never a row), and once the database is writable again the queued mail
leaves. The outage is real: another connection holds SQLite's write lock, as a long CLI
command or a stuck process would.
"""

from __future__ import annotations

import asyncio
import io
import logging
import sqlite3
from datetime import timedelta

import pytest
from sqlalchemy import select

from taxease_auth.clock import SystemClock
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.render import MailRenderer
from taxease_auth.mail.worker import DeliveryWorker
from taxease_auth.store import outbox, sql
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailKind, OutboxStatus
from taxease_auth.store.sql import database_for
from tests.conftest import SENDER, SettingsFactory

pytestmark = pytest.mark.sqlite_only

RECIPIENT = "outage@example.org"
WAIT_SECONDS = 10.0


async def wait_until(condition: object, what: str) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_the_worker_logs_a_locked_database_and_delivers_once_it_is_free(
    make_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(embedded_worker=False)
    engine = make_engine(settings)
    database = database_for(engine)
    clock = SystemClock()
    now = clock.now()
    mail = MailRenderer("TaxEase").render(
        MailKind.EMAIL_VERIFICATION, code="123456", first_name="Ada", expires_minutes=5
    )
    async with database.transaction() as tx:
        await outbox.enqueue(
            tx,
            recipient=RECIPIENT,
            kind=MailKind.EMAIL_VERIFICATION,
            mail=mail,
            otp_id=None,
            send_before=now + timedelta(minutes=5),
            now=now,
        )
    # A claim gives up after 100 ms instead of the production 10 s, so the test is quick.
    monkeypatch.setattr(sql, "SQLITE_BUSY_TIMEOUT_MS", 100)
    assert engine.url.database is not None
    blocker = sqlite3.connect(engine.url.database, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    console = io.StringIO()
    worker = DeliveryWorker(
        sessions=make_sessionmaker(engine),
        backend=ConsoleBackend(stream=console),
        sender=SENDER,
        clock=clock,
        lease_seconds=settings.outbox_lease_seconds,
        poll_interval=0.5,
        database=database,
    )
    caplog.set_level(logging.ERROR, logger="taxease_auth.mail.worker")
    task = asyncio.create_task(worker.run())
    try:
        await wait_until(
            lambda: any("cannot claim mail: OperationalError" in r.message for r in caplog.records),
            "the failed claim to be logged",
        )
        assert not task.done()  # still running, not crashed
        assert RECIPIENT not in console.getvalue()

        blocker.execute("ROLLBACK")
        worker.wake()
        await wait_until(lambda: RECIPIENT in console.getvalue(), "the mail to leave")
        assert not task.done()
    finally:
        blocker.close()
        await worker.stop()
        await asyncio.wait_for(task, WAIT_SECONDS)
        async with make_sessionmaker(engine)() as session:
            statuses = list(await session.scalars(select(EmailOutbox.status)))
        await database.close()
        await engine.dispose()

    assert statuses == [OutboxStatus.SENT]
    # The log names the error's class only: no address, no row.
    assert all(RECIPIENT not in record.getMessage() for record in caplog.records)
