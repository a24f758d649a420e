"""One-time code rows: issue, look up, count a wrong attempt, consume exactly once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from taxease_auth.store.sql import Statement, Transaction, utc_required


@dataclass(frozen=True, slots=True)
class CodeRow:
    """What checking a code needs of its row; the pending fields are a registration's."""

    id: int
    email: str
    code_hash: str
    expires_at: datetime
    attempts: int
    pending_password_hash: str | None
    pending_first_name: str | None
    pending_last_name: str | None
    registration_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PendingRegistration:
    """A registration that may still complete: its id and what its code would activate."""

    registration_id: str | None
    password_hash: str
    first_name: str
    last_name: str


_RETIRE = Statement("""
    UPDATE otps SET retired_at = :now
    WHERE email = :email AND purpose = :purpose AND used = FALSE AND retired_at IS NULL
""")
_RETIRE_REGISTRATION = Statement("""
    UPDATE otps SET retired_at = :now
    WHERE email = :email AND purpose = :purpose AND registration_id = :registration_id
      AND used = FALSE AND retired_at IS NULL
""")
_RETIRE_ALL = Statement("""
    UPDATE otps SET retired_at = :now
    WHERE email = :email AND used = FALSE AND retired_at IS NULL
""")
_INSERT = Statement("""
    INSERT INTO otps (email, purpose, code_hash, expires_at, used, attempts, created_at,
                      pending_password_hash, pending_first_name, pending_last_name, challenge_id,
                      registration_id, link_token_hash)
    VALUES (:email, :purpose, :code_hash, :expires_at, FALSE, 0, :now,
            :pending_password_hash, :pending_first_name, :pending_last_name, :challenge_id,
            :registration_id, :link_token_hash)
    RETURNING id
""")
_CANDIDATE_COLUMNS = """
    SELECT id, email, code_hash, expires_at, attempts,
           pending_password_hash, pending_first_name, pending_last_name, registration_id,
           created_at
    FROM otps
    WHERE email = :email AND purpose = :purpose AND used = FALSE AND retired_at IS NULL
"""
_NEWEST = Statement(_CANDIDATE_COLUMNS + " ORDER BY created_at DESC, id DESC LIMIT 1")
_NEWEST_OF_REGISTRATION = Statement(
    _CANDIDATE_COLUMNS
    + " AND registration_id = :registration_id ORDER BY created_at DESC, id DESC LIMIT 1"
)
_NEWEST_OF_CHALLENGE = Statement(
    _CANDIDATE_COLUMNS
    + " AND challenge_id = :challenge_id ORDER BY created_at DESC, id DESC LIMIT 1"
)
# Incremented in SQL, not read-modify-write: 50 parallel wrong guesses add exactly 50, and never
# push the count past the cap.
_COUNT_WRONG = Statement("""
    UPDATE otps SET attempts = attempts + 1 WHERE id = :id AND attempts < :max_attempts
""")
# The conditions are checked again in the UPDATE itself, so of many simultaneous correct
# submissions exactly one sees a changed row (the single-use guarantee).
_CONSUME = Statement("""
    UPDATE otps SET used = TRUE, used_at = :now
    WHERE id = :id AND used = FALSE AND retired_at IS NULL AND expires_at > :now
          AND attempts < :max_attempts
""")
# Every code row of an address's registrations (used or not, retired or not), newest first:
# what a resend and a verification without registration id decide from.
_REGISTRATIONS = Statement("""
    SELECT registration_id, used, created_at,
           pending_password_hash, pending_first_name, pending_last_name
    FROM otps
    WHERE email = :email AND purpose = 'email_verification'
    ORDER BY created_at DESC, id DESC
""")
_CHALLENGE = Statement("""
    SELECT used, created_at, retired_at FROM otps
    WHERE email = :email AND purpose = 'login' AND challenge_id = :challenge_id
    ORDER BY created_at DESC, id DESC
""")


async def retire_live(
    tx: Transaction,
    *,
    email: str,
    purpose: str | None,
    now: datetime,
    registration_id: str | None = None,
) -> None:
    """Retire every unused code for (email, purpose), or for every purpose when None; with a
    ``registration_id``, only that registration's codes.

    A new code replaces the earlier ones (a registration's, only its own registration's); a
    password reset or a completed verification ends them all, so a squatter's pending
    registration code cannot undo it.
    """
    if registration_id is not None:
        assert purpose is not None
        await tx.run(
            _RETIRE_REGISTRATION,
            now=now,
            email=email,
            purpose=purpose,
            registration_id=registration_id,
        )
    elif purpose is None:
        await tx.run(_RETIRE_ALL, now=now, email=email)
    else:
        await tx.run(_RETIRE, now=now, email=email, purpose=purpose)


async def add(
    tx: Transaction,
    *,
    email: str,
    purpose: str,
    code_hash: str,
    expires_at: datetime,
    now: datetime,
    pending: tuple[str, str, str] | None = None,
    challenge_id: str | None = None,
    registration_id: str | None = None,
    link_token_hash: str | None = None,
) -> int:
    """Store a new code's hash (and its mail link's token hash); its id."""
    pending_hash, pending_first, pending_last = pending or (None, None, None)
    row = await tx.one(
        _INSERT,
        email=email,
        purpose=purpose,
        code_hash=code_hash,
        expires_at=expires_at,
        now=now,
        pending_password_hash=pending_hash,
        pending_first_name=pending_first,
        pending_last_name=pending_last,
        challenge_id=challenge_id,
        registration_id=registration_id,
        link_token_hash=link_token_hash,
    )
    assert row is not None
    return int(row[0])


