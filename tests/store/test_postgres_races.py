"""PostgreSQL under real concurrency: separate engines (connection pools) on one database, as
separate processes would have, with their transactions interleaving in the server.

- a claim skips the rows another transaction has locked (``FOR UPDATE SKIP LOCKED``) and never
  waits for them, and leases no more than its limit whatever plan the server picks;
- two delivery workers claiming at once send each of 200 rows exactly once;
- correct submissions of one code through two apps succeed exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import io
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth.clock import SystemClock
from taxease_auth.config import Settings
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.mail.render import MailRenderer
from taxease_auth.mail.worker import build_worker
from taxease_auth.store import outbox
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, MailKind, OutboxStatus
from taxease_auth.store.sql import Statement
from tests.api.conftest import INVALID_CODE, register, verify
from tests.conftest import SettingsFactory, StartApp
from tests.support import transaction_on

pytestmark = pytest.mark.postgresql_only

ROWS = 200
BATCH = 20
WAIT_SECONDS = 30.0
LEASE = timedelta(minutes=1)
# Longer than any claim of a few rows takes: a claim that waits this long is blocked on a lock.
NOT_BLOCKED_SECONDS = 5.0

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    settings = make_settings(embedded_worker=False)
    assert not settings.is_sqlite
    return settings


@pytest.fixture
async def pools(settings: Settings) -> AsyncIterator[Callable[[], Sessions]]:
    """Sessions on a new engine of their own (its own connection pool) per call."""
    async with AsyncExitStack() as stack:

        def new_pool() -> Sessions:
            engine = make_engine(settings)
            stack.push_async_callback(engine.dispose)
            return make_sessionmaker(engine)

        yield new_pool


async def queue_mails(sessions: Sessions, count: int) -> list[str]:
    """Queue ``count`` code mails as the API does; their idempotency keys."""
    renderer = MailRenderer("TaxEase")
    now = SystemClock().now()
    engine = sessions.kw["bind"]
    async with transaction_on(engine) as tx:
        return [
            await outbox.enqueue(
                tx,
                recipient=f"race-{secrets.token_hex(4)}@example.org",
                kind=MailKind.EMAIL_VERIFICATION,
                mail=renderer.render(
                    MailKind.EMAIL_VERIFICATION,
                    code=f"{secrets.randbelow(10**6):06d}",
                    first_name="Race",
                    expires_minutes=5,
                ),
                otp_id=None,
                send_before=now + timedelta(minutes=5),
                now=now,
            )
            for _ in range(count)
        ]


async def outbox_rows(sessions: Sessions) -> list[EmailOutbox]:
    async with sessions() as session:
        return list((await session.scalars(select(EmailOutbox).order_by(EmailOutbox.id))).all())


async def test_a_claim_skips_rows_another_transaction_holds_and_never_waits(
    pools: Callable[[], Sessions],
) -> None:
    first, second = pools(), pools()
    await queue_mails(first, 10)
    now = SystemClock().now()

    async with transaction_on(first.kw["bind"]) as holding:
        held = await outbox.claim_due(holding, worker_id="first", now=now, lease=LEASE, limit=4)
        # The first transaction is still open: its rows are locked, their lease not visible.
        async with transaction_on(second.kw["bind"]) as tx:
            taken = await asyncio.wait_for(
                outbox.claim_due(tx, worker_id="second", now=now, lease=LEASE, limit=10),
                timeout=NOT_BLOCKED_SECONDS,
            )

    assert len(held) == 4
    assert len(taken) == 6
    assert {row.id for row in held}.isdisjoint(row.id for row in taken)
    # Both leases are committed now: nothing is left to claim.
    async with transaction_on(second.kw["bind"]) as tx:
        assert await outbox.claim_due(tx, worker_id="third", now=now, lease=LEASE, limit=10) == []
    leased_by = collections.Counter(row.leased_by for row in await outbox_rows(first))
    assert leased_by == {"first": 4, "second": 6}


async def test_a_claim_leases_at_most_its_limit_whatever_plan_the_server_picks(
    pools: Callable[[], Sessions],
) -> None:
    """The plan that once leased 10 rows for a claim of 4 (CI): a nested-loop semi join that
    runs the locking choice again for each row of the table, each run skipping the rows the
    statement had just locked and taking the next ones. The planner picked it on its own in
    CI; here the other ways to join are turned off so that it must."""
    sessions = pools()
    await queue_mails(sessions, 10)
    now = SystemClock().now()

    async with transaction_on(sessions.kw["bind"]) as tx:
        for method in ("hashjoin", "mergejoin", "material", "hashagg", "sort"):
            await tx.all(Statement(f"SELECT set_config('enable_{method}', 'off', true)"))
        claimed = await outbox.claim_due(tx, worker_id="w", now=now, lease=LEASE, limit=4)

    leased = [row for row in await outbox_rows(sessions) if row.leased_by == "w"]
    assert len(claimed) == 4
    assert sorted(row.id for row in leased) == sorted(row.id for row in claimed) == [1, 2, 3, 4]


async def test_two_workers_claiming_at_once_send_every_row_exactly_once(
    settings: Settings, pools: Callable[[], Sessions]
) -> None:
    # On PostgreSQL nothing holds a second worker back: no SQLite lock, rows are claimed with
    # SKIP LOCKED and a lease.
    assert outbox.sqlite_worker_lock(settings) is None
    writer = pools()
    consoles = [ConsoleBackend(stream=io.StringIO(), keep=ROWS) for _ in range(2)]
    workers = [
        build_worker(settings, sessions=pools(), backend=console, clock=SystemClock())
        for console in consoles
    ]
    # Half queued before the workers start (both claim from a full queue at once), half while
    # they run, in batches, each batch waking both.
    keys = await queue_mails(writer, ROWS // 2)
    tasks = [asyncio.create_task(worker.run()) for worker in workers]
    try:
        for _ in range(ROWS // 2 // BATCH):
            keys += await queue_mails(writer, BATCH)
            for worker in workers:
                worker.wake()
            await asyncio.sleep(0.01)
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while sum(len(console.recent()) for console in consoles) < ROWS:
            assert asyncio.get_running_loop().time() < deadline, "the outbox was not delivered"
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            await worker.stop()
        await asyncio.gather(*tasks)

    sent = collections.Counter(m.idempotency_key for c in consoles for m in c.recent())
    assert sent == collections.Counter(keys), "a row was sent twice, or never"
    shares = [len(console.recent()) for console in consoles]
    assert min(shares) > 0, f"one worker did all the work: {shares}"
    rows = await outbox_rows(writer)
    assert {row.status for row in rows} == {OutboxStatus.SENT}
    assert all(row.provider_message_id == f"console-{row.idempotency_key}" for row in rows)
    assert all(row.attempts == 1 and row.lease_expires_at is None for row in rows)


async def test_correct_submissions_through_two_apps_succeed_exactly_once(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    email = "race-two-apps@example.com"
    first = await start_app(make_settings())
    second = await start_app(make_settings(embedded_worker=False))
    assert (await register(first.client, email)).status_code == 201
    code = await first.latest_code(email)

    responses = await asyncio.gather(
        *(verify(app.client, email, code) for _ in range(10) for app in (first, second))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * 19
    assert all(r.json() == INVALID_CODE for r in responses if r.status_code == 400)
