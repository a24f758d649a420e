"""Development mode as `make run` sets it up (console mail on stdout), its two bypasses, and
proof that the same variables do nothing in production mode."""

from __future__ import annotations

import re

import httpx
import pytest

from taxease_auth.config import DEVELOPMENT_SENDER
from tests.conftest import (
    SENDER,
    STRONG_PASSWORD,
    RunningApp,
    SesInbox,
    SettingsFactory,
    StartApp,
    extract_code,
)

EMAIL = "dev@example.com"
DEVELOPER_OTP = "123456"
INVALID = {"detail": "Invalid or expired OTP"}


async def register(client: httpx.AsyncClient, email: str = EMAIL) -> httpx.Response:
    response = await client.post(
        "/api/v1/auth/register",
        json={
            "email": email,
            "password": STRONG_PASSWORD,
            "first_name": "Dev",
            "last_name": "Eloper",
            "accept_terms": True,
        },
    )
    assert response.status_code == 201, response.text
    return response


async def verify(client: httpx.AsyncClient, code: str, email: str = EMAIL) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/verify-otp",
        json={"email": email, "code": code, "purpose": "email_verification"},
    )


async def login(client: httpx.AsyncClient, email: str = EMAIL) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"email": email, "password": STRONG_PASSWORD}
    )


async def printed_mails(running: RunningApp, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The mails the console backend printed on stdout since the last call."""
    await running.settled_outbox()
    out = capsys.readouterr().out
    return [block for block in re.split(r"\n={72}\n", out) if block.startswith("Mail (")]


async def test_console_backend_prints_the_mail_on_stdout(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(), console=False)
    await register(running.client)

    [mail] = await printed_mails(running, capsys)

    assert f"To: {EMAIL}" in mail
    assert f"From: {DEVELOPMENT_SENDER}" in mail
    assert "Subject: Your TaxEase email verification code" in mail
    assert "expires in 5 minutes" in mail
    code = extract_code(mail)
    assert (await verify(running.client, code)).status_code == 200
    assert (await login(running.client)).status_code == 200


async def test_console_mail_never_goes_through_logging(
    start_app: StartApp,
    make_settings: SettingsFactory,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    running = await start_app(make_settings(), console=False)
    await register(running.client)
    [mail] = await printed_mails(running, capsys)
    code = extract_code(mail)

    # The service's own loggers; third-party DEBUG output (aiosqlite echoes SQL parameters)
    # is capped by configure_logging and covered by tests/test_logs.py.
    ours = [record for record in caplog.records if record.name.startswith("taxease_auth")]
    assert ours
    assert all(code not in record.getMessage() for record in ours)


async def test_development_outbox_rows_are_sent_and_cleared(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(), console=False)
    await register(running.client)
    await printed_mails(running, capsys)

    [row] = await running.outbox()

    assert row.status == "sent"
    assert row.html_body is None
    assert row.text_body is None


# --- DEVELOPER_OTP ----------------------------------------------------------------------------


async def test_developer_otp_replaces_the_mailed_code(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(developer_otp=DEVELOPER_OTP), console=False)
    await register(running.client)

    [mail] = await printed_mails(running, capsys)

    assert extract_code(mail) == DEVELOPER_OTP
    assert (await verify(running.client, DEVELOPER_OTP)).status_code == 200
    assert (await login(running.client)).status_code == 200


async def test_developer_otp_is_single_use(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(developer_otp=DEVELOPER_OTP), console=False)
    await register(running.client)

    first = await verify(running.client, DEVELOPER_OTP)
    second = await verify(running.client, DEVELOPER_OTP)

    assert first.status_code == 200
    assert second.status_code == 400
    assert second.json() == INVALID


async def test_developer_otp_is_not_a_master_key(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """It only works where a code was issued: not for an address that never got one, not for
    another purpose, not after the account is verified."""
    running = await start_app(make_settings(developer_otp=DEVELOPER_OTP), console=False)
    client = running.client

    never_registered = await verify(client, DEVELOPER_OTP, email="stranger@example.com")
    assert never_registered.status_code == 400

    await register(client)
    wrong_purpose = await client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"email": EMAIL, "code": DEVELOPER_OTP, "new_password": "another fine passphrase"},
    )
    assert wrong_purpose.status_code == 400
    assert (await verify(client, DEVELOPER_OTP)).status_code == 200
    assert (await verify(client, DEVELOPER_OTP)).status_code == 400


async def test_developer_otp_dies_after_five_wrong_attempts(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(developer_otp=DEVELOPER_OTP), console=False)
    await register(running.client)

    for wrong in ["000000", "111111", "222222", "333333", "444444"]:
        answer = await verify(running.client, wrong)
        assert answer.status_code == 400
        assert answer.json() == INVALID

    after = await verify(running.client, DEVELOPER_OTP)
    assert after.status_code == 400
    assert after.json() == INVALID
    assert (await login(running.client)).status_code == 403


async def test_developer_otp_also_replaces_a_reissued_code(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(
        make_settings(developer_otp=DEVELOPER_OTP, otp_resend_cooldown_seconds=0), console=False
    )
    await register(running.client)
    requested = await running.client.post(
        "/api/v1/auth/request-otp", json={"email": EMAIL, "purpose": "email_verification"}
    )
    assert requested.status_code == 202

    mails = await printed_mails(running, capsys)

    assert [extract_code(mail) for mail in mails] == [DEVELOPER_OTP, DEVELOPER_OTP]
    assert (await verify(running.client, DEVELOPER_OTP)).status_code == 200


# --- SKIP_EMAIL_VERIFICATION ------------------------------------------------------------------


async def test_skip_email_verification_allows_login_right_after_register(
    start_app: StartApp, make_settings: SettingsFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    running = await start_app(make_settings(skip_email_verification=True), console=False)
    await register(running.client)

    logged_in = await login(running.client)

    assert logged_in.status_code == 200, logged_in.text
    me = await running.client.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {logged_in.json()['access_token']}"}
    )
    assert me.json()["email_verified"] is True
    assert await printed_mails(running, capsys) == []
    assert await running.outbox() == []


# --- the same variables in production mode do nothing -----------------------------------------


async def test_production_ignores_developer_otp_and_skip_email_verification(
    start_app: StartApp, ses: SesInbox, ses_settings: SettingsFactory
) -> None:
    ses.verify_identity(SENDER)
    settings = ses_settings(developer_otp=DEVELOPER_OTP, skip_email_verification=True)
    assert settings.startup_warnings()
    running = await start_app(settings)
    await register(running.client)
    await running.requested_codes_issued()  # the account is created after the 201

    before_verifying = await login(running.client)
    assert before_verifying.status_code == 403, before_verifying.text

    code = await ses.latest_code(EMAIL)
    assert code != DEVELOPER_OTP
    developer = await verify(running.client, DEVELOPER_OTP)
    assert developer.status_code == 400
    assert (await verify(running.client, code)).status_code == 200
    assert (await login(running.client)).status_code == 200


async def test_production_warns_loudly_at_start_up_about_ignored_bypasses(
    start_app: StartApp,
    ses: SesInbox,
    ses_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("WARNING")
    await start_app(ses_settings(developer_otp=DEVELOPER_OTP, skip_email_verification=True))

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("DEVELOPER_OTP" in w and "IGNORED" in w for w in warnings), warnings
    assert any("SKIP_EMAIL_VERIFICATION" in w and "IGNORED" in w for w in warnings), warnings
    assert all(DEVELOPER_OTP not in w for w in warnings)
