"""Engine and sessions. Nothing is created at import time: the app's lifespan owns the engine.

The engine serves the ORM's users: the delivery worker, reports, the CLI, migrations. The
account flows (the request path) reach the same database through ``store/sql.py`` instead.

SQLite is reached through aiosqlite, which runs every call on the connection in a thread of
its own. Two choices here keep that cheap (measured with `make bench`, see bench/http.py):

- **One engine connection per process.** Every transaction begins with ``BEGIN IMMEDIATE``
  (below), so two connections of one process never write at once anyway; with several, the
  losers wait in SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries and
  turned a few collisions into seconds of p99. With one, sessions queue for it in the pool,
  without sleeping. The request path's own connection (store/sql.py) and other processes
  (the CLI, a separate worker) still meet the busy timeout; their transactions are short.
- **One trip to the thread per statement.** SQLAlchemy's aiosqlite adapter makes four (open a
  cursor, execute, fetch, close), each a hand-off between the event loop and the thread and
  back; ``_OneTripCursor`` does all four in one.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import uuid
from typing import Any, cast

import aiosqlite
from sqlalchemy import event, util
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util.concurrency import await_

from taxease_auth.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000
# Engine execution options (user-defined keys) carrying DATABASE_POOL_SIZE and, behind
# PgBouncer, a statement cache size of 0 to the request path's asyncpg pool, so that every
# database_for(engine) (server, worker, CLI) is sized by the settings.
REQUEST_POOL_SIZE_OPTION = "taxease_request_pool_size"
STATEMENT_CACHE_SIZE_OPTION = "taxease_statement_cache_size"
# Every connection of this service to an SQLite file, the engine's and store/sql.py's.
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")


def make_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        engine = create_async_engine(
            settings.async_database_url,
            module=_OneTripDBAPI(aiosqlite, sqlite3),
            pool_size=1,
            max_overflow=0,
        )
        _tune_sqlite(engine)
        return engine
    # The ORM's pool: the worker's housekeeping, readiness, the CLI. The request path and the
    # worker's claims have a pool of their own (store/sql_postgres.py), sized from the options
    # set here; store/budget.py counts both against what the server allows.
    connect_args: dict[str, Any] = {}
    if settings.database_pgbouncer:
        # PgBouncer (transaction mode) hands each transaction any server connection: a
        # statement prepared and cached on one is unknown on the next, and two clients' names
        # would collide on one. No caches, and names no other client uses.
        connect_args = {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": _unique_statement_name,
        }
    return create_async_engine(
        settings.async_database_url,
        pool_size=settings.database_orm_pool_size,
        max_overflow=settings.database_orm_max_overflow,
        pool_pre_ping=True,
        connect_args=connect_args,
        execution_options={
            REQUEST_POOL_SIZE_OPTION: settings.database_pool_size,
            STATEMENT_CACHE_SIZE_OPTION: 0 if settings.database_pgbouncer else None,
        },
    )


def _unique_statement_name() -> str:
    return f"__taxease_{uuid.uuid4().hex}__"


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (below) instead of the driver's implicit one.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front. A deferred transaction that reads and then
        # writes fails at once with SQLITE_BUSY when another writer got in between (the busy
        # timeout cannot help it), which would turn the single-use race into 500s.
        # It is sent with the transaction's first statement, in the same trip to the thread.
        adapted: _OneTripConnection = connection.connection.dbapi_connection
        adapted.begin_with_next_statement("BEGIN IMMEDIATE")


# --- aiosqlite, one trip per statement ---------------------------------------------------------

_Outcome = tuple[Any, list[Any] | None, int | None, int]


def _run(
    connection: sqlite3.Connection,
    operation: str,
    parameters: Any,
    *,
    many: bool,
    begin: str | None,
) -> _Outcome:
    """In aiosqlite's thread: the whole statement, as the adapter would have done it in four
    trips (description, rows, lastrowid, rowcount); after ``begin`` when a transaction starts
    with it."""
    cursor = connection.cursor()
    try:
        if begin is not None:
            cursor.execute(begin)
        if many:
            cursor.executemany(operation, parameters)
        elif parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, rows, cursor.lastrowid, cursor.rowcount
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, each statement run whole in one trip to the thread.

    Results are buffered exactly as the adapter buffers them (all rows fetched at execute).
    There is no aiosqlite cursor behind it: nothing is left open between statements.
    """

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # Not the parent's __init__: it opens an aiosqlite cursor (one more trip).
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = util.EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._lastrowid: int | None = -1
        self._rowcount = -1
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]  # sqlite3's may be None too

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing to close: the statement's cursor closed in the thread."""

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_trip(operation, seq_of_parameters, many=True)

    async def _one_trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted = cast(_OneTripConnection, self._adapt_connection)
        async with adapted._execute_mutex:
            begin, adapted._pending_begin = adapted._pending_begin, None
            if begin is not None:
                await adapted.take_write_lock()
            try:
                # aiosqlite's own way into its thread (Connection.execute and friends use it).
                outcome: _Outcome = await connection._execute(  # type: ignore[no-untyped-call]
                    _run, connection._conn, operation, parameters, many=many, begin=begin
                )
            except BaseException:
                if not connection._conn.in_transaction:  # BEGIN itself failed
                    adapted.give_write_lock_back()
                raise
        self._description, rows, self._lastrowid, self._rowcount = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """Hands out one-trip cursors; sends a transaction's BEGIN with its first statement; ends
    a transaction only when there is one. (The pool rolls back every connection it gets back,
    usually right after a commit: without the check, one more trip for nothing. sqlite3's own
    commit and rollback do nothing outside a transaction either.)"""

    __slots__ = ("_holds_write_lock", "_pending_begin", "_write_lock")
    _cursor_cls = _OneTripCursor

    def __init__(self, dbapi: Any, connection: Any, write_lock: asyncio.Lock) -> None:
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None
        self._write_lock = write_lock
        self._holds_write_lock = False

    def begin_with_next_statement(self, begin: str) -> None:
        self._pending_begin = begin

    async def take_write_lock(self) -> None:
        if not self._holds_write_lock:
            await self._write_lock.acquire()
            self._holds_write_lock = True

    def give_write_lock_back(self) -> None:
        if self._holds_write_lock:
            self._holds_write_lock = False
            self._write_lock.release()

    def commit(self) -> None:
        self._pending_begin = None  # a transaction without a statement: nothing began
        try:
            if self._connection.in_transaction:
                super().commit()
        finally:
            self.give_write_lock_back()

    def rollback(self) -> None:
        self._pending_begin = None
        try:
            if self._connection.in_transaction:
                super().rollback()
        finally:
            self.give_write_lock_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_write_lock_back()

    def terminate(self) -> None:
        """SQLAlchemy's way out for a connection invalidated mid-statement (its task was
        cancelled): no rollback or close comes after it, so the turn is given back here."""
        try:
            super().terminate()
        finally:
            self.give_write_lock_back()


class _OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The aiosqlite DBAPI adapter, handing out connections whose cursors take one trip."""

    def __init__(self, aiosqlite: Any, sqlite: Any) -> None:
        super().__init__(aiosqlite, sqlite)
        self.write_lock = asyncio.Lock()

    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter does: never blocks exit
        return _OneTripConnection(self, await_(connection), self.write_lock)


def sqlite_write_lock(engine: AsyncEngine) -> asyncio.Lock:
    """What every transaction of this process on ``engine``'s SQLite file holds, the engine's
    and the request path's (store/sql.py): they take turns here, on the event loop, instead
    of in SQLite's busy handler, whose sleeps (1, 2, 5, 10... ms, in a thread and on the loop
    in turn) let a busy delivery worker and a flood of requests starve each other for
    hundreds of ms (`make bench`, request-otp)."""
    dbapi = engine.dialect.dbapi
    assert isinstance(dbapi, _OneTripDBAPI), "not an engine of make_engine() on SQLite"
    return dbapi.write_lock
