"""Session and refresh-token rows (DESIGN.md §11). Refresh tokens are stored only as keyed
hashes; the caller computes them (``auth/sessions.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from taxease_auth.store.audit import stored_ip
from taxease_auth.store.models import USER_AGENT_MAX_LENGTH
from taxease_auth.store.sql import Row, Statement, Transaction, utc, utc_required


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    created_at: datetime
    last_used_at: datetime
    ip: str | None
    user_agent: str | None


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """A refresh token's row, with what its session and account need to mint the next pair."""

    token_hash: str
    session_id: str
    used_at: datetime | None
    grace_answer: str | None  # of a used token: the sealed answer its rotation gave
    user_id: int
    last_used_at: datetime
    expires_at: datetime
    ended_at: datetime | None
    amr: str
    email: str
    email_verified: bool


_INSERT_SESSION = Statement("""
    INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, user_agent, amr)
    VALUES (:id, :user_id, :now, :now, :expires_at, :ip, :user_agent, :amr)
""")
_INSERT_TOKEN = Statement("""
    INSERT INTO refresh_tokens (token_hash, session_id, created_at)
    VALUES (:token_hash, :session_id, :now)
""")
# A rotation's sealed answer is kept on the row of the token it issued (the successor), and
# forgotten when that token is itself rotated (the client evidently received it): one
# statement per refresh fewer than keeping it on the used row and clearing it there later.
# A used token's answer is its successor's (by primary key); rows rotated before this layout
# kept it on the used token's own row, hence the COALESCE.
_BY_TOKEN = Statement("""
    SELECT t.token_hash, t.session_id, t.used_at, COALESCE(n.grace_answer, t.grace_answer),
           s.user_id, s.last_used_at, s.expires_at, s.ended_at, s.amr, u.email, u.email_verified
    FROM refresh_tokens t
    JOIN sessions s ON s.id = t.session_id
    JOIN users u ON u.id = s.user_id
    LEFT JOIN refresh_tokens n ON n.token_hash = t.replaced_by
    WHERE t.token_hash = :token_hash
""")
# The single-use guard: of simultaneous rotations of one token, exactly one matches
# `used_at IS NULL`; the others change no row. The answer that issued this token is dropped.
_ROTATE = Statement("""
    UPDATE refresh_tokens SET used_at = :now, replaced_by = :next_hash, grace_answer = NULL
    WHERE token_hash = :token_hash AND used_at IS NULL
""")
_INSERT_SUCCESSOR = Statement("""
    INSERT INTO refresh_tokens (token_hash, session_id, created_at, grace_answer)
    VALUES (:token_hash, :session_id, :now, :grace)
""")
_TOUCH = Statement("UPDATE sessions SET last_used_at = :now WHERE id = :id")
# PostgreSQL: the three statements of a rotation in one round trip (data-modifying CTEs); the
# successor and the session's last use are written only when the conditional update matched.
_ROTATE_POSTGRES = Statement("""
    WITH rotated AS (
        UPDATE refresh_tokens SET used_at = :now, replaced_by = :next_hash, grace_answer = NULL
        WHERE token_hash = :token_hash AND used_at IS NULL
        RETURNING session_id
    ), successor AS (
        INSERT INTO refresh_tokens (token_hash, session_id, created_at, grace_answer)
        SELECT :next_hash, session_id, :now, :grace FROM rotated
    ), touched AS (
        UPDATE sessions SET last_used_at = :now WHERE id IN (SELECT session_id FROM rotated)
    )
    SELECT count(*) FROM rotated
""")
_END = Statement("""
    UPDATE sessions SET ended_at = :now, end_reason = :reason
    WHERE id = :id AND user_id = :user_id AND ended_at IS NULL
""")
_END_ALL = Statement("""
    UPDATE sessions SET ended_at = :now, end_reason = :reason
    WHERE user_id = :user_id AND ended_at IS NULL
""")
# Live: not ended, not past SESSION_MAX_DAYS, used (refreshed) since the idle cutoff.
_IS_LIVE = Statement("""
    SELECT 1 FROM sessions
    WHERE id = :id AND user_id = :user_id
      AND ended_at IS NULL AND expires_at > :now AND last_used_at > :idle_cutoff
""")
_LIVE_OF_USER = Statement("""
    SELECT id, created_at, last_used_at, ip, user_agent FROM sessions
    WHERE user_id = :user_id
      AND ended_at IS NULL AND expires_at > :now AND last_used_at > :idle_cutoff
    ORDER BY created_at DESC, id
""")


