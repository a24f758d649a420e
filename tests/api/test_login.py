"""POST /api/v1/auth/login: a token, one 401 for unknown and wrong, 403 only after a correct
password; with LOGIN_OTP_REQUIRED a challenge and a mailed login code; hashing off the loop."""

from __future__ import annotations

import asyncio
import gc
import time

import jwt
import pytest

from tests.api.conftest import (
    INVALID_CODE,
    answer_headers,
    code_in_mail,
    confirm_reset,
    login,
    me,
    outbox_kinds,
    register,
    request_reset,
    verified_user,
    verify,
    wait_for_mail,
)
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

BAD_CREDENTIALS = {"detail": "Invalid email or password"}


async def test_correct_password_returns_a_bearer_token(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "login@example.com")

    response = await login(dev_app.client, "login@example.com", STRONG_PASSWORD)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == dev_app.settings.access_token_expire_minutes * 60
    assert response.headers["cache-control"] == "no-store"  # tokens: no cache keeps them
    assert (await me(dev_app.client, body["access_token"])).status_code == 200
    # A password login: amr ["pwd"]; the token names its session.
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd"]
    assert claims["sid"]
    assert claims["email"] == "login@example.com"


async def test_unknown_email_and_wrong_password_get_the_same_401(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "known@example.com")

    unknown = await login(dev_app.client, "unknown@example.com", STRONG_PASSWORD)
    wrong = await login(dev_app.client, "known@example.com", "not the right password")

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == BAD_CREDENTIALS
    assert unknown.content == wrong.content
    assert answer_headers(unknown) == answer_headers(wrong)


async def test_unverified_account_gets_403_only_after_a_correct_password(
    dev_app: RunningApp,
) -> None:
    await register(dev_app.client, "pending@example.com")
    await dev_app.requested_codes_issued()  # the account is created after the 201

    wrong = await login(dev_app.client, "pending@example.com", "not the right password")
    right = await login(dev_app.client, "pending@example.com", STRONG_PASSWORD)

    assert wrong.status_code == 401
    assert wrong.json() == BAD_CREDENTIALS
    assert right.status_code == 403
    assert right.json() == {"detail": "Email address not verified"}
    assert "access_token" not in right.text


async def test_login_accepts_any_case_of_the_address(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "case@example.com")

    response = await login(dev_app.client, "  CASE@Example.com ", STRONG_PASSWORD)

    assert response.status_code == 200


async def test_password_is_compared_after_unicode_normalisation(dev_app: RunningApp) -> None:
    # NFKC: full-width letters typed on another keyboard are the same passphrase.
    await verified_user(dev_app, "nfkc@example.com", "passphrase with ﬁ ligature")

    response = await login(dev_app.client, "nfkc@example.com", "passphrase with fi ligature")

    assert response.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"email": "a@example.com"},
        {"password": STRONG_PASSWORD},
        {"email": ["a@example.com"], "password": STRONG_PASSWORD},
        {"email": "a@example.com", "password": None},
        {"email": "a@example.com", "password": "x" * 2_000},
    ],
    ids=["no-password", "no-email", "email-list", "null-password", "2kB-password"],
)
async def test_malformed_login_is_refused_with_422(
    dev_app: RunningApp, body: dict[str, object]
) -> None:
    response = await dev_app.client.post("/api/v1/auth/login", json=body)

    assert response.status_code == 422
    assert "xxxxxxxxxx" not in response.text


# --- LOGIN_OTP_REQUIRED ---------------------------------------------------------------------


@pytest.fixture
async def login_code_app(start_app: StartApp, make_settings: SettingsFactory) -> RunningApp:
    return await start_app(make_settings(login_otp_required=True))


async def _challenge(app: RunningApp, email: str) -> tuple[str, str]:
    """Log in with the right password; (challenge id, the mailed login code)."""
    mails_before = len(await outbox_kinds(app, email))
    response = await login(app.client, email, STRONG_PASSWORD)
    assert response.status_code == 202, response.text
    code = await code_in_mail(app, email, mails_before + 1)
    challenge_id: str = response.json()["challenge_id"]
    return challenge_id, code


