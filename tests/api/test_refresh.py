"""POST /api/v1/auth/token/refresh: each refresh token rotates once; the same token again within
REFRESH_REUSE_GRACE_SECONDS gets the same pair, later it ends the session; idle and maximum
session ages; one 401 for unknown, used, expired and ended; rate budgets."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.clock import ManualClock
from taxease_auth.store import audit
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import RefreshToken, Session
from tests.api.conftest import API, INVALID_TOKEN, login, me, verified_user
from tests.conftest import (
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    SettingsFactory,
    StartApp,
)

ROTATED_KEY = "testing-rotated-secret-key-testing-0002"


async def refresh(client: httpx.AsyncClient, token: Any) -> httpx.Response:
    return await client.post(f"{API}/token/refresh", json={"refresh_token": token})


async def logged_in(app: RunningApp, email: str) -> dict[str, Any]:
    """A verified account's login answer: access_token, refresh_token, ..."""
    await verified_user(app, email)
    response = await login(app.client, email, STRONG_PASSWORD)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def session_rows(app: RunningApp) -> list[Session]:
    async with make_sessionmaker(app.app.state.engine)() as session:
        return list((await session.execute(select(Session))).scalars())


async def refresh_rows(app: RunningApp) -> list[RefreshToken]:
    async with make_sessionmaker(app.app.state.engine)() as session:
        return list((await session.execute(select(RefreshToken))).scalars())


@pytest.fixture
async def clocked_app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    return await start_app(make_settings(), clock=ManualClock())


def _clock(app: RunningApp) -> ManualClock:
    clock = app.app.state.sessions._clock
    assert isinstance(clock, ManualClock)
    return clock


async def test_refresh_answers_a_new_pair_that_works(dev_app: RunningApp) -> None:
    first = await logged_in(dev_app, "refresh@example.com")

    response = await refresh(dev_app.client, first["refresh_token"])

    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["refresh_token"] != first["refresh_token"]
    assert len(body["refresh_token"]) == 43
    assert body["access_token"] != first["access_token"]
    assert (await me(dev_app.client, body["access_token"])).status_code == 200
    # And the new refresh token rotates in turn.
    assert (await refresh(dev_app.client, body["refresh_token"])).status_code == 200


async def test_refresh_tokens_are_stored_only_as_keyed_hashes(dev_app: RunningApp) -> None:
    first = await logged_in(dev_app, "hashed@example.com")
    second = (await refresh(dev_app.client, first["refresh_token"])).json()

    rows = await refresh_rows(dev_app)

    stored = " ".join(f"{row.token_hash} {row.replaced_by} {row.grace_answer}" for row in rows)
    for token in (first["refresh_token"], second["refresh_token"], second["access_token"]):
        assert token not in stored
    assert all(len(row.token_hash) == 64 for row in rows)
    used = [row for row in rows if row.used_at is not None]
    assert len(used) == 1
    assert used[0].replaced_by in {row.token_hash for row in rows}


async def test_same_token_within_the_grace_period_gets_the_same_pair(
    clocked_app: RunningApp,
) -> None:
    app = clocked_app
    first = await logged_in(app, "retry@example.com")
    answer = (await refresh(app.client, first["refresh_token"])).json()

    _clock(app).advance(timedelta(seconds=10))
    again = await refresh(app.client, first["refresh_token"])

    assert again.status_code == 200
    assert again.json() == answer
    assert (await me(app.client, answer["access_token"])).status_code == 200
    assert (await refresh(app.client, answer["refresh_token"])).status_code == 200


