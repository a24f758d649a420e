"""One-time codes: generation, keyed hashing at rest, constant-time checking.

A 6-digit code has under 20 bits of entropy, so hashing it protects a leaked database only
because the hash is keyed (HMAC with a key derived from SECRET_KEY, which the database never
holds) and bound to the email and purpose, so a stored hash cannot be replayed elsewhere.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
from collections.abc import Sequence
from functools import lru_cache

_OTP_KEY_LABEL = b"taxease-auth/otp-hash/v1"
_DIGITS = re.compile(r"[0-9]+")


def generate_otp(length: int = 6) -> str:
    """A uniformly random string of ``length`` ASCII digits (leading zeros included)."""
    return "".join(secrets.choice(string.digits) for _ in range(length))


def is_well_formed(code: str, length: int) -> bool:
    """Exactly ``length`` ASCII digits.

    Never ``int()``: Python parses full-width and Arabic-Indic digits (``int("１２３４５６")``).
    """
    return len(code) == length and _DIGITS.fullmatch(code) is not None


def hash_code(secret_key: str, *, email: str, purpose: str, code: str) -> str:
    """Hex HMAC-SHA256 of the code, bound to email and purpose, keyed from ``secret_key``."""
    message = "\x00".join((purpose, email, code)).encode()
    return hmac.digest(_code_key(secret_key), message, "sha256").hex()


@lru_cache(maxsize=16)
def _code_key(secret_key: str) -> bytes:
    """Derived once per key: the derivation is as costly as the hash itself."""
    return hmac.digest(secret_key.encode(), _OTP_KEY_LABEL, "sha256")


def code_matches(
    secret_keys: Sequence[str], *, email: str, purpose: str, code: str, stored_hash: str
) -> bool:
    """Whether ``code`` hashes to ``stored_hash`` under any of the keys (current, then previous).

    Every key is tried and every comparison is constant-time, so the answer's timing tells
    neither which key matched nor how many leading characters agreed.
    """
    matched = False
    for key in secret_keys:
        candidate = hash_code(key, email=email, purpose=purpose, code=code)
        matched |= hmac.compare_digest(candidate, stored_hash)
    return matched
