"""POST /api/v1/auth/password-reset/request and /confirm: a generic 202, then the code sets the
new password, ends earlier tokens, notifies the owner, and does not log in."""

from __future__ import annotations

from datetime import timedelta

from taxease_auth.clock import ManualClock
from tests.api.conftest import (
    INVALID_CODE,
    answer_headers,
    code_in_mail,
    confirm_reset,
    login,
    login_token,
    me,
    outbox_kinds,
    register,
    request_reset,
    verified_user,
    verify,
    wait_for_mail,
)
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

RESET_REQUESTED = {
    "message": "If an account exists for this address, a password reset code has been sent."
}
RESET_DONE = {"message": "Password has been reset. Log in with your new password."}
NEW_PASSWORD = "a brand new passphrase for this"


async def _reset_code(app: RunningApp, email: str) -> str:
    mails_before = len(await outbox_kinds(app, email))
    response = await request_reset(app.client, email)
    assert response.status_code == 202
    return await code_in_mail(app, email, mails_before + 1)


async def test_reset_request_answers_the_same_202_for_known_and_unknown_addresses(
    dev_app: RunningApp,
) -> None:
    await verified_user(dev_app, "known@example.com")
    await register(dev_app.client, "pending@example.com")

    unknown = await request_reset(dev_app.client, "unknown@example.com")
    known = await request_reset(dev_app.client, "known@example.com")
    pending = await request_reset(dev_app.client, "pending@example.com")

    assert unknown.status_code == 202
    assert unknown.json() == RESET_REQUESTED
    for response in (known, pending):
        assert response.status_code == unknown.status_code
        assert response.content == unknown.content
        assert answer_headers(response) == answer_headers(unknown)
    assert await outbox_kinds(dev_app, "unknown@example.com") == []
    assert await outbox_kinds(dev_app, "known@example.com") == [
        "email_verification",
        "password_reset",
    ]


async def test_reset_code_sets_the_new_password(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "reset@example.com")
    code = await _reset_code(dev_app, "reset@example.com")

    response = await confirm_reset(dev_app.client, "reset@example.com", code, NEW_PASSWORD)

    assert response.status_code == 200
    assert response.json() == RESET_DONE  # no token: the client logs in itself
    assert (await login(dev_app.client, "reset@example.com", STRONG_PASSWORD)).status_code == 401
    assert (await login(dev_app.client, "reset@example.com", NEW_PASSWORD)).status_code == 200


async def test_reset_ends_every_token_issued_before(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "tokens@example.com")
    first = await login_token(dev_app.client, "tokens@example.com", STRONG_PASSWORD)
    second = await login_token(dev_app.client, "tokens@example.com", STRONG_PASSWORD)
    code = await _reset_code(dev_app, "tokens@example.com")

    await confirm_reset(dev_app.client, "tokens@example.com", code, NEW_PASSWORD)

    for token in (first, second):
        response = await me(dev_app.client, token)
        assert response.status_code == 401
        assert response.json() == {"detail": "Invalid token"}
    fresh = await login_token(dev_app.client, "tokens@example.com", NEW_PASSWORD)
    assert (await me(dev_app.client, fresh)).status_code == 200


async def test_reset_mails_the_owner_a_password_changed_notice(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "notice@example.com")
    code = await _reset_code(dev_app, "notice@example.com")

    await confirm_reset(dev_app.client, "notice@example.com", code, NEW_PASSWORD)

    assert (await outbox_kinds(dev_app, "notice@example.com"))[-1] == "password_changed"
    notice = (await wait_for_mail(dev_app, "notice@example.com", 3))[-1]
    assert notice.kind == "password_changed"
    assert code not in notice.text
    assert NEW_PASSWORD not in notice.text


async def test_reset_code_is_single_use(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "once@example.com")
    code = await _reset_code(dev_app, "once@example.com")
    assert (await confirm_reset(dev_app.client, "once@example.com", code, NEW_PASSWORD)).is_success

    again = await confirm_reset(dev_app.client, "once@example.com", code, "yet another passphrase")

    assert again.status_code == 400
    assert again.json() == INVALID_CODE
    assert (await login(dev_app.client, "once@example.com", NEW_PASSWORD)).status_code == 200


async def test_wrong_reset_code_answers_the_generic_400_and_changes_nothing(
    dev_app: RunningApp,
) -> None:
    await verified_user(dev_app, "wrong@example.com")
    code = await _reset_code(dev_app, "wrong@example.com")
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    response = await confirm_reset(dev_app.client, "wrong@example.com", wrong, NEW_PASSWORD)

    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert (await login(dev_app.client, "wrong@example.com", STRONG_PASSWORD)).status_code == 200
    assert "password_changed" not in await outbox_kinds(dev_app, "wrong@example.com")


async def test_reset_for_an_unknown_address_answers_the_generic_400(dev_app: RunningApp) -> None:
    response = await confirm_reset(dev_app.client, "ghost@example.com", "123456", NEW_PASSWORD)

    assert response.status_code == 400
    assert response.json() == INVALID_CODE


