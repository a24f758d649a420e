"""The PostgreSQL connection budget: the pools' sizes are settings whose defaults fit four server
processes and a worker under max_connections 100; a process that would not fit says so at
start-up, naming the settings; `taxease-auth doctor` prints the budget."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from taxease_auth import cli
from taxease_auth.config import Settings
from taxease_auth.store.budget import (
    ProcessConnections,
    ServerRoom,
    over_budget,
    server_room,
    warn_if_over_budget,
)
from taxease_auth.store.db import make_engine
from tests.conftest import SettingsFactory, StartApp
from tests.support import free_port
from tests.support.cli import dev_env, process_environment, start_process, stop, wait_for_log

DEFAULT_MAX_CONNECTIONS = 100
DEFAULT_SUPERUSER_RESERVED = 3


def test_the_defaults_fit_four_servers_and_a_worker_under_postgresqls_defaults() -> None:
    per_process = ProcessConnections.from_settings(Settings(_env_file=None, development_mode=True))

    assert 5 * per_process.total <= DEFAULT_MAX_CONNECTIONS - DEFAULT_SUPERUSER_RESERVED


def test_the_warning_names_the_settings_and_the_figures() -> None:
    needed = ProcessConnections(request_pool=40, orm_pool=2, orm_overflow=1)
    room = ServerRoom(max_connections=100, reserved=3, open=70)

    warning = over_budget(needed, room)

    assert warning is not None
    for name in ("DATABASE_POOL_SIZE", "DATABASE_ORM_POOL_SIZE", "DATABASE_ORM_MAX_OVERFLOW"):
        assert name in warning
    assert "max_connections 100" in warning
    assert "27 more" in warning
    assert over_budget(needed, ServerRoom(max_connections=100, reserved=3, open=54)) is None


# --- against a real server -------------------------------------------------------------------

WARNING = "this process may open up to"


@pytest.fixture
async def held_connections(database_url: str) -> AsyncIterator[list[asyncpg.Connection]]:
    """Connections a test opens to the server to use up its room (closed after)."""
    held: list[asyncpg.Connection] = []
    yield held
    for connection in held:
        await connection.close()


async def hold(held: list[asyncpg.Connection], database_url: str, count: int) -> None:
    url = make_url(database_url)
    for _ in range(count):
        held.append(
            await asyncpg.connect(
                host=url.host, port=url.port, user=url.username, database=url.database
            )
        )


@pytest.mark.postgresql_only
async def test_a_process_that_no_longer_fits_once_connections_are_open_warns_at_start_up(
    make_settings: SettingsFactory,
    database_url: str,
    held_connections: list[asyncpg.Connection],
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = make_engine(make_settings())
    try:
        room = await server_room(probe)
        # A process that takes all but 5 of what is left: it fits...
        settings = make_settings(database_pool_size=room.available - 5 - 3)
        with caplog.at_level(logging.WARNING, logger="taxease_auth.store.budget"):
            await warn_if_over_budget(probe, settings)
        assert WARNING not in caplog.text

        # ... until 10 more connections are open.
        await hold(held_connections, database_url, 10)
        with caplog.at_level(logging.WARNING, logger="taxease_auth.store.budget"):
            await warn_if_over_budget(probe, settings)
    finally:
        await probe.dispose()

    assert WARNING in caplog.text
    assert "DATABASE_POOL_SIZE" in caplog.text


@pytest.mark.postgresql_only
async def test_a_server_whose_pools_exceed_max_connections_warns_when_it_starts(
    start_app: StartApp, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taxease_auth.store.budget"):
        running = await start_app(make_settings(database_pool_size=1000))

    assert WARNING in caplog.text
    assert "DATABASE_ORM_MAX_OVERFLOW" in caplog.text
    assert (await running.client.get("/readyz")).status_code == 200  # a warning, not a refusal


@pytest.mark.postgresql_only
async def test_behind_pgbouncer_no_verdict_is_given(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(database_pool_size=1000, database_pgbouncer=True)
    engine = make_engine(settings)
    try:
        with caplog.at_level(logging.INFO, logger="taxease_auth.store.budget"):
            await warn_if_over_budget(engine, settings)
    finally:
        await engine.dispose()

    assert WARNING not in caplog.text


@pytest.mark.postgresql_only
def test_doctor_reports_the_budget(database_url: str) -> None:
    runner = CliRunner()

    fits = runner.invoke(cli.app, ["doctor"], env=dev_env(database_url))
    too_many = runner.invoke(
        cli.app, ["doctor"], env=dev_env(database_url, DATABASE_POOL_SIZE="1000")
    )

    assert fits.exit_code == 0, fits.output
    [line] = [line for line in fits.output.splitlines() if "database connections" in line]
    assert line.startswith("PASS")
    assert "each process may open 18 (DATABASE_POOL_SIZE 15" in line
    assert "max_connections" in line
    assert too_many.exit_code == 1
    [line] = [line for line in too_many.output.splitlines() if "database connections" in line]
    assert line.startswith("FAIL")
    assert "fix: lower DATABASE_POOL_SIZE" in too_many.output


@pytest.mark.sqlite_only
def test_doctor_on_sqlite_has_no_budget(database_url: str) -> None:
    result = CliRunner().invoke(cli.app, ["doctor"], env=dev_env(database_url))

    assert result.exit_code == 0, result.output
    assert "SQLite: no connection budget" in result.output


@pytest.mark.postgresql_only
async def test_serve_with_workers_warns_when_they_would_not_fit_together(
    make_settings: SettingsFactory, database_url: str, tmp_path: Path
) -> None:
    probe = make_engine(make_settings())
    try:
        room = await server_room(probe)
    finally:
        await probe.dispose()
    # One process fits; two do not.
    per_process = room.available // 2 + 5
    env = process_environment(database_url, DATABASE_POOL_SIZE=str(per_process - 3))

    running = start_process(["serve", "--port", str(free_port()), "--workers", "2"], env, tmp_path)
    try:
        wait_for_log(running, f"2 server processes may open up to {2 * per_process}")
    finally:
        stop(running.process)

    assert "DATABASE_POOL_SIZE" in running.stderr.read_text()
