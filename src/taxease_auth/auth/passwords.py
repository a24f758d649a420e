"""Password hashing with argon2id, off the event loop and bounded to one hash per core.

An argon2id hash costs tens of milliseconds of CPU and ``PASSWORD_HASH_MEMORY_KIB`` of memory.
Run on the event loop it would stall every other request; run unbounded in threads, 32 logins
at once would take 32 × 64 MiB and starve the loop of CPU. A capacity limiter of one slot per
core keeps both in check.
"""

from __future__ import annotations

import os
import unicodedata
from functools import partial

import anyio
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from taxease_auth.config import Settings
from taxease_auth.errors import WeakPassword


def normalize_password(password: str) -> str:
    """NFKC, as NIST 800-63B suggests, so the same passphrase typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


def check_password_policy(password: str, settings: Settings, *, field: str = "password") -> None:
    """Length only, counted in Unicode code points; no composition rules (NIST 800-63B).

    Raises WeakPassword with a reason the client may read.
    """
    length = len(normalize_password(password))
    if length < settings.password_min_length:
        raise WeakPassword(
            f"Password must be at least {settings.password_min_length} characters", field=field
        )
    if length > settings.password_max_length:
        raise WeakPassword(
            f"Password must be at most {settings.password_max_length} characters", field=field
        )


class PasswordHasher:
    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHash(
            (
                Argon2Hasher(
                    time_cost=settings.password_hash_time_cost,
                    memory_cost=settings.password_hash_memory_kib,
                    parallelism=settings.password_hash_parallelism,
                ),
            )
        )
        self._limiter = anyio.CapacityLimiter(os.cpu_count() or 1)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await anyio.to_thread.run_sync(
            self._hasher.hash, normalize_password(password), limiter=self._limiter
        )

    async def verify(self, password: str, password_hash: str) -> tuple[bool, str | None]:
        """(matches, new hash when the stored one used weaker parameters)."""
        return await anyio.to_thread.run_sync(
            partial(self._hasher.verify_and_update, normalize_password(password), password_hash),
            limiter=self._limiter,
        )

    async def verify_unknown_user(self, password: str) -> None:
        """Spend the same work as a real verify, so an unknown email is not faster to reject."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash("dummy password for unknown accounts")
        await self.verify(password, self._dummy_hash)

    def burn_in(self) -> None:
        """Compute the dummy hash now (at start-up), so the first unknown login is not slower."""
        self._dummy_hash = self._hasher.hash("dummy password for unknown accounts")
