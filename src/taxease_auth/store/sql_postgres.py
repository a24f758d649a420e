"""The request path's SQL on PostgreSQL: asyncpg, on a pool of its own (``store/sql.py`` says
why the request path bypasses SQLAlchemy)."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.store.db import REQUEST_POOL_SIZE_OPTION, STATEMENT_CACHE_SIZE_OPTION
from taxease_auth.store.sql import Conflict, Row, Statement


class _PostgresTransaction:
    __slots__ = ("_connection",)
    dialect = "postgresql"

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    @staticmethod
    def _args(statement: Statement, params: dict[str, Any]) -> list[Any]:
        return [params[name] for name in statement.names]

    async def one(self, statement: Statement, **params: Any) -> Row | None:
        try:
            row: Row | None = await self._connection.fetchrow(
                statement.positional, *self._args(statement, params)
            )
        except asyncpg.UniqueViolationError as error:
            raise Conflict(str(error)) from error
        return row

    async def all(self, statement: Statement, **params: Any) -> list[Row]:
        rows: list[Row] = await self._connection.fetch(
            statement.positional, *self._args(statement, params)
        )
        return rows

    async def run(self, statement: Statement, **params: Any) -> int:
        try:
            status: str = await self._connection.execute(
                statement.positional, *self._args(statement, params)
            )
        except asyncpg.UniqueViolationError as error:
            raise Conflict(str(error)) from error
        # "UPDATE 3", "INSERT 0 1", "DELETE 0": the count is the last word.
        return int(status.rsplit(" ", 1)[-1])


# Connections of a pool on an engine make_engine() did not make (DATABASE_POOL_SIZE otherwise).
# The engine keeps a few more for the ORM's occasional work (store/db.py, store/budget.py).
POOL_SIZE = 10
# What SQLAlchemy's asyncpg adapter takes out of the connect arguments before asyncpg sees them.
_ADAPTER_ONLY = (
    "async_creator_fn",
    "prepared_statement_cache_size",
    "prepared_statement_name_func",
)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """A connection goes back to the pool as it is (its transaction already ended): this
    service never changes session state, so asyncpg's default reset query (RESET ALL and the
    like) would be one more round trip per transaction for nothing."""


class PostgresDatabase:
    """An asyncpg pool of its own, to the engine's database, with the engine's connect
    arguments.

    Not the engine's pool: a checkout there costs a liveness ping (``pool_pre_ping``), one
    round trip more per transaction than its statements. asyncpg's pool needs none: a
    connection the server closed (a restart) is replaced at its next checkout.
    """

    dialect = "postgresql"
    # (A server that cannot be reached raises OSError, which callers catch as such.)
    errors: tuple[type[Exception], ...] = (asyncpg.PostgresError, asyncpg.InterfaceError)

    def __init__(self, engine: AsyncEngine, *, pool_size: int | None = None) -> None:
        args, params = engine.dialect.create_connect_args(engine.url)
        for name in _ADAPTER_ONLY:
            params.pop(name, None)
        options = engine.get_execution_options()
        cache_size = options.get(STATEMENT_CACHE_SIZE_OPTION)
        if cache_size is not None:  # behind PgBouncer: 0
            params["statement_cache_size"] = cache_size
        self._connect_args = (args, params)
        self._pool_size = pool_size or options.get(REQUEST_POOL_SIZE_OPTION) or POOL_SIZE
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    def transaction(self) -> _PostgresScope:
        return _PostgresScope(self)

    def reading(self) -> _PostgresReading:
        return _PostgresReading(self)

    def single_statement(self) -> _PostgresReading:
        return _PostgresReading(self, _OneStatement)

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._opening:
                if self._pool is None:
                    args, params = self._connect_args
                    self._pool = await asyncpg.create_pool(
                        *args,
                        **params,
                        min_size=1,
                        max_size=self._pool_size,
                        reset=_keep_session,
                    )
        return self._pool

    async def close(self) -> None:
        """Close the pool (opened again if used again)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()


class _PostgresScope:
    __slots__ = ("_connection", "_database", "_pool", "_transaction")

    def __init__(self, database: PostgresDatabase) -> None:
        self._database = database
        self._pool: asyncpg.Pool | None = None
        self._connection: asyncpg.Connection | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> _PostgresTransaction:
        pool = self._pool = await self._database.pool()
        connection = self._connection = await pool.acquire()
        try:
            self._transaction = connection.transaction()
            await self._transaction.start()
        except BaseException:
            await pool.release(connection)
            raise
        return _PostgresTransaction(connection)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._pool is not None
        try:
            if exc_type is not None:
                await self._transaction.rollback()
            else:
                await self._transaction.commit()
        except asyncpg.UniqueViolationError as error:  # a deferred constraint, at commit
            raise Conflict(str(error)) from error
        finally:
            await self._pool.release(self._connection)


class _OneStatement(_PostgresTransaction):
    """``single_statement()``'s: a second statement would commit apart from the first."""

    __slots__ = ("_spent",)

    def __init__(self, connection: asyncpg.Connection) -> None:
        super().__init__(connection)
        self._spent = False

    def _spend(self) -> None:
        if self._spent:
            raise RuntimeError("single_statement() runs one statement: use transaction()")
        self._spent = True

    async def one(self, statement: Statement, **params: Any) -> Row | None:
        self._spend()
        return await super().one(statement, **params)

    async def all(self, statement: Statement, **params: Any) -> list[Row]:
        self._spend()
        return await super().all(statement, **params)

    async def run(self, statement: Statement, **params: Any) -> int:
        self._spend()
        return await super().run(statement, **params)


class _PostgresReading:
    """A pooled connection without a transaction: each statement commits on its own (one
    round trip; READ COMMITTED gives each statement of a transaction its own snapshot anyway).
    Also ``single_statement()``'s, with ``_OneStatement``."""

    __slots__ = ("_connection", "_database", "_kind", "_pool")

    def __init__(
        self,
        database: PostgresDatabase,
        kind: type[_PostgresTransaction] = _PostgresTransaction,
    ) -> None:
        self._database = database
        self._kind = kind
        self._pool: asyncpg.Pool | None = None
        self._connection: asyncpg.Connection | None = None

    async def __aenter__(self) -> _PostgresTransaction:
        pool = self._pool = await self._database.pool()
        self._connection = await pool.acquire()
        return self._kind(self._connection)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._pool is not None
        await self._pool.release(self._connection)
