"""GET /api/v1/auth/me: the token's account, or 401 `Invalid token` for anything else."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from taxease_auth.clock import ManualClock
from taxease_auth.store.sql import Database
from tests.api.conftest import INVALID_TOKEN, login_token, me, verified_user
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp


async def test_valid_token_returns_the_account(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "me@example.com", first_name="Ada", last_name="Lovelace")
    token = await login_token(dev_app.client, "me@example.com", STRONG_PASSWORD)

    response = await me(dev_app.client, token)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "id",
        "email",
        "first_name",
        "last_name",
        "email_verified",
        "created_at",
        "last_login_at",
    }
    assert body["email"] == "me@example.com"
    assert (body["first_name"], body["last_name"]) == ("Ada", "Lovelace")
    assert body["email_verified"] is True
    assert body["last_login_at"] is not None
    assert "password" not in response.text
    assert "argon2" not in response.text


async def test_missing_token_is_refused(dev_app: RunningApp) -> None:
    response = await me(dev_app.client, None)

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer garbage",
        "Bearer ",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIiwidmVyIjowfQ.",
        "Basic dXNlcjpwYXNz",
        "garbage",
    ],
)
async def test_garbage_token_is_refused(dev_app: RunningApp, authorization: str) -> None:
    response = await dev_app.client.get("/api/v1/auth/me", headers={"Authorization": authorization})

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


async def test_token_signed_with_another_key_is_refused(
    dev_app: RunningApp, start_app: StartApp, make_settings: SettingsFactory
) -> None:
    await verified_user(dev_app, "forged@example.com")
    # Same database, another SECRET_KEY: a real token for the same user, signed by a key this
    # app does not hold.
    other = await start_app(make_settings(secret_key="another-secret-key-another-secret-key-2"))
    foreign = await login_token(other.client, "forged@example.com", STRONG_PASSWORD)
    assert (await me(other.client, foreign)).status_code == 200

    response = await me(dev_app.client, foreign)

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


@pytest.mark.parametrize(
    ("age", "status"),
    [(timedelta(minutes=15) - timedelta(seconds=1), 200), (timedelta(minutes=15), 401)],
    ids=["just-before-expiry", "at-expiry"],
)
async def test_token_expires_after_access_token_expire_minutes(
    start_app: StartApp, make_settings: SettingsFactory, age: timedelta, status: int
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    assert app.settings.access_token_expire_minutes == 15
    await verified_user(app, "expiry@example.com")
    token = await login_token(app.client, "expiry@example.com", STRONG_PASSWORD)

    clock.advance(age)
    response = await me(app.client, token)

    assert response.status_code == status
    if status == 401:
        assert response.json() == INVALID_TOKEN


async def test_token_still_works_after_the_key_moves_to_previous_keys(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    old_key = "the-old-secret-key-the-old-secret-key-01"
    before = await start_app(make_settings(secret_key=old_key))
    await verified_user(before, "rotate@example.com")
    token = await login_token(before.client, "rotate@example.com", STRONG_PASSWORD)

    # The same database, restarted with a new key; the old one kept in PREVIOUS_SECRET_KEYS.
    after = await start_app(
        make_settings(
            secret_key="the-new-secret-key-the-new-secret-key-02", previous_secret_keys=[old_key]
        )
    )

    assert (await me(after.client, token)).status_code == 200


async def test_me_answers_while_a_writer_holds_its_transaction(dev_app: RunningApp) -> None:
    """/me only reads: it must not queue behind a write (on SQLite, the process's one write
    lock, which a refresh, a login or the delivery worker holds while it works)."""
    await verified_user(dev_app, "reader@example.com")
    token = await login_token(dev_app.client, "reader@example.com", STRONG_PASSWORD)
    database: Database = dev_app.app.state.sessions._db

    async with database.transaction():
        response = await asyncio.wait_for(me(dev_app.client, token), timeout=5)

    assert response.status_code == 200
    assert response.json()["email"] == "reader@example.com"
