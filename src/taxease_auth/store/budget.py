"""The PostgreSQL connection budget: what one process of this service may open, against what
the server still allows.

A process holds two pools: the request path's asyncpg pool (``DATABASE_POOL_SIZE``; the
embedded or separate delivery worker's claims use it too) and the ORM's
(``DATABASE_ORM_POOL_SIZE`` + ``DATABASE_ORM_MAX_OVERFLOW``: readiness, housekeeping, the CLI).
Both open connections on demand, so a process that asks for more than the server has left
fails only under load, with errors. At start-up ``warn_if_over_budget`` compares the two and
says so in a warning naming the settings; ``taxease-auth doctor`` prints the same figures.

What the server allows: ``max_connections`` minus the slots kept for superusers
(``superuser_reserved_connections``, and PostgreSQL 16's ``reserved_connections``) minus the
client connections already open (this check's own excluded). Behind PgBouncer
(``DATABASE_PGBOUNCER``) those figures are the server's behind it, not PgBouncer's, so no
verdict is given.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from taxease_auth.config import Settings

logger = logging.getLogger(__name__)

SETTINGS_NAMES = "DATABASE_POOL_SIZE, DATABASE_ORM_POOL_SIZE, DATABASE_ORM_MAX_OVERFLOW"

_ROOM = text(
    "SELECT current_setting('max_connections')::int,"
    " current_setting('superuser_reserved_connections')::int,"
    " coalesce(current_setting('reserved_connections', true), '0')::int,"
    " (SELECT count(*) FROM pg_stat_activity"
    "   WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int"
)


@dataclass(frozen=True, slots=True)
class ProcessConnections:
    """The most connections one process of this service opens."""

    request_pool: int
    orm_pool: int
    orm_overflow: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ProcessConnections:
        return cls(
            settings.database_pool_size,
            settings.database_orm_pool_size,
            settings.database_orm_max_overflow,
        )

    @property
    def total(self) -> int:
        return self.request_pool + self.orm_pool + self.orm_overflow

    def __str__(self) -> str:
        return (
            f"{self.total} (DATABASE_POOL_SIZE {self.request_pool} + DATABASE_ORM_POOL_SIZE "
            f"{self.orm_pool} + DATABASE_ORM_MAX_OVERFLOW {self.orm_overflow})"
        )


@dataclass(frozen=True, slots=True)
class ServerRoom:
    """What the PostgreSQL server allows, read from it."""

    max_connections: int
    reserved: int
    open: int

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved - self.open

    def __str__(self) -> str:
        return (
            f"{self.available} more (max_connections {self.max_connections} - "
            f"{self.reserved} reserved for superusers - {self.open} open)"
        )


async def server_room(engine: AsyncEngine) -> ServerRoom:
    """Read the server's limits and open connections (one connection of ``engine``'s pool)."""
    async with engine.connect() as connection:
        row = (await connection.execute(_ROOM)).one()
    max_connections, superuser_reserved, reserved, open_connections = row
    return ServerRoom(max_connections, superuser_reserved + reserved, open_connections)


def over_budget(needed: ProcessConnections, room: ServerRoom, processes: int = 1) -> str | None:
    """The warning when ``processes`` processes (this one alone by default) may open more
    connections than the server has left."""
    if processes * needed.total <= room.available:
        return None
    if processes == 1:
        who = f"this process may open up to {needed}"
    else:
        who = (
            f"{processes} server processes may open up to {processes * needed.total} "
            f"({processes} x {needed})"
        )
    return (
        f"PostgreSQL has room for {room}, but {who}: under load "
        f"requests will fail for want of a connection. Lower {SETTINGS_NAMES}, raise "
        "max_connections, or put PgBouncer in transaction mode in between (docs/deploy.md)"
    )


async def warn_if_over_budget(
    engine: AsyncEngine, settings: Settings, *, processes: int = 1
) -> None:
    """At start-up, on PostgreSQL (not behind PgBouncer): a warning when this process (or the
    ``processes`` that `serve --workers N` is about to start) would exceed what the server
    allows. A server that cannot be reached is left to readiness."""
    if settings.is_sqlite or settings.database_pgbouncer:
        return
    try:
        room = await server_room(engine)
    except (OSError, DBAPIError) as error:
        logger.info("connection budget not checked: %s", type(error).__name__)
        return
    warning = over_budget(ProcessConnections.from_settings(settings), room, processes)
    if warning is not None:
        logger.warning(warning)


async def describe(engine: AsyncEngine, settings: Settings) -> tuple[bool | None, str]:
    """For `doctor`: (fits, one line). ``fits`` is None when there is nothing to judge
    (SQLite, PgBouncer)."""
    needed = ProcessConnections.from_settings(settings)
    if settings.is_sqlite:
        return None, "SQLite: no connection budget"
    if settings.database_pgbouncer:
        return None, (
            f"each process may open {needed} to PgBouncer (DATABASE_PGBOUNCER): keep the "
            "processes' total under its max_client_conn; its pools bound the server's"
        )
    room = await server_room(engine)
    fits = needed.total <= room.available
    processes = room.available // needed.total if needed.total else 0
    return fits, (
        f"each process may open {needed}; PostgreSQL has room for {room}: "
        f"{processes} more process(es) fit"
    )
