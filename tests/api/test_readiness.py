"""/readyz names the dependency that failed: here, a database that cannot be reached."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from tests.conftest import SettingsFactory, StartApp


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable(database: str, tmp_path: Path) -> dict[str, object]:
    """Settings overrides for a database that cannot be reached."""
    if database == "sqlite":
        # SQLite cannot create a file in a directory that does not exist. (The embedded
        # worker is off: its single-worker lock file beside the database would stop the
        # start-up first.)
        return {
            "database_url": f"sqlite:///{tmp_path}/missing/dir/auth.sqlite3",
            "embedded_worker": False,
        }
    # PostgreSQL down: the server starts (its worker keeps retrying), readiness says no.
    return {"database_url": f"postgresql://taxease@127.0.0.1:{closed_port()}/taxease"}


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_readyz_is_503_naming_the_database_when_it_cannot_be_reached(
    start_app: StartApp,
    make_settings: SettingsFactory,
    tmp_path: Path,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    threads_before = set(threading.enumerate())
    running = await start_app(make_settings(**unreachable(database, tmp_path)))

    response = await running.client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "failed", "mail": "ok"},
    }
    assert "readiness: database check failed" in caplog.text
    assert (await running.client.get("/healthz")).status_code == 200  # alive, not ready
    # aiosqlite stops the thread of a connection that failed to open in the background; when
    # the stop lands after this test's event loop closed, it raises in the next test.
    for thread in set(threading.enumerate()) - threads_before:
        if thread.name.endswith("(_connection_worker_thread)"):
            await asyncio.to_thread(thread.join, 5)
