"""The guide's flow end to end through SES (moto's HTTP server): what leaves, what the outbox
keeps, and what happens when SES refuses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from taxease_auth.clock import ManualClock
from taxease_auth.mail.backends.ses import SesBackend
from taxease_auth.mail.worker import DeliveryWorker
from taxease_auth.store.db import make_sessionmaker
from tests.conftest import (
    SENDER,
    STRONG_PASSWORD,
    RunningApp,
    SesInbox,
    SettingsFactory,
    StartApp,
    extract_code,
)

EMAIL = "test@example.com"


async def register(client: httpx.AsyncClient, email: str = EMAIL) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Test",
            "last_name": "User",
            "accept_terms": True,
        },
    )


async def verify(client: httpx.AsyncClient, code: str, email: str = EMAIL) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": email, "code": code, "purpose": "email_verification"},
    )


async def login(client: httpx.AsyncClient, email: str = EMAIL) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
    )


async def start_ses_app(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory, **overrides: Any
) -> RunningApp:
    ses.verify_identity(SENDER)
    return await start_app(ses_settings(**overrides))


async def test_guide_flow_through_ses(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    running = await start_ses_app(start_app, ses, ses_settings)
    client = running.client

    registered = await register(client)
    assert registered.status_code == 201, registered.text

    [mail] = await ses.wait_for(EMAIL)
    assert mail["subject"] == "Your TaxEase email verification code"
    assert mail["source"] == SENDER
    assert mail["destinations"]["ToAddresses"] == [EMAIL]
    code = extract_code(mail["body"])
    assert len(code) == 6
    assert "expires in 5 minutes" in mail["body"]

    verified = await verify(client, code)
    assert verified.status_code == 200, verified.text
    assert verified.json() == {"message": "OTP verified successfully"}

    logged_in = await login(client)
    assert logged_in.status_code == 200, logged_in.text
    body = logged_in.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0

    me = await client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200, me.text
    assert me.json()["email"] == EMAIL
    assert me.json()["email_verified"] is True
    assert me.json()["first_name"] == "Test"


async def test_the_code_is_single_use_through_ses(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    running = await start_ses_app(start_app, ses, ses_settings)
    await register(running.client)
    code = await ses.latest_code(EMAIL)

    assert (await verify(running.client, code)).status_code == 200
    again = await verify(running.client, code)

    assert again.status_code == 400
    assert again.json() == {"detail": "Invalid or expired OTP"}


async def test_login_code_through_ses_has_the_guides_subject(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    running = await start_ses_app(start_app, ses, ses_settings, login_otp_required=True)
    client = running.client
    await register(client)
    assert (await verify(client, await ses.latest_code(EMAIL))).status_code == 200

    challenged = await login(client)
    assert challenged.status_code == 202, challenged.text
    challenge = challenged.json()
    assert challenge["otp_required"] is True
    assert challenge["expires_in"] == 300

    mails = await ses.wait_for(EMAIL, 2)
    login_mail = mails[-1]
    assert login_mail["subject"] == "Your TaxEase Login OTP"
    assert login_mail["source"] == SENDER
    assert "expires in 5 minutes" in login_mail["body"]
    code = extract_code(login_mail["body"])

    answered = await client.post(
        "/api/v1/auth/verify-otp",
        json={
            "email": EMAIL,
            "code": code,
            "purpose": "login",
            "challenge_id": challenge["challenge_id"],
        },
    )
    assert answered.status_code == 200, answered.text
    token = answered.json()["access_token"]
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == EMAIL


async def test_outbox_row_after_a_successful_send(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    running = await start_ses_app(start_app, ses, ses_settings)
    await register(running.client)
    [mail] = await ses.wait_for(EMAIL)

    [row] = await running.settled_outbox()

    assert row.status == "sent"
    assert row.recipient == EMAIL
    assert row.kind == "email_verification"
    assert row.provider_message_id == mail["id"]
    assert row.sent_at is not None
    assert row.attempts == 1
    assert row.last_error is None
    # The bodies held a live code: gone once the mail has left.
    assert row.html_body is None
    assert row.text_body is None
    assert row.lease_expires_at is None


async def test_unverified_sender_fails_quietly_for_the_client(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    # No identity created in moto: SES answers MessageRejected "Email address not verified".
    running = await start_app(ses_settings())
    client = running.client
    statuses: list[int] = []

    registered = await register(client)
    statuses.append(registered.status_code)
    assert registered.status_code == 201, registered.text
    assert "not verified" not in registered.text.lower()

    [row] = await running.settled_outbox()
    assert row.status == "failed"
    assert row.last_error is not None
    assert "MessageRejected" in row.last_error
    assert ses.messages() == []

    # Nothing the client does next meets a server error.
    for response in [
        await client.post(
            "/api/v1/auth/request-otp", json={"email": EMAIL, "purpose": "email_verification"}
        ),
        await verify(client, "000000"),
        await login(client),
        await client.post("/api/v1/auth/password-reset/request", json={"email": EMAIL}),
        await client.get("/healthz"),
        await client.get("/readyz"),
    ]:
        statuses.append(response.status_code)
    assert all(status < 500 for status in statuses), statuses
    assert statuses[1] == 202
    assert statuses[2] == 400
    assert statuses[3] == 403
    assert ses.messages() == []


async def test_unverified_sender_error_keeps_no_code_in_last_error(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    running = await start_app(ses_settings())
    await register(running.client)

    [row] = await running.settled_outbox()

    assert row.last_error is not None
    assert row.html_body is not None  # kept for `outbox retry` until the code expires
    code = extract_code(row.html_body)
    assert code not in row.last_error


async def test_a_code_that_expired_before_sending_is_never_sent(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    ses.verify_identity(SENDER)
    clock = ManualClock()
    settings = ses_settings(embedded_worker=False)
    running = await start_app(settings, clock=clock)
    assert (await register(running.client)).status_code == 201
    [row] = await running.outbox()
    assert row.status == "pending"

    clock.advance(timedelta(minutes=settings.otp_expiry_minutes, seconds=1))
    backend = SesBackend(settings)
    worker = DeliveryWorker(
        sessions=make_sessionmaker(running.app.state.engine),
        backend=backend,
        sender=settings.sender or "",
        clock=clock,
        lease_seconds=settings.outbox_lease_seconds,
    )
    try:
        handled = await worker.run_once()
    finally:
        await backend.aclose()

    assert handled == 1
    [row] = await running.outbox()
    assert row.status == "expired"
    assert row.html_body is None
    assert row.text_body is None
    assert row.provider_message_id is None
    assert ses.messages() == []


async def test_a_pending_code_still_live_is_sent_by_a_separate_worker(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    """The control for the expiry test: the same set-up one minute in does send."""
    ses.verify_identity(SENDER)
    clock = ManualClock()
    settings = ses_settings(embedded_worker=False)
    running = await start_app(settings, clock=clock)
    await register(running.client)
    await running.requested_codes_issued()  # the code is written after the 201

    clock.advance(timedelta(minutes=1))
    backend = SesBackend(settings)
    worker = DeliveryWorker(
        sessions=make_sessionmaker(running.app.state.engine),
        backend=backend,
        sender=settings.sender or "",
        clock=clock,
        lease_seconds=settings.outbox_lease_seconds,
    )
    try:
        assert await worker.run_once() == 1
    finally:
        await backend.aclose()

    [row] = await running.outbox()
    assert row.status == "sent"
    [mail] = ses.messages(EMAIL)
    code = extract_code(mail["body"])
    assert (await verify(running.client, code)).status_code == 200