async def test_reset_code_dies_after_five_wrong_attempts(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "brute@example.com")
    code = await _reset_code(dev_app, "brute@example.com")

    for shift in range(1, 6):
        wrong = f"{(int(code) + shift) % 1_000_000:06d}"
        await confirm_reset(dev_app.client, "brute@example.com", wrong, NEW_PASSWORD)

    response = await confirm_reset(dev_app.client, "brute@example.com", code, NEW_PASSWORD)
    assert response.status_code == 400
    assert (await login(dev_app.client, "brute@example.com", STRONG_PASSWORD)).status_code == 200


async def test_weak_new_password_is_refused_naming_the_field_and_keeps_the_code(
    dev_app: RunningApp,
) -> None:
    await verified_user(dev_app, "weak@example.com")
    code = await _reset_code(dev_app, "weak@example.com")

    response = await confirm_reset(dev_app.client, "weak@example.com", code, "elevenchars")

    assert response.status_code == 422
    assert ["body", "new_password"] in [item["loc"] for item in response.json()["detail"]]
    assert "elevenchars" not in response.text
    assert (await confirm_reset(dev_app.client, "weak@example.com", code, NEW_PASSWORD)).is_success


async def test_reset_works_for_an_unverified_account_and_verifies_it(dev_app: RunningApp) -> None:
    await register(dev_app.client, "unverified@example.com")
    await dev_app.requested_codes_issued()  # the account is created after the 201
    assert (
        await login(dev_app.client, "unverified@example.com", STRONG_PASSWORD)
    ).status_code == 403
    code = await _reset_code(dev_app, "unverified@example.com")

    response = await confirm_reset(dev_app.client, "unverified@example.com", code, NEW_PASSWORD)

    assert response.status_code == 200
    token = await login_token(dev_app.client, "unverified@example.com", NEW_PASSWORD)
    assert (await me(dev_app.client, token)).json()["email_verified"] is True


async def test_reset_replaces_a_squatters_password(dev_app: RunningApp) -> None:
    squatter_password = "intruder's chosen passphrase"
    await register(dev_app.client, "victim@example.com", squatter_password)
    code = await _reset_code(dev_app, "victim@example.com")

    await confirm_reset(dev_app.client, "victim@example.com", code, NEW_PASSWORD)

    assert (await login(dev_app.client, "victim@example.com", squatter_password)).status_code == 401
    assert (await login(dev_app.client, "victim@example.com", NEW_PASSWORD)).status_code == 200


async def test_checking_a_reset_code_does_not_spend_it(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "check@example.com")
    code = await _reset_code(dev_app, "check@example.com")

    checked = await verify(dev_app.client, "check@example.com", code, "password_reset")

    assert checked.status_code == 200
    assert checked.json() == {"message": "OTP verified successfully"}
    assert "access_token" not in checked.text
    assert (await login(dev_app.client, "check@example.com", STRONG_PASSWORD)).status_code == 200
    confirmed = await confirm_reset(dev_app.client, "check@example.com", code, NEW_PASSWORD)
    assert confirmed.status_code == 200


async def test_new_reset_request_retires_the_previous_code(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(otp_resend_cooldown_seconds=0))
    await verified_user(app, "twice@example.com")
    old = await _reset_code(app, "twice@example.com")
    new = await _reset_code(app, "twice@example.com")
    assert old != new, "the two random codes collided (1 in a million): rerun"

    assert (await confirm_reset(app.client, "twice@example.com", old, NEW_PASSWORD)).is_error
    assert (await confirm_reset(app.client, "twice@example.com", new, NEW_PASSWORD)).is_success


async def test_expired_reset_code_is_refused(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    await verified_user(app, "expired@example.com")
    code = await _reset_code(app, "expired@example.com")

    clock.advance(timedelta(minutes=app.settings.otp_expiry_minutes))
    response = await confirm_reset(app.client, "expired@example.com", code, NEW_PASSWORD)

    assert response.status_code == 400
    assert (await login(app.client, "expired@example.com", STRONG_PASSWORD)).status_code == 200


async def test_squatters_pending_code_cannot_undo_a_completed_reset(dev_app: RunningApp) -> None:
    # The squatter's registration mailed the owner a code bound to the squatter's password.
    # The owner resets instead; that old code must not later switch the account back to it.
    squatter_password = "intruder's chosen passphrase"
    await register(dev_app.client, "owner@example.com", squatter_password)
    squatters_code = await code_in_mail(dev_app, "owner@example.com", 1)
    reset_code = await _reset_code(dev_app, "owner@example.com")
    assert (
        await confirm_reset(dev_app.client, "owner@example.com", reset_code, NEW_PASSWORD)
    ).status_code == 200
    token = await login_token(dev_app.client, "owner@example.com", NEW_PASSWORD)

    await verify(dev_app.client, "owner@example.com", squatters_code)

    assert (await login(dev_app.client, "owner@example.com", squatter_password)).status_code == 401
    assert (await login(dev_app.client, "owner@example.com", NEW_PASSWORD)).status_code == 200
    assert (await me(dev_app.client, token)).status_code == 200
