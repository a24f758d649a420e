"""Real parts for every test: a migrated database per test (SQLite, or PostgreSQL with
``--database=postgresql``), the app with its lifespan running (engine, mail backend, embedded
delivery worker), SES as moto's HTTP server, Redis and PostgreSQL started from their binaries.

Mail is read back the way a user reads an inbox: from what the backend really received (moto's
stored messages, or the console backend's output), and the code is parsed out of the body.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import re
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3
import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from hypothesis import settings as hypothesis_settings
from moto.server import ThreadedMotoServer
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from taxease_auth.app import create_app
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.mail.backends.base import MailBackend
from taxease_auth.mail.backends.console import ConsoleBackend
from taxease_auth.store import migrate
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import Base, EmailOutbox
from tests.support import redis_server, require_server
from tests.support.pgbouncer import PGBOUNCER_MISSING, PgBouncer
from tests.support.pgbouncer import find_binary as find_pgbouncer
from tests.support.postgres import PostgresServer
from tests.support.postgres import find_binaries as find_postgres_binaries

# Property tests (tests/auth/test_emails.py): 300 examples each in `make test`, 3000 with
# HYPOTHESIS_PROFILE=thorough (run when the address rules change; it takes two minutes more).
# Examples that once failed are kept in .hypothesis/ and tried first on every run.
hypothesis_settings.register_profile("default", max_examples=300, deadline=None)
hypothesis_settings.register_profile("thorough", max_examples=3000, deadline=None)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

TEST_SECRET_KEY = "testing-secret-key-testing-secret-key-0001"
SENDER = "no-reply@taxease.example"
REGION = "ca-central-1"
STRONG_PASSWORD = "correct horse battery staple"
# Argon2id at its cheapest allowed setting: tests about behaviour, not hashing cost.
FAST_HASHING: dict[str, Any] = {
    "password_hash_memory_kib": 8192,
    "password_hash_time_cost": 1,
    "password_hash_parallelism": 1,
}
# Budgets raised far above any test's traffic (every request comes from one client address);
# tests of the limits themselves set the budgets they exercise.
GENEROUS_LIMITS: dict[str, Any] = {
    "otp_resend_cooldown_seconds": 0,
    "rate_limit_otp_issue_per_email": "1000/minute",
    "rate_limit_otp_issue_per_ip": "1000/minute",
    "rate_limit_verify_failures_per_email": "100/hour",
    "rate_limit_verify_per_ip": "1000/minute",
    "rate_limit_login_failures_per_email": "1000/minute",
    "rate_limit_login_per_ip": "1000/minute",
    "rate_limit_register_per_ip": "1000/minute",
    "rate_limit_refresh_per_ip": "1000/minute",
    "rate_limit_refresh_per_session": "1000/minute",
    "otp_max_guess_probability_per_day": 0.01,
}
MAIL_WAIT_SECONDS = 10.0

_CODE_IN_HTML = re.compile(r">\s*([0-9]{6,10})\s*</td>")
_CODE_IN_TEXT = re.compile(r"^\s+([0-9]{6,10})\s*$", re.MULTILINE)


def extract_code(body: str) -> str:
    """The one-time code in a mail body (HTML or text), as a person would copy it."""
    match = _CODE_IN_HTML.search(body) or _CODE_IN_TEXT.search(body)
    if match is None:
        raise AssertionError("no code in this mail")
    return match.group(1)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own environment must not change what the tests see."""
    for name in list(os.environ):
        if name.upper() in {field.upper() for field in Settings.model_fields}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`configure_logging` (run by the CLI and the app factory) replaces the root handlers with
    one on the current stderr, which pytest closes after the test: put the old ones back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    noisy = ("botocore", "boto3", "urllib3", "aiosqlite", "asyncio")
    levels = {name: logging.getLogger(name).level for name in noisy}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


