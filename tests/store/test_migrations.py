"""Alembic migrations: they build the schema the models describe, and undo it, on the run's
database (SQLite, or PostgreSQL with ``--database=postgresql``), starting from an empty one.

The tests are sync (Alembic runs its own event loop); they look at the schema through the
service's async driver, in a loop of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from taxease_auth.config import Settings
from taxease_auth.store import migrate
from taxease_auth.store.models import Base

TABLES = set(Base.metadata.tables)

_T = TypeVar("_T")


@pytest.fixture
def settings(empty_database_url: str) -> Settings:
    return Settings(_env_file=None, development_mode=True, database_url=empty_database_url)


class Schema:
    """What is in the database now, read on a new connection each time."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.async_database_url

    def read(self, look: Callable[[Connection], _T]) -> _T:
        async def run() -> _T:
            engine = create_async_engine(self.url)
            try:
                async with engine.connect() as connection:
                    return await connection.run_sync(look)
            finally:
                await engine.dispose()

        return asyncio.run(run())

    def inspect(self, look: Callable[[Any], _T]) -> _T:
        return self.read(lambda connection: look(inspect(connection)))


@pytest.fixture
def schema(settings: Settings) -> Schema:
    return Schema(settings)


def table_names(schema: Schema) -> set[str]:
    return set(schema.inspect(lambda inspector: inspector.get_table_names()))


def current_revision(schema: Schema) -> str | None:
    return schema.read(
        lambda connection: MigrationContext.configure(connection).get_current_revision()
    )


def test_upgrade_from_empty_to_head_creates_the_tables(settings: Settings, schema: Schema) -> None:
    assert table_names(schema) == set()

    migrate.upgrade(settings)

    assert table_names(schema) == {*TABLES, "alembic_version"}
    assert current_revision(schema) is not None


def test_upgrade_is_safe_to_run_twice(settings: Settings, schema: Schema) -> None:
    migrate.upgrade(settings)
    head = current_revision(schema)

    migrate.upgrade(settings)

    assert current_revision(schema) == head
    assert table_names(schema) >= TABLES


def test_downgrade_to_base_removes_the_tables(settings: Settings, schema: Schema) -> None:
    migrate.upgrade(settings)

    migrate.downgrade(settings, "base")

    assert table_names(schema) & TABLES == set()
    assert current_revision(schema) is None


def test_upgrade_after_downgrade_rebuilds_the_schema(settings: Settings, schema: Schema) -> None:
    migrate.upgrade(settings)
    migrate.downgrade(settings, "base")

    migrate.upgrade(settings)

    assert table_names(schema) >= TABLES


def test_models_and_migrations_agree(settings: Settings, schema: Schema) -> None:
    """Fails when a model changes without a migration (or a migration without its model)."""
    migrate.upgrade(settings)

    def differences(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, Base.metadata))

    assert schema.read(differences) == []


def test_migrated_indexes_and_constraints_match_the_models(
    settings: Settings, schema: Schema
) -> None:
    migrate.upgrade(settings)

    def indexes_and_unique_constraints(inspector: Any) -> dict[str, tuple[Any, Any]]:
        return {
            table.name: (
                inspector.get_indexes(table.name),
                inspector.get_unique_constraints(table.name),
            )
            for table in Base.metadata.sorted_tables
        }

    found = schema.inspect(indexes_and_unique_constraints)
    for table in Base.metadata.sorted_tables:
        indexes, constraints = found[table.name]
        expected_indexes = {index.name for index in table.indexes}
        assert expected_indexes <= {index["name"] for index in indexes}, table.name
        found_unique = {tuple(constraint["column_names"]) for constraint in constraints} | {
            tuple(index["column_names"]) for index in indexes if index["unique"]
        }
        for column in (column.name for column in table.columns if column.unique):
            assert (column,) in found_unique, f"{table.name}.{column} is not unique"


@pytest.mark.sqlite_only
def test_a_migrated_sqlite_file_is_already_in_wal_mode(settings: Settings) -> None:
    """Servers opening a file still in rollback mode would all convert it at once, and all but
    one would fail with "database is locked"; the file's header says WAL (format 2) from the
    start. Read from the bytes, not through SQLite, whose own connection could convert it."""
    migrate.upgrade(settings)

    header = Path(settings.database_url.removeprefix("sqlite:///")).read_bytes()[:20]
    assert (header[18], header[19]) == (2, 2)
