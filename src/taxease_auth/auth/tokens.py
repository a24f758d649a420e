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
import binascii
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
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
_REQUIRED = ("iss", "aud", "sub", "sid", "iat", "exp", "jti")
# base64url without padding: anything else in a segment is refused before decoding (Python's
# urlsafe_b64decode would skip stray characters).
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
# Verified tokens kept (by their exact text) so a client's next request with the same token
# skips the signature check; the expiry is still checked each time. ~0.6 KB each.
VERIFIED_CACHE_SIZE = 4096


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment_bytes(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise InvalidToken("malformed") from None


def _json_object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_segment_bytes(segment))
    except (ValueError, RecursionError):
        raise InvalidToken("malformed") from None
    if not isinstance(value, dict):
        raise InvalidToken("malformed")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


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
        self._header = _b64url(
            json.dumps(
                {"alg": ALGORITHM, "kid": self._kid, "typ": "JWT"}, separators=(",", ":")
            ).encode()
        )
        # kid -> key; a previous SECRET_KEY equal to the current one adds nothing.
        self._public = {
            jwk["kid"]: key.public_key() for jwk, key in zip(self._jwks, keys, strict=True)
        }
        self._legacy_keys = [_legacy_key(key) for key in settings.verification_keys]
        self._issuer = settings.token_issuer_value
        self._audience = settings.token_audience
        self._lifetime = timedelta(minutes=settings.access_token_expire_minutes)
        self._clock = clock
        self._verified: dict[str, tuple[AccessClaims, float]] = {}

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
        # JWS compact serialisation (RFC 7515), as jwt.encode makes it, with the header
        # encoded once: PyJWT's own encode was a third of a refresh's CPU (`make bench`).
        payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
        signing_input = f"{self._header}.{payload}"
        signature = _b64url(self._private.sign(signing_input.encode()))
        return IssuedToken(access_token=f"{signing_input}.{signature}", expires_in=lifetime)

    def decode(self, token: str) -> AccessClaims:
        """The claims of a token this service signed and that has not expired, or InvalidToken.

        Only EdDSA with a known ``kid`` and the right ``iss`` and ``aud`` — or a pre-upgrade
        HS256 token. The algorithm comes from the header but each branch allows exactly one:
        an HS256 token "signed" with the public key never reaches an Ed25519 key, and a token
        with ``alg: none`` reaches neither.
        """
        cached = self._verified.get(token)
        if cached is not None:  # this exact text was verified before: only expiry can change
            claims, expiry = cached
            if expiry <= self._clock.now().timestamp():
                raise InvalidToken("expired")
            return claims
        parts = token.split(".")
        if len(parts) != 3 or not all(_SEGMENT.fullmatch(part) for part in parts):
            raise InvalidToken("malformed")
        header = _json_object(parts[0])
        algorithm = header.get("alg")
        if algorithm == _LEGACY_ALGORITHM:
            return self._decode_legacy(token)
        if algorithm != ALGORITHM:
            raise InvalidToken("algorithm not accepted")
        claims, expiry = self._decode_eddsa(parts, header)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (claims, expiry)
        return claims

    def _decode_eddsa(self, parts: list[str], header: dict[str, Any]) -> tuple[AccessClaims, float]:
        """Verified by hand rather than with jwt.decode: PyJWT checks each segment's alphabet
        with a generator per character and parses the token twice, ~3/4 of /me's CPU
        (`make bench`). The checks are RFC 7519/7515's, as PyJWT makes them."""
        if "crit" in header:  # no extension is understood: a critical one must be refused
            raise InvalidToken("critical header")
        kid = header.get("kid")
        key = self._public.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            key.verify(_segment_bytes(parts[2]), f"{parts[0]}.{parts[1]}".encode())
        except (InvalidSignature, ValueError):
            raise InvalidToken("bad signature") from None
        claims = _json_object(parts[1])
        if any(name not in claims for name in _REQUIRED):
            raise InvalidToken("missing claims")
        if claims["iss"] != self._issuer:
            raise InvalidToken("wrong issuer")
        audience = claims["aud"]
        if audience != self._audience and not (
            isinstance(audience, list) and self._audience in audience
        ):
            raise InvalidToken("wrong audience")
        expiry = self._check_expiry(claims)
        not_before = claims.get("nbf")
        if not_before is not None and (
            not _is_number(not_before) or not_before > self._clock.now().timestamp()
        ):
            raise InvalidToken("not yet valid")
        sid = claims["sid"]
        if not isinstance(sid, str) or not sid:
            raise InvalidToken("malformed claims")
        return AccessClaims(user_id=self._user_id(claims), session_id=sid), expiry

    def _decode_legacy(self, token: str) -> AccessClaims:
        # Here, on the first legacy token only: PyJWT (with cryptography's X.509, RSA and EC
        # parts it loads) is ~1.4 MB a server otherwise never uses (issue 16.1).
        import jwt

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

    def _check_expiry(self, claims: dict[str, Any]) -> float:
        expiry = claims["exp"]
        if not _is_number(expiry) or expiry <= self._clock.now().timestamp():
            raise InvalidToken("expired")
        return float(expiry)

    @staticmethod
    def _user_id(claims: dict[str, Any]) -> int:
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject.isascii() or not subject.isdigit():
            raise InvalidToken("malformed claims")
        return int(subject)
