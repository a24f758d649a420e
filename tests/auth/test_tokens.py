"""auth/tokens.py: signed, expiring access tokens; previous keys still verify; anything forged,
expired or meant for another audience raises InvalidToken."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest

from taxease_auth.auth.tokens import ACCESS_AUDIENCE, TokenService, _derive
from taxease_auth.clock import ManualClock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken

KEY = "testing-secret-key-testing-secret-key-0001"
OLD_KEY = "an-older-secret-key-an-older-secret-key-00"


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"_env_file": None, "development_mode": True, "secret_key": KEY}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tokens(clock: ManualClock) -> TokenService:
    return TokenService(_settings(), clock)


def _sign(claims: dict[str, Any], secret_key: str = KEY) -> str:
    # The service's own derivation, so only the claim under test differs from a real token.
    return jwt.encode(claims, _derive(secret_key), algorithm="HS256")


def _claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "sub": "7",
        "ver": 0,
        "aud": ACCESS_AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return claims


def test_issued_token_decodes_to_its_user_and_version(tokens: TokenService) -> None:
    issued = tokens.issue(user_id=7, token_version=3)

    claims = tokens.decode(issued.access_token)

    assert (claims.user_id, claims.token_version) == (7, 3)
    assert issued.expires_in == 30 * 60


def test_two_tokens_for_the_same_user_differ(tokens: TokenService) -> None:
    first = tokens.issue(user_id=7, token_version=0).access_token
    second = tokens.issue(user_id=7, token_version=0).access_token

    assert first != second


def test_token_is_valid_until_one_second_before_expiry(
    tokens: TokenService, clock: ManualClock
) -> None:
    token = tokens.issue(user_id=7, token_version=0).access_token

    clock.advance(timedelta(minutes=30) - timedelta(seconds=1))

    assert tokens.decode(token).user_id == 7


@pytest.mark.parametrize("age", [timedelta(minutes=30), timedelta(days=1)])
def test_token_expires_by_the_injected_clock(
    tokens: TokenService, clock: ManualClock, age: timedelta
) -> None:
    token = tokens.issue(user_id=7, token_version=0).access_token

    clock.advance(age)

    with pytest.raises(InvalidToken):
        tokens.decode(token)


def test_token_signed_by_a_previous_key_still_verifies(clock: ManualClock) -> None:
    old = TokenService(_settings(secret_key=OLD_KEY), clock)
    token = old.issue(user_id=7, token_version=0).access_token

    rotated = TokenService(_settings(previous_secret_keys=[OLD_KEY]), clock)

    assert rotated.decode(token).user_id == 7


def test_previous_keys_are_read_from_a_comma_separated_variable(clock: ManualClock) -> None:
    old = TokenService(_settings(secret_key=OLD_KEY), clock)
    token = old.issue(user_id=7, token_version=0).access_token

    rotated = TokenService(_settings(previous_secret_keys=f"first-key, {OLD_KEY}"), clock)

    assert rotated.decode(token).user_id == 7


def test_new_tokens_are_signed_with_the_current_key(clock: ManualClock) -> None:
    rotated = TokenService(_settings(previous_secret_keys=[OLD_KEY]), clock)
    token = rotated.issue(user_id=7, token_version=0).access_token

    current_only = TokenService(_settings(), clock)

    assert current_only.decode(token).user_id == 7


def test_token_signed_by_an_unknown_key_is_refused(clock: ManualClock) -> None:
    token = TokenService(_settings(secret_key=OLD_KEY), clock).issue(user_id=7, token_version=0)

    with pytest.raises(InvalidToken):
        TokenService(_settings(), clock).decode(token.access_token)


def test_tampered_payload_is_refused(tokens: TokenService) -> None:
    header, payload, signature = tokens.issue(user_id=7, token_version=0).access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "8"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    with pytest.raises(InvalidToken):
        tokens.decode(f"{header}.{forged_payload}.{signature}")


def test_tampered_signature_is_refused(tokens: TokenService) -> None:
    token = tokens.issue(user_id=7, token_version=0).access_token
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]

    with pytest.raises(InvalidToken):
        tokens.decode(flipped)


def test_unsigned_token_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    unsigned = jwt.encode(_claims(clock), key="", algorithm="none")

    with pytest.raises(InvalidToken):
        tokens.decode(unsigned)


def test_control_case_hand_signed_token_is_accepted(
    tokens: TokenService, clock: ManualClock
) -> None:
    # The hand-made tokens below differ from this one in one claim only.
    assert tokens.decode(_sign(_claims(clock))).user_id == 7


@pytest.mark.parametrize(
    "overrides",
    [
        {"aud": "taxease-auth:something-else"},
        {"aud": None},
        {"exp": None},
        {"ver": None},
        {"sub": None},
        {"sub": "not-a-number"},
    ],
    ids=["wrong-audience", "no-audience", "no-expiry", "no-version", "no-subject", "bad-subject"],
)
def test_token_with_wrong_or_missing_claims_is_refused(
    tokens: TokenService, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    claims = {k: v for k, v in _claims(clock, **overrides).items() if v is not None}

    with pytest.raises(InvalidToken):
        tokens.decode(_sign(claims))


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "a.b", "...."])
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(garbage)


def test_token_signed_with_the_raw_secret_key_is_refused(
    tokens: TokenService, clock: ManualClock
) -> None:
    # Tokens are signed with a key derived for this use, not SECRET_KEY itself (which also
    # keys the code hashes).
    token = jwt.encode(_claims(clock), KEY, algorithm="HS256")

    with pytest.raises(InvalidToken):
        tokens.decode(token)