async def test_login_code_required_answers_202_with_a_challenge_and_mails_a_code(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    await verified_user(app, "otp@example.com")

    response = await login(app.client, "otp@example.com", STRONG_PASSWORD)

    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"otp_required", "challenge_id", "expires_in"}
    assert body["otp_required"] is True
    assert body["expires_in"] == app.settings.otp_expiry_minutes * 60
    assert "access_token" not in response.text
    mail = (await wait_for_mail(app, "otp@example.com", 2))[-1]
    assert mail.kind == "login"
    assert mail.subject == "Your TaxEase Login OTP"


async def test_login_code_with_its_challenge_returns_a_usable_token(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    await verified_user(app, "otp@example.com")
    challenge_id, code = await _challenge(app, "otp@example.com")

    response = await verify(app.client, "otp@example.com", code, "login", challenge_id=challenge_id)

    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "OTP verified successfully"
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == app.settings.access_token_expire_minutes * 60
    assert len(body["refresh_token"]) == 43
    assert response.headers["cache-control"] == "no-store"
    # A login code on top of the password: amr ["pwd", "otp"].
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["amr"] == ["pwd", "otp"]
    user = await me(app.client, body["access_token"])
    assert user.status_code == 200
    assert user.json()["email"] == "otp@example.com"


async def test_login_code_is_single_use(login_code_app: RunningApp) -> None:
    app = login_code_app
    await verified_user(app, "once@example.com")
    challenge_id, code = await _challenge(app, "once@example.com")
    assert (
        await verify(app.client, "once@example.com", code, "login", challenge_id=challenge_id)
    ).status_code == 200

    again = await verify(app.client, "once@example.com", code, "login", challenge_id=challenge_id)

    assert again.status_code == 400


async def test_login_code_without_challenge_is_refused(login_code_app: RunningApp) -> None:
    app = login_code_app
    await verified_user(app, "nochallenge@example.com")
    challenge_id, code = await _challenge(app, "nochallenge@example.com")

    response = await verify(app.client, "nochallenge@example.com", code, "login")

    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert (
        await verify(
            app.client, "nochallenge@example.com", code, "login", challenge_id=challenge_id
        )
    ).status_code == 200


async def test_login_code_with_another_challenge_is_refused(login_code_app: RunningApp) -> None:
    app = login_code_app
    await verified_user(app, "other@example.com")
    challenge_id, code = await _challenge(app, "other@example.com")

    response = await verify(
        app.client, "other@example.com", code, "login", challenge_id="someone-elses-challenge"
    )

    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert (
        await verify(app.client, "other@example.com", code, "login", challenge_id=challenge_id)
    ).status_code == 200


async def test_code_of_a_newer_challenge_does_not_complete_the_older_one(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    await verified_user(app, "two@example.com")
    first_challenge, _ = await _challenge(app, "two@example.com")
    second_challenge, second_code = await _challenge(app, "two@example.com")

    stale = await verify(
        app.client, "two@example.com", second_code, "login", challenge_id=first_challenge
    )

    assert stale.status_code == 400
    assert (
        await verify(
            app.client, "two@example.com", second_code, "login", challenge_id=second_challenge
        )
    ).status_code == 200


async def test_login_code_for_one_account_does_not_log_in_another(
    login_code_app: RunningApp,
) -> None:
    app = login_code_app
    await verified_user(app, "mine@example.com")
    await verified_user(app, "theirs@example.com")
    challenge_id, code = await _challenge(app, "mine@example.com")

    response = await verify(
        app.client, "theirs@example.com", code, "login", challenge_id=challenge_id
    )

    assert response.status_code == 400
    assert "access_token" not in response.text


async def test_login_and_reset_codes_do_not_cross_purposes(login_code_app: RunningApp) -> None:
    app = login_code_app
    await verified_user(app, "both@example.com")
    challenge_id, login_code = await _challenge(app, "both@example.com")
    await request_reset(app.client, "both@example.com")
    reset_code = await code_in_mail(app, "both@example.com", 3)
    assert login_code != reset_code, "the two random codes collided (1 in a million): rerun"
    new_password = "new passphrase after reset"

    assert (
        await verify(app.client, "both@example.com", reset_code, "login", challenge_id=challenge_id)
    ).status_code == 400
    assert (await verify(app.client, "both@example.com", login_code, "password_reset")).is_error
    assert (await verify(app.client, "both@example.com", login_code)).is_error
    assert (
        await confirm_reset(app.client, "both@example.com", login_code, new_password)
    ).status_code == 400

    # Both codes were live all along.
    assert (
        await verify(app.client, "both@example.com", login_code, "login", challenge_id=challenge_id)
    ).status_code == 200
    assert (
        await confirm_reset(app.client, "both@example.com", reset_code, new_password)
    ).status_code == 200


async def test_wrong_password_gets_no_login_code(login_code_app: RunningApp) -> None:
    app = login_code_app
    await verified_user(app, "guess@example.com")

    response = await login(app.client, "guess@example.com", "not the right password")

    assert response.status_code == 401
    assert await outbox_kinds(app, "guess@example.com") == ["email_verification"]


async def test_unverified_account_gets_no_login_code(login_code_app: RunningApp) -> None:
    app = login_code_app
    await register(app.client, "unverified@example.com")
    await app.requested_codes_issued()  # the account is created after the 201

    response = await login(app.client, "unverified@example.com", STRONG_PASSWORD)

    assert response.status_code == 403
    assert await outbox_kinds(app, "unverified@example.com") == ["email_verification"]


# --- hashing off the event loop ---------------------------------------------------------------


@pytest.mark.timing
async def test_password_hashing_does_not_block_the_event_loop(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(
        make_settings(
            password_hash_memory_kib=65536,
            password_hash_time_cost=3,
            password_hash_parallelism=4,
            developer_otp="123456",
        )
    )
    assert (await register(app.client, "slow@example.com")).status_code == 201
    assert (await verify(app.client, "slow@example.com", "123456")).status_code == 200
    started = time.perf_counter()
    assert (await login(app.client, "slow@example.com", STRONG_PASSWORD)).status_code == 200
    one_hash = time.perf_counter() - started

    # The test process's own heap (every test before this one) can make one full collection
    # a 100-200 ms pause, unrelated to hashing (the server freezes its start-up objects; this
    # process cannot): no collection while measuring.
    gc.collect()
    gc.disable()
    try:
        logins = [
            asyncio.ensure_future(login(app.client, "slow@example.com", STRONG_PASSWORD))
            for _ in range(8)
        ]
        pause = 0.005
        latencies: list[float] = []
        while not all(task.done() for task in logins):
            # Measured from before the pause: a hash run on the loop blocks whichever step of
            # this loop is waiting when it starts, the pause included.
            started = time.perf_counter()
            await asyncio.sleep(pause)
            response = await app.client.get("/healthz")
            latencies.append(time.perf_counter() - started - pause)
            assert response.status_code == 200
    finally:
        gc.enable()

    assert {(await task).status_code for task in logins} == {200}
    assert len(latencies) >= 5, f"only {len(latencies)} health checks ran during 8 logins"
    # On the loop, each of the 8 hashes would hold one health check for a whole hash (measured:
    # max == one login). Off the loop they answer in milliseconds even with both cores hashing.
    # The first check waits instead for the 8 logins' admission on the loop (parsing, budgets,
    # the account read: 40-110 ms for all 8 on this machine, under load), which is no hash.
    after_admission = latencies[1:]
    assert max(after_admission) < one_hash / 2, (
        one_hash,
        latencies[0],
        sorted(after_admission)[-5:],
    )


async def test_a_1mb_password_is_refused_before_it_is_parsed_or_hashed(dev_app: RunningApp) -> None:
    body = {"email": "a@example.com", "password": "x" * 1_000_000}

    response = await dev_app.client.post("/api/v1/auth/login", json=body)

    assert response.status_code == 413
    assert "xxxxxxxxxx" not in response.text
