"""A private PostgreSQL server for the test session, started from the PostgreSQL binaries.

``initdb`` and ``postgres`` refuse to run as root: as root (CI) they run as the ``postgres``
system user through ``runuser``; as a normal user (a contributor's laptop), as that user. The
data directory comes from ``tempfile.mkdtemp()``: pytest's ``tmp_path`` lives under a 0700
directory the ``postgres`` user cannot enter. The server is tuned for throw-away data (no
fsync, no synchronous commit, no full-page writes), listens on 127.0.0.1 only, and trusts every
local connection.

Administrative statements (CREATE/DROP DATABASE, TRUNCATE between tests) run on an event loop
in a thread of this module's own, so they can be called from sync fixtures and from inside a
running test loop alike.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from tests.support import free_port

START_SECONDS = 30
START_ATTEMPTS = 3
# A TRUNCATE waits for no lock longer than this: a test that left a transaction open fails the
# next test's set-up with the sessions to blame, instead of hanging the run.
LOCK_TIMEOUT = "10s"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    # Two `serve` processes and a worker (pools of 10 + 10 overflow each) plus the tests' own.
    "max_connections": "200",
}

_T = TypeVar("_T")


def find_binaries() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``: from PATH (a link such as
    /usr/local/bin/pg_ctl is followed), else the newest /usr/lib/postgresql/*/bin (Debian's
    package puts them there, not on PATH)."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        candidates.append(Path(on_path).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=_version, reverse=True)
    for directory in candidates:
        if all((directory / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


def _version(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


class PostgresServer:
    """One ``postgres`` process with its data in a temporary directory; ``stop()`` removes it."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.directory = Path(tempfile.mkdtemp(prefix="taxease-pg-"))
        self.port = free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, PostgreSQL must run as the `postgres` system user, and "
                    "there is none (Debian's postgresql package creates it)"
                ) from None
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self._as_user = [runuser, "-u", "postgres", "--"]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._engines: dict[str, AsyncEngine] = {}

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    def url(self, database: str) -> str:
        """The plain ``postgresql://`` URL a user puts in DATABASE_URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._pg(
            "initdb",
            "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        for attempt in range(START_ATTEMPTS):
            options = " ".join(
                [f"-p {self.port}", f"-k {self.directory}"]
                + [f"-c {name}={value}" for name, value in SERVER_SETTINGS.items()]
            )
            try:
                self._pg(
                    "pg_ctl",
                    "-D", str(self.data), "-l", str(self.log), "-o", options,
                    "-w", "-t", str(START_SECONDS), "start",
                )  # fmt: skip
            except RuntimeError:
                # The free port may have been taken between free_port() and the bind.
                if attempt + 1 == START_ATTEMPTS or "could not bind" not in self.log.read_text():
                    raise
                self.port = free_port()
            else:
                break
        self._thread.start()

    def stop(self) -> None:
        try:
            if self._thread.is_alive():
                self._run(self._dispose_engines())
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)
            if (self.data / "postmaster.pid").exists():
                self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            self._loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)

    def _pg(self, program: str, *args: str) -> None:
        completed = subprocess.run(
            [*self._as_user, str(self.bin_dir / program), *args],
            capture_output=True,
            text=True,
            timeout=START_SECONDS + 10,
            check=False,
        )
        if completed.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({completed.returncode}): {completed.stderr.strip()}\n{log}"
            )

    # --- administration ----------------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _engine(self, database: str) -> AsyncEngine:
        """An autocommit engine for administration (runs on this module's loop only)."""
        if database not in self._engines:
            url = self.url(database).replace("postgresql://", "postgresql+asyncpg://")
            self._engines[database] = create_async_engine(
                url, isolation_level="AUTOCOMMIT", poolclass=NullPool
            )
        return self._engines[database]

    async def _dispose_engines(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()
        self._engines.clear()

    async def _execute(self, database: str, statements: Iterable[str]) -> None:
        async with self._engine(database).connect() as connection:
            for statement in statements:
                await connection.execute(text(statement))

    def execute(self, database: str, *statements: str) -> None:
        """Run ``statements`` in ``database``, one connection, autocommit."""
        self._run(self._execute(database, statements))

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """A new database (a copy of ``template``, which nobody may be connected to); its URL.

        FILE_COPY: measured 33 ms a copy here, against 55 ms for PostgreSQL 15's default
        WAL_LOG strategy (fsync is off, so its checkpoint costs little).
        """
        copy = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
        self.execute("postgres", f"CREATE DATABASE {name}{copy}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute("postgres", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def truncate(self, database: str, tables: Iterable[str]) -> None:
        """Empty ``tables`` and restart their id sequences (one statement, a few ms)."""
        statement = f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"
        try:
            self.execute(database, f"SET lock_timeout = '{LOCK_TIMEOUT}'", statement)
        except DBAPIError as error:
            sessions = self._run(self._sessions(database))
            raise RuntimeError(
                f"could not empty {database} for this test ({error.orig}): an earlier test left "
                f"a transaction open. Sessions: {sessions}"
            ) from error

    async def _sessions(self, database: str) -> list[tuple[Any, ...]]:
        async with self._engine("postgres").connect() as connection:
            rows = await connection.execute(
                text(
                    "SELECT pid, application_name, state, left(query, 200) FROM pg_stat_activity"
                    " WHERE datname = :database AND pid <> pg_backend_pid()"
                ),
                {"database": database},
            )
            return [tuple(row) for row in rows]
