"""Access tokens: EdDSA (Ed25519) JWTs that any backend verifies with the published keys alone.

The private key is derived from SECRET_KEY (HKDF-SHA256, label below: no new secret to
manage); each key in PREVIOUS_SECRET_KEYS gives a key that still verifies and is still
published (``/.well-known/jwks.json``), so a rotation logs nobody out. ``kid`` is the key's
RFC 7638 thumbprint. Claims (DESIGN.md §11): iss, aud, sub, sid, iat, exp, jti, email,
email_verified, amr.

HS256 tokens issued before the upgrade (claims sub, ver, aud ``taxease-auth:access``) still
verify until they expire; none is issued any more. Whether a token's session is still live is
checked where the token is used (``auth/sessions.py``), not here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken

ED25519_LABEL = b"taxease-auth/access-token/ed25519/v1"
ALGORITHM = "EdDSA"
# Before the upgrade: HS256 with a key derived from SECRET_KEY, this audience.
_LEGACY_LABEL = b"taxease-auth/access-token/v1"
_LEGACY_ALGORITHM = "HS256"
LEGACY_AUDIENCE = "taxease-auth:access"
_REQUIRED = ["iss", "aud", "sub", "sid", "iat", "exp", "jti"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signing_key(secret_key: str) -> Ed25519PrivateKey:
    """The Ed25519 key of a SECRET_KEY: HKDF-SHA256 (no salt) of the key, the label as info,
    32 bytes as the seed."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ED25519_LABEL).derive(
        secret_key.encode()
    )
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_jwk(key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK (RFC 8037), with its RFC 7638 thumbprint as ``kid``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    # RFC 7638: the required members only, lexicographic order, no whitespace.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return {**members, "kid": kid, "use": "sig", "alg": ALGORITHM}


def _legacy_key(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _LEGACY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int  # seconds


@dataclass(frozen=True, slots=True)
class AccessClaims:
    """What a verified token says. ``session_id`` is None only for a pre-upgrade HS256 token,
    which carries the user's ``token_version`` instead."""

    user_id: int
    session_id: str | None
    token_version: int | None = None


class TokenService:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        keys = [signing_key(key) for key in settings.verification_keys]
        self._private = keys[0]
        self._jwks = [public_jwk(key.public_key()) for key in keys]
        self._kid = self._jwks[0]["kid"]
        # kid -> key; a previous SECRET_KEY equal to the current one adds nothing.
        self._public = {
            jwk["kid"]: key.public_key() for jwk, key in zip(self._jwks, keys, strict=True)
        }
        self._legacy_keys = [_legacy_key(key) for key in settings.verification_keys]
        self._issuer = settings.token_issuer_value
        self._audience = settings.token_audience
        self._lifetime = timedelta(minutes=settings.access_token_expire_minutes)
        self._clock = clock

    @property
    def issuer(self) -> str:
        return self._issuer

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """Every public key that verifies: the current one first, then the previous ones."""
        unique = {jwk["kid"]: jwk for jwk in self._jwks}
        return {"keys": list(unique.values())}

    def issue(
        self,
        *,
        user_id: int,
        session_id: str,
        email: str,
        email_verified: bool,
        amr: list[str],
    ) -> IssuedToken:
        now = int(self._clock.now().timestamp())
        lifetime = int(self._lifetime.total_seconds())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": session_id,
            "iat": now,
            "exp": now + lifetime,
            "jti": secrets.token_urlsafe(16),
            "email": email,
            "email_verified": email_verified,
            "amr": amr,
        }
        token = jwt.encode(
            claims, self._private, algorithm=ALGORITHM, headers={"kid": self._kid, "typ": "JWT"}
        )
        return IssuedToken(access_token=token, expires_in=lifetime)

    def decode(self, token: str) -> AccessClaims:
        """The claims of a token this service signed and that has not expired, or InvalidToken.

        Only EdDSA with a known ``kid`` and the right ``iss`` and ``aud`` — or a pre-upgrade
        HS256 token. The algorithm comes from the header but each branch allows exactly one:
        an HS256 token "signed" with the public key never reaches an Ed25519 key, and a token
        with ``alg: none`` reaches neither.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as error:
            raise InvalidToken(type(error).__name__) from None
        algorithm = header.get("alg")
        if algorithm == ALGORITHM:
            return self._decode_eddsa(token, header)
        if algorithm == _LEGACY_ALGORITHM:
            return self._decode_legacy(token)
        raise InvalidToken("algorithm not accepted")

    def _decode_eddsa(self, token: str, header: dict[str, Any]) -> AccessClaims:
        kid = header.get("kid")
        key = self._public.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            # Expiry is checked against our clock below, not the wall clock inside PyJWT.
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": _REQUIRED, "verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError as error:
            raise InvalidToken(type(error).__name__) from None
        self._check_expiry(claims)
        sid = claims["sid"]
        if not isinstance(sid, str) or not sid:
            raise InvalidToken("malformed claims")
        return AccessClaims(user_id=self._user_id(claims), session_id=sid)

    def _decode_legacy(self, token: str) -> AccessClaims:
        for key in self._legacy_keys:
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[_LEGACY_ALGORITHM],
                    audience=LEGACY_AUDIENCE,
                    options={"require": ["sub", "exp", "ver"], "verify_exp": False},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as error:
                raise InvalidToken(type(error).__name__) from None
            self._check_expiry(claims)
            try:
                version = int(claims["ver"])
            except (TypeError, ValueError):
                raise InvalidToken("malformed claims") from None
            return AccessClaims(
                user_id=self._user_id(claims), session_id=None, token_version=version
            )
        raise InvalidToken("bad signature")

    def _check_expiry(self, claims: dict[str, Any]) -> None:
        expiry = claims["exp"]
        if not isinstance(expiry, int | float) or expiry <= self._clock.now().timestamp():
            raise InvalidToken("expired")

    @staticmethod
    def _user_id(claims: dict[str, Any]) -> int:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.isascii() or not subject.isdigit():
            raise InvalidToken("malformed claims")
        return int(subject)