# --- database --------------------------------------------------------------------------------
# The whole suite runs once per database (`make test` runs both): `--database=sqlite` (the
# default) or `--database=postgresql` (a private server the suite starts from the binaries).
# Tests SQLite is the subject of are marked `sqlite_only`, tests of PostgreSQL's concurrency
# `postgresql_only`; the other run deselects them.
#
# `database_independent` (a whole module: `pytestmark = pytest.mark.database_independent`)
# runs in the SQLite run only, since a second run proves nothing new. The rule: no test of
# the module reaches the database `--database` names, not even through a fixture (no
# `database_url`, `make_settings`, `start_app`, `dev_app`, `ses_settings`...), so both runs
# would execute exactly the same code: pure functions (addresses, names, codes, tokens,
# passwords, config, mail rendering, catalogues, feedback parsing) and parts with a store of
# their own (the pacer on Redis). A module where any test goes through the store (register,
# login, verify, outbox, sessions, feedback events, purge) stays in both runs, whatever its
# subject. `--database=postgresql` deselects the marked modules like `sqlite_only` ones.

DATABASES = ("sqlite", "postgresql")
ONLY_MARKERS = {"sqlite": "sqlite_only", "postgresql": "postgresql_only"}
# Run once, in this database's run (see above).
INDEPENDENT_MARKER = "database_independent"
INDEPENDENT_RUN = "sqlite"
POSTGRES_MISSING = (
    "PostgreSQL binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install them (Debian: apt-get install postgresql) to run the "
    "suite on PostgreSQL; .ci/run installs them"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=DATABASES,
        default="sqlite",
        help="the database every test runs against: sqlite (a migrated file copied per test, "
        "the default) or postgresql (a private server started from the PostgreSQL binaries)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"database: {config.getoption('--database')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the tests that belong to the other database's run, and the database-
    independent ones outside the SQLite run."""
    database = config.getoption("--database")
    other = {ONLY_MARKERS[kind] for kind in DATABASES if kind != database}
    if database != INDEPENDENT_RUN:
        other.add(INDEPENDENT_MARKER)
    selected, deselected = [], []
    for item in items:
        if item.get_closest_marker(INDEPENDENT_MARKER) and "databases" in getattr(
            item, "fixturenames", ()
        ):
            raise pytest.UsageError(
                f"{item.nodeid} is marked {INDEPENDENT_MARKER} but reaches the database "
                "(fixture `databases`): it must run in both runs; remove the module's marker"
            )
        if any(item.get_closest_marker(marker) for marker in other):
            deselected.append(item)
        else:
            selected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


class Databases(Protocol):
    """Databases of the kind this run is about, as DATABASE_URL values."""

    kind: str

    def clean(self, tmp_path: Path) -> str:
        """The test's own migrated database, with no rows in it."""

    def migrated(self) -> str:
        """A new migrated database, left alone by other tests (for a module's server)."""

    def empty(self) -> str:
        """A new database with no schema at all (for migration tests)."""

    def drop(self, url: str) -> None:
        """Remove a database made by ``migrated`` or ``empty``."""


class SqliteDatabases:
    """A file migrated once with Alembic; each test gets a copy."""

    kind = "sqlite"

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self.template = tmp_path_factory.mktemp("template") / "template.sqlite3"
        migrate.upgrade(
            Settings(_env_file=None, development_mode=True, database_url=self._url(self.template))
        )

    @staticmethod
    def _url(path: Path) -> str:
        return f"sqlite:///{path}"

    def clean(self, tmp_path: Path) -> str:
        copy = tmp_path / "auth.sqlite3"
        shutil.copy(self.template, copy)
        return self._url(copy)

    def migrated(self) -> str:
        return self.clean(self._tmp.mktemp("database"))

    def empty(self) -> str:
        return self._url(self._tmp.mktemp("database") / "fresh.sqlite3")

    def drop(self, url: str) -> None:
        pass  # pytest's temporary directories are removed by pytest


class PostgresDatabases:
    """A template database migrated once with Alembic; the tests share one copy of it, emptied
    before each test (``EMPTY``: cheaper than a copy of the template per test)."""

    kind = "postgresql"
    TEMPLATE = "taxease_template"
    SHARED = "taxease_test"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._made = itertools.count(1)
        migrate.upgrade(
            Settings(
                _env_file=None,
                development_mode=True,
                database_url=server.create_database(self.TEMPLATE),
            )
        )
        # Nobody may connect to a template while it is copied: make that impossible.
        server.execute("postgres", f"ALTER DATABASE {self.TEMPLATE} ALLOW_CONNECTIONS false")
        self.shared = server.create_database(self.SHARED, template=self.TEMPLATE)
        self._tables = list(Base.metadata.tables)
        # Children first, so no foreign key stops a DELETE.
        self._empty = self.EMPTY.format(
            tables=", ".join(self._tables),
            deletes="".join(
                f"DELETE FROM {table.name};"  # noqa: S608 - our own table names
                for table in reversed(Base.metadata.sorted_tables)
            ),
        )

    # What TRUNCATE ... RESTART IDENTITY did, in one statement and without its cost: TRUNCATE
    # gives every table new files (110 ms a test under load), a DELETE of a test's few rows
    # does not (35 ms, most of it the connection). The lock first, as TRUNCATE takes it: a
    # transaction an earlier test left open fails the test after lock_timeout instead of
    # leaking into it; then server.truncate names the sessions. Every sequence of the schema
    # starts again at 1 (they all belong to these tables' ids).
    EMPTY = (
        "DO $$ DECLARE sequence_id regclass; BEGIN "
        "SET LOCAL lock_timeout = '10s'; "
        "LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE; "
        "{deletes} "
        "FOR sequence_id IN SELECT oid FROM pg_class WHERE relkind = 'S' "
        "AND relnamespace = 'public'::regnamespace LOOP "
        "PERFORM setval(sequence_id, 1, false); END LOOP; END $$"
    )

    def clean(self, tmp_path: Path) -> str:
        try:
            self.server.execute(self.SHARED, self._empty)
        except DBAPIError:
            # Its diagnosis: the sessions still holding the tables, or it empties them.
            self.server.truncate(self.SHARED, self._tables)
        return self.shared

    def migrated(self) -> str:
        return self.server.create_database(f"taxease_{next(self._made)}", template=self.TEMPLATE)

    def empty(self) -> str:
        return self.server.create_database(f"taxease_empty_{next(self._made)}")

    def drop(self, url: str) -> None:
        self.server.drop_database(make_url(url).database or "")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL server on a free loopback port, for the whole session."""
    found = find_postgres_binaries()
    bin_dir = require_server(str(found) if found else None, POSTGRES_MISSING)
    server = PostgresServer(Path(bin_dir))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the session's PostgreSQL server (skips without
    the binary, fails under CI=true)."""
    bouncer = PgBouncer(require_server(find_pgbouncer(), PGBOUNCER_MISSING), postgres_server.port)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def databases(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Databases:
    if request.config.getoption("--database") == "postgresql":
        return PostgresDatabases(request.getfixturevalue("postgres_server"))
    return SqliteDatabases(tmp_path_factory)


@pytest.fixture
def database_url(databases: Databases, tmp_path: Path) -> str:
    """This test's database: migrated, empty of rows."""
    return databases.clean(tmp_path)


@pytest.fixture
def empty_database_url(databases: Databases) -> Iterator[str]:
    """A database with no schema (not even Alembic's table), for migration tests."""
    url = databases.empty()
    yield url
    databases.drop(url)


class SettingsFactory(Protocol):
    def __call__(self, **overrides: Any) -> Settings: ...


@pytest.fixture
def make_settings(database_url: str) -> SettingsFactory:
    """Settings for a test: development mode, this test's database, cheap hashing."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,
            "development_mode": True,
            "database_url": database_url,
            "secret_key": TEST_SECRET_KEY,
            **FAST_HASHING,
            **GENEROUS_LIMITS,
        }
        values.update(overrides)
        return Settings(**values)

    return build


# --- the running app -------------------------------------------------------------------------


@dataclass
class RunningApp:
    app: FastAPI
    client: httpx.AsyncClient
    console: ConsoleBackend | None = None
    settings: Settings = field(init=False)

    def __post_init__(self) -> None:
        self.settings = self.app.state.settings

    async def requested_codes_issued(self) -> None:
        """Codes answered with a 202 are issued by a task of their own: wait for it."""
        await self.app.state.auth_service.drain_requested_codes()

    async def outbox(self) -> list[EmailOutbox]:
        await self.requested_codes_issued()
        sessions = make_sessionmaker(self.app.state.engine)
        async with sessions() as session:
            rows = await session.execute(select(EmailOutbox).order_by(EmailOutbox.id))
            return list(rows.scalars())

    async def settled_outbox(self, wait_seconds: float = MAIL_WAIT_SECONDS) -> list[EmailOutbox]:
        """The outbox once the worker has no pending row left that is due."""
        deadline = asyncio.get_running_loop().time() + wait_seconds
        while True:
            rows = await self.outbox()
            if all(row.status != "pending" or row.attempts > 0 for row in rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"outbox still pending: {[r.status for r in rows]}")
            await asyncio.sleep(0.02)

    async def console_mail(self, recipient: str, count: int = 1) -> list[str]:
        """Plain-text bodies the console backend printed for ``recipient``, oldest first."""
        assert self.console is not None, "this app does not use the console backend"
        deadline = asyncio.get_running_loop().time() + MAIL_WAIT_SECONDS
        while True:
            mails = [m.text for m in reversed(self.console.recent()) if m.recipient == recipient]
            if len(mails) >= count:
                return mails
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(mails)} of {count} mails reached {recipient}")
            await asyncio.sleep(0.01)

    async def latest_code(self, recipient: str, count: int = 1) -> str:
        return extract_code((await self.console_mail(recipient, count))[-1])


StartApp = Callable[..., Awaitable[RunningApp]]


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Start apps with their lifespan; all are shut down (worker stopped) after the test."""
    async with AsyncExitStack() as stack:

        async def start(
            settings: Settings,
            *,
            clock: Clock | None = None,
            mail_backend: MailBackend | None = None,
            console: bool = True,
        ) -> RunningApp:
            backend = mail_backend
            console_backend = None
            if backend is None and console and settings.mail_backend == "console":
                console_backend = ConsoleBackend(stream=io.StringIO(), keep=500)
                backend = console_backend
            app = create_app(settings, clock=clock, mail_backend=backend)
            manager = await stack.enter_async_context(LifespanManager(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
                )
            )
            return RunningApp(app=app, client=client, console=console_backend)

        yield start


@pytest.fixture
async def dev_app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    """Development mode with the console backend: the laptop set-up of `make run`."""
    return await start_app(make_settings())


# --- SES through moto's HTTP server ----------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class SesInbox:
    """SES as a real HTTP endpoint; mail is read back from what moto stored."""

    endpoint: str

    def client(self) -> Any:
        return boto3.session.Session().client(
            "sesv2",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def verify_identity(self, identity: str) -> None:
        self.client().create_email_identity(EmailIdentity=identity)

    def messages(self, recipient: str | None = None) -> list[dict[str, Any]]:
        data = httpx.get(f"{self.endpoint}/moto-api/data.json").json()
        stored = data.get("ses", {}).get("Message", [])
        return [
            m for m in stored if recipient is None or recipient in m["destinations"]["ToAddresses"]
        ]

    async def wait_for(self, recipient: str, count: int = 1) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + MAIL_WAIT_SECONDS
        while True:
            messages = await asyncio.to_thread(self.messages, recipient)
            if len(messages) >= count:
                return messages
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{len(messages)} of {count} mails reached {recipient}")
            await asyncio.sleep(0.05)

    async def latest_code(self, recipient: str, count: int = 1) -> str:
        return extract_code((await self.wait_for(recipient, count))[-1]["body"])


@pytest.fixture
def ses(moto_endpoint: str) -> SesInbox:
    """A clean moto (no identities, no mail) for each test."""
    httpx.post(f"{moto_endpoint}/moto-api/reset").raise_for_status()
    return SesInbox(moto_endpoint)


@pytest.fixture
def ses_settings(make_settings: SettingsFactory, ses: SesInbox) -> SettingsFactory:
    """Production mode, mail through SES at moto's endpoint."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "development_mode": False,
            "email_backend": "ses",
            "aws_ses_from_email": SENDER,
            "aws_endpoint_url": ses.endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "aws_region": REGION,
            # moto reports MaxSendRate 1.0: tests that are not about pacing send at once.
            "ses_max_send_rate": 1000.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


# --- Redis (shared rate limits) --------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, for the whole session."""
    with redis_server() as url:
        yield url


@pytest.fixture
def redis_db(redis_url: str) -> str:
    """The session's Redis, emptied for this test."""
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        connection.sendall(b"FLUSHALL\r\n")
        assert connection.recv(16).startswith(b"+OK")
    return redis_url