async def newest_candidate(
    tx: Transaction,
    *,
    email: str,
    purpose: str,
    challenge_id: str | None,
    registration_id: str | None = None,
) -> CodeRow | None:
    """The newest unused, unretired code for (email, purpose[, challenge or registration]).

    Expiry and the attempt cap are checked by the caller (so it can tell them apart in logs)
    and again inside the conditional updates below.
    """
    if registration_id is not None:
        row = await tx.one(
            _NEWEST_OF_REGISTRATION, email=email, purpose=purpose, registration_id=registration_id
        )
    elif challenge_id is None:
        row = await tx.one(_NEWEST, email=email, purpose=purpose)
    else:
        row = await tx.one(
            _NEWEST_OF_CHALLENGE, email=email, purpose=purpose, challenge_id=challenge_id
        )
    if row is None:
        return None
    return CodeRow(
        id=row[0],
        email=row[1],
        code_hash=row[2],
        expires_at=utc_required(row[3]),
        attempts=row[4],
        pending_password_hash=row[5],
        pending_first_name=row[6],
        pending_last_name=row[7],
        registration_id=row[8],
        created_at=utc_required(row[9]),
    )


async def pending_registration(
    tx: Transaction, *, email: str, registration_id: str | None
) -> PendingRegistration | None:
    """The registration a resend re-issues a code for: ``registration_id``'s, or without one
    the newest registration of the address; None when it does not exist or its code was
    used (it completed)."""
    rows = await tx.all(_REGISTRATIONS, email=email)
    if registration_id is not None:
        rows = [row for row in rows if row[0] == registration_id]
    if not rows:
        return None
    newest = rows[0]
    if newest[3] is None or any(row[1] for row in rows if row[0] == newest[0]):
        return None
    return PendingRegistration(newest[0], newest[3], newest[4], newest[5])


@dataclass(frozen=True, slots=True)
class RegistrationHistory:
    """Each code issued for registering an address: (registration id, when), newest first.
    Read once for a verification that names no registration: when its own registration began,
    and whether another one claimed the address since, come from the same rows."""

    codes: tuple[tuple[str | None, datetime], ...]

    def started(self, registration_id: str | None) -> datetime | None:
        """When ``registration_id``'s first code was issued."""
        if registration_id is None:
            return None
        times = [at for other_id, at in self.codes if other_id == registration_id]
        return min(times) if times else None

    def other_since(self, registration_id: str | None, since: datetime) -> bool:
        """Whether a registration other than ``registration_id`` issued a code after
        ``since`` (a registration or a resend: both are a claim on the address)."""
        for other_id, at in self.codes:
            if at <= since:
                break  # newest first: the rest are older
            if other_id != registration_id:  # a row from before binding counts as another
                return True
        return False


async def registration_history(tx: Transaction, *, email: str) -> RegistrationHistory:
    rows = await tx.all(_REGISTRATIONS, email=email)
    return RegistrationHistory(tuple((row[0], utc_required(row[2])) for row in rows))


async def count_wrong_attempt(tx: Transaction, otp_id: int, *, max_attempts: int) -> None:
    await tx.run(_COUNT_WRONG, id=otp_id, max_attempts=max_attempts)


async def consume(tx: Transaction, otp_id: int, *, now: datetime, max_attempts: int) -> bool:
    """Mark the code used if it still may be; True for exactly one caller."""
    return await tx.run(_CONSUME, id=otp_id, now=now, max_attempts=max_attempts) == 1


async def challenge_is_live(
    tx: Transaction, *, email: str, challenge_id: str, started_after: datetime
) -> bool:
    """A login challenge is live while none of its codes was used, its newest code was not
    retired, and it began after ``started_after``.

    A resend for the challenge retires its earlier code and adds a newer one, so the newest
    stays unretired; what retires the newest is the end of the challenge: a password reset
    (every live code of the account dies with the old password: without this check the old
    password's challenge got new codes, and tokens, after the reset) or a newer login.
    """
    rows = await tx.all(_CHALLENGE, email=email, challenge_id=challenge_id)
    if not rows:
        return False
    newest_retired = rows[0][2] is not None
    return (
        not newest_retired
        and not any(used for used, _, _ in rows)
        and min(utc_required(created) for _, created, _ in rows) > started_after
    )


@dataclass(frozen=True, slots=True)
class LinkedCode:
    """The live code a mail link's token leads to: what spending it needs."""

    id: int
    email: str
    purpose: str
    code_hash: str
    challenge_id: str | None
    registration_id: str | None


# Live only: unused, unretired, unexpired, tries left (the link dies with its code).
_BY_LINK = Statement("""
    SELECT id, email, purpose, code_hash, challenge_id, registration_id
    FROM otps
    WHERE link_token_hash = :hash AND used = FALSE AND retired_at IS NULL
      AND expires_at > :now AND attempts < :max_attempts
    ORDER BY id DESC LIMIT 1
""")
_FORGET_LINK = Statement("""
    UPDATE otps SET link_token_hash = NULL WHERE id = :id AND link_token_hash = :hash
""")


async def by_link(
    tx: Transaction, *, token_hashes: Sequence[str], now: datetime, max_attempts: int
) -> tuple[LinkedCode, str] | None:
    """The live code whose link token hashes to one of ``token_hashes`` (one per key, current
    first), with the hash that matched; None when there is none or it is dead. Changes
    nothing."""
    for token_hash in token_hashes:
        row = await tx.one(_BY_LINK, hash=token_hash, now=now, max_attempts=max_attempts)
        if row is not None:
            return LinkedCode(row[0], row[1], row[2], row[3], row[4], row[5]), token_hash
    return None


async def forget_link(tx: Transaction, otp_id: int, *, token_hash: str) -> bool:
    """Make a link unusable (its code stays as it is); True for exactly one caller."""
    return await tx.run(_FORGET_LINK, id=otp_id, hash=token_hash) == 1
