"""Helpers for the API tests: the calls a client makes, and reading back what the app stored.

Each helper goes through HTTP (or reads the database the app itself uses); none replaces a part
of the project.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from sqlalchemy import select

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.mail.message import Message
from taxease_auth.store import audit
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import AuditEvent, Otp, User
from tests.conftest import (
    MAIL_WAIT_SECONDS,
    STRONG_PASSWORD,
    TEST_SECRET_KEY,
    RunningApp,
    extract_code,
)

API = "/api/v1/auth"
INVALID_CODE = {"detail": "Invalid or expired OTP"}
INVALID_TOKEN = {"detail": "Invalid token"}
VERIFIED = {"message": "OTP verified successfully"}
OTHER_PASSWORD = "a different passphrase, also long"


async def register(
    client: httpx.AsyncClient,
    email: str,
    password: str = STRONG_PASSWORD,
    *,
    first_name: str = "Test",
    last_name: str = "User",
    accept_terms: Any = True,
) -> httpx.Response:
    return await client.post(
        f"{API}/register",
        json={
            "email": email,
            "password": password,
            "first_name": first_name,
            "last_name": last_name,
            "accept_terms": accept_terms,
        },
    )


async def verify(
    client: httpx.AsyncClient,
    email: str,
    code: Any,
    purpose: str = "email_verification",
    *,
    challenge_id: str | None = None,
    registration_id: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "code": code, "purpose": purpose}
    if challenge_id is not None:
        body["challenge_id"] = challenge_id
    if registration_id is not None:
        body["registration_id"] = registration_id
    return await client.post(f"{API}/verify-otp", json=body)


async def request_otp(
    client: httpx.AsyncClient,
    email: str,
    purpose: str = "email_verification",
    *,
    challenge_id: str | None = None,
    registration_id: str | None = None,
    route: str = "request-otp",
) -> httpx.Response:
    body: dict[str, Any] = {"email": email, "purpose": purpose}
    if challenge_id is not None:
        body["challenge_id"] = challenge_id
    if registration_id is not None:
        body["registration_id"] = registration_id
    return await client.post(f"{API}/{route}", json=body)


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/login", json={"email": email, "password": password})


async def request_reset(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post(f"{API}/password-reset/request", json={"email": email})


async def confirm_reset(
    client: httpx.AsyncClient, email: str, code: Any, new_password: str
) -> httpx.Response:
    return await client.post(
        f"{API}/password-reset/confirm",
        json={"email": email, "code": code, "new_password": new_password},
    )


async def me(client: httpx.AsyncClient, token: str | None) -> httpx.Response:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await client.get(f"{API}/me", headers=headers)


def answer_headers(response: httpx.Response) -> dict[str, str]:
    """The headers that could tell one account's answer from another's: all of them but the
    request id, which is new for every request (api/observability.py) whatever the account."""
    return {name: value for name, value in response.headers.items() if name != "x-request-id"}


# --- mail ------------------------------------------------------------------------------------


def delivered(app: RunningApp, recipient: str) -> list[Message]:
    """Mail the console backend has sent to ``recipient`` so far, oldest first."""
    assert app.console is not None, "this app does not use the console backend"
    return [m for m in reversed(app.console.recent()) if m.recipient == recipient]


async def wait_for_mail(app: RunningApp, recipient: str, count: int) -> list[Message]:
    """Wait until at least ``count`` mails reached ``recipient``; all of them, oldest first."""
    deadline = asyncio.get_running_loop().time() + MAIL_WAIT_SECONDS
    while True:
        mails = delivered(app, recipient)
        if len(mails) >= count:
            return mails
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(mails)} of {count} mails reached {recipient}")
        await asyncio.sleep(0.01)


async def code_in_mail(app: RunningApp, recipient: str, number: int) -> str:
    """The code in the ``number``-th mail (1-based) that ``recipient`` received."""
    return extract_code((await wait_for_mail(app, recipient, number))[number - 1].text)


async def outbox_kinds(app: RunningApp, recipient: str) -> list[str]:
    """The kinds of the mails queued for ``recipient`` (written in the request's transaction)."""
    return [row.kind for row in await app.outbox() if row.recipient == recipient]


# --- database --------------------------------------------------------------------------------


async def otp_rows(app: RunningApp, email: str | None = None) -> list[Otp]:
    await app.requested_codes_issued()
    sessions = make_sessionmaker(app.app.state.engine)
    async with sessions() as session:
        query = select(Otp).order_by(Otp.id)
        if email is not None:
            query = query.where(Otp.email == email)
        return list((await session.execute(query)).scalars())


async def audit_events(app: RunningApp, email: str) -> list[AuditEvent]:
    """The audit events recorded for ``email``, oldest first."""
    async with make_sessionmaker(app.app.state.engine)() as session:
        found = await audit.recent(
            session, email_hashes=[email_fingerprint(TEST_SECRET_KEY, email)], limit=1000
        )
    return list(reversed(found))


async def user_rows(app: RunningApp) -> list[User]:
    await app.requested_codes_issued()  # registrations are applied after their answer
    sessions = make_sessionmaker(app.app.state.engine)
    async with sessions() as session:
        return list((await session.execute(select(User).order_by(User.id))).scalars())


# --- whole steps -----------------------------------------------------------------------------


async def verified_user(
    app: RunningApp, email: str, password: str = STRONG_PASSWORD, **names: str
) -> str:
    """Register ``email`` and verify it with the mailed code; returns the password."""
    before = len(await outbox_kinds(app, email))  # every queued mail is delivered in order
    response = await register(app.client, email, password, **names)
    assert response.status_code == 201, response.text
    registration_id = response.json()["registration_id"]
    code = await code_in_mail(app, email, before + 1)
    response = await verify(app.client, email, code, registration_id=registration_id)
    assert response.status_code == 200, response.text
    return password


async def login_token(client: httpx.AsyncClient, email: str, password: str) -> str:
    """An access token from a plain (no login code) login."""
    response = await login(client, email, password)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token
