"""store/sql.py: the request path's SQL, straight to the driver, on both databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.config import Settings
from taxease_auth.store import users
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import User
from taxease_auth.store.sql import Conflict, Database, Statement, Transaction, database_for, utc
from tests.conftest import SettingsFactory

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
# A statement that keeps SQLite busy for about half a second.
SLOW_QUERY = """
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
    SELECT count(*) FROM n
"""


@pytest.fixture
async def engine(make_settings: SettingsFactory) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(make_settings())
    yield engine
    await engine.dispose()


@pytest.fixture
async def database(engine: AsyncEngine) -> AsyncIterator[Database]:
    database = database_for(engine)
    yield database
    await asyncio.wait_for(database.close(), timeout=5)  # a turn never given back fails here


async def insert_user(tx: Transaction, email: str) -> int:
    """An unverified account, inside the caller's transaction."""
    return await users.add(
        tx,
        email=email,
        password_hash="not-a-real-hash",
        first_name="Ada",
        last_name="Lovelace",
        verified=False,
        now=NOW,
    )


async def add_user(database: Database, email: str) -> int:
    async with database.transaction() as tx:
        return await insert_user(tx, email)


async def record_login(database: Database, user_id: int) -> None:
    async with database.transaction() as tx:
        await users.record_login(tx, user_id, now=NOW, new_password_hash=None)


@asynccontextmanager
async def loop_turns() -> AsyncIterator[list[int]]:
    """Counts 5 ms sleeps that ended while the block ran: a stalled event loop counts none."""
    turns = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.005)
            turns[0] += 1

    ticking = asyncio.create_task(tick())
    try:
        yield turns
    finally:
        ticking.cancel()


def test_statement_numbers_each_name_once_for_asyncpg() -> None:
    statement = Statement("UPDATE t SET a = :a, b = :b WHERE a < :a AND c::text = :c")

    assert statement.text == "UPDATE t SET a = :a, b = :b WHERE a < :a AND c::text = :c"
    assert statement.positional == "UPDATE t SET a = $1, b = $2 WHERE a < $1 AND c::text = $3"
    assert statement.names == ("a", "b", "c")


def test_timestamps_come_back_as_aware_utc_from_either_driver() -> None:
    assert utc("2026-11-25 12:00:00.000000") == NOW  # SQLite's text, as SQLAlchemy writes it
    assert utc(NOW.astimezone(UTC)) == NOW
    assert utc(None) is None


async def test_rows_written_here_read_back_through_the_orm(
    database: Database, engine: AsyncEngine
) -> None:
    user_id = await add_user(database, "ada@example.com")

    async with make_sessionmaker(engine)() as session:
        user = (await session.scalars(select(User).where(User.id == user_id))).one()
    assert user.email == "ada@example.com"
    assert user.created_at == NOW
    assert user.email_verified is False
    async with database.transaction() as tx:
        row = await users.get_by_id(tx, user_id)
    assert row is not None
    assert (row.created_at, row.email_verified, row.last_login_at) == (NOW, False, None)


async def test_a_duplicate_key_is_a_conflict_and_the_transaction_rolls_back(
    database: Database,
) -> None:
    user_id = await add_user(database, "twice@example.com")

    async def log_in_then_register_the_address_again() -> None:
        async with database.transaction() as tx:
            later = NOW + timedelta(hours=1)
            await users.record_login(tx, user_id, now=later, new_password_hash=None)
            await insert_user(tx, "twice@example.com")

    with pytest.raises(Conflict):
        await log_in_then_register_the_address_again()

    async with database.transaction() as tx:
        row = await users.get_by_email(tx, "twice@example.com")
    assert row is not None
    assert row.last_login_at is None  # the update before the conflict was rolled back


async def test_a_single_statement_commits_on_its_own(
    database: Database, engine: AsyncEngine
) -> None:
    user_id = await add_user(database, "single@example.com")

    async with database.single_statement() as tx:
        await users.record_login(tx, user_id, now=NOW + timedelta(hours=1), new_password_hash=None)

    # Seen by another connection (the ORM's): committed when the block ended.
    async with make_sessionmaker(engine)() as session:
        user = (await session.scalars(select(User).where(User.id == user_id))).one()
    assert user.last_login_at == NOW + timedelta(hours=1)


