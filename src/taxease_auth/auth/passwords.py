"""The password policy (NIST 800-63B), and argon2id hashing off the event loop, bounded to one
hash per core.

An argon2id hash costs tens of milliseconds of CPU and ``PASSWORD_HASH_MEMORY_KIB`` of memory.
Run on the event loop it would stall every other request; run unbounded in threads, 32 logins
at once would take 32 × 64 MiB and starve the loop of CPU. A capacity limiter of one slot per
core keeps both in check.
"""

from __future__ import annotations

import itertools
import os
import sys
import unicodedata
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from functools import cache, partial
from hashlib import blake2b
from pathlib import Path

import anyio
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from taxease_auth.config import Settings
from taxease_auth.errors import WeakPassword


def normalize_password(password: str) -> str:
    """NFKC, as NIST 800-63B suggests, so the same passphrase typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


TOO_COMMON = "This password is too common"
PERSONAL_INFORMATION = "Password must not contain your email address or name"
REPETITIVE_OR_SEQUENTIAL = "Password must not be a repeated or sequential pattern"

# Shorter parts are too likely to occur by chance in a passphrase ("al", "li").
_MIN_EMAIL_PART = 4
_MIN_NAME = 3
# A block of at most this many characters, repeated, is a pattern ("abab...", "abcdabcd...").
_MAX_REPEATED_BLOCK = 4
# Orders a person walks through when asked for "something long": the alphabet, the digits
# and the keyboard's letter rows. Walked either way and wrapping around, so
# "123456789012" and "zyxwvutsrqpo" are sequences too.
_SEQUENCES = (
    "abcdefghijklmnopqrstuvwxyz",
    "0123456789",
    "qwertyuiopasdfghjklzxcvbnm",
)


def check_password_policy(
    password: str,
    settings: Settings,
    *,
    field: str = "password",
    email: str | None = None,
    names: Sequence[str] = (),
) -> None:
    """Apply NIST 800-63B's rules to a new password; return quietly when it may be used.

    Length is counted in Unicode code points after NFKC (PASSWORD_MIN_LENGTH..PASSWORD_MAX_LENGTH);
    every character is allowed and there are no composition rules. Refused, case-insensitively:
    a password on zxcvbn's list of common passwords, one that equals or contains the user's
    ``email`` (the whole address, or its local part when at least 4 characters) or one of
    ``names`` (each at least 3 characters), and one that is a repetition or a simple sequence
    ("aaaaaaaaaaaa", "abcabcabcabc", "123456789012", "qwertyuiopas").

    Raises WeakPassword(reason, field=field); the reason is for the client (NIST asks to say
    why) and never repeats the password.
    """
    normalized = normalize_password(password)
    length = len(normalized)
    if length < settings.password_min_length:
        raise WeakPassword(
            f"Password must be at least {settings.password_min_length} characters", field=field
        )
    if length > settings.password_max_length:
        raise WeakPassword(
            f"Password must be at most {settings.password_max_length} characters", field=field
        )
    folded = normalized.casefold()
    if _contains_personal_information(folded, email, names):
        raise WeakPassword(PERSONAL_INFORMATION, field=field)
    if folded in common_passwords():
        raise WeakPassword(TOO_COMMON, field=field)
    if _is_repetitive_or_sequential(folded):
        raise WeakPassword(REPETITIVE_OR_SEQUENTIAL, field=field)


class CommonPasswords:
    """zxcvbn's 30,000 most common passwords (``common_passwords.txt``, casefolded, zxcvbn's
    order), held as a sorted array of 64-bit digests: ~240 KB, where importing zxcvbn cost
    ~12 MB of RSS and a frozenset of the words ~3 MB. A digest collision would refuse one
    more password (about 30,000 in 2**64): never a weak one accepted.

    A server reads the digests ready-made (``common_passwords.bin``, ``to_bytes`` of the
    words' list): hashing and sorting the words at start-up left ~1.4 MB of freed integers
    and sets in the heap, resident for good (issue 16.1). A test checks that the two files
    agree; after editing the words, rewrite the digests with
    ``python -m taxease_auth.auth.passwords``.
    """

    __slots__ = ("_digests",)

    def __init__(self, digests: array[int]) -> None:
        """``digests``: sorted, without repeats (``from_words`` and ``from_bytes`` make them)."""
        self._digests = digests

    @classmethod
    def from_words(cls, words: Iterable[str]) -> CommonPasswords:
        return cls(array("Q", sorted({_digest(word) for word in words})))

    @classmethod
    def from_bytes(cls, data: bytes) -> CommonPasswords:
        """The inverse of ``to_bytes``."""
        digests = array("Q")
        digests.frombytes(data)
        if sys.byteorder == "big":
            digests.byteswap()
        return cls(digests)

    def to_bytes(self) -> bytes:
        """The sorted digests, 8 bytes each, little-endian."""
        if sys.byteorder == "little":
            return self._digests.tobytes()
        swapped = array("Q", self._digests)
        swapped.byteswap()
        return swapped.tobytes()

    def __contains__(self, word: object) -> bool:
        if not isinstance(word, str):
            return False
        digest = _digest(word)
        index = bisect_left(self._digests, digest)
        return index < len(self._digests) and self._digests[index] == digest

    def __len__(self) -> int:
        return len(self._digests)


def _digest(word: str) -> int:
    return int.from_bytes(blake2b(word.encode(), digest_size=8).digest(), "big")


_WORDS = Path(__file__).parent / "common_passwords.txt"
_DIGESTS = Path(__file__).parent / "common_passwords.bin"


def common_password_words() -> CommonPasswords:
    """The list built from its words (``common_passwords.txt``): the source of the digests."""
    with _WORDS.open(encoding="utf-8") as lines:
        return CommonPasswords.from_words(line.rstrip("\n") for line in lines)


@cache
def common_passwords() -> CommonPasswords:
    """The common-password list, loaded on first use and kept (``in`` takes casefolded text)."""
    return CommonPasswords.from_bytes(_DIGESTS.read_bytes())


def _contains_personal_information(folded: str, email: str | None, names: Sequence[str]) -> bool:
    parts: list[str] = []
    if email:
        address = normalize_password(email.strip()).casefold()
        local = address.rpartition("@")[0]
        parts.append(address)
        # The local part, and without its +tag: "john.smith+tax" and "john.smith".
        parts.extend(
            part for part in {local, local.partition("+")[0]} if len(part) >= _MIN_EMAIL_PART
        )
    for name in names:
        folded_name = normalize_password(name.strip()).casefold()
        if len(folded_name) >= _MIN_NAME:
            parts.append(folded_name)
    return any(part in folded for part in parts)


def _is_repetitive_or_sequential(folded: str) -> bool:
    """One short block repeated, a common password repeated, or a run along a known order."""
    # The smallest period of the text: "abcabcabc" -> 3, a text that does not repeat -> len.
    period = (folded + folded).find(folded, 1)
    if period < len(folded):
        block = folded[:period]
        if period <= _MAX_REPEATED_BLOCK or block in common_passwords():
            return True
    steps = {ord(b) - ord(a) for a, b in itertools.pairwise(folded)}
    if steps <= {1} or steps <= {-1}:  # "abcdef", "αβγδεζ", "654321" in any script
        return True
    for order in _SEQUENCES:
        for walk in (order, order[::-1]):
            wrapped = walk * (len(folded) // len(walk) + 2)
            if folded in wrapped:
                return True
    return False


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


if __name__ == "__main__":
    # Rewrite common_passwords.bin from common_passwords.txt (see CommonPasswords).
    _DIGESTS.write_bytes(common_password_words().to_bytes())
