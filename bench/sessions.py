"""Sessions for the `refresh` and `me` scenarios of bench/http.py, written straight into the
database as the service writes them (``auth/sessions.py``): a session row and the keyed hash
of its refresh token each.

- ``refresh``: one session per request, each refresh token sent once (a used token sent again
  after the grace period would end its session, so a token is never replayed). Each request
  is a real rotation: the token's lookup, the conditional update that spends it, the next
  token's row, the session's last use, a signed access token and the sealed grace answer.
  What it does not measure: a client's own chain (each of wrk's connections would have to
  read its last answer before sending the next request); one rotation costs the same
  whichever session it belongs to.
- ``me``: access tokens of live sessions, minted just before the scenario (they expire after
  ACCESS_TOKEN_EXPIRE_MINUTES), each sent many times: verification of the signature, the
  session's liveness check and the account's lookup, as every /me does.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

# Seeded sessions start now and stay live through any run.
SESSION_LIFETIME = timedelta(days=1)


Seeded = tuple[int, str, str, str]  # user id, email, session id, refresh token


async def seed_sessions(settings: Any, emails: list[str], count: int) -> list[Seeded]:
    """``count`` live sessions spread over the accounts of ``emails``."""
    from sqlalchemy import insert, select

    from taxease_auth.auth.sessions import hash_refresh_token, refresh_token_hash_key
    from taxease_auth.store.db import make_engine
    from taxease_auth.store.models import RefreshToken, Session, User

    key = refresh_token_hash_key(settings.signing_key)
    now = datetime.now(UTC)
    engine = make_engine(settings)
    try:
        async with engine.begin() as connection:
            rows = await connection.execute(
                select(User.id, User.email).where(User.email.in_(emails))
            )
            accounts = [(row[0], row[1]) for row in rows]
            seeded = [
                (*accounts[i % len(accounts)], secrets.token_urlsafe(32), secrets.token_urlsafe(32))
                for i in range(count)
            ]
            sessions = [
                {
                    "id": session_id,
                    "user_id": user_id,
                    "created_at": now,
                    "last_used_at": now,
                    "expires_at": now + SESSION_LIFETIME,
                    "ip": "127.0.0.1",
                    "user_agent": "bench",
                    "amr": "pwd",
                }
                for user_id, _, session_id, _ in seeded
            ]
            tokens = [
                {
                    "token_hash": hash_refresh_token(key, token),
                    "session_id": session_id,
                    "created_at": now,
                }
                for _, _, session_id, token in seeded
            ]
            for start in range(0, count, 5000):
                await connection.execute(insert(Session), sessions[start : start + 5000])
                await connection.execute(insert(RefreshToken), tokens[start : start + 5000])
    finally:
        await engine.dispose()
    return seeded


def access_tokens(settings: Any, sessions: list[Seeded]) -> list[str]:
    """An access token for each session, as the server would sign it now."""
    from taxease_auth.auth.tokens import TokenService
    from taxease_auth.clock import SystemClock

    tokens = TokenService(settings, SystemClock())
    return [
        tokens.issue(
            user_id=user_id, session_id=session_id, email=email, email_verified=True, amr=["pwd"]
        ).access_token
        for user_id, email, session_id, _ in sessions
    ]