async def test_a_retry_finds_an_answer_sealed_before_the_successor_row_kept_it(
    clocked_app: RunningApp,
) -> None:
    """Rows rotated by the previous layout kept the sealed answer on the used token's own row
    (a deployment within the grace period of a rotation must not end that session)."""
    app = clocked_app
    first = await logged_in(app, "layout@example.com")
    answer = (await refresh(app.client, first["refresh_token"])).json()
    async with app.app.state.engine.begin() as connection:
        await connection.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(
                grace_answer=select(RefreshToken.grace_answer)
                .where(RefreshToken.used_at.is_(None))
                .scalar_subquery()
            )
        )
        await connection.execute(
            update(RefreshToken).where(RefreshToken.used_at.is_(None)).values(grace_answer=None)
        )

    _clock(app).advance(timedelta(seconds=5))
    again = await refresh(app.client, first["refresh_token"])

    assert again.status_code == 200
    assert again.json() == answer


async def test_reuse_after_the_grace_period_ends_the_session(clocked_app: RunningApp) -> None:
    app = clocked_app
    email = "stolen@example.com"
    first = await logged_in(app, email)
    rotated = (await refresh(app.client, first["refresh_token"])).json()

    _clock(app).advance(timedelta(seconds=11))
    reused = await refresh(app.client, first["refresh_token"])

    assert reused.status_code == 401
    assert reused.json() == INVALID_TOKEN
    # The whole session is over: the rotated pair too, and at once.
    assert (await refresh(app.client, rotated["refresh_token"])).status_code == 401
    assert (await me(app.client, rotated["access_token"])).status_code == 401
    [session] = await session_rows(app)
    assert session.end_reason == "refresh_reuse"
    async with make_sessionmaker(app.app.state.engine)() as db:
        events = await audit.recent(
            db, email_hashes=[email_fingerprint(TEST_SECRET_KEY, email)], limit=50
        )
    assert "refresh_reuse" in [event.event for event in events]


async def test_without_a_grace_period_any_reuse_ends_the_session(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(refresh_reuse_grace_seconds=0), clock=ManualClock())
    first = await logged_in(app, "nograce@example.com")
    rotated = (await refresh(app.client, first["refresh_token"])).json()

    _clock(app).advance(timedelta(milliseconds=1))

    assert (await refresh(app.client, first["refresh_token"])).status_code == 401
    assert (await refresh(app.client, rotated["refresh_token"])).status_code == 401


async def test_older_sealed_answers_are_dropped_once_the_next_token_rotates(
    dev_app: RunningApp,
) -> None:
    first = await logged_in(dev_app, "sealed@example.com")
    second = (await refresh(dev_app.client, first["refresh_token"])).json()
    await refresh(dev_app.client, second["refresh_token"])

    rows = await refresh_rows(dev_app)

    assert sum(row.grace_answer is not None for row in rows) == 1


async def test_simultaneous_refreshes_with_one_token_rotate_it_once(dev_app: RunningApp) -> None:
    first = await logged_in(dev_app, "race@example.com")

    answers = await asyncio.gather(
        *(refresh(dev_app.client, first["refresh_token"]) for _ in range(20))
    )

    assert {answer.status_code for answer in answers} == {200}
    # Exactly one rotation: every client got its pair, none started a second chain.
    assert len({answer.json()["refresh_token"] for answer in answers}) == 1
    rows = await refresh_rows(dev_app)
    assert len(rows) == 2
    assert sum(row.used_at is not None for row in rows) == 1
    [session] = await session_rows(dev_app)
    assert session.ended_at is None


@pytest.mark.parametrize(
    "token",
    ["A" * 43, "q3Xn0Vj2mJ8bS1tY6wZcE4rA9uK7pL5hD0fG2iO8xMe"],
    ids=["unknown", "unknown-2"],
)
async def test_unknown_token_is_the_generic_401(dev_app: RunningApp, token: str) -> None:
    response = await refresh(dev_app.client, token)

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


