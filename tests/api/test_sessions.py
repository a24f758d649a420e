"""Ending sessions: /logout, /logout-all, GET /sessions, DELETE /sessions/{id}; a password reset
ends every session; /me refuses an ended session's token at once."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select

from taxease_auth.clock import ManualClock
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import Session, User
from tests.api.conftest import (
    API,
    INVALID_TOKEN,
    code_in_mail,
    confirm_reset,
    me,
    outbox_kinds,
    request_reset,
    verified_user,
)
from tests.api.test_refresh import refresh, session_rows
from tests.conftest import STRONG_PASSWORD, TEST_SECRET_KEY, RunningApp, SettingsFactory, StartApp

NEW_PASSWORD = "a brand new passphrase for this"


def bearer(body: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {body['access_token']}"}


async def login_as(
    app: RunningApp, email: str, user_agent: str = "pytest", ip: str | None = None
) -> dict[str, Any]:
    headers = {"User-Agent": user_agent}
    response = await app.client.post(
        f"{API}/login", json={"email": email, "password": STRONG_PASSWORD}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def list_sessions(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.get(f"{API}/sessions", headers=bearer(body))


async def test_sessions_lists_each_login_and_marks_the_callers(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "list@example.com")
    laptop = await login_as(dev_app, "list@example.com", "Laptop/1.0")
    phone = await login_as(dev_app, "list@example.com", "Phone/2.0")

    response = await list_sessions(dev_app.client, phone)

    assert response.status_code == 200
    sessions = response.json()
    assert [s["user_agent"] for s in sessions] == ["Phone/2.0", "Laptop/1.0"]  # newest first
    assert [s["current"] for s in sessions] == [True, False]
    assert set(sessions[0]) == {"id", "created_at", "last_used_at", "ip", "user_agent", "current"}
    assert sessions[0]["ip"] == "127.0.0.1"
    claims = jwt.decode(laptop["access_token"], options={"verify_signature": False})
    assert sessions[1]["id"] == claims["sid"]


async def test_a_long_user_agent_is_capped(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "agent@example.com")
    body = await login_as(dev_app, "agent@example.com", "A" * 5000)

    [session] = (await list_sessions(dev_app.client, body)).json()

    assert session["user_agent"] == "A" * 256


async def test_other_accounts_sessions_are_not_listed(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "mine@example.com")
    await verified_user(dev_app, "theirs@example.com")
    mine = await login_as(dev_app, "mine@example.com")
    await login_as(dev_app, "theirs@example.com")

    assert len((await list_sessions(dev_app.client, mine)).json()) == 1


async def test_logout_ends_this_session_only(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "logout@example.com")
    here = await login_as(dev_app, "logout@example.com")
    there = await login_as(dev_app, "logout@example.com")

    response = await dev_app.client.post(f"{API}/logout", headers=bearer(here))

    assert response.status_code == 204
    assert response.content == b""
    # Refused at once, not when the access token expires.
    assert (await me(dev_app.client, here["access_token"])).json() == INVALID_TOKEN
    assert (await refresh(dev_app.client, here["refresh_token"])).status_code == 401
    assert (await me(dev_app.client, there["access_token"])).status_code == 200
    assert (await refresh(dev_app.client, there["refresh_token"])).status_code == 200
    # A second logout with the dead token is a 401.
    assert (await dev_app.client.post(f"{API}/logout", headers=bearer(here))).status_code == 401


async def test_logout_all_ends_every_session(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "everywhere@example.com")
    sessions = [await login_as(dev_app, "everywhere@example.com") for _ in range(3)]

    response = await dev_app.client.post(f"{API}/logout-all", headers=bearer(sessions[0]))

    assert response.status_code == 204
    for body in sessions:
        assert (await me(dev_app.client, body["access_token"])).status_code == 401
        assert (await refresh(dev_app.client, body["refresh_token"])).status_code == 401
    assert {row.end_reason for row in await session_rows(dev_app)} == {"logout_all"}


async def test_deleting_a_session_ends_it(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "lost@example.com")
    laptop = await login_as(dev_app, "lost@example.com", "Lost laptop")
    phone = await login_as(dev_app, "lost@example.com", "Phone")
    laptop_id = jwt.decode(laptop["access_token"], options={"verify_signature": False})["sid"]

    response = await dev_app.client.delete(f"{API}/sessions/{laptop_id}", headers=bearer(phone))

    assert response.status_code == 204
    assert (await me(dev_app.client, laptop["access_token"])).status_code == 401
    assert (await refresh(dev_app.client, laptop["refresh_token"])).status_code == 401
    assert [s["user_agent"] for s in (await list_sessions(dev_app.client, phone)).json()] == [
        "Phone"
    ]
    # Already ended: no longer one of the live sessions.
    again = await dev_app.client.delete(f"{API}/sessions/{laptop_id}", headers=bearer(phone))
    assert again.status_code == 404


async def test_another_accounts_session_is_a_404_and_stays_live(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "attacker@example.com")
    await verified_user(dev_app, "victim@example.com")
    attacker = await login_as(dev_app, "attacker@example.com")
    victim = await login_as(dev_app, "victim@example.com")
    victim_id = jwt.decode(victim["access_token"], options={"verify_signature": False})["sid"]

    response = await dev_app.client.delete(f"{API}/sessions/{victim_id}", headers=bearer(attacker))

    assert response.status_code == 404
    assert response.json() == {"detail": "Session not found"}
    assert (await me(dev_app.client, victim["access_token"])).status_code == 200
    unknown = await dev_app.client.delete(f"{API}/sessions/{'A' * 43}", headers=bearer(attacker))
    assert unknown.status_code == 404


@pytest.mark.parametrize("session_id", ["short", "A" * 44, "A" * 42 + "%2E", "A" * 42 + "%C3%A9"])
async def test_malformed_session_id_is_a_422(dev_app: RunningApp, session_id: str) -> None:
    await verified_user(dev_app, "malformed@example.com")
    body = await login_as(dev_app, "malformed@example.com")

    response = await dev_app.client.delete(f"{API}/sessions/{session_id}", headers=bearer(body))

    assert response.status_code == 422


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/logout"),
        ("post", "/logout-all"),
        ("get", "/sessions"),
        ("delete", f"/sessions/{'A' * 43}"),
    ],
)
async def test_session_routes_need_a_bearer_token(
    dev_app: RunningApp, method: str, path: str
) -> None:
    response = await dev_app.client.request(method, f"{API}{path}")

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert response.headers["www-authenticate"] == "Bearer"


async def test_a_password_reset_ends_every_session(dev_app: RunningApp) -> None:
    email = "reset@example.com"
    await verified_user(dev_app, email)
    sessions = [await login_as(dev_app, email) for _ in range(2)]
    mails = len(await outbox_kinds(dev_app, email))
    assert (await request_reset(dev_app.client, email)).status_code == 202
    code = await code_in_mail(dev_app, email, mails + 1)

    assert (await confirm_reset(dev_app.client, email, code, NEW_PASSWORD)).status_code == 200

    for body in sessions:
        assert (await me(dev_app.client, body["access_token"])).status_code == 401
        assert (await refresh(dev_app.client, body["refresh_token"])).status_code == 401
    assert {row.end_reason for row in await session_rows(dev_app)} == {"password_reset"}


async def test_me_refuses_the_token_of_an_idle_session(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    # An access token outliving its session's idle limit (a long ACCESS_TOKEN_EXPIRE_MINUTES).
    clock = ManualClock()
    app = await start_app(
        make_settings(access_token_expire_minutes=24 * 60, session_idle_days=1), clock=clock
    )
    await verified_user(app, "idle@example.com")
    body = await login_as(app, "idle@example.com")

    clock.advance(timedelta(hours=23))
    assert (await me(app.client, body["access_token"])).status_code == 200
    clock.advance(timedelta(hours=1))
    assert (await me(app.client, body["access_token"])).status_code == 401


async def _user_id_and_version(app: RunningApp, email: str) -> tuple[int, int]:
    async with make_sessionmaker(app.app.state.engine)() as db:
        user = (await db.execute(select(User).where(User.email == email))).scalar_one()
        return user.id, user.token_version


def _pre_upgrade_token(user_id: int, version: int, app: RunningApp) -> str:
    """An HS256 token as the service issued them before sessions existed."""
    key = hmac.new(
        TEST_SECRET_KEY.encode(), b"taxease-auth/access-token/v1", hashlib.sha256
    ).digest()
    now = int(app.app.state.sessions._clock.now().timestamp())
    claims = {
        "sub": str(user_id),
        "ver": version,
        "aud": "taxease-auth:access",
        "iat": now,
        "exp": now + 600,
        "jti": "pre-upgrade",
    }
    return jwt.encode(claims, key, algorithm="HS256")


async def test_pre_upgrade_token_works_for_me_until_a_password_reset(dev_app: RunningApp) -> None:
    email = "legacy@example.com"
    await verified_user(dev_app, email)
    user_id, version = await _user_id_and_version(dev_app, email)
    token = _pre_upgrade_token(user_id, version, dev_app)

    assert (await me(dev_app.client, token)).status_code == 200
    # It names no session: it cannot list or end sessions.
    listed = await dev_app.client.get(
        f"{API}/sessions", headers={"Authorization": f"Bearer {token}"}
    )
    assert listed.status_code == 401

    mails = len(await outbox_kinds(dev_app, email))
    await request_reset(dev_app.client, email)
    code = await code_in_mail(dev_app, email, mails + 1)
    assert (await confirm_reset(dev_app.client, email, code, NEW_PASSWORD)).status_code == 200

    assert (await me(dev_app.client, token)).status_code == 401


async def test_ended_sessions_keep_their_row_and_reason(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "kept@example.com")
    body = await login_as(dev_app, "kept@example.com")
    await dev_app.client.post(f"{API}/logout", headers=bearer(body))

    rows: list[Session] = await session_rows(dev_app)

    assert [(row.end_reason, row.ended_at is not None) for row in rows] == [("logout", True)]
