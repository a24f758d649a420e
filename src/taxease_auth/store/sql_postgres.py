"""The request path's SQL on PostgreSQL: asyncpg connections from the engine's pool
(``store/sql.py`` says why the request path bypasses SQLAlchemy)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util.concurrency import greenlet_spawn

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


class PostgresDatabase:
    """Connections checked out of the engine's pool, each for one transaction."""

    dialect = "postgresql"
    # SQLAlchemyError: the pool's own (a connection it could not open).
    errors: tuple[type[Exception], ...] = (
        asyncpg.PostgresError,
        asyncpg.InterfaceError,
        SQLAlchemyError,
    )

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def transaction(self) -> _PostgresScope:
        return _PostgresScope(self._engine)

    async def close(self) -> None:
        """The pool is the engine's."""


class _PostgresScope:
    __slots__ = ("_engine", "_pooled", "_transaction")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._pooled: PoolProxiedConnection | None = None
        self._transaction: Any = None

    async def __aenter__(self) -> _PostgresTransaction:
        pooled = self._pooled = await self._engine.raw_connection()
        try:
            connection: asyncpg.Connection = pooled.driver_connection
            self._transaction = connection.transaction()
            await self._transaction.start()
        except BaseException:
            await self._release()
            raise
        return _PostgresTransaction(connection)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is not None:
                await self._transaction.rollback()
            else:
                await self._transaction.commit()
        except asyncpg.UniqueViolationError as error:  # a deferred constraint, at commit
            raise Conflict(str(error)) from error
        finally:
            await self._release()

    async def _release(self) -> None:
        # Inside SQLAlchemy's greenlet: a checked-in overflow connection is closed there, which
        # awaits asyncpg.
        if self._pooled is not None:
            pooled, self._pooled = self._pooled, None
            await greenlet_spawn(pooled.close)
