"""User rows. Every email passed in is already canonical (``auth.emails.canonical_email``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.store.models import User


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(User.email == email))
    return result.scalar_one_or_none()


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def add(
    session: AsyncSession,
    *,
    email: str,
    password_hash: str,
    first_name: str,
    last_name: str,
    verified: bool,
    now: datetime,
) -> User:
    """Insert a user; the caller handles IntegrityError when the email was taken meanwhile."""
    user = User(
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        email_verified=verified,
        email_verified_at=now if verified else None,
        token_version=0,
        created_at=now,
    )
    session.add(user)
    await session.flush()
    return user


async def activate_registration(
    session: AsyncSession,
    user_id: int,
    *,
    password_hash: str,
    first_name: str,
    last_name: str,
    now: datetime,
) -> None:
    """Mark the address verified with exactly the password and names its code was issued for."""
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            password_hash=password_hash,
            first_name=first_name,
            last_name=last_name,
            email_verified=True,
            email_verified_at=now,
        )
    )


async def replace_password(
    session: AsyncSession, user_id: int, *, password_hash: str, now: datetime
) -> None:
    """Set a new password and end every token issued before (token_version + 1).

    Completing a reset also proves the mailbox, so an unverified account becomes verified.
    """
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(
            password_hash=password_hash,
            token_version=User.token_version + 1,
            email_verified=True,
            email_verified_at=now,
        )
    )


async def record_login(
    session: AsyncSession, user_id: int, *, now: datetime, new_password_hash: str | None
) -> None:
    values: dict[str, object] = {"last_login_at": now}
    if new_password_hash is not None:  # stored hash used older, weaker argon2 parameters
        values["password_hash"] = new_password_hash
    await session.execute(update(User).where(User.id == user_id).values(**values))
