"""POST /api/v1/auth/request-otp and its alias /resend-otp: 202 and one body whatever the
address's state; a new code retires the previous one; a login code only for a live challenge."""

from __future__ import annotations

import asyncio

import pytest

from tests.api.conftest import (
    INVALID_CODE,
    answer_headers,
    code_in_mail,
    confirm_reset,
    login,
    outbox_kinds,
    register,
    request_otp,
    request_reset,
    verified_user,
    verify,
)
from tests.conftest import RunningApp, SettingsFactory, StartApp

ROUTES = ["request-otp", "resend-otp"]
CODE_REQUESTED = {"message": "If the address needs a code, one has been sent. Check your email."}


@pytest.fixture
async def app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    """Development app with no resend cooldown: these tests re-send on purpose."""
    return await start_app(make_settings(otp_resend_cooldown_seconds=0))


@pytest.mark.parametrize("route", ROUTES)
async def test_answer_is_the_same_202_for_known_unknown_and_verified_addresses(
    app: RunningApp, route: str
) -> None:
    await register(app.client, "pending@example.com")
    await verified_user(app, "done@example.com")

    unknown = await request_otp(app.client, "nobody@example.com", route=route)
    pending = await request_otp(app.client, "pending@example.com", route=route)
    verified = await request_otp(app.client, "done@example.com", route=route)

    assert unknown.status_code == 202
    assert unknown.json() == CODE_REQUESTED
    for response in (pending, verified):
        assert response.status_code == unknown.status_code
        assert response.content == unknown.content
        assert answer_headers(response) == answer_headers(unknown)


@pytest.mark.parametrize("route", ROUTES)
async def test_new_code_retires_the_previous_one(app: RunningApp, route: str) -> None:
    await register(app.client, "reissue@example.com")
    old = await code_in_mail(app, "reissue@example.com", 1)

    response = await request_otp(app.client, "reissue@example.com", route=route)

    assert response.status_code == 202
    new = await code_in_mail(app, "reissue@example.com", 2)
    assert old != new, "the two random codes collided (1 in a million): rerun"
    assert (await verify(app.client, "reissue@example.com", old)).json() == INVALID_CODE
    assert (await verify(app.client, "reissue@example.com", new)).status_code == 200


async def test_unknown_address_gets_no_mail(app: RunningApp) -> None:
    await request_otp(app.client, "ghost@example.com")
    await request_otp(app.client, "ghost@example.com", "password_reset")

    assert await app.outbox() == []


async def test_verified_address_gets_no_new_verification_code(app: RunningApp) -> None:
    await verified_user(app, "verified@example.com")

    await request_otp(app.client, "verified@example.com")

    assert await outbox_kinds(app, "verified@example.com") == ["email_verification"]


async def test_password_reset_code_can_be_requested_through_request_otp(app: RunningApp) -> None:
    await verified_user(app, "reset@example.com")

    response = await request_otp(app.client, "reset@example.com", "password_reset")

    assert response.status_code == 202
    assert await outbox_kinds(app, "reset@example.com") == [
        "email_verification",
        "password_reset",
    ]
    code = await code_in_mail(app, "reset@example.com", 2)
    assert (await verify(app.client, "reset@example.com", code, "password_reset")).is_success


async def test_resent_verification_code_activates_the_latest_registration(
    app: RunningApp,
) -> None:
    squatter_password = "intruder's chosen passphrase"
    owner_password = "the rightful holder's passphrase"
    await register(app.client, "owner@example.com", squatter_password)
    owners = (await register(app.client, "owner@example.com", owner_password)).json()

    await request_otp(app.client, "owner@example.com")  # for the newest registration
    code = await code_in_mail(app, "owner@example.com", 3)
    registration_id = owners["registration_id"]
    assert (
        await verify(app.client, "owner@example.com", code, registration_id=registration_id)
    ).status_code == 200

    assert (await login(app.client, "owner@example.com", squatter_password)).status_code == 401
    assert (await login(app.client, "owner@example.com", owner_password)).status_code == 200


@pytest.mark.parametrize("body", [{"purpose": "email_verification"}, {"email": "a@example.com"}])
async def test_missing_field_is_refused_with_422(app: RunningApp, body: dict[str, str]) -> None:
    response = await app.client.post("/api/v1/auth/request-otp", json=body)

    assert response.status_code == 422


# --- login codes: only for a live challenge -----------------------------------------------


@pytest.fixture
async def login_code_app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    return await start_app(make_settings(login_otp_required=True, otp_resend_cooldown_seconds=0))