@pytest.mark.postgresql_only
async def test_a_single_statement_on_postgresql_opens_no_transaction_and_takes_one_statement(
    database: Database,
) -> None:
    user_id = await add_user(database, "one@example.com")

    async with database.single_statement() as tx:
        # No BEGIN went before it: the statement is its own transaction.
        assert not tx._connection.is_in_transaction()  # type: ignore[attr-defined]
        await users.record_login(tx, user_id, now=NOW, new_password_hash=None)
        with pytest.raises(RuntimeError, match="one statement"):
            await users.get_by_id(tx, user_id)


async def test_an_error_inside_the_block_rolls_back_and_the_next_transaction_works(
    database: Database,
) -> None:
    async def register_then_fail() -> None:
        async with database.transaction() as tx:
            await insert_user(tx, "ghost@example.com")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await register_then_fail()

    await add_user(database, "real@example.com")
    async with database.transaction() as tx:
        assert await users.get_by_email(tx, "ghost@example.com") is None
        assert await users.get_by_email(tx, "real@example.com") is not None


async def test_the_engine_and_the_request_path_take_turns(
    database: Database, engine: AsyncEngine
) -> None:
    """An ORM transaction (the delivery worker's) and the request path's never fail each
    other: the second waits for the first, and the event loop keeps serving meanwhile."""
    user_id = await add_user(database, "turns@example.com")

    async with loop_turns() as turns:
        async with make_sessionmaker(engine).begin() as session:
            user = (await session.scalars(select(User).where(User.id == user_id))).one()
            user.first_name = "Changed"
            await session.flush()
            waiting = asyncio.create_task(record_login(database, user_id))
            await asyncio.sleep(0.2)
            assert not waiting.done()
        await asyncio.wait_for(waiting, timeout=5)
    assert turns[0] >= 10, "the event loop stalled while the request path waited"
    async with database.transaction() as tx:
        row = await users.get_by_id(tx, user_id)
    assert row is not None
    assert (row.first_name, row.last_login_at) == ("Changed", NOW)


@pytest.mark.sqlite_only
async def test_another_process_holding_sqlite_is_waited_for_without_blocking_the_loop(
    database: Database, make_settings: SettingsFactory
) -> None:
    settings: Settings = make_settings()
    user_id = await add_user(database, "other@example.com")
    path = settings.database_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None)  # as a CLI command would hold it
    other.execute("BEGIN IMMEDIATE")

    try:
        async with loop_turns() as turns:
            waiting = asyncio.create_task(record_login(database, user_id))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            other.execute("COMMIT")
            await asyncio.wait_for(waiting, timeout=5)
    finally:
        other.close()
    assert turns[0] >= 20, "the event loop stalled while SQLite was locked by another process"


@pytest.mark.sqlite_only
async def test_a_session_cancelled_mid_statement_leaves_the_request_path_its_turn(
    database: Database, engine: AsyncEngine
) -> None:
    """A task cancelled while its statement runs (the worker's housekeeping, stopped) gets its
    connection invalidated, not rolled back: the turn it held must come back all the same."""
    user_id = await add_user(database, "cancelled@example.com")

    async def slow_housekeeping() -> None:
        async with make_sessionmaker(engine).begin() as session:
            await session.execute(text(SLOW_QUERY))

    slow = asyncio.create_task(slow_housekeeping())
    await asyncio.sleep(0.1)  # the statement is running in aiosqlite's thread
    slow.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await slow

    await asyncio.wait_for(record_login(database, user_id), timeout=5)


@pytest.mark.postgresql_only
async def test_postgresql_holds_at_most_its_pool_size_of_transactions_at_once(
    engine: AsyncEngine, make_settings: SettingsFactory
) -> None:
    """DATABASE_POOL_SIZE bounds the request path's connections: one transaction more waits
    for a connection, and gets it when one ends."""
    settings = make_settings(database_pool_size=2)
    database = database_for(engine, pool_size=settings.database_pool_size)
    release, both_started = asyncio.Event(), asyncio.Event()
    started: list[int] = []

    async def hold(number: int) -> None:
        async with database.transaction() as tx:
            started.append(number)
            if len(started) == 2:
                both_started.set()
            await tx.one(Statement("SELECT 1"))
            await release.wait()

    try:
        holders = [asyncio.create_task(hold(number)) for number in (1, 2)]
        await asyncio.wait_for(both_started.wait(), timeout=5)
        third = asyncio.create_task(hold(3))
        await asyncio.sleep(0.3)
        assert started == [1, 2]  # the third waits for a connection

        release.set()
        await asyncio.wait_for(asyncio.gather(*holders, third), timeout=5)
        assert sorted(started) == [1, 2, 3]
    finally:
        release.set()
        await database.close()
