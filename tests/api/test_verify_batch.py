"""Group commit of verify-otp (issue 16.5, auth/verify_batch.py): submissions that arrive
together share one transaction, and each is answered only after the commit that holds it.

- in process: a batch of simultaneous submissions (right, wrong, replayed, two racing for one
  code) answers each as if it were alone, and counts every wrong attempt;
- a real server on PostgreSQL, held by a row lock after its batch checked codes and before it
  committed, then killed: it answered none of them 200 and spent none of their codes;
- a real server killed in the middle of a flood of verifications (SQLite and PostgreSQL):
  every 200 it gave is durable, and every spent code left a whole effect (verified account,
  audit row), never half of one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from taxease_auth.config import Settings
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import AuditEvent, Otp, User
from tests.api.conftest import (
    API,
    INVALID_CODE,
    VERIFIED,
    audit_events,
    otp_rows,
    register,
    user_rows,
    verify,
)
from tests.conftest import GENEROUS_LIMITS, RunningApp
from tests.support import free_port
from tests.support.cli import Running, process_environment, serve, stop

# Development mode's DEVELOPER_OTP: every registration's code, applied before the 201, so a
# subprocess test needs no mail to read (each code is still bound to its address).
DEVELOPER_OTP = "246810"


def _wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


async def _commits(app: RunningApp) -> float:
    text = (await app.client.get("/metrics")).text
    match = re.search(r"^taxease_code_check_commits_total (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_a_batch_of_mixed_submissions_answers_each_as_if_alone(dev_app: RunningApp) -> None:
    emails = {
        name: f"{name}@batch.example.com"
        for name in ("valid1", "valid2", "valid3", "wrong1", "wrong2", "replay", "race")
    }
    codes = {}
    for name, email in emails.items():
        assert (await register(dev_app.client, email)).status_code == 201
        codes[name] = await dev_app.latest_code(email)
    assert (await verify(dev_app.client, emails["replay"], codes["replay"])).status_code == 200
    before = await _commits(dev_app)

    submissions = {
        "valid1": codes["valid1"],
        "wrong1": _wrong(codes["wrong1"]),
        "valid2": codes["valid2"],
        "replay": codes["replay"],
        "race-a": codes["race"],
        "wrong2": _wrong(codes["wrong2"]),
        "race-b": codes["race"],
        "valid3": codes["valid3"],
    }
    answers = dict(
        zip(
            submissions,
            await asyncio.gather(
                *(
                    verify(dev_app.client, emails[name.split("-")[0]], code)
                    for name, code in submissions.items()
                )
            ),
            strict=True,
        )
    )

    # Batched: fewer commits than submissions.
    assert await _commits(dev_app) - before < len(submissions)
    for name in ("valid1", "valid2", "valid3"):
        assert answers[name].status_code == 200, name
        assert answers[name].json() == VERIFIED
    for name in ("wrong1", "wrong2", "replay"):
        assert answers[name].status_code == 400, name
        assert answers[name].json() == INVALID_CODE
    assert sorted(answers[name].status_code for name in ("race-a", "race-b")) == [200, 400]
    # The wrong codes were counted in the same commit as the right ones beside them.
    for name in ("wrong1", "wrong2"):
        [row] = await otp_rows(dev_app, emails[name])
        assert row.attempts == 1
        assert not row.used
        assert [e.detail for e in await audit_events(dev_app, emails[name])][-1] == "wrong"
    verified = {user.email for user in await user_rows(dev_app) if user.email_verified}
    assert verified == {emails[name] for name in ("valid1", "valid2", "valid3", "replay", "race")}
    race_events = [e.event for e in await audit_events(dev_app, emails["race"])]
    assert race_events.count("code_verified") == 1


# --- a real server, killed ---------------------------------------------------------------------


@pytest.fixture
def server_env(database_url: str) -> dict[str, str]:
    return process_environment(
        database_url,
        DEVELOPER_OTP=DEVELOPER_OTP,
        EMBEDDED_WORKER="false",
        **{name.upper(): str(value) for name, value in GENEROUS_LIMITS.items()},
    )


@pytest.fixture
def servers() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        stop(running.process)


def _start(servers: list[Running], env: dict[str, str], tmp_path: Path, name: str) -> Running:
    running = serve(env, tmp_path, free_port(), name=name)
    servers.append(running)
    return running


async def _register(client: httpx.AsyncClient, server: Running, emails: list[str]) -> None:
    for email in emails:
        response = await client.post(
            f"{server.base_url}{API}/register",
            json={
                "email": email,
                "password": "correct horse battery staple",
                "first_name": "Batch",
                "last_name": "Test",
                "accept_terms": True,
            },
        )
        assert response.status_code == 201, response.text


async def _verify(client: httpx.AsyncClient, server: Running, email: str) -> httpx.Response:
    return await client.post(
        f"{server.base_url}{API}/verify-otp",
        json={"email": email, "code": DEVELOPER_OTP, "purpose": "email_verification"},
    )


async def _rows(database_url: str) -> tuple[dict[str, Otp], dict[str, User], list[AuditEvent]]:
    """Each address's code row and account, and every audit event, read after the kill."""
    settings = Settings(_env_file=None, development_mode=True, database_url=database_url)
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine)() as session:
            codes = {row.email: row for row in (await session.execute(select(Otp))).scalars()}
            users = {row.email: row for row in (await session.execute(select(User))).scalars()}
            events = list((await session.execute(select(AuditEvent))).scalars())
    finally:
        await engine.dispose()
    return codes, users, events


