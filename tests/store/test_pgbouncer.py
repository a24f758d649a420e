"""The account flows through PgBouncer in transaction mode (DATABASE_PGBOUNCER=true): every
transaction may get another server connection, so nothing may rely on a statement prepared
on an earlier one."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import STRONG_PASSWORD, SettingsFactory, StartApp
from tests.support.pgbouncer import PgBouncer

pytestmark = pytest.mark.postgresql_only

EMAILS = [f"bouncer{n}@example.com" for n in range(6)]


def through(pgbouncer: PgBouncer, database_url: str) -> str:
    return pgbouncer.url(make_url(database_url).database or "")


async def test_register_verify_login_through_pgbouncer(
    start_app: StartApp, make_settings: SettingsFactory, database_url: str, pgbouncer: PgBouncer
) -> None:
    running = await start_app(
        make_settings(database_url=through(pgbouncer, database_url), database_pgbouncer=True)
    )
    client = running.client

    async def account(email: str) -> None:
        registered = await client.post(
            "/api/v1/auth/register",
            json={
                "email": email,
                "password": STRONG_PASSWORD,
                "first_name": "Pat",
                "last_name": "Bouncer",
                "accept_terms": True,
            },
        )
        assert registered.status_code == 201, registered.text
        code = await running.latest_code(email)
        wrong = "0" * len(code) if code != "0" * len(code) else "1" * len(code)
        refused = await client.post(
            "/api/v1/auth/verify-otp",
            json={"email": email, "code": wrong, "purpose": "email_verification"},
        )
        assert refused.status_code == 400, refused.text
        verified = await client.post(
            "/api/v1/auth/verify-otp",
            json={"email": email, "code": code, "purpose": "email_verification"},
        )
        assert verified.status_code == 200, verified.text
        login = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
        )
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text

    # Several at once: more client connections than PgBouncer has server connections per
    # database would hand out in turn, and transactions interleave on them.
    await asyncio.gather(*(account(email) for email in EMAILS))

    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    rows = await running.settled_outbox()
    assert len(rows) == len(EMAILS)
    assert {row.status for row in rows} == {"sent"}
