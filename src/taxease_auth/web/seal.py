"""Sealed cookie values and CSRF tokens for the pages (DESIGN.md §12, "Browser session").

- ``Sealer.seal`` / ``open``: JSON values encrypted and authenticated with AES-GCM under a key
  derived from SECRET_KEY (HMAC-SHA256 with a label per purpose, so the same secret never keys
  two things). A value sealed for one purpose does not open for another: the purpose is the
  associated data. PREVIOUS_SECRET_KEYS still open, so a key rotation signs nobody out.
- ``csrf_token``: HMAC of the browser's CSRF cookie (double submit: an attacker's page can
  neither read the cookie nor compute the token without SECRET_KEY).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_SEAL_LABEL = b"taxease-auth/web/cookie-seal/v1"
_CSRF_LABEL = b"taxease-auth/web/csrf/v1"
_NONCE_BYTES = 12
CSRF_COOKIE_BYTES = 32
# A browser sends at most ~4 KB per cookie; nothing sealed here comes near that.
MAX_SEALED_LENGTH = 4096


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(secret_key: str, label: bytes) -> bytes:
    return hmac.new(secret_key.encode(), label, hashlib.sha256).digest()


class Sealer:
    """Seals and opens cookie values; the first key seals, every key opens."""

    def __init__(self, secret_keys: list[str]) -> None:
        self._seal_keys = [AESGCM(_derive(key, _SEAL_LABEL)) for key in secret_keys]
        self._csrf_key = _derive(secret_keys[0], _CSRF_LABEL)

    def seal(self, purpose: str, value: dict[str, Any]) -> str:
        """``value`` (JSON-able) encrypted for ``purpose``: base64url text, cookie-safe."""
        nonce = secrets.token_bytes(_NONCE_BYTES)
        plain = json.dumps(value, separators=(",", ":")).encode()
        return _b64(nonce + self._seal_keys[0].encrypt(nonce, plain, purpose.encode()))

    def open(self, purpose: str, sealed: str | None) -> dict[str, Any] | None:
        """The value sealed for ``purpose``, or None for anything else (absent, forged,
        truncated, sealed for another purpose or with an unknown key)."""
        if not sealed or len(sealed) > MAX_SEALED_LENGTH:
            return None
        try:
            data = _unb64(sealed)
        except (binascii.Error, ValueError):
            return None
        for key in self._seal_keys:
            try:
                plain = key.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], purpose.encode())
            except (InvalidTag, ValueError):
                continue
            value = json.loads(plain)
            return value if isinstance(value, dict) else None
        return None

    def csrf_token(self, csrf_cookie: str) -> str:
        """The token forms carry for this browser's CSRF cookie."""
        return _b64(hmac.new(self._csrf_key, csrf_cookie.encode(), hashlib.sha256).digest())

    def csrf_valid(self, csrf_cookie: str | None, submitted: str | None) -> bool:
        """True when the form's token was made for this browser's cookie."""
        if not csrf_cookie or not submitted:
            return False
        # Constant-time: the comparison must not tell how much of a guessed token was right.
        return hmac.compare_digest(self.csrf_token(csrf_cookie), submitted)


def new_csrf_cookie() -> str:
    return _b64(secrets.token_bytes(CSRF_COOKIE_BYTES))
