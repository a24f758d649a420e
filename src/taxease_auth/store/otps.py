"""One-time code rows: issue, look up, count a wrong attempt, consume exactly once."""

from __future__ import annotations

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


_RETIRE = Statement("""
    UPDATE otps SET retired_at = :now
    WHERE email = :email AND purpose = :purpose AND used = FALSE AND retired_at IS NULL
""")
_RETIRE_ALL = Statement("""
    UPDATE otps SET retired_at = :now
    WHERE email = :email AND used = FALSE AND retired_at IS NULL
""")
_INSERT = Statement("""
    INSERT INTO otps (email, purpose, code_hash, expires_at, used, attempts, created_at,
                      pending_password_hash, pending_first_name, pending_last_name, challenge_id)
    VALUES (:email, :purpose, :code_hash, :expires_at, FALSE, 0, :now,
            :pending_password_hash, :pending_first_name, :pending_last_name, :challenge_id)
    RETURNING id
""")
_CANDIDATE_COLUMNS = """
    SELECT id, email, code_hash, expires_at, attempts,
           pending_password_hash, pending_first_name, pending_last_name
    FROM otps
    WHERE email = :email AND purpose = :purpose AND used = FALSE AND retired_at IS NULL
"""
_NEWEST = Statement(_CANDIDATE_COLUMNS + " ORDER BY created_at DESC, id DESC LIMIT 1")
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
_CHALLENGE = Statement("""
    SELECT used, created_at, retired_at FROM otps
    WHERE email = :email AND purpose = 'login' AND challenge_id = :challenge_id
    ORDER BY created_at DESC, id DESC
""")


async def retire_live(tx: Transaction, *, email: str, purpose: str | None, now: datetime) -> None:
    """Retire every unused code for (email, purpose), or for every purpose when None.

    A new code replaces the earlier ones; a password reset or a completed verification ends
    them all, so a squatter's pending registration code cannot undo it.
    """
    if purpose is None:
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
) -> int:
    """Store a new code's hash; its id."""
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
    )
    assert row is not None
    return int(row[0])


async def newest_candidate(
    tx: Transaction, *, email: str, purpose: str, challenge_id: str | None
) -> CodeRow | None:
    """The newest unused, unretired code for (email, purpose[, challenge]).

    Expiry and the attempt cap are checked by the caller (so it can tell them apart in logs)
    and again inside the conditional updates below.
    """
    if challenge_id is None:
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
    )


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
