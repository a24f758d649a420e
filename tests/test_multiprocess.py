"""Several processes on one PostgreSQL and one Redis, as production runs them (issue 5, point 3):
real `taxease-auth serve` and `taxease-auth worker` processes in production mode, mail through
SES (moto's server).

- two `serve` processes (EMBEDDED_WORKER=false) and one `worker`: a rate budget spent through
  one server is spent on the other (Redis); each mail reaches SES once, whichever server
  queued it, and its code verifies on the other server;
- `serve --workers 2` (two uvicorn processes, each with its embedded delivery worker) beside a
  `worker` process: three processes claim from one outbox, and still each mail leaves once.
"""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from taxease_auth.config import Settings
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import EmailOutbox, OutboxStatus
from tests.conftest import (
    GENEROUS_LIMITS,
    REGION,
    SENDER,
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    SesInbox,
    extract_code,
)
from tests.support import free_port
from tests.support.cli import (
    Running,
    process_environment,
    start_process,
    stop,
    wait_for_log,
    wait_until_healthy,
)

pytestmark = pytest.mark.postgresql_only

API = "/api/v1/auth"
USERS = 20
WAIT_SECONDS = 30.0
SENT_LINE = re.compile(r"outbox \d+ \(\w+ to .*, key \w+\) sent, provider id")


# Outside development mode /metrics answers only to this bearer token (not a real secret).
METRICS_TOKEN = "testing-metrics-token-testing-metrics-token"


@pytest.fixture
def production_env(database_url: str, redis_db: str, ses: SesInbox) -> dict[str, str]:
    """Production mode: this test's PostgreSQL database, the session's Redis, SES at moto."""
    ses.verify_identity(SENDER)
    return process_environment(
        database_url,
        DEVELOPMENT_MODE="false",
        SECRET_KEY=TEST_SECRET_KEY,
        EMAIL_BACKEND="ses",
        AWS_SES_FROM_EMAIL=SENDER,
        AWS_ENDPOINT_URL=ses.endpoint,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_REGION=REGION,
        # moto reports MaxSendRate 1.0; the pace is not what these tests are about.
        SES_MAX_SEND_RATE="1000",
        RATE_LIMIT_STORAGE_URL=redis_db,
        METRICS_TOKEN=METRICS_TOKEN,
        **{name.upper(): str(value) for name, value in GENEROUS_LIMITS.items()},
    )


@pytest.fixture
def processes() -> Iterator[ExitStack]:
    """Every process started through it is killed (with its children) at the end."""
    with ExitStack() as stack:
        yield stack


def start(
    stack: ExitStack, args: list[str], env: dict[str, str], tmp_path: Path, name: str
) -> Running:
    running = start_process(args, env, tmp_path, name)
    stack.callback(stop, running.process)
    return running


def start_servers(
    stack: ExitStack, env: dict[str, str], tmp_path: Path, *names: str, args: tuple[str, ...] = ()
) -> list[Running]:
    """``serve`` processes started at once (their imports overlap), once each is healthy."""
    ports = [free_port() for _ in names]
    servers = [
        start(stack, ["serve", "--port", str(port), *args], env, tmp_path, name)
        for port, name in zip(ports, names, strict=True)
    ]
    for port, server in zip(ports, servers, strict=True):
        server.base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(server.process, server.base_url, server.stderr)
    return servers


async def register(client: httpx.AsyncClient, server: Running, email: str) -> None:
    response = await client.post(
        f"{server.base_url}{API}/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Multi",
            "last_name": "Process",
            "accept_terms": True,
        },
    )
    assert response.status_code == 201, response.text


async def outbox_settled(database_url: str, count: int) -> list[EmailOutbox]:
    """The outbox once ``count`` rows are all sent (none can leave again), read directly."""
    engine = make_engine(Settings(_env_file=None, development_mode=True, database_url=database_url))
    sessions = make_sessionmaker(engine)
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    try:
        while True:
            async with sessions() as session:
                rows = list((await session.scalars(select(EmailOutbox))).all())
            if len(rows) == count and all(row.status == OutboxStatus.SENT for row in rows):
                return rows
            statuses = collections.Counter(row.status for row in rows)
            assert asyncio.get_running_loop().time() < deadline, f"outbox: {statuses}"
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def register_across(servers: list[Running], count: int, prefix: str) -> list[str]:
    """Register ``count`` addresses at once, spread over ``servers``."""
    emails = [f"{prefix}{i}@example.com" for i in range(count)]
    async with httpx.AsyncClient(timeout=30.0) as client:
        await asyncio.gather(
            *(register(client, servers[i % len(servers)], email) for i, email in enumerate(emails))
        )
    return emails