def _dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _waits_on_a_lock(watcher: asyncpg.Connection, count: int) -> None:
    """Until ``count`` server connections wait for a row lock another transaction holds."""
    deadline = time.monotonic() + 20
    while True:
        waiting = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        if waiting >= count:
            return
        assert time.monotonic() < deadline, "the server never waited for the lock"
        await asyncio.sleep(0.02)


async def _waiting_checks(client: httpx.AsyncClient, server: Running, count: int) -> None:
    """Until the server holds ``count`` admitted submissions waiting for their batch."""
    deadline = time.monotonic() + 20
    while True:
        text = (await client.get(f"{server.base_url}/metrics")).text
        match = re.search(r"^taxease_code_checks_waiting (\S+)$", text, re.MULTILINE)
        if match and float(match.group(1)) >= count:
            return
        assert time.monotonic() < deadline, "the submissions never reached the server"
        await asyncio.sleep(0.02)


@pytest.mark.postgresql_only  # a row lock is how the test holds the batch before its commit
async def test_a_server_killed_before_its_batch_commits_answered_none_and_spent_none(
    server_env: dict[str, str], database_url: str, tmp_path: Path, servers: list[Running]
) -> None:
    first = "aa-first@kill.example.com"  # checked alone, first: its batch is held open
    last = "zz-last@kill.example.com"  # checked last in the batch under test: held there
    batched = [f"m{number:02d}@kill.example.com" for number in range(6)]
    # One batch at a time, so that the held one keeps the others queued for the next.
    one_batch = {**server_env, "CODE_CHECK_BATCHES_IN_FLIGHT": "1"}
    server = _start(servers, one_batch, tmp_path, "server")
    holder_first = await asyncpg.connect(_dsn(database_url))
    holder_last = await asyncpg.connect(_dsn(database_url))
    watcher = await asyncpg.connect(_dsn(database_url))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await _register(client, server, [first, last, *batched])
            for holder, email in ((holder_first, first), (holder_last, last)):
                await holder.execute("BEGIN")
                await holder.execute("SELECT id FROM users WHERE email = $1 FOR UPDATE", email)

            # The first submission's batch checks its code, then waits for its account's row.
            alone = asyncio.create_task(_verify(client, server, first))
            await _waits_on_a_lock(watcher, 1)
            # Meanwhile the others queue for the next batch, where the last one sorts last.
            together = [
                asyncio.create_task(_verify(client, server, email)) for email in [*batched, last]
            ]
            await _waiting_checks(client, server, len(together))
            await holder_first.execute("COMMIT")
            assert (await alone).status_code == 200
            # The next batch checked and spent the six codes (not committed), and waits for
            # the last address's row: the process dies there.
            await _waits_on_a_lock(watcher, 1)
            stop(server.process)
            answers = await asyncio.gather(*together, return_exceptions=True)
        await holder_last.execute("ROLLBACK")
    finally:
        for connection in (holder_first, holder_last, watcher):
            await connection.close()

    assert all(isinstance(answer, httpx.TransportError) for answer in answers), answers
    codes, users, events = await _rows(database_url)
    for email in [*batched, last]:
        assert not codes[email].used, email
        assert codes[email].attempts == 0, email
        assert not users[email].email_verified, email
    checked = ("code_verified", "code_failed", "code_locked")
    assert [e.event for e in events if e.event in checked] == ["code_verified"]
    assert codes[first].used
    assert users[first].email_verified

    # After a restart every one of those codes still verifies its address.
    server = _start(servers, server_env, tmp_path, "restarted")
    async with httpx.AsyncClient(timeout=30) as client:
        again = await asyncio.gather(*(_verify(client, server, e) for e in [*batched, last]))
    assert [answer.status_code for answer in again] == [200] * len(again)


