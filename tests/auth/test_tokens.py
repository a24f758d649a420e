"""auth/tokens.py: EdDSA access tokens with a published key per SECRET_KEY; pre-upgrade HS256
tokens still verify until they expire; anything forged, expired, unsigned, signed with another
algorithm or key, or meant for another issuer or audience raises InvalidToken."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from taxease_auth.auth.tokens import TokenService, public_jwk, signing_key
from taxease_auth.clock import ManualClock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken

pytestmark = pytest.mark.database_independent

KEY = "testing-secret-key-testing-secret-key-0001"
OLD_KEY = "an-older-secret-key-an-older-secret-key-00"
ISSUER = "http://127.0.0.1:8001"  # development mode without PUBLIC_BASE_URL


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


def _issue(tokens: TokenService, user_id: int = 7, session_id: str = "s" * 43) -> str:
    return tokens.issue(
        user_id=user_id,
        session_id=session_id,
        email="ada@example.com",
        email_verified=True,
        amr=["pwd"],
    ).access_token


def _claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "taxease",
        "sub": "7",
        "sid": "s" * 43,
        "iat": now,
        "exp": now + 600,
        "jti": "j",
        "email": "ada@example.com",
        "email_verified": True,
        "amr": ["pwd"],
    }
    claims.update(overrides)
    return {name: value for name, value in claims.items() if value is not None}


def _sign(claims: dict[str, Any], secret_key: str = KEY, kid: str | None = None) -> str:
    key = signing_key(secret_key)
    kid = kid or public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _legacy_sign(claims: dict[str, Any], secret_key: str = KEY) -> str:
    """A token as the service issued them before the upgrade (HS256, derived key)."""
    key = hmac.new(secret_key.encode(), b"taxease-auth/access-token/v1", hashlib.sha256).digest()
    return jwt.encode(claims, key, algorithm="HS256")


def _legacy_claims(clock: ManualClock, **overrides: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    claims = {"sub": "7", "ver": 2, "aud": "taxease-auth:access", "iat": now, "exp": now + 600}
    claims.update(overrides)
    return claims


# --- what is issued --------------------------------------------------------------------------


def test_issued_token_carries_the_contract_claims(tokens: TokenService) -> None:
    token = _issue(tokens)

    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, options={"verify_signature": False})

    assert header["alg"] == "EdDSA"
    assert header["kid"] == tokens.jwks()["keys"][0]["kid"]
    assert set(claims) == {
        "iss",
        "aud",
        "sub",
        "sid",
        "iat",
        "exp",
        "jti",
        "email",
        "email_verified",
        "amr",
    }
    assert (claims["iss"], claims["aud"], claims["sub"]) == (ISSUER, "taxease", "7")
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert (claims["email"], claims["email_verified"], claims["amr"]) == (
        "ada@example.com",
        True,
        ["pwd"],
    )


def test_issued_token_decodes_to_its_user_and_session(tokens: TokenService) -> None:
    claims = tokens.decode(_issue(tokens, user_id=9, session_id="a" * 43))

    assert (claims.user_id, claims.session_id, claims.token_version) == (9, "a" * 43, None)


def test_two_tokens_for_the_same_session_differ(tokens: TokenService) -> None:
    assert _issue(tokens) != _issue(tokens)


def test_issuer_and_audience_follow_the_settings(clock: ManualClock) -> None:
    service = TokenService(
        _settings(token_issuer="https://auth.taxease.example", token_audience="taxease-api"),
        clock,
    )
    claims = jwt.decode(_issue(service), options={"verify_signature": False})

    assert (claims["iss"], claims["aud"]) == ("https://auth.taxease.example", "taxease-api")


@pytest.mark.parametrize(
    ("overrides", "issuer"),
    [
        ({}, "http://127.0.0.1:8001"),
        ({"public_base_url": "https://auth.example/"}, "https://auth.example"),
        ({"development_mode": False}, "taxease-auth"),
        (
            {"public_base_url": "https://auth.example", "token_issuer": "urn:taxease"},
            "urn:taxease",
        ),
    ],
    ids=["development", "public-base-url", "production", "token-issuer-wins"],
)
def test_default_issuer(overrides: dict[str, Any], issuer: str) -> None:
    # model_copy: the issuer rule alone, without production mode's other requirements.
    settings = _settings().model_copy(update=overrides)

    assert settings.token_issuer_value == issuer


# --- the published keys ----------------------------------------------------------------------


def test_key_is_the_hkdf_seed_of_secret_key_and_kid_its_rfc7638_thumbprint() -> None:
    # Independent of the module: the label and the thumbprint recipe of the contract.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"taxease-auth/access-token/ed25519/v1",
    ).derive(KEY.encode())
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    x = _b64url(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    thumbprint = _b64url(
        hashlib.sha256(f'{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}'.encode()).digest()
    )

    jwk = TokenService(_settings(), ManualClock()).jwks()["keys"][0]

    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": x,
        "kid": thumbprint,
        "use": "sig",
        "alg": "EdDSA",
    }


def test_previous_keys_are_published_after_the_current_one(clock: ManualClock) -> None:
    rotated = TokenService(_settings(previous_secret_keys=[OLD_KEY]), clock)
    old = TokenService(_settings(secret_key=OLD_KEY), clock)
    current = TokenService(_settings(), clock)

    keys = rotated.jwks()["keys"]

    assert [key["kid"] for key in keys] == [
        current.jwks()["keys"][0]["kid"],
        old.jwks()["keys"][0]["kid"],
    ]


def test_published_key_verifies_a_token_with_pyjwt_alone(tokens: TokenService) -> None:
    jwk = jwt.PyJWK(tokens.jwks()["keys"][0])

    claims = jwt.decode(
        _issue(tokens), jwk.key, algorithms=["EdDSA"], audience="taxease", issuer=ISSUER
    )

    assert claims["sub"] == "7"


# --- rotation ----------------------------------------------------------------------------------


def test_token_signed_by_a_previous_key_still_verifies(clock: ManualClock) -> None:
    token = _issue(TokenService(_settings(secret_key=OLD_KEY), clock))

    rotated = TokenService(_settings(previous_secret_keys=[OLD_KEY]), clock)

    assert rotated.decode(token).user_id == 7


def test_previous_keys_are_read_from_a_comma_separated_variable(clock: ManualClock) -> None:
    token = _issue(TokenService(_settings(secret_key=OLD_KEY), clock))

    rotated = TokenService(_settings(previous_secret_keys=f"first-key, {OLD_KEY}"), clock)

    assert rotated.decode(token).user_id == 7


def test_new_tokens_are_signed_with_the_current_key(clock: ManualClock) -> None:
    token = _issue(TokenService(_settings(previous_secret_keys=[OLD_KEY]), clock))

    assert TokenService(_settings(), clock).decode(token).user_id == 7
    with pytest.raises(InvalidToken):
        TokenService(_settings(secret_key=OLD_KEY), clock).decode(token)


# --- expiry ----------------------------------------------------------------------------------


def test_token_is_valid_until_one_second_before_expiry(
    tokens: TokenService, clock: ManualClock
) -> None:
    token = _issue(tokens)

    clock.advance(timedelta(minutes=15) - timedelta(seconds=1))

    assert tokens.decode(token).user_id == 7


@pytest.mark.parametrize("age", [timedelta(minutes=15), timedelta(days=1)])
def test_token_expires_by_the_injected_clock(
    tokens: TokenService, clock: ManualClock, age: timedelta
) -> None:
    token = _issue(tokens)

    clock.advance(age)

    with pytest.raises(InvalidToken):
        tokens.decode(token)


# --- refused -----------------------------------------------------------------------------------


def test_control_case_hand_signed_token_is_accepted(
    tokens: TokenService, clock: ManualClock
) -> None:
    # The hand-made tokens below differ from this one in one respect only.
    assert tokens.decode(_sign(_claims(clock))).session_id == "s" * 43


def test_unsigned_token_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    kid = tokens.jwks()["keys"][0]["kid"]
    unsigned = jwt.encode(_claims(clock), key="", algorithm="none", headers={"kid": kid})

    with pytest.raises(InvalidToken):
        tokens.decode(unsigned)


def test_hs256_token_signed_with_the_public_key_is_refused(
    tokens: TokenService, clock: ManualClock
) -> None:
    # The classic key-confusion attack: the public key (raw bytes, its JWK text, or PEM) used
    # as an HMAC secret by a verifier that takes the algorithm from the header.
    jwk = tokens.jwks()["keys"][0]
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    pem = (
        signing_key(KEY)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for secret in (raw, jwk["x"].encode(), json.dumps(jwk).encode(), pem):
        header = {"alg": "HS256", "typ": "JWT", "kid": jwk["kid"]}
        signing_input = (
            _b64url(json.dumps(header).encode())
            + "."
            + _b64url(json.dumps(_claims(clock)).encode())
        )
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        forged = f"{signing_input}.{_b64url(signature)}"

        with pytest.raises(InvalidToken):
            tokens.decode(forged)


def test_token_with_an_unknown_kid_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(_sign(_claims(clock), kid="not-a-published-kid"))


def test_token_signed_by_another_ed25519_key_under_our_kid_is_refused(
    tokens: TokenService, clock: ManualClock
) -> None:
    ours = tokens.jwks()["keys"][0]["kid"]
    forged = jwt.encode(
        _claims(clock), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": ours}
    )

    with pytest.raises(InvalidToken):
        tokens.decode(forged)


def test_tampered_payload_is_refused(tokens: TokenService) -> None:
    header, payload, signature = _issue(tokens).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "8"
    forged_payload = _b64url(json.dumps(claims).encode())

    with pytest.raises(InvalidToken):
        tokens.decode(f"{header}.{forged_payload}.{signature}")


@pytest.mark.parametrize(
    "overrides",
    [
        {"iss": "https://evil.example"},
        {"iss": None},
        {"aud": "taxease-auth:access"},
        {"aud": None},
        {"exp": None},
        {"sid": None},
        {"sid": ""},
        {"sub": None},
        {"sub": "not-a-number"},
        {"sub": "٧"},  # an Arabic-Indic seven: isdigit() is true, int() would take it
        {"jti": None},
    ],
    ids=[
        "wrong-issuer",
        "no-issuer",
        "wrong-audience",
        "no-audience",
        "no-expiry",
        "no-session",
        "empty-session",
        "no-subject",
        "bad-subject",
        "unicode-digit-subject",
        "no-jti",
    ],
)
def test_token_with_wrong_or_missing_claims_is_refused(
    tokens: TokenService, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(_sign(_claims(clock, **overrides)))


def test_expired_hand_signed_token_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    now = int(clock.now().timestamp())

    with pytest.raises(InvalidToken):
        tokens.decode(_sign(_claims(clock, iat=now - 1000, exp=now - 1)))


@pytest.mark.parametrize("garbage", ["", "garbage", "a.b.c", "a.b", "...."])
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(garbage)


# --- pre-upgrade HS256 tokens ------------------------------------------------------------------


def test_pre_upgrade_token_still_verifies_until_it_expires(
    tokens: TokenService, clock: ManualClock
) -> None:
    token = _legacy_sign(_legacy_claims(clock))

    claims = tokens.decode(token)

    assert (claims.user_id, claims.session_id, claims.token_version) == (7, None, 2)
    clock.advance(timedelta(minutes=10))
    with pytest.raises(InvalidToken):
        tokens.decode(token)


def test_pre_upgrade_token_of_a_previous_key_still_verifies(clock: ManualClock) -> None:
    rotated = TokenService(_settings(secret_key=OLD_KEY, previous_secret_keys=[KEY]), clock)

    assert rotated.decode(_legacy_sign(_legacy_claims(clock))).user_id == 7


@pytest.mark.parametrize(
    "overrides",
    [{"aud": "taxease"}, {"ver": None}, {"exp": None}],
    ids=["new-audience", "no-version", "no-expiry"],
)
def test_pre_upgrade_token_with_wrong_claims_is_refused(
    tokens: TokenService, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    claims = {k: v for k, v in _legacy_claims(clock, **overrides).items() if v is not None}

    with pytest.raises(InvalidToken):
        tokens.decode(_legacy_sign(claims))


def test_hs256_token_signed_with_the_raw_secret_key_is_refused(
    tokens: TokenService, clock: ManualClock
) -> None:
    # Tokens were signed with a key derived for that use, never SECRET_KEY itself.
    with pytest.raises(InvalidToken):
        tokens.decode(jwt.encode(_legacy_claims(clock), KEY, algorithm="HS256"))


def test_no_hs256_token_is_issued_any_more(tokens: TokenService) -> None:
    assert jwt.get_unverified_header(_issue(tokens))["alg"] == "EdDSA"


# --- verified by hand: the checks PyJWT would make ---------------------------------------------


def test_a_token_verified_before_still_expires(tokens: TokenService, clock: ManualClock) -> None:
    token = _issue(tokens)
    assert tokens.decode(token).user_id == 7  # verified once: remembered

    clock.advance(timedelta(minutes=15))

    with pytest.raises(InvalidToken):
        tokens.decode(token)


def test_audience_may_be_a_list_naming_ours(tokens: TokenService, clock: ManualClock) -> None:
    assert tokens.decode(_sign(_claims(clock, aud=["other", "taxease"]))).user_id == 7
    with pytest.raises(InvalidToken):
        tokens.decode(_sign(_claims(clock, aud=["other"])))


@pytest.mark.parametrize(
    "overrides",
    [{"nbf": 10**12}, {"nbf": "soon"}, {"exp": True}, {"exp": "9999999999"}],
    ids=["not-yet-valid", "text-nbf", "boolean-expiry", "text-expiry"],
)
def test_odd_time_claims_are_refused(
    tokens: TokenService, clock: ManualClock, overrides: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        tokens.decode(_sign(_claims(clock, **overrides)))


def test_critical_header_extension_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    key = signing_key(KEY)
    kid = public_jwk(key.public_key())["kid"]
    token = jwt.encode(
        _claims(clock), key, algorithm="EdDSA", headers={"kid": kid, "crit": ["exp"]}
    )

    with pytest.raises(InvalidToken):
        tokens.decode(token)


@pytest.mark.parametrize("suffix", ["=", "==", " ", "+", "/", "é"])
def test_characters_outside_base64url_are_refused(
    tokens: TokenService, clock: ManualClock, suffix: str
) -> None:
    header, payload, signature = _sign(_claims(clock)).split(".")

    with pytest.raises(InvalidToken):
        tokens.decode(f"{header}.{payload}.{signature}{suffix}")
    with pytest.raises(InvalidToken):
        tokens.decode(f"{header}{suffix}.{payload}.{signature}")


@pytest.mark.parametrize("payload", ["[]", '"text"', "7", "{", '{"sub": "7"'])
def test_payload_that_is_not_a_json_object_is_refused(tokens: TokenService, payload: str) -> None:
    key = signing_key(KEY)
    kid = public_jwk(key.public_key())["kid"]
    header = _b64url(json.dumps({"alg": "EdDSA", "kid": kid}).encode())
    body = _b64url(payload.encode())
    signature = _b64url(key.sign(f"{header}.{body}".encode()))

    with pytest.raises(InvalidToken):
        tokens.decode(f"{header}.{body}.{signature}")
