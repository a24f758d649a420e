"""The mail link that scanners cannot burn (DESIGN.md §12): every code mail also carries
``PUBLIC_BASE_URL/c/{token}``. Its GET shows the code with one button and changes nothing;
its POST spends the code as verify-otp would (``web/link_routes.py``).

- The token is 16 random bytes (base64url, 22 characters). The database holds only its keyed
  hash (HMAC-SHA256, a key derived from SECRET_KEY under a label of its own), on the code's row;
  previous keys still find the links they hashed.
- The code of a mail with a link is derived from its token (``code_for``): the page can show it
  without the code ever being stored, and the token leads to nothing else. The derivation
  needs no key: the token's 128 random bits are the secret, and the 6–10 digits are as
  uniformly random as ``otp.generate_otp``'s (a 256-bit digest reduced mod 10^length: a bias
  under 2^-220). Knowing the code tells nothing about the token.
- A link lives exactly as long as its code: the lookup asks for an unused, unretired,
  unexpired code with tries left.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from taxease_auth.auth import otp
from taxease_auth.clock import Clock
from taxease_auth.config import DEVELOPMENT_BASE_URL, Settings
from taxease_auth.store import otps
from taxease_auth.store.otps import LinkedCode
from taxease_auth.store.sql import Database

LINK_PATH = "/c/"
TOKEN_BYTES = 16
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")
_LINK_KEY_LABEL = b"taxease-auth/mail-link-hash/v1"
_CODE_LABEL = b"taxease-auth/mail-link-code/v1"


def new_token() -> str:
    """16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def is_well_formed(token: str) -> bool:
    return _TOKEN.fullmatch(token) is not None


@lru_cache(maxsize=16)
def _link_key(secret_key: str) -> bytes:
    return hmac.digest(secret_key.encode(), _LINK_KEY_LABEL, "sha256")


def token_hash(secret_key: str, token: str) -> str:
    """The hex keyed hash stored for ``token`` (never the token)."""
    return hmac.digest(_link_key(secret_key), token.encode(), "sha256").hex()


def token_hashes(secret_keys: Sequence[str], token: str) -> list[str]:
    """``token``'s hash under each key, the current key first."""
    return [token_hash(key, token) for key in secret_keys]


def code_for(token: str, length: int) -> str:
    """The ``length``-digit code a link's token carries."""
    digest = hashlib.sha256(_CODE_LABEL + b"\x00" + token.encode()).digest()
    return str(int.from_bytes(digest, "big") % 10**length).zfill(length)


def link_base(settings: Settings) -> str | None:
    """Where links point: PUBLIC_BASE_URL, else ``make run``'s address in development mode;
    None (production without PUBLIC_BASE_URL): codes are mailed without a link."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    return DEVELOPMENT_BASE_URL if settings.development_mode else None


def link_url(base: str, token: str) -> str:
    return f"{base}{LINK_PATH}{token}"


@dataclass(frozen=True, slots=True)
class FollowedLink:
    """A live link: its code (derived from the token) and what spending it needs."""

    code: str
    row: LinkedCode
    token_hash: str  # the stored hash that matched (the current key's or a previous one's)


class MailLinks:
    """Finds the live code behind a link's token (reading only) and ends a link's use."""

    def __init__(self, settings: Settings, database: Database, clock: Clock) -> None:
        self._settings = settings
        self._db = database
        self._clock = clock

    async def find(self, token: str) -> FollowedLink | None:
        """The live code ``token`` leads to, or None (malformed, unknown, used, retired,
        expired or out of tries: one answer for all). Changes nothing: no attempt is counted
        and no budget spent, so a scanner following the link uses up nothing."""
        if not is_well_formed(token):
            return None
        settings = self._settings
        async with self._db.transaction() as tx:
            found = await otps.by_link(
                tx,
                token_hashes=token_hashes(settings.verification_keys, token),
                now=self._clock.now(),
                max_attempts=settings.otp_max_attempts,
            )
        if found is None:
            return None
        row, matched = found
        code = settings.active_developer_otp or code_for(token, settings.otp_length)
        # The derived code is the row's (DEVELOPER_OTP changed since: a dead link).
        if not otp.code_matches(
            settings.verification_keys,
            email=row.email,
            purpose=row.purpose,
            code=code,
            stored_hash=row.code_hash,
        ):
            return None
        return FollowedLink(code=code, row=row, token_hash=matched)

    async def is_newest(self, link: FollowedLink) -> bool:
        """Whether the link's code is the newest live one of its address and purpose (the
        one a code submitted without registration or challenge id is checked against)."""
        row = link.row
        async with self._db.transaction() as tx:
            newest = await otps.newest_candidate(
                tx, email=row.email, purpose=row.purpose, challenge_id=None
            )
        return newest is not None and newest.id == row.id

    async def end(self, link: FollowedLink) -> bool:
        """End the link's use (its code stays as it is: a reset code is spent with the new
        password); True for exactly one caller."""
        async with self._db.transaction() as tx:
            return await otps.forget_link(tx, link.row.id, token_hash=link.token_hash)
