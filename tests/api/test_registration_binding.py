"""Registration binding (DESIGN.md §11, issue 14 item 4): a sign-up nobody else can complete.

Each registration answers its own id; its code is bound to it. With the id, only that
registration's code and password count. Without it (the integration guide's three-field
body), a code whose registration raced another for the address verifies the address with no
password, and the owner is mailed a notice to choose one through the reset flow.
"""

from __future__ import annotations

import re

import pytest

from tests.api.conftest import (
    OTHER_PASSWORD,
    code_in_mail,
    login,
    outbox_kinds,
    register,
    request_otp,
    verified_user,
    verify,
)
from tests.conftest import STRONG_PASSWORD, RunningApp

VICTIM = "victim@example.com"
ATTACKER_PASSWORD = OTHER_PASSWORD


async def _registration_id(app: RunningApp, email: str, password: str) -> str:
    response = await register(app.client, email, password)
    assert response.status_code == 201, response.text
    registration_id: str = response.json()["registration_id"]
    return registration_id


async def test_every_registration_answers_a_fresh_id_whatever_the_address(
    dev_app: RunningApp,
) -> None:
    await verified_user(dev_app, "verified@example.com")
    await register(dev_app.client, "unverified@example.com")

    answers = [
        await register(dev_app.client, email)
        for email in ("new@example.com", "unverified@example.com", "verified@example.com")
    ]

    ids = [answer.json()["registration_id"] for answer in answers]
    assert len(set(ids)) == 3
    for answer, registration_id in zip(answers, ids, strict=True):
        assert answer.status_code == 201
        assert set(answer.json()) == {"message", "registration_id"}
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", registration_id)  # 16 bytes, base64url


async def test_the_newest_code_of_a_raced_registration_sets_no_password(
    dev_app: RunningApp,
) -> None:
    """The pre-account-takeover: the attacker registers the victim's address right after the
    victim; the victim types the newest code (the attacker's) without a registration id."""
    await register(dev_app.client, VICTIM, STRONG_PASSWORD)
    await register(dev_app.client, VICTIM, ATTACKER_PASSWORD)
    newest = await code_in_mail(dev_app, VICTIM, 2)

    response = await verify(dev_app.client, VICTIM, newest)

    assert response.status_code == 200
    assert (await login(dev_app.client, VICTIM, ATTACKER_PASSWORD)).status_code == 401
    assert (await login(dev_app.client, VICTIM, STRONG_PASSWORD)).status_code == 401
    assert await outbox_kinds(dev_app, VICTIM) == [
        "email_verification",
        "email_verification",
        "choose_password",
    ]
    notice = (await dev_app.console_mail(VICTIM, 3))[2]
    assert "reset your password" in notice
    # The owner sets a password through the reset flow, and it works.
    assert (await request_otp(dev_app.client, VICTIM, "password_reset")).status_code == 202
    reset_code = await code_in_mail(dev_app, VICTIM, 4)
    new_password = "the owner's own new passphrase"
    confirm = await dev_app.client.post(
        "/api/v1/auth/password-reset/confirm",
        json={"email": VICTIM, "code": reset_code, "new_password": new_password},
    )
    assert confirm.status_code == 200
    assert (await login(dev_app.client, VICTIM, new_password)).status_code == 200


async def test_a_registration_id_activates_its_own_password_only(dev_app: RunningApp) -> None:
    victims = await _registration_id(dev_app, VICTIM, STRONG_PASSWORD)
    attackers = await _registration_id(dev_app, VICTIM, ATTACKER_PASSWORD)
    victims_code = await code_in_mail(dev_app, VICTIM, 1)  # not retired by the second sign-up
    attackers_code = await code_in_mail(dev_app, VICTIM, 2)

    # The attacker's code does not complete the victim's registration, nor the reverse.
    wrong = await verify(dev_app.client, VICTIM, attackers_code, registration_id=victims)
    assert wrong.status_code == 400
    response = await verify(dev_app.client, VICTIM, victims_code, registration_id=victims)

    assert response.status_code == 200
    assert (await login(dev_app.client, VICTIM, STRONG_PASSWORD)).status_code == 200
    assert (await login(dev_app.client, VICTIM, ATTACKER_PASSWORD)).status_code == 401
    late = await verify(dev_app.client, VICTIM, attackers_code, registration_id=attackers)
    assert late.status_code == 400
    assert (await login(dev_app.client, VICTIM, ATTACKER_PASSWORD)).status_code == 401
    assert "choose_password" not in await outbox_kinds(dev_app, VICTIM)


async def test_a_single_registration_completes_with_the_guides_three_fields(
    dev_app: RunningApp,
) -> None:
    await register(dev_app.client, "alone@example.com")
    code = await code_in_mail(dev_app, "alone@example.com", 1)

    assert (await verify(dev_app.client, "alone@example.com", code)).status_code == 200
    assert (await login(dev_app.client, "alone@example.com", STRONG_PASSWORD)).status_code == 200


async def test_a_resend_for_a_registration_retires_only_its_own_code(
    dev_app: RunningApp,
) -> None:
    first = await _registration_id(dev_app, VICTIM, STRONG_PASSWORD)
    await _registration_id(dev_app, VICTIM, ATTACKER_PASSWORD)
    first_code = await code_in_mail(dev_app, VICTIM, 1)
    second_code = await code_in_mail(dev_app, VICTIM, 2)

    resend = await request_otp(dev_app.client, VICTIM, registration_id=first)
    assert resend.status_code == 202
    resent_code = await code_in_mail(dev_app, VICTIM, 3)

    if resent_code != first_code:  # the same six digits by chance (1 in a million)
        retired = await verify(dev_app.client, VICTIM, first_code, registration_id=first)
        assert retired.status_code == 400
    assert (
        await verify(dev_app.client, VICTIM, resent_code, registration_id=first)
    ).status_code == 200
    assert (await login(dev_app.client, VICTIM, STRONG_PASSWORD)).status_code == 200
    # The other registration's code was not retired by the resend, but the address is now
    # verified: it can do nothing any more.
    assert (await verify(dev_app.client, VICTIM, second_code)).status_code == 400


@pytest.mark.parametrize(
    "registration_id",
    ["has space", "x" * 33, "", "ünï", 12345, ["id"]],
    ids=repr,
)
@pytest.mark.parametrize("route", ["verify-otp", "request-otp"])
async def test_a_malformed_registration_id_is_refused_naming_the_field(
    dev_app: RunningApp, registration_id: object, route: str
) -> None:
    body: dict[str, object] = {
        "email": VICTIM,
        "purpose": "email_verification",
        "registration_id": registration_id,
    }
    if route == "verify-otp":
        body["code"] = "123456"

    response = await dev_app.client.post(f"/api/v1/auth/{route}", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "registration_id"]