@pytest.mark.postgresql_only  # batches run side by side on PostgreSQL only
async def test_a_batch_held_by_a_row_lock_holds_up_no_other_batch(
    server_env: dict[str, str], database_url: str, tmp_path: Path, servers: list[Running]
) -> None:
    held, free = "held@lock.example.com", "free@lock.example.com"
    server = _start(servers, server_env, tmp_path, "server")  # CODE_CHECK_BATCHES_IN_FLIGHT 3
    holder = await asyncpg.connect(_dsn(database_url))
    watcher = await asyncpg.connect(_dsn(database_url))
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await _register(client, server, [held, free])
            await holder.execute("BEGIN")
            await holder.execute("SELECT id FROM users WHERE email = $1 FOR UPDATE", held)
            waiting = asyncio.create_task(_verify(client, server, held))
            await _waits_on_a_lock(watcher, 1)

            # Another batch, on another connection, checks and commits meanwhile.
            assert (await _verify(client, server, free)).status_code == 200
            assert not waiting.done()
            await holder.execute("COMMIT")
            assert (await waiting).status_code == 200
    finally:
        for connection in (holder, watcher):
            await connection.close()

    codes, users, _ = await _rows(database_url)
    for email in (held, free):
        assert codes[email].used, email
        assert users[email].email_verified, email


async def test_a_server_killed_in_a_flood_gave_200_only_for_what_it_committed(
    server_env: dict[str, str], database_url: str, tmp_path: Path, servers: list[Running]
) -> None:
    emails = [f"flood{number:03d}@kill.example.com" for number in range(150)]
    server = _start(servers, server_env, tmp_path, "server")
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as client:
        await _register(client, server, emails)
        flood = [asyncio.create_task(_verify(client, server, email)) for email in emails]
        # Killed as soon as the first answer is out: later batches are in progress or queued.
        await asyncio.wait(flood, return_when=asyncio.FIRST_COMPLETED)
        stop(server.process)
        answers = await asyncio.gather(*flood, return_exceptions=True)

    answered = {
        email
        for email, answer in zip(emails, answers, strict=True)
        if isinstance(answer, httpx.Response) and answer.status_code == 200
    }
    assert answered, "no answer came back before the kill"
    assert all(
        isinstance(answer, httpx.TransportError)
        or (isinstance(answer, httpx.Response) and answer.status_code == 200)
        for answer in answers
    ), answers
    codes, users, events = await _rows(database_url)
    spent = {email for email in emails if codes[email].used}
    verified = {email for email in emails if users[email].email_verified}
    audited = len([e for e in events if e.event == "code_verified"])
    # Every 200 is durable; nothing is half-done (a spent code without its account, or the
    # reverse); some of the flood died with the process, unanswered and unspent.
    assert answered <= spent
    assert spent == verified
    assert audited == len(spent)
    assert len(spent) < len(emails)
