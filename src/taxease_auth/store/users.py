"""User rows. Every email passed in is already canonical (``auth.emails.canonical_email``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from taxease_auth.store.sql import Row, Statement, Transaction, utc, utc_required


@dataclass(frozen=True, slots=True)
class UserRow:
    id: int
    email: str
    password_hash: str | None  # None: verified without a password (DESIGN.md §11)
    first_name: str
    last_name: str
    email_verified: bool
    token_version: int
    created_at: datetime
    last_login_at: datetime | None
    locale: str | None = None  # the language of its mail; None: DEFAULT_LOCALE (DESIGN.md §12)


_COLUMNS = """SELECT id, email, password_hash, first_name, last_name, email_verified,
                     token_version, created_at, last_login_at, locale FROM users"""
_BY_EMAIL = Statement(_COLUMNS + " WHERE email = :email")
_BY_EMAILS = Statement(_COLUMNS + " WHERE email = ANY(:emails::text[])")  # PostgreSQL
_BY_ID = Statement(_COLUMNS + " WHERE id = :id")
_INSERT = Statement("""
    INSERT INTO users (email, password_hash, first_name, last_name, email_verified,
                       email_verified_at, token_version, created_at, locale)
    VALUES (:email, :password_hash, :first_name, :last_name, :verified, :verified_at, 0, :now,
            :locale)
    RETURNING id
""")
_SET_REGISTRATION = Statement("""
    UPDATE users SET password_hash = :password_hash, first_name = :first_name,
                     last_name = :last_name, locale = COALESCE(:locale, locale)
    WHERE id = :id
""")
_ACTIVATE = Statement("""
    UPDATE users SET password_hash = :password_hash, first_name = :first_name,
                     last_name = :last_name, email_verified = TRUE, email_verified_at = :now
    WHERE id = :id
""")
_REPLACE_PASSWORD = Statement("""
    UPDATE users SET password_hash = :password_hash, token_version = token_version + 1,
                     email_verified = TRUE, email_verified_at = :now
    WHERE id = :id
""")
_RECORD_LOGIN = Statement("UPDATE users SET last_login_at = :now WHERE id = :id")
# The upgrade applies only while the row still holds the hash the login verified: a password
# reset committed in between must not be overwritten by the old password, rehashed.
_RECORD_LOGIN_REHASHED = Statement("""
    UPDATE users SET last_login_at = :now,
                     password_hash = CASE WHEN password_hash = :read_hash THEN :password_hash
                                          ELSE password_hash END
    WHERE id = :id
""")


def _user(row: Row | None) -> UserRow | None:
    if row is None:
        return None
    return UserRow(
        id=row[0],
        email=row[1],
        password_hash=row[2],
        first_name=row[3],
        last_name=row[4],
        email_verified=bool(row[5]),
        token_version=row[6],
        created_at=utc_required(row[7]),
        last_login_at=utc(row[8]),
        locale=row[9],
    )


async def get_by_email(tx: Transaction, email: str) -> UserRow | None:
    return _user(await tx.one(_BY_EMAIL, email=email))


async def get_many_by_email(tx: Transaction, emails: Sequence[str]) -> dict[str, UserRow]:
    """The accounts of ``emails`` that exist, by email: one statement on PostgreSQL (a round
    trip saved per address), one lookup each on SQLite."""
    if tx.dialect == "postgresql":
        rows = await tx.all(_BY_EMAILS, emails=list(emails))
        return {user.email: user for user in map(_user, rows) if user is not None}
    found: dict[str, UserRow] = {}
    for email in dict.fromkeys(emails):
        user = await get_by_email(tx, email)
        if user is not None:
            found[email] = user
    return found


async def get_by_id(tx: Transaction, user_id: int) -> UserRow | None:
    return _user(await tx.one(_BY_ID, id=user_id))


async def add(
    tx: Transaction,
    *,
    email: str,
    password_hash: str,
    first_name: str,
    last_name: str,
    verified: bool,
    now: datetime,
    locale: str | None = None,
) -> int:
    """Insert a user; its id. Raises ``Conflict`` when the email was taken meanwhile.
    ``locale``: the language its mail is written in (None: DEFAULT_LOCALE)."""
    row = await tx.one(
        _INSERT,
        email=email,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        verified=verified,
        verified_at=now if verified else None,
        now=now,
        locale=locale,
    )
    assert row is not None
    return int(row[0])


async def set_registration(
    tx: Transaction,
    user_id: int,
    *,
    password_hash: str,
    first_name: str,
    last_name: str,
    locale: str | None = None,
) -> None:
    """An unverified row mirrors its latest registration (its locale when it asked for one);
    only a code can make it verified."""
    await tx.run(
        _SET_REGISTRATION,
        id=user_id,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        locale=locale,
    )


async def activate_registration(
    tx: Transaction,
    user_id: int,
    *,
    password_hash: str | None,
    first_name: str,
    last_name: str,
    now: datetime,
) -> None:
    """Mark the address verified with exactly the password and names its code was issued for,
    or with no password at all (``None``: two registrations raced for the address)."""
    await tx.run(
        _ACTIVATE,
        id=user_id,
        password_hash=password_hash,
        first_name=first_name,
        last_name=last_name,
        now=now,
    )


async def replace_password(
    tx: Transaction, user_id: int, *, password_hash: str, now: datetime
) -> None:
    """Set a new password and end every token issued before (token_version + 1).

    Completing a reset also proves the mailbox, so an unverified account becomes verified.
    """
    await tx.run(_REPLACE_PASSWORD, id=user_id, password_hash=password_hash, now=now)


async def record_login(
    tx: Transaction,
    user_id: int,
    *,
    now: datetime,
    new_password_hash: str | None,
    read_password_hash: str | None = None,
) -> None:
    """Record a successful login at ``now``.

    With ``new_password_hash`` (the password rehashed with the current argon2 parameters), also
    upgrade the stored hash, but only if it is still ``read_password_hash``, the hash the login
    verified: when the password changed meanwhile (a reset), the new password is kept.
    ValueError when ``new_password_hash`` comes without ``read_password_hash``.
    """
    if new_password_hash is None:
        await tx.run(_RECORD_LOGIN, id=user_id, now=now)
        return
    if read_password_hash is None:
        raise ValueError("a password hash upgrade needs the hash it replaces")
    await tx.run(
        _RECORD_LOGIN_REHASHED,
        id=user_id,
        now=now,
        password_hash=new_password_hash,
        read_hash=read_password_hash,
    )
