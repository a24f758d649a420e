"""The audit trail records each security event with time, email fingerprint, client address
and outcome, and never the address itself."""

from __future__ import annotations

from sqlalchemy import select

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.store import audit
from taxease_auth.store.db import make_sessionmaker
from taxease_auth.store.models import AuditEvent
from tests.api.conftest import (
    code_in_mail,
    confirm_reset,
    login,
    register,
    request_reset,
    verify,
)
from tests.conftest import STRONG_PASSWORD, TEST_SECRET_KEY, RunningApp

NEW_PASSWORD = "a brand new passphrase for this"


async def events(app: RunningApp, email: str) -> list[AuditEvent]:
    async with make_sessionmaker(app.app.state.engine)() as session:
        found = await audit.recent(
            session, email_hashes=[email_fingerprint(TEST_SECRET_KEY, email)], limit=100
        )
    return list(reversed(found))


async def test_each_step_of_the_flows_is_recorded(dev_app: RunningApp) -> None:
    client, email = dev_app.client, "audited@example.com"
    await register(client, email)
    code = await code_in_mail(dev_app, email, 1)
    await verify(client, email, "000000" if code != "000000" else "111111")
    await verify(client, email, code)
    await login(client, email, "not the password!")
    await login(client, email, STRONG_PASSWORD)
    await request_reset(client, email)
    reset_code = await code_in_mail(dev_app, email, 2)
    await confirm_reset(client, email, reset_code, NEW_PASSWORD)

    recorded = [(e.event, e.purpose, e.outcome) for e in await events(dev_app, email)]

    assert recorded == [
        ("code_issued", "email_verification", "success"),
        ("code_failed", "email_verification", "failure"),
        ("code_verified", "email_verification", "success"),
        ("login_failed", None, "failure"),
        ("login_succeeded", None, "success"),
        ("code_issued", "password_reset", "success"),
        ("code_verified", "password_reset", "success"),
        ("password_reset", None, "success"),
    ]
    assert {e.ip for e in await events(dev_app, email)} == {"127.0.0.1"}


async def test_a_code_killed_by_wrong_guesses_is_recorded_as_locked(dev_app: RunningApp) -> None:
    client, email = dev_app.client, "guessed@example.com"
    await register(client, email)
    code = await code_in_mail(dev_app, email, 1)
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        await verify(client, email, wrong)

    details = [(e.event, e.detail) for e in await events(dev_app, email)]

    assert details[-1] == ("code_locked", "locked")
    assert details.count(("code_failed", "wrong")) == 4


async def test_unknown_addresses_are_recorded_by_fingerprint_only(dev_app: RunningApp) -> None:
    await login(dev_app.client, "stranger@example.com", "not the password!")

    recorded = await events(dev_app, "stranger@example.com")
    async with make_sessionmaker(dev_app.app.state.engine)() as session:
        every_value = [
            str(value)
            for row in (await session.execute(select(AuditEvent))).scalars()
            for value in vars(row).values()
        ]

    assert [(e.event, e.detail) for e in recorded] == [("login_failed", "unknown_email")]
    assert not any("stranger" in value for value in every_value)
