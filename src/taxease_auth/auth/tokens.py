"""Access tokens: HS256 JWTs with an expiry, a token version and an audience.

Signed with a key derived from SECRET_KEY; keys in PREVIOUS_SECRET_KEYS still verify, so a
rotation logs nobody out. A password reset bumps the user's ``token_version``, which ends every
token issued before it (checked where the token is used, see the auth service).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

import jwt

from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken

_TOKEN_KEY_LABEL = b"taxease-auth/access-token/v1"
_ALGORITHM = "HS256"
ACCESS_AUDIENCE = "taxease-auth:access"


def _derive(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), _TOKEN_KEY_LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int  # seconds


@dataclass(frozen=True, slots=True)
class TokenClaims:
    user_id: int
    token_version: int


class TokenService:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._keys = [_derive(key) for key in settings.verification_keys]
        self._lifetime = timedelta(minutes=settings.access_token_expire_minutes)
        self._clock = clock

    def issue(self, *, user_id: int, token_version: int) -> IssuedToken:
        now = self._clock.now()
        claims = {
            "sub": str(user_id),
            "ver": token_version,
            "aud": ACCESS_AUDIENCE,
            "iat": int(now.timestamp()),
            "exp": int((now + self._lifetime).timestamp()),
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._keys[0], algorithm=_ALGORITHM)
        return IssuedToken(access_token=token, expires_in=int(self._lifetime.total_seconds()))

    def decode(self, token: str) -> TokenClaims:
        """The claims of a token signed by a current or previous key, or InvalidToken."""
        for key in self._keys:
            try:
                # Expiry is checked against our clock below, not the wall clock inside PyJWT.
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[_ALGORITHM],
                    audience=ACCESS_AUDIENCE,
                    options={"require": ["sub", "exp", "ver"], "verify_exp": False},
                )
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError as error:
                raise InvalidToken(type(error).__name__) from None
            if claims["exp"] <= self._clock.now().timestamp():
                raise InvalidToken("expired")
            try:
                return TokenClaims(user_id=int(claims["sub"]), token_version=int(claims["ver"]))
            except (TypeError, ValueError):
                raise InvalidToken("malformed claims") from None
        raise InvalidToken("bad signature")
