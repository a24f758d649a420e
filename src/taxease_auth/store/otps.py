"""One-time code rows: issue, look up, count a wrong attempt, consume exactly once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store.models import Otp


async def retire_live(
    session: AsyncSession, *, email: str, purpose: str | None, now: datetime
) -> None:
    """Retire every unused code for (email, purpose), or for every purpose when None.

    A new code replaces the earlier ones; a password reset or a completed verification ends
    them all, so a squatter's pending registration code cannot undo it.
    """
    query = update(Otp).where(Otp.email == email, Otp.used.is_(False), Otp.retired_at.is_(None))
    if purpose is not None:
        query = query.where(Otp.purpose == purpose)
    await session.execute(query.values(retired_at=now))


async def add(session: AsyncSession, otp: Otp) -> Otp:
    session.add(otp)
    await session.flush()
    return otp


async def newest_candidate(
    session: AsyncSession, *, email: str, purpose: str, challenge_id: str | None
) -> Otp | None:
    """The newest unused, unretired code for (email, purpose[, challenge]).

    Expiry and the attempt cap are checked by the caller (so it can tell them apart in logs)
    and again inside the conditional updates below.
    """
    query = select(Otp).where(
        Otp.email == email,
        Otp.purpose == purpose,
        Otp.used.is_(False),
        Otp.retired_at.is_(None),
    )
    if challenge_id is not None:
        query = query.where(Otp.challenge_id == challenge_id)
    query = query.order_by(Otp.created_at.desc(), Otp.id.desc()).limit(1)
    return (await session.execute(query)).scalar_one_or_none()


async def count_wrong_attempt(session: AsyncSession, otp_id: int, *, max_attempts: int) -> None:
    # Increment in SQL, not read-modify-write: 50 parallel wrong guesses add exactly 50,
    # and never push the count past the cap.
    await session.execute(
        update(Otp)
        .where(Otp.id == otp_id, Otp.attempts < max_attempts)
        .values(attempts=Otp.attempts + 1)
        .execution_options(synchronize_session=False)
    )


async def consume(session: AsyncSession, otp_id: int, *, now: datetime, max_attempts: int) -> bool:
    """Mark the code used if it still may be; True for exactly one caller.

    The conditions are re-checked in the UPDATE itself, so of many simultaneous correct
    submissions exactly one sees a changed row (the single-use guarantee).
    """
    result = await session.execute(
        update(Otp)
        .where(
            Otp.id == otp_id,
            Otp.used.is_(False),
            Otp.retired_at.is_(None),
            Otp.expires_at > now,
            Otp.attempts < max_attempts,
        )
        .values(used=True, used_at=now)
        .execution_options(synchronize_session=False)
    )
    changed: int = result.rowcount  # type: ignore[attr-defined]
    return changed == 1


async def challenge_is_live(
    session: AsyncSession, *, email: str, challenge_id: str, started_after: datetime
) -> bool:
    """A login challenge is live while none of its codes was used and it began recently."""
    rows = (
        await session.execute(
            select(Otp.used, Otp.created_at).where(
                Otp.email == email, Otp.purpose == "login", Otp.challenge_id == challenge_id
            )
        )
    ).all()
    if not rows:
        return False
    return not any(used for used, _ in rows) and min(created for _, created in rows) > started_after
