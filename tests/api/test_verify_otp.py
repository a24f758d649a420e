"""POST /api/v1/auth/verify-otp: one 400 for every failure; single use, expiry, attempt cap,
strict code format, codes bound to email and purpose, stored only as a keyed hash."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from taxease_auth.clock import ManualClock
from tests.api.conftest import (
    INVALID_CODE,
    VERIFIED,
    answer_headers,
    code_in_mail,
    confirm_reset,
    login,
    otp_rows,
    register,
    request_reset,
    verify,
)
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

NEW_PASSWORD = "a brand new passphrase for this"


def _wrong(code: str, shift: int = 1) -> str:
    """A well-formed code that differs from ``code``."""
    return f"{(int(code) + shift) % 10 ** len(code):0{len(code)}d}"


async def test_right_code_verifies_the_address(dev_app: RunningApp) -> None:
    await register(dev_app.client, "ok@example.com")
    await dev_app.requested_codes_issued()  # the account is created after the 201
    assert (await login(dev_app.client, "ok@example.com", STRONG_PASSWORD)).status_code == 403

    code = await dev_app.latest_code("ok@example.com")
    response = await verify(dev_app.client, "ok@example.com", code)

    assert response.status_code == 200
    assert response.json() == VERIFIED
    assert (await login(dev_app.client, "ok@example.com", STRONG_PASSWORD)).status_code == 200


async def test_wrong_code_answers_the_generic_400(dev_app: RunningApp) -> None:
    await register(dev_app.client, "wrong@example.com")
    code = await dev_app.latest_code("wrong@example.com")

    response = await verify(dev_app.client, "wrong@example.com", _wrong(code))

    assert response.status_code == 400
    assert response.json() == INVALID_CODE


async def test_unknown_email_answers_the_same_400_as_a_wrong_code(dev_app: RunningApp) -> None:
    await register(dev_app.client, "known@example.com")
    code = await dev_app.latest_code("known@example.com")

    unknown = await verify(dev_app.client, "nobody@example.com", code)
    wrong = await verify(dev_app.client, "known@example.com", _wrong(code))

    assert unknown.status_code == wrong.status_code == 400
    assert unknown.content == wrong.content
    assert answer_headers(unknown) == answer_headers(wrong)


async def test_code_dies_after_five_wrong_attempts(dev_app: RunningApp) -> None:
    assert dev_app.settings.otp_max_attempts == 5
    await register(dev_app.client, "brute@example.com")
    code = await dev_app.latest_code("brute@example.com")

    for shift in range(1, 6):
        response = await verify(dev_app.client, "brute@example.com", _wrong(code, shift))
        assert response.status_code == 400

    response = await verify(dev_app.client, "brute@example.com", code)
    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert (await login(dev_app.client, "brute@example.com", STRONG_PASSWORD)).status_code == 403


async def test_four_wrong_attempts_leave_the_code_usable(dev_app: RunningApp) -> None:
    await register(dev_app.client, "four@example.com")
    code = await dev_app.latest_code("four@example.com")

    for shift in range(1, 5):
        assert (await verify(dev_app.client, "four@example.com", _wrong(code, shift))).is_error

    assert (await verify(dev_app.client, "four@example.com", code)).status_code == 200


async def test_consumed_code_cannot_be_used_again(dev_app: RunningApp) -> None:
    await register(dev_app.client, "replay@example.com")
    code = await dev_app.latest_code("replay@example.com")
    assert (await verify(dev_app.client, "replay@example.com", code)).status_code == 200

    response = await verify(dev_app.client, "replay@example.com", code)

    assert response.status_code == 400
    assert response.json() == INVALID_CODE


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(minutes=5) - timedelta(seconds=1), 200),
        (timedelta(minutes=5), 400),
        (timedelta(minutes=5) + timedelta(seconds=1), 400),
    ],
    ids=["ttl-minus-1s", "ttl", "ttl-plus-1s"],
)
async def test_code_expires_after_otp_expiry_minutes(
    start_app: StartApp, make_settings: SettingsFactory, age: timedelta, status: int
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    assert app.settings.otp_expiry_minutes == 5
    await register(app.client, "expiry@example.com")
    code = await app.latest_code("expiry@example.com")  # delivered before the clock moves

    clock.advance(age)
    response = await verify(app.client, "expiry@example.com", code)

    assert response.status_code == status
    if status == 400:
        assert response.json() == INVALID_CODE


async def test_expired_code_can_be_replaced_by_a_new_one(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    clock = ManualClock()
    app = await start_app(make_settings(), clock=clock)
    await register(app.client, "late@example.com")
    await app.latest_code("late@example.com")
    clock.advance(timedelta(minutes=6))

    await app.client.post(
        "/api/v1/auth/request-otp",
        json={"email": "late@example.com", "purpose": "email_verification"},
    )
    code = await code_in_mail(app, "late@example.com", 2)

    assert (await verify(app.client, "late@example.com", code)).status_code == 200


async def test_code_for_one_address_does_not_verify_another(dev_app: RunningApp) -> None:
    await register(dev_app.client, "alice@example.com")
    await register(dev_app.client, "bob@example.com")
    alice_code = await dev_app.latest_code("alice@example.com")
    bob_code = await dev_app.latest_code("bob@example.com")
    assert alice_code != bob_code, "the two random codes collided (1 in a million): rerun"

    assert (await verify(dev_app.client, "bob@example.com", alice_code)).status_code == 400
    assert (await verify(dev_app.client, "bob@example.com", bob_code)).status_code == 200


async def test_same_developer_code_still_binds_to_its_address(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(developer_otp="424242"))
    await register(app.client, "carol@example.com")

    # The code is right but no code was ever issued to dave@: nothing verifies.
    assert (await verify(app.client, "dave@example.com", "424242")).status_code == 400
    assert (await verify(app.client, "carol@example.com", "424242")).status_code == 200


async def test_verification_and_reset_codes_do_not_cross_purposes(dev_app: RunningApp) -> None:
    client = dev_app.client
    await register(client, "cross@example.com")
    verification_code = await code_in_mail(dev_app, "cross@example.com", 1)
    await request_reset(client, "cross@example.com")
    reset_code = await code_in_mail(dev_app, "cross@example.com", 2)
    assert verification_code != reset_code, "the two random codes collided (1 in a million)"

    assert (await verify(client, "cross@example.com", reset_code)).status_code == 400
    assert (
        await verify(client, "cross@example.com", verification_code, "password_reset")
    ).status_code == 400
    assert (
        await confirm_reset(client, "cross@example.com", verification_code, NEW_PASSWORD)
    ).status_code == 400
    assert (
        await verify(client, "cross@example.com", verification_code, "login", challenge_id="abc")
    ).status_code == 400

    # Both codes were live all along: each works for its own purpose.
    assert (await verify(client, "cross@example.com", verification_code)).status_code == 200
    assert (
        await confirm_reset(client, "cross@example.com", reset_code, NEW_PASSWORD)
    ).status_code == 200


# --- code format ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "submitted",
    [
        123456,  # a JSON number
        123456.0,
        "１２３４５６",  # full-width digits: int() would accept them
        "١٢٣٤٥٦",  # Arabic-Indic digits
        "۱۲۳۴۵۶",  # Extended Arabic-Indic digits
        " 123456",
        "123456 ",
        "123456\n",
        "+12345",
        "+123456",
        "-12345",
        "1e5",
        "12 456",
        "12345",
        "",
        None,
        ["123456"],
        "1" * 10_000,
    ],
    ids=repr,
)
async def test_code_that_is_not_ascii_digits_is_refused_with_422(
    start_app: StartApp, make_settings: SettingsFactory, submitted: Any
) -> None:
    app = await start_app(make_settings(developer_otp="123456"))
    await register(app.client, "format@example.com")

    response = await verify(app.client, "format@example.com", submitted)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "code"]
    # The right code, sent as text, still works: the refusal was about the format only.
    assert (await verify(app.client, "format@example.com", "123456")).status_code == 200


async def test_code_longer_than_otp_length_answers_the_generic_400(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(developer_otp="123456"))
    await register(app.client, "seven@example.com")

    response = await verify(app.client, "seven@example.com", "1234567")

    assert response.status_code == 400
    assert response.json() == INVALID_CODE
    assert (await verify(app.client, "seven@example.com", "123456")).status_code == 200


async def test_leading_zero_code_is_accepted(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(developer_otp="012345"))
    await register(app.client, "zero@example.com")
    assert await app.latest_code("zero@example.com") == "012345"

    assert (await verify(app.client, "zero@example.com", 12345)).status_code == 422
    assert (await verify(app.client, "zero@example.com", "12345")).status_code == 422
    assert (await verify(app.client, "zero@example.com", "012345")).status_code == 200


async def test_developer_code_is_single_use(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(developer_otp="123456"))
    await register(app.client, "devonce@example.com")
    assert (await verify(app.client, "devonce@example.com", "123456")).status_code == 200

    assert (await verify(app.client, "devonce@example.com", "123456")).status_code == 400


async def test_unknown_purpose_is_refused_with_422(dev_app: RunningApp) -> None:
    response = await verify(dev_app.client, "x@example.com", "123456", "account_deletion")

    assert response.status_code == 422


# --- storage ----------------------------------------------------------------------------------


async def test_code_is_stored_only_as_a_keyed_hash(dev_app: RunningApp) -> None:
    await register(dev_app.client, "stored@example.com")
    code = await dev_app.latest_code("stored@example.com")

    [row] = await otp_rows(dev_app, "stored@example.com")

    assert len(row.code_hash) == 64
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        assert code not in str(value), f"otps.{column.key} holds the mailed code"


# --- races ------------------------------------------------------------------------------------


async def test_simultaneous_correct_submissions_succeed_exactly_once(dev_app: RunningApp) -> None:
    await register(dev_app.client, "race@example.com")
    code = await dev_app.latest_code("race@example.com")

    responses = await asyncio.gather(
        *(verify(dev_app.client, "race@example.com", code) for _ in range(20))
    )

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * 19
    assert all(r.json() == INVALID_CODE for r in responses if r.status_code == 400)


async def test_simultaneous_wrong_guesses_never_exceed_the_attempt_cap(
    dev_app: RunningApp,
) -> None:
    await register(dev_app.client, "guess@example.com")
    code = await dev_app.latest_code("guess@example.com")

    responses = await asyncio.gather(
        *(verify(dev_app.client, "guess@example.com", _wrong(code, n)) for n in range(1, 31))
    )

    assert {response.status_code for response in responses} == {400}
    [row] = await otp_rows(dev_app, "guess@example.com")
    assert row.attempts <= dev_app.settings.otp_max_attempts
    assert (await verify(dev_app.client, "guess@example.com", code)).status_code == 400
