"""Alembic migrations: they build the schema the models describe, and undo it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect

from taxease_auth.config import Settings
from taxease_auth.store import migrate
from taxease_auth.store.models import Base

TABLES = {"users", "otps", "email_outbox"}


@pytest.fixture
def database_file(tmp_path: Path) -> Path:
    return tmp_path / "fresh.sqlite3"


@pytest.fixture
def settings(database_file: Path) -> Settings:
    return Settings(
        _env_file=None, development_mode=True, database_url=f"sqlite:///{database_file}"
    )


@pytest.fixture
def engine(database_file: Path) -> Iterator[Engine]:
    """A plain synchronous engine on the same file, to look at what Alembic built."""
    engine = create_engine(f"sqlite:///{database_file}")
    yield engine
    engine.dispose()


def table_names(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def test_upgrade_from_empty_to_head_creates_the_tables(settings: Settings, engine: Engine) -> None:
    assert table_names(engine) == set()

    migrate.upgrade(settings)

    assert table_names(engine) >= TABLES
    assert current_revision(engine) is not None


def test_upgrade_is_safe_to_run_twice(settings: Settings, engine: Engine) -> None:
    migrate.upgrade(settings)
    head = current_revision(engine)

    migrate.upgrade(settings)

    assert current_revision(engine) == head
    assert table_names(engine) >= TABLES


def test_downgrade_to_base_removes_the_tables(settings: Settings, engine: Engine) -> None:
    migrate.upgrade(settings)

    migrate.downgrade(settings, "base")

    assert table_names(engine) & TABLES == set()
    assert current_revision(engine) is None


def test_upgrade_after_downgrade_rebuilds_the_schema(settings: Settings, engine: Engine) -> None:
    migrate.upgrade(settings)
    migrate.downgrade(settings, "base")

    migrate.upgrade(settings)

    assert table_names(engine) >= TABLES


def test_models_and_migrations_agree(settings: Settings, engine: Engine) -> None:
    """Fails when a model changes without a migration (or a migration without its model)."""
    migrate.upgrade(settings)

    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        differences = compare_metadata(context, Base.metadata)

    assert differences == []


def test_migrated_indexes_and_constraints_match_the_models(
    settings: Settings, engine: Engine
) -> None:
    migrate.upgrade(settings)
    inspector = inspect(engine)

    for table in Base.metadata.sorted_tables:
        expected_indexes = {index.name for index in table.indexes}
        found_indexes = {index["name"] for index in inspector.get_indexes(table.name)}
        assert expected_indexes <= found_indexes, table.name
        expected_unique = {column.name for column in table.columns if column.unique}
        found_unique = {
            tuple(constraint["column_names"])
            for constraint in inspector.get_unique_constraints(table.name)
        } | {
            tuple(index["column_names"])
            for index in inspector.get_indexes(table.name)
            if index["unique"]
        }
        for column in expected_unique:
            assert (column,) in found_unique, f"{table.name}.{column} is not unique"
