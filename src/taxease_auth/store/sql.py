"""The request path's way to the database: prepared SQL text straight to the driver.

The ORM stays where its comfort is worth its cost (the delivery worker, reports, the CLI,
migrations). The account flows run here instead: `make bench` measured SQLAlchemy's ORM at
1.1-1.5 ms of CPU per transaction, against ~50 µs for the same statements on the driver, which
capped verify-otp at a twentieth of the framework's own rate.

- **One statement text, both databases.** SQL is written once with ``:name`` parameters in the
  subset SQLite and PostgreSQL share (``TRUE``/``FALSE``, ``RETURNING``); ``Statement`` keeps
  it for sqlite3 and rewrites it once to asyncpg's ``$1``.
- **PostgreSQL: an asyncpg pool.** A transaction checks an asyncpg connection out of a pool
  of its own (``store/sql_postgres.py``), opened with the engine's connect arguments.
- **SQLite: a connection of its own, on the event loop.** These statements are index lookups
  of microseconds; a hand-off to a thread and back (aiosqlite) costs more than the statement,
  and so does a checkout from SQLAlchemy's pool. Its transactions and the engine's take turns
  on one asyncio lock (``store.db.sqlite_write_lock``), so within the process nobody waits in
  SQLite. What must not happen on the loop is a wait for *another process* (a CLI command, a
  separate worker): this connection has no busy timeout, and ``_begin_immediate`` pauses with
  ``asyncio.sleep`` between tries. Once BEGIN IMMEDIATE holds the write lock nothing else waits
  in WAL mode (readers never block a writer).
- **Rows are tuples.** Columns are read by position in the functions that wrote the SELECT.
  SQLite gives timestamps back as text: ``utc()`` turns either driver's value into an aware
  UTC datetime, and ``_sqlite_value`` writes them as SQLAlchemy does (naive UTC, microseconds),
  so ORM and SQL text read each other's rows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.store.db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_PRAGMAS, sqlite_write_lock

logger = logging.getLogger(__name__)

Row = Sequence[Any]
# Commits between two checkpoints of the SQLite WAL (a few pages each: a few MB of WAL).
CHECKPOINT_EVERY = 500
_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")
# What SQLite answers when another connection holds the write lock.
_LOCKED = ("database is locked", "database table is locked")


class Conflict(Exception):
    """A unique constraint refused the row (a simultaneous insert of the same key won)."""


class Statement:
    """SQL text with ``:name`` parameters, for sqlite3 as written and for asyncpg as ``$n``."""

    __slots__ = ("names", "positional", "text")

    def __init__(self, text: str) -> None:
        self.text = " ".join(text.split())
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.positional = _NAMED.sub(number, self.text)
        self.names = tuple(names)

    def __repr__(self) -> str:
        return f"Statement({self.text!r})"


def utc(value: datetime | str | None) -> datetime | None:
    """A timestamp column as an aware UTC datetime (SQLite returns text, asyncpg datetimes)."""
    if value is None:
        return None
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc_required(value: datetime | str) -> datetime:
    result = utc(value)
    assert result is not None
    return result


class Transaction(Protocol):
    dialect: str  # as its Database's

    async def one(self, statement: Statement, **params: Any) -> Row | None:
        """The first row, or None."""

    async def all(self, statement: Statement, **params: Any) -> list[Row]:
        """Every row."""

    async def run(self, statement: Statement, **params: Any) -> int:
        """Execute; the number of rows changed."""


class Database(Protocol):
    # "sqlite" or "postgresql", as SQLAlchemy names the dialect: for the few statements
    # written twice (a PostgreSQL-only locking clause).
    dialect: str
    # What the driver raises when a statement cannot run (the database is away, locked for too
    # long, the connection lost): a loop that must outlive an outage catches these.
    errors: tuple[type[Exception], ...]

    def transaction(self) -> TransactionScope:
        """``async with db.transaction() as tx``: committed on exit, rolled back on an error."""

    def reading(self) -> TransactionScope:
        """``async with db.reading() as reader``: statements that only read, each on its own
        (no transaction: nothing to commit, no lock), each seeing what was committed before
        it. For the request path's lookups that write nothing (a bearer token's session and
        account): on SQLite they neither wait for nor hold up a writer (WAL); on PostgreSQL
        they take one round trip each instead of BEGIN and COMMIT around them. Writing
        through it is a bug (refused on SQLite: the connection is query_only)."""

    def single_statement(self) -> TransactionScope:
        """``async with db.single_statement() as tx``: exactly one statement, which writes and
        commits on its own. On PostgreSQL a pooled connection without BEGIN and COMMIT (a
        statement is its own transaction: one round trip instead of three); on SQLite the
        same as ``transaction()`` (its turn on the write lock and BEGIN IMMEDIATE keep a write
        from waiting inside SQLite on the loop). A second statement raises on PostgreSQL."""

    async def close(self) -> None:
        """Close what this object opened itself (the engine is its owner's to dispose of)."""


class TransactionScope(Protocol):
    async def __aenter__(self) -> Transaction: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


def database_for(engine: AsyncEngine, *, pool_size: int | None = None) -> Database:
    """The lean way to ``engine``'s database (on SQLite, to the same file; on PostgreSQL, a
    pool of up to ``pool_size`` connections, by default DATABASE_POOL_SIZE as ``make_engine``
    recorded it)."""
    if engine.dialect.name == "sqlite":
        assert engine.url.database is not None
        return SqliteDatabase(engine.url.database, sqlite_write_lock(engine))
    # Imported here: asyncpg is not loaded by a server that does not use it.
    from taxease_auth.store.sql_postgres import PostgresDatabase

    return PostgresDatabase(engine, pool_size=pool_size)


# --- SQLite --------------------------------------------------------------------------------------


def _sqlite_value(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


class _SqliteTransaction:
    __slots__ = ("_connection",)
    dialect = "sqlite"

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def _execute(self, statement: Statement, params: dict[str, Any]) -> sqlite3.Cursor:
        for name, value in params.items():
            if isinstance(value, datetime):
                params[name] = _sqlite_value(value)
        try:
            return self._connection.execute(statement.text, params)
        except sqlite3.IntegrityError as error:
            if "UNIQUE" in str(error):
                raise Conflict(str(error)) from error
            raise

    async def one(self, statement: Statement, **params: Any) -> Row | None:
        rows = self._execute(statement, params).fetchall()
        return rows[0] if rows else None

    async def all(self, statement: Statement, **params: Any) -> list[Row]:
        return self._execute(statement, params).fetchall()

    async def run(self, statement: Statement, **params: Any) -> int:
        return self._execute(statement, params).rowcount


class SqliteDatabase:
    """A connection of its own, used from the event loop, one transaction at a time."""

    dialect = "sqlite"
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, path: str, write_lock: asyncio.Lock) -> None:
        self._path = path
        self._connection: sqlite3.Connection | None = None
        self._lock = write_lock  # shared with the engine's connection (store/db.py)
        self._commits_since_checkpoint = 0
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Future[None] | None = None
        self._reader: sqlite3.Connection | None = None

    def transaction(self) -> _SqliteScope:
        return _SqliteScope(self)

    def reading(self) -> _SqliteReading:
        return _SqliteReading(self)

    def single_statement(self) -> _SqliteScope:
        return _SqliteScope(self)

    async def close(self) -> None:
        async with self._lock:
            if self._checkpoint is not None:
                await self._checkpoint
            for connection in (self._connection, self._checkpointer, self._reader):
                if connection is not None:
                    connection.close()
            self._connection = self._checkpointer = self._reader = None

    async def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = await asyncio.to_thread(_connect, self._path)
        return self._connection

    async def _connect_reader(self) -> sqlite3.Connection:
        """A second connection, for ``reading``: in autocommit, each SELECT is a read
        transaction of its own that sees the last commit; in WAL mode it never waits for the
        writer (nor the writer for it), so it takes no turn on the write lock."""
        if self._reader is None:
            reader = await asyncio.to_thread(_connect, self._path)
            if self._reader is None:  # another request opened one meanwhile: keep that
                reader.execute("PRAGMA query_only=ON")
                self._reader = reader
            else:
                reader.close()
        return self._reader

    def _committed(self) -> None:
        """Count a commit; every CHECKPOINT_EVERY, copy the WAL into the database in a thread.

        The event loop's connection never checkpoints (wal_autocheckpoint=0): a checkpoint
        writes a thousand pages and syncs the file, milliseconds during which no request
        would be served. PASSIVE never waits for, nor blocks, a writer.
        """
        self._commits_since_checkpoint += 1
        if self._commits_since_checkpoint < CHECKPOINT_EVERY:
            return
        if self._checkpoint is not None and not self._checkpoint.done():
            return
        self._commits_since_checkpoint = 0
        self._checkpoint = asyncio.ensure_future(asyncio.to_thread(self._checkpoint_wal))

    def _checkpoint_wal(self) -> None:
        """In a worker thread, on a connection of its own."""
        try:
            if self._checkpointer is None:
                self._checkpointer = _connect(self._path)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as error:  # the next one will try again
            logger.warning("SQLite WAL checkpoint failed: %s", error)


def _connect(path: str) -> sqlite3.Connection:
    """As store/db.py tunes the engine's connections, but without a busy timeout: this one
    must never wait inside SQLite (see ``_begin_immediate``)."""
    connection = sqlite3.connect(
        path,
        isolation_level=None,  # BEGIN and COMMIT are ours
        check_same_thread=False,  # opened in a worker thread, used on the event loop
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,  # only for the set-up below, in the thread
    )
    for pragma in SQLITE_PRAGMAS:
        connection.execute(pragma)
    connection.execute("PRAGMA wal_autocheckpoint=0")  # SqliteDatabase._committed does it
    connection.execute("PRAGMA busy_timeout=0")
    return connection


class _SqliteScope:
    __slots__ = ("_connection", "_database")

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database
        self._connection: sqlite3.Connection | None = None

    async def __aenter__(self) -> _SqliteTransaction:
        database = self._database
        await database._lock.acquire()
        try:
            connection = self._connection = await database._connect()
            await _begin_immediate(connection)
        except BaseException:
            database._lock.release()
            raise
        return _SqliteTransaction(connection)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        connection = self._connection
        assert connection is not None
        try:
            if exc_type is None:
                connection.execute("COMMIT")
                self._database._committed()
        finally:
            if connection.in_transaction:  # after an error, or a COMMIT that failed
                connection.execute("ROLLBACK")
            self._database._lock.release()


class _SqliteReading:
    __slots__ = ("_database",)

    def __init__(self, database: SqliteDatabase) -> None:
        self._database = database

    async def __aenter__(self) -> _SqliteTransaction:
        return _SqliteTransaction(await self._database._connect_reader())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Nothing to end: each statement was its own read transaction."""


async def _begin_immediate(connection: sqlite3.Connection) -> None:
    """Take SQLite's write lock; while another process holds it, try again after a pause (as
    SQLite's busy handler would, but without blocking the event loop), for up to the busy
    timeout. (This process's other connection, the engine's, waits for its turn on
    ``sqlite_write_lock`` instead.)"""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.0005
    while True:
        try:
            connection.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if str(error) not in _LOCKED or time.monotonic() >= deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