async def add(
    tx: Transaction,
    *,
    session_id: str,
    user_id: int,
    token_hash: str,
    expires_at: datetime,
    ip: str | None,
    user_agent: str | None,
    amr: str,
    now: datetime,
) -> None:
    """A new session and its first refresh token."""
    await tx.run(
        _INSERT_SESSION,
        id=session_id,
        user_id=user_id,
        now=now,
        expires_at=expires_at,
        ip=stored_ip(ip),
        user_agent=user_agent[:USER_AGENT_MAX_LENGTH] if user_agent else None,
        amr=amr,
    )
    await tx.run(_INSERT_TOKEN, token_hash=token_hash, session_id=session_id, now=now)


async def by_token(tx: Transaction, token_hash: str) -> RefreshRow | None:
    row = await tx.one(_BY_TOKEN, token_hash=token_hash)
    return None if row is None else _refresh_row(row)


def _refresh_row(row: Row) -> RefreshRow:
    return RefreshRow(
        token_hash=row[0],
        session_id=row[1],
        used_at=utc(row[2]),
        grace_answer=row[3],
        user_id=row[4],
        last_used_at=utc_required(row[5]),
        expires_at=utc_required(row[6]),
        ended_at=utc(row[7]),
        amr=row[8],
        email=row[9],
        email_verified=bool(row[10]),
    )


async def rotate(
    tx: Transaction,
    *,
    token_hash: str,
    session_id: str,
    next_hash: str,
    grace_answer: str,
    now: datetime,
) -> bool:
    """Mark the token used (one conditional update) and add its successor, which keeps
    ``grace_answer`` (the sealed answer for a retry of this token); False (nothing changed)
    when another rotation of the same token got there first."""
    if tx.dialect == "postgresql":
        row = await tx.one(
            _ROTATE_POSTGRES,
            token_hash=token_hash,
            next_hash=next_hash,
            grace=grace_answer,
            now=now,
        )
        return row is not None and bool(row[0])
    if not await tx.run(_ROTATE, token_hash=token_hash, next_hash=next_hash, now=now):
        return False
    await tx.run(
        _INSERT_SUCCESSOR, token_hash=next_hash, session_id=session_id, now=now, grace=grace_answer
    )
    await tx.run(_TOUCH, id=session_id, now=now)
    return True


async def end(
    tx: Transaction, *, session_id: str, user_id: int, reason: str, now: datetime
) -> bool:
    """End one of ``user_id``'s sessions; False when it is not theirs or already ended."""
    return bool(await tx.run(_END, id=session_id, user_id=user_id, reason=reason, now=now))


async def end_all(tx: Transaction, *, user_id: int, reason: str, now: datetime) -> int:
    """End every session of the user; how many were live."""
    return await tx.run(_END_ALL, user_id=user_id, reason=reason, now=now)


async def is_live(
    tx: Transaction, *, session_id: str, user_id: int, now: datetime, idle_cutoff: datetime
) -> bool:
    """One primary-key lookup: the session exists, is the user's, and has not ended, expired
    or been idle since ``idle_cutoff``."""
    row = await tx.one(_IS_LIVE, id=session_id, user_id=user_id, now=now, idle_cutoff=idle_cutoff)
    return row is not None


async def live_of_user(
    tx: Transaction, *, user_id: int, now: datetime, idle_cutoff: datetime
) -> list[SessionRow]:
    """The user's live sessions, newest first."""
    rows = await tx.all(_LIVE_OF_USER, user_id=user_id, now=now, idle_cutoff=idle_cutoff)
    return [
        SessionRow(
            id=row[0],
            created_at=utc_required(row[1]),
            last_used_at=utc_required(row[2]),
            ip=row[3],
            user_agent=row[4],
        )
        for row in rows
    ]