@pytest.mark.parametrize("challenge_id", [None, "no-such-challenge"])
async def test_login_code_without_a_live_challenge_is_never_sent(
    login_code_app: RunningApp, challenge_id: str | None
) -> None:
    app = login_code_app
    await verified_user(app, "login@example.com")

    response = await request_otp(
        app.client, "login@example.com", "login", challenge_id=challenge_id
    )

    assert response.status_code == 202
    assert response.json() == CODE_REQUESTED
    assert await outbox_kinds(app, "login@example.com") == ["email_verification"]


async def test_login_code_is_resent_for_the_live_challenge(login_code_app: RunningApp) -> None:
    app = login_code_app
    password = await verified_user(app, "resend@example.com")
    challenge = (await login(app.client, "resend@example.com", password)).json()["challenge_id"]
    first = await code_in_mail(app, "resend@example.com", 2)

    response = await request_otp(app.client, "resend@example.com", "login", challenge_id=challenge)

    assert response.status_code == 202
    assert await outbox_kinds(app, "resend@example.com") == [
        "email_verification",
        "login",
        "login",
    ]
    second = await code_in_mail(app, "resend@example.com", 3)
    assert first != second, "the two random codes collided (1 in a million): rerun"
    assert (
        await verify(app.client, "resend@example.com", first, "login", challenge_id=challenge)
    ).status_code == 400
    verified = await verify(
        app.client, "resend@example.com", second, "login", challenge_id=challenge
    )
    assert verified.status_code == 200
    assert verified.json()["access_token"]


async def test_login_code_is_not_resent_once_the_challenge_was_used(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    password = await verified_user(app, "used@example.com")
    challenge = (await login(app.client, "used@example.com", password)).json()["challenge_id"]
    code = await code_in_mail(app, "used@example.com", 2)
    assert (
        await verify(app.client, "used@example.com", code, "login", challenge_id=challenge)
    ).status_code == 200

    await request_otp(app.client, "used@example.com", "login", challenge_id=challenge)

    assert await outbox_kinds(app, "used@example.com") == ["email_verification", "login"]


async def test_a_password_reset_ends_the_live_login_challenge(login_code_app: RunningApp) -> None:
    """Review 17.6: someone who knew the old password started a login; the owner reset the
    password. The old challenge gets no new code, and its code no longer verifies."""
    app = login_code_app
    email = "reset-challenge@example.com"
    password = await verified_user(app, email)
    challenge = (await login(app.client, email, password)).json()["challenge_id"]
    old_code = await code_in_mail(app, email, 2)
    assert (await request_reset(app.client, email)).status_code == 202
    reset_code = await code_in_mail(app, email, 3)
    new_password = "a brand new passphrase for this"
    assert (await confirm_reset(app.client, email, reset_code, new_password)).status_code == 200
    kinds = await outbox_kinds(app, email)

    response = await request_otp(app.client, email, "login", challenge_id=challenge)

    assert response.status_code == 202
    assert await outbox_kinds(app, email) == kinds  # nothing mailed for the old challenge
    assert kinds.count("login") == 1
    refused = await verify(app.client, email, old_code, "login", challenge_id=challenge)
    assert refused.status_code == 400
    assert refused.json() == INVALID_CODE


async def test_login_code_is_not_resent_for_another_accounts_challenge(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    password = await verified_user(app, "mine@example.com")
    await verified_user(app, "theirs@example.com")
    challenge = (await login(app.client, "mine@example.com", password)).json()["challenge_id"]

    await request_otp(app.client, "theirs@example.com", "login", challenge_id=challenge)

    assert await outbox_kinds(app, "theirs@example.com") == ["email_verification"]


async def test_a_flood_of_requests_waits_for_room_and_every_answered_request_gets_its_code(
    app: RunningApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the cap of issues in progress, answers wait (first come, first served) instead
    of promising codes that would never be issued; every 202 is followed by its code."""
    emails = [f"flood{n}@example.com" for n in range(8)]
    for email in emails:
        assert (await register(app.client, email)).status_code == 201
    monkeypatch.setattr("taxease_auth.auth.service.MAX_ISSUES_IN_PROGRESS", 2)
    monkeypatch.setattr("taxease_auth.auth.service.ISSUE_BATCH", 1)

    responses = await asyncio.wait_for(  # a request nobody wakes fails here, not hangs
        asyncio.gather(*(request_otp(app.client, email) for email in emails for _ in range(4))),
        timeout=30,
    )

    assert [response.status_code for response in responses] == [202] * 32
    for email in emails:
        assert await outbox_kinds(app, email) == ["email_verification"] * 5
