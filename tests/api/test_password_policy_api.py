"""The password policy through the API: register and password-reset/confirm answer 422 naming
the field (`password` / `new_password`) and saying why; long passphrases in any script pass."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taxease_auth.auth.passwords import (
    PERSONAL_INFORMATION,
    REPETITIVE_OR_SEQUENTIAL,
    TOO_COMMON,
    common_passwords,
)
from tests.api.conftest import (
    INVALID_CODE,
    code_in_mail,
    confirm_reset,
    login,
    register,
    request_reset,
    user_rows,
    verified_user,
)
from tests.conftest import RunningApp

PASSPHRASE = "Ünïcode passphrase 🐢 with spaces, 雪の夜 and Ελληνικά"


def _weak(response: httpx.Response, field: str, reason: str) -> None:
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": [{"type": "weak_password", "loc": ["body", field], "msg": reason}]
    }


def _passphrase(length: int) -> str:
    """A passphrase of exactly ``length`` code points, with no pattern the policy refuses."""
    return ((PASSPHRASE + " ") * (length // len(PASSPHRASE) + 1))[:length]


async def _reset_code(app: RunningApp, email: str, **names: str) -> tuple[str, int]:
    """A verified account and a live reset code for it (and how many mails it has had)."""
    await verified_user(app, email, **names)
    assert (await request_reset(app.client, email)).status_code == 202
    return await code_in_mail(app, email, 2), 2


# --- register ------------------------------------------------------------------------------


async def test_register_refuses_a_common_password(dev_app: RunningApp) -> None:
    assert "password1234" in common_passwords()

    response = await register(dev_app.client, "common@example.com", "password1234")

    _weak(response, "password", TOO_COMMON)
    assert await user_rows(dev_app) == []


async def test_register_refuses_a_common_password_in_other_case(dev_app: RunningApp) -> None:
    assert "qwerty123456" in common_passwords()

    response = await register(dev_app.client, "common@example.com", "QWERTY123456")

    _weak(response, "password", TOO_COMMON)


async def test_register_refuses_a_password_holding_the_email(dev_app: RunningApp) -> None:
    response = await register(
        dev_app.client, "Jordan.Lee@Example.com", "my jordan.lee@example.com key"
    )

    _weak(response, "password", PERSONAL_INFORMATION)


async def test_register_refuses_a_password_holding_the_local_part(dev_app: RunningApp) -> None:
    response = await register(dev_app.client, "jordanlee@example.com", "JordanLee rocks 2024")

    _weak(response, "password", PERSONAL_INFORMATION)


@pytest.mark.parametrize("names", [{"first_name": "Beatrix"}, {"last_name": "Kowalczyk"}])
async def test_register_refuses_a_password_holding_a_name(
    dev_app: RunningApp, names: dict[str, str]
) -> None:
    response = await register(
        dev_app.client, "someone@example.com", "beatrix kowalczyk forever", **names
    )

    _weak(response, "password", PERSONAL_INFORMATION)


@pytest.mark.parametrize("password", ["aaaaaaaaaaaa", "123456789012", "abcdefghijkl"])
async def test_register_refuses_repetitive_or_sequential_passwords(
    dev_app: RunningApp, password: str
) -> None:
    response = await register(dev_app.client, "pattern@example.com", password)

    _weak(response, "password", REPETITIVE_OR_SEQUENTIAL)


async def test_register_refuses_a_short_password_with_the_minimum(dev_app: RunningApp) -> None:
    response = await register(dev_app.client, "short@example.com", "tiny words")

    _weak(response, "password", "Password must be at least 12 characters")


async def test_long_passphrase_in_any_script_registers_and_logs_in(dev_app: RunningApp) -> None:
    await verified_user(dev_app, "unicode@example.com", PASSPHRASE)

    response = await login(dev_app.client, "unicode@example.com", PASSPHRASE)

    assert response.status_code == 200, response.text


async def test_128_characters_are_accepted_and_129_refused(dev_app: RunningApp) -> None:
    longest, too_long = _passphrase(128), _passphrase(129)
    assert (len(longest), len(too_long)) == (128, 129)

    accepted = await register(dev_app.client, "long@example.com", longest)
    refused = await register(dev_app.client, "longer@example.com", too_long)

    assert accepted.status_code == 201, accepted.text
    _weak(refused, "password", "Password must be at most 128 characters")


async def test_maximum_counts_characters_not_bytes(dev_app: RunningApp) -> None:
    # 128 emoji (shuffled, not a run of consecutive code points): 512 bytes of UTF-8.
    emoji = "".join(chr(0x1F400 + (i * 37) % 256) for i in range(128))
    assert len(emoji.encode()) == 512

    response = await register(dev_app.client, "emoji@example.com", emoji)

    assert response.status_code == 201, response.text


# --- password-reset/confirm ----------------------------------------------------------------


async def test_reset_refuses_a_common_new_password_and_keeps_the_code(
    dev_app: RunningApp,
) -> None:
    code, _ = await _reset_code(dev_app, "reset@example.com")

    refused = await confirm_reset(dev_app.client, "reset@example.com", code, "password1234")
    accepted = await confirm_reset(dev_app.client, "reset@example.com", code, PASSPHRASE)

    _weak(refused, "new_password", TOO_COMMON)
    assert accepted.status_code == 200, accepted.text


async def test_reset_refuses_a_new_password_holding_the_email(dev_app: RunningApp) -> None:
    code, _ = await _reset_code(dev_app, "harriet@example.com")

    response = await confirm_reset(
        dev_app.client, "harriet@example.com", code, "Harriet@Example.com is me"
    )

    _weak(response, "new_password", PERSONAL_INFORMATION)


async def test_reset_refuses_a_new_password_holding_the_name(dev_app: RunningApp) -> None:
    code, _ = await _reset_code(dev_app, "named@example.com", first_name="Cordelia")

    response = await confirm_reset(dev_app.client, "named@example.com", code, "cordelia sails west")

    _weak(response, "new_password", PERSONAL_INFORMATION)


async def test_reset_refuses_a_129_character_new_password(dev_app: RunningApp) -> None:
    code, _ = await _reset_code(dev_app, "toolong@example.com")

    response = await confirm_reset(dev_app.client, "toolong@example.com", code, _passphrase(129))

    _weak(response, "new_password", "Password must be at most 128 characters")


async def test_wrong_code_never_reveals_the_account_holders_name(dev_app: RunningApp) -> None:
    """Without a valid code, a new password holding a guessed name must not tell whether the
    account exists, nor confirm its holder's name: the answer is the generic 400 for a known
    and an unknown address alike."""
    await verified_user(dev_app, "victim@example.com", first_name="Cordelia")
    guess = "cordelia sails west"

    known = await confirm_reset(dev_app.client, "victim@example.com", "000000", guess)
    unknown = await confirm_reset(dev_app.client, "nobody@example.com", "000000", guess)

    assert (unknown.status_code, unknown.json()) == (400, INVALID_CODE)
    assert (known.status_code, known.json()) == (400, INVALID_CODE)


async def test_refusal_never_echoes_the_password(dev_app: RunningApp) -> None:
    responses: list[Any] = [
        await register(dev_app.client, "echo@example.com", "password1234"),
        await register(dev_app.client, "echo@example.com", "zzzzzzzzzzzzzzzz"),
    ]

    for response in responses:
        assert response.status_code == 422
        assert "password1234" not in response.text
        assert "zzzzzzzz" not in response.text