async def assert_each_mail_reached_ses_once(
    ses: SesInbox, database_url: str, emails: list[str]
) -> dict[str, str]:
    """Every address got exactly one mail (its code, which the outbox sent once); the codes."""
    await outbox_settled(database_url, len(emails))
    messages = await asyncio.to_thread(ses.messages)
    received = collections.Counter(
        to for message in messages for to in message["destinations"]["ToAddresses"]
    )
    assert received == collections.Counter(emails)
    return {
        message["destinations"]["ToAddresses"][0]: extract_code(message["body"])
        for message in messages
    }


async def test_two_servers_and_a_worker_share_limits_and_send_each_mail_once(
    production_env: dict[str, str],
    database_url: str,
    ses: SesInbox,
    processes: ExitStack,
    tmp_path: Path,
) -> None:
    env = {
        **production_env,
        "EMBEDDED_WORKER": "false",
        "RATE_LIMIT_LOGIN_FAILURES_PER_EMAIL": "3/15minutes",
    }
    worker = start(processes, ["worker"], env, tmp_path, "worker")
    first, second = start_servers(processes, env, tmp_path, "first", "second")
    wait_for_log(worker, "started")

    # (a) The login failure budget (3 per 15 minutes) is counted in Redis: three failures
    # alternating between the servers spend it, and both then answer 429.
    async with httpx.AsyncClient(timeout=30.0) as client:
        wrong = {"email": "limited@example.com", "password": "not the password at all"}
        for server in (first, second, first):
            answer = await client.post(f"{server.base_url}{API}/login", json=wrong)
            assert answer.status_code == 401, answer.text
        for server in (second, first):
            answer = await client.post(f"{server.base_url}{API}/login", json=wrong)
            assert answer.status_code == 429, answer.text
            assert int(answer.headers["Retry-After"]) > 0

    # (b) Registrations through both servers: the one worker sends each code once.
    emails = await register_across([first, second], USERS, "two-servers-")
    codes = await assert_each_mail_reached_ses_once(ses, database_url, emails)

    # A code queued by one server verifies on the other (one database, one SECRET_KEY).
    async with httpx.AsyncClient(timeout=30.0) as client:
        for i, email in enumerate(emails):
            other = (second, first)[i % 2]
            answer = await client.post(
                f"{other.base_url}{API}/verify-otp",
                json={"email": email, "code": codes[email], "purpose": "email_verification"},
            )
            assert answer.status_code == 200, answer.text
    # Only the worker process delivered.
    assert len(SENT_LINE.findall(worker.stderr.read_text())) == USERS
    for server in (first, second):
        assert "delivery worker" not in server.stderr.read_text()


async def test_serve_with_two_workers_beside_a_worker_process_sends_each_mail_once(
    production_env: dict[str, str],
    database_url: str,
    ses: SesInbox,
    processes: ExitStack,
    tmp_path: Path,
) -> None:
    env = {**production_env, "EMBEDDED_WORKER": "true"}
    worker = start(processes, ["worker"], env, tmp_path, "worker")
    [server] = start_servers(processes, env, tmp_path, "server", args=("--workers", "2"))
    wait_for_log(worker, "started")

    emails = await register_across([server], USERS, "workers-2-")
    codes = await assert_each_mail_reached_ses_once(ses, database_url, emails)

    async with httpx.AsyncClient(base_url=server.base_url, timeout=30.0) as client:
        for email in emails:
            answer = await client.post(
                f"{API}/verify-otp",
                json={"email": email, "code": codes[email], "purpose": "email_verification"},
            )
            assert answer.status_code == 200, answer.text
        # The processes' metrics, summed (prometheus_client's multiprocess mode).
        scraped = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert scraped.status_code == 200
    server_log = server.stderr.read_text()
    # Two uvicorn processes, each with its own embedded delivery worker, beside the worker
    # process: three claimers on one outbox, and every mail left once.
    assert len(re.findall(r"delivery worker worker-\w+ started", server_log)) == 2
    sent_by_server = len(SENT_LINE.findall(server_log))
    sent_by_worker = len(SENT_LINE.findall(worker.stderr.read_text()))
    assert sent_by_server + sent_by_worker == USERS