@pytest.mark.parametrize(
    "token",
    [None, 123, "", "A" * 42, "A" * 44, "A" * 42 + "=", "A" * 42 + "é", "A" * 42 + "\x00", ["x"]],
    ids=["null", "number", "empty", "short", "long", "padding", "non-ascii", "nul", "list"],
)
async def test_malformed_token_is_a_422(dev_app: RunningApp, token: Any) -> None:
    response = await refresh(dev_app.client, token)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "refresh_token"]


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[]", b'"x"', b"{}", b"[" * 5000, b"\xff\xfe", b'{"refresh_token": 1'],
    ids=["empty", "not-json", "array", "string", "no-field", "deep", "not-utf8", "truncated"],
)
async def test_a_hostile_body_is_a_422_of_fastapis_shape(
    dev_app: RunningApp, content: bytes
) -> None:
    """token/refresh reads its body itself: every bad body is still FastAPI's 422 shape."""
    response = await dev_app.client.post(
        f"{API}/token/refresh", content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert set(item) == {"type", "loc", "msg"}
    assert item["loc"][0] == "body"


async def test_session_ends_after_session_idle_days_without_a_refresh(
    clocked_app: RunningApp,
) -> None:
    app = clocked_app
    first = await logged_in(app, "idle@example.com")
    _clock(app).advance(timedelta(days=13, hours=23))
    kept = await refresh(app.client, first["refresh_token"])
    assert kept.status_code == 200

    _clock(app).advance(timedelta(days=14))
    response = await refresh(app.client, kept.json()["refresh_token"])

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


async def test_session_ends_session_max_days_after_login_however_active(
    clocked_app: RunningApp,
) -> None:
    app = clocked_app
    token = (await logged_in(app, "max@example.com"))["refresh_token"]
    for _ in range(4):  # day 13, 26, 39, 52: each refresh keeps it from going idle
        _clock(app).advance(timedelta(days=13))
        response = await refresh(app.client, token)
        assert response.status_code == 200
        token = response.json()["refresh_token"]

    _clock(app).advance(timedelta(days=8))  # day 60
    response = await refresh(app.client, token)

    assert response.status_code == 401


async def test_refresh_of_a_logged_out_session_is_refused(dev_app: RunningApp) -> None:
    first = await logged_in(dev_app, "gone@example.com")
    headers = {"Authorization": f"Bearer {first['access_token']}"}
    assert (await dev_app.client.post(f"{API}/logout", headers=headers)).status_code == 204

    response = await refresh(dev_app.client, first["refresh_token"])

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


async def test_refresh_token_survives_a_secret_key_rotation(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    before = await start_app(make_settings())
    first = await logged_in(before, "rotate@example.com")

    after = await start_app(
        make_settings(secret_key=ROTATED_KEY, previous_secret_keys=[TEST_SECRET_KEY])
    )
    response = await refresh(after.client, first["refresh_token"])

    assert response.status_code == 200
    # The next pair is made with the new key: an instance without the old one takes it.
    only_new = await start_app(make_settings(secret_key=ROTATED_KEY))
    assert (await me(only_new.client, response.json()["access_token"])).status_code == 200
    assert (await refresh(only_new.client, response.json()["refresh_token"])).status_code == 200


async def test_refresh_per_client_address_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(rate_limit_refresh_per_ip="3/minute"))

    answers = [await refresh(app.client, "A" * 43) for _ in range(4)]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 429]
    assert int(answers[-1].headers["retry-after"]) > 0


async def test_refresh_per_session_budget(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(rate_limit_refresh_per_session="2/minute"))
    token = (await logged_in(app, "budget@example.com"))["refresh_token"]
    other = (await login(app.client, "budget@example.com", STRONG_PASSWORD)).json()

    statuses = []
    for _ in range(3):
        response = await refresh(app.client, token)
        statuses.append(response.status_code)
        if response.status_code == 200:
            token = response.json()["refresh_token"]

    assert statuses == [200, 200, 429]
    assert int(response.headers["retry-after"]) > 0
    # Another session of the same account has a budget of its own.
    assert (await refresh(app.client, other["refresh_token"])).status_code == 200
