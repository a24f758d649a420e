"""POST /api/v1/auth/register: one answer whatever the address's state; input checked first."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.conftest import (
    OTHER_PASSWORD,
    answer_headers,
    code_in_mail,
    delivered,
    login,
    login_token,
    me,
    otp_rows,
    outbox_kinds,
    register,
    request_otp,
    request_reset,
    user_rows,
    verified_user,
    verify,
    wait_for_mail,
)
from tests.conftest import STRONG_PASSWORD, RunningApp, SettingsFactory, StartApp

REGISTERED = {"message": "Registration received. Check your email for a verification code."}


class _AnyRegistrationId:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[A-Za-z0-9_-]{22}", other) is not None


ANY_REGISTRATION_ID = _AnyRegistrationId()


def _without_id(response: httpx.Response) -> dict[str, object]:
    body = response.json()
    assert isinstance(body.pop("registration_id"), str)
    return dict(body)


async def test_registration_answers_201_and_mails_a_verification_code(
    dev_app: RunningApp,
) -> None:
    response = await register(dev_app.client, "new@example.com")

    assert response.status_code == 201
    assert response.json() == {**REGISTERED, "registration_id": ANY_REGISTRATION_ID}
    assert await outbox_kinds(dev_app, "new@example.com") == ["email_verification"]
    [mail] = await wait_for_mail(dev_app, "new@example.com", 1)
    assert mail.kind == "email_verification"
    assert "TaxEase" in mail.subject


async def test_registration_answer_is_identical_for_new_unverified_and_verified_addresses(
    dev_app: RunningApp,
) -> None:
    client = dev_app.client
    await verified_user(dev_app, "verified@example.com")
    await register(client, "unverified@example.com")

    new = await register(client, "brand-new@example.com")
    unverified = await register(client, "unverified@example.com", OTHER_PASSWORD)
    verified = await register(client, "verified@example.com", OTHER_PASSWORD)

    for response in (unverified, verified):
        assert response.status_code == new.status_code == 201
        # The same body but for the registration id, fresh (and as long) for every one.
        assert _without_id(response) == _without_id(new)
        assert len(response.content) == len(new.content)
        assert answer_headers(response) == answer_headers(new)


async def test_registering_a_verified_address_mails_a_notice_and_keeps_the_password(
    dev_app: RunningApp,
) -> None:
    client = dev_app.client
    await verified_user(dev_app, "owner@example.com")
    codes_before = len(await otp_rows(dev_app, "owner@example.com"))

    response = await register(client, "owner@example.com", OTHER_PASSWORD, first_name="Mallory")

    assert response.status_code == 201
    assert await outbox_kinds(dev_app, "owner@example.com") == [
        "email_verification",
        "account_exists",
    ]
    assert len(await otp_rows(dev_app, "owner@example.com")) == codes_before  # no new code
    notice = (await wait_for_mail(dev_app, "owner@example.com", 2))[-1]
    assert notice.kind == "account_exists"
    assert (await login(client, "owner@example.com", OTHER_PASSWORD)).status_code == 401
    token = await login_token(client, "owner@example.com", STRONG_PASSWORD)
    assert (await me(client, token)).json()["first_name"] == "Test"


async def test_registering_an_unverified_address_again_mails_a_new_code(
    dev_app: RunningApp,
) -> None:
    await register(dev_app.client, "again@example.com")
    await register(dev_app.client, "again@example.com")

    assert await outbox_kinds(dev_app, "again@example.com") == [
        "email_verification",
        "email_verification",
    ]
    assert len(await wait_for_mail(dev_app, "again@example.com", 2)) == 2


async def test_squatters_password_never_wins_over_the_mailbox_owner(dev_app: RunningApp) -> None:
    client = dev_app.client
    squatter_password = "intruder's chosen passphrase"
    await register(client, "victim@example.com", squatter_password, first_name="Squatter")
    mine = await register(client, "victim@example.com", OTHER_PASSWORD, first_name="Victim")

    code = await code_in_mail(dev_app, "victim@example.com", 2)  # the latest mail
    registration_id = mine.json()["registration_id"]
    verified = await verify(client, "victim@example.com", code, registration_id=registration_id)
    assert verified.status_code == 200

    assert (await login(client, "victim@example.com", squatter_password)).status_code == 401
    token = await login_token(client, "victim@example.com", OTHER_PASSWORD)
    assert (await me(client, token)).json()["first_name"] == "Victim"


async def test_unverified_registration_does_not_block_the_owner(dev_app: RunningApp) -> None:
    client = dev_app.client
    await register(client, "blocked@example.com", "intruder's chosen passphrase")

    await verified_user(dev_app, "blocked@example.com", OTHER_PASSWORD)

    assert (await login(client, "blocked@example.com", OTHER_PASSWORD)).status_code == 200


async def test_address_case_variants_are_one_account(dev_app: RunningApp) -> None:
    client = dev_app.client
    first = await register(client, "User@Example.COM")
    second = await register(client, "  user@example.com  ")

    assert first.status_code == second.status_code == 201
    assert [user.email for user in await user_rows(dev_app)] == ["user@example.com"]
    assert {row.recipient for row in await dev_app.outbox()} == {"user@example.com"}
    code = await code_in_mail(dev_app, "user@example.com", 2)
    registration_id = second.json()["registration_id"]
    assert (
        await verify(client, "USER@example.com", code, registration_id=registration_id)
    ).status_code == 200
    assert (await login(client, "uSeR@eXaMpLe.CoM", STRONG_PASSWORD)).status_code == 200


async def test_skip_email_verification_in_development_mode_registers_verified(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    app = await start_app(make_settings(skip_email_verification=True))

    assert (await register(app.client, "skip@example.com")).status_code == 201

    assert (await login(app.client, "skip@example.com", STRONG_PASSWORD)).status_code == 200
    assert await outbox_kinds(app, "skip@example.com") == []


# --- refused input ----------------------------------------------------------------------------


def _error_fields(body: dict[str, object]) -> list[object]:
    detail = body["detail"]
    assert isinstance(detail, list)
    return [tuple(item["loc"]) for item in detail]


async def test_terms_not_accepted_is_refused_with_422(dev_app: RunningApp) -> None:
    response = await register(dev_app.client, "terms@example.com", accept_terms=False)

    assert response.status_code == 422
    assert ("body", "accept_terms") in _error_fields(response.json())
    assert await user_rows(dev_app) == []
    assert await dev_app.outbox() == []


async def test_missing_terms_are_refused_with_422(dev_app: RunningApp) -> None:
    response = await dev_app.client.post(
        "/api/v1/auth/register",
        json={
            "email": "terms@example.com",
            "password": STRONG_PASSWORD,
            "first_name": "Test",
            "last_name": "User",
        },
    )

    assert response.status_code == 422
    assert ("body", "accept_terms") in _error_fields(response.json())


async def test_password_shorter_than_the_minimum_is_refused_naming_the_field(
    dev_app: RunningApp,
) -> None:
    eleven = "elevenchars"
    assert len(eleven) == 11  # PASSWORD_MIN_LENGTH defaults to 12

    response = await register(dev_app.client, "weak@example.com", eleven)

    assert response.status_code == 422
    assert ("body", "password") in _error_fields(response.json())
    assert await user_rows(dev_app) == []
    assert await dev_app.outbox() == []


async def test_password_of_exactly_the_minimum_length_is_accepted(dev_app: RunningApp) -> None:
    response = await register(dev_app.client, "minimum@example.com", "twelve chars")

    assert response.status_code == 201


async def test_password_longer_than_the_maximum_is_refused(dev_app: RunningApp) -> None:
    response = await register(dev_app.client, "long@example.com", "x" * 129)

    assert response.status_code == 422
    assert ("body", "password") in _error_fields(response.json())


@pytest.mark.parametrize(
    "email",
    [
        "not-an-email",
        "a@b@example.com",
        "user@example.com\r\nBcc: evil@example.net",
        "\u00fcser@example.com",
        "",
    ],
)
async def test_bad_email_is_refused_with_422(dev_app: RunningApp, email: str) -> None:
    response = await register(dev_app.client, email)

    assert response.status_code == 422
    assert ("body", "email") in _error_fields(response.json())
    assert await dev_app.outbox() == []


@pytest.mark.parametrize(
    ("password", "overrides"),
    [
        ("Sup3r-secret-but-terms-refused", {"accept_terms": False}),
        ("weakpass1!", {}),
        ("x" * 2000 + "Sup3r-secret", {}),
        ("Sup3r-secret-bad-email-here", {"email": "not-an-email"}),
        ("Sup3r-secret-no-names-given", {"first_name": ""}),
    ],
)
async def test_validation_errors_never_echo_the_password(
    dev_app: RunningApp, password: str, overrides: dict[str, object]
) -> None:
    body: dict[str, object] = {
        "email": "echo@example.com",
        "password": password,
        "first_name": "Test",
        "last_name": "User",
        "accept_terms": True,
        **overrides,
    }

    response = await dev_app.client.post("/api/v1/auth/register", json=body)

    assert response.status_code == 422
    assert password[-12:] not in response.text
    assert '"input"' not in response.text


async def test_control_characters_in_names_are_refused(dev_app: RunningApp) -> None:
    response = await register(
        dev_app.client, "names@example.com", first_name="Eve\r\nBcc: evil@example.net"
    )

    assert response.status_code == 422
    assert ("body", "first_name") in _error_fields(response.json())
    assert delivered(dev_app, "names@example.com") == []


async def _greeting(app: RunningApp, email: str, number: int) -> str:
    """The first line of the ``number``-th mail ``email`` received."""
    return (await wait_for_mail(app, email, number))[number - 1].text.splitlines()[0]


async def test_mail_to_an_unverified_address_greets_without_the_registrants_name(
    start_app: StartApp, make_settings: SettingsFactory
) -> None:
    """Review 17.5: the name is the registrant's claim until the address is verified: the
    registration code, a resent one, and a reset code for an unverified account say
    "Hello,"; mail to a verified account greets its owner by name."""
    app = await start_app(make_settings(login_otp_required=True))
    pending, owner = "pending@example.com", "owner@example.com"
    await register(app.client, pending, first_name="Mallory")
    assert await _greeting(app, pending, 1) == "Hello,"
    await request_otp(app.client, pending)
    assert await _greeting(app, pending, 2) == "Hello,"
    await request_reset(app.client, pending)
    assert await _greeting(app, pending, 3) == "Hello,"

    await verified_user(app, owner, first_name="Olivia")
    assert await _greeting(app, owner, 1) == "Hello,"
    assert (await login(app.client, owner, STRONG_PASSWORD)).status_code == 202
    assert await _greeting(app, owner, 2) == "Hello Olivia,"
    await request_reset(app.client, owner)
    assert await _greeting(app, owner, 3) == "Hello Olivia,"
