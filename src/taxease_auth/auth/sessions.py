"""Sessions: what a login starts, refresh tokens rotate, and logout or a password reset ends
(DESIGN.md §11).

- A login starts a session and answers an access token (``auth/tokens.py``) and a refresh
  token: 32 random bytes, base64url, stored only as HMAC-SHA256 keyed from SECRET_KEY.
- Each refresh token rotates once, in one conditional update: of simultaneous refreshes with
  one token exactly one rotates. The pair that rotation produced is kept sealed (AES-GCM, a
  key derived from SECRET_KEY *and the token itself*, so the database alone opens nothing),
  and the same token sent again within REFRESH_REUSE_GRACE_SECONDS gets that pair again: a
  client retrying a lost answer, or racing itself. Later, a used token is a stolen copy or a
  thief's leftover (OAuth 2.0 Security BCP, refresh token reuse detection): the session ends
  (``refresh_reuse``) and the event is audited.
- A session ends SESSION_IDLE_DAYS after its last refresh and SESSION_MAX_DAYS after login.
  Every refusal of a refresh is the same ``InvalidToken`` outside (unknown, used, expired,
  ended); the reason is for logs.
- ``authenticate`` checks a bearer token and that its session is live (one primary-key
  lookup): an ended session's token is refused at once here. Backends verifying offline
  (JWKS) learn of it when the access token expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from taxease_auth.auth.emails import email_fingerprint, mask_email
from taxease_auth.auth.limits import RateLimits
from taxease_auth.auth.tokens import TokenService
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidToken
from taxease_auth.store import audit, users
from taxease_auth.store import sessions as rows
from taxease_auth.store.sessions import RefreshRow, SessionRow
from taxease_auth.store.sql import Database, Transaction
from taxease_auth.store.users import UserRow

logger = logging.getLogger(__name__)

REFRESH_TOKEN_BYTES = 32
REFRESH_TOKEN_LENGTH = 43  # base64url of 32 bytes, without padding
_HASH_LABEL = b"taxease-auth/refresh-token/hash/v1"
_SEAL_LABEL = b"taxease-auth/refresh-token/grace-answer/v1"
_NONCE_BYTES = 12


class EndReason:
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    REVOKED = "revoked"  # DELETE /sessions/{id}
    REFRESH_REUSE = "refresh_reuse"
    PASSWORD_RESET = "password_reset"


@dataclass(frozen=True, slots=True)
class SessionTokens:
    """What a login or a refresh answers."""

    access_token: str
    expires_in: int
    refresh_token: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A verified bearer token's account, and its session (None for a pre-upgrade token)."""

    user: UserRow
    session_id: str | None


def _key(secret_key: str, label: bytes) -> bytes:
    return hmac.new(secret_key.encode(), label, hashlib.sha256).digest()


def refresh_token_hash_key(secret_key: str) -> bytes:
    """The key refresh tokens are hashed with, derived from one SECRET_KEY."""
    return _key(secret_key, _HASH_LABEL)


def hash_refresh_token(key: bytes, refresh_token: str) -> str:
    """What the database holds for a refresh token: HMAC-SHA256, hex."""
    return hmac.new(key, refresh_token.encode(), hashlib.sha256).hexdigest()


class Sessions:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        clock: Clock,
        tokens: TokenService,
        limits: RateLimits,
    ) -> None:
        self._settings = settings
        self._db = database
        self._clock = clock
        self._tokens = tokens
        self._limits = limits
        # Current key first: new tokens are hashed with it; the previous ones still find theirs.
        self._hash_keys = [refresh_token_hash_key(key) for key in settings.verification_keys]
        self._seal_keys = [_key(key, _SEAL_LABEL) for key in settings.verification_keys]
        self._grace = timedelta(seconds=settings.refresh_reuse_grace_seconds)
        self._idle = timedelta(days=settings.session_idle_days)
        self._max_age = timedelta(days=settings.session_max_days)

    @property
    def tokens(self) -> TokenService:
        return self._tokens

    # --- starting and refreshing -------------------------------------------------------------

    async def start(
        self,
        tx: Transaction,
        user: UserRow,
        *,
        amr: list[str],
        client_ip: str | None,
        user_agent: str | None,
        now: datetime,
    ) -> SessionTokens:
        """Start a session in the caller's transaction (the login's): its first pair."""
        session_id = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        refresh_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        await rows.add(
            tx,
            session_id=session_id,
            user_id=user.id,
            token_hash=self._hash(refresh_token, 0),
            expires_at=now + self._max_age,
            ip=client_ip,
            user_agent=user_agent,
            amr=",".join(amr),
            now=now,
        )
        access = self._tokens.issue(
            user_id=user.id,
            session_id=session_id,
            email=user.email,
            email_verified=user.email_verified,
            amr=amr,
        )
        return SessionTokens(access.access_token, access.expires_in, refresh_token)

    async def refresh(self, refresh_token: str, *, client_ip: str) -> SessionTokens:
        """A new pair for a live refresh token, or InvalidToken (one answer for unknown, used,
        expired and ended). RateLimited past the client's or the session's budget."""
        await self._limits.spend(self._limits.refresh_per_ip, client_ip)
        now = self._clock.now()
        refused: str | None = None
        async with self._db.transaction() as tx:
            found = await self._find(tx, refresh_token)
            if found is None:
                raise InvalidToken("unknown refresh token")  # nothing written: roll back
            row, key_index = found
            await self._limits.spend(self._limits.refresh_per_session, row.session_id)
            if row.ended_at is not None:
                refused = "session ended"
            elif row.expires_at <= now or row.last_used_at + self._idle <= now:
                refused = "session expired"
            elif row.used_at is None:
                answer = await self._rotate(tx, row, refresh_token, key_index, now)
                if answer is not None:
                    return answer
                # A simultaneous refresh with the same token rotated it first: read its answer.
                row = await rows.by_token(tx, row.token_hash) or row
            if refused is None:
                answer, refused = await self._answer_again(
                    tx, row, refresh_token, key_index, now, client_ip
                )
                if answer is not None:
                    return answer
        logger.info("refresh refused: %s", refused)
        raise InvalidToken(refused)

    async def _find(self, tx: Transaction, refresh_token: str) -> tuple[RefreshRow, int] | None:
        for index in range(len(self._hash_keys)):
            row = await rows.by_token(tx, self._hash(refresh_token, index))
            if row is not None:
                return row, index
        return None

    async def _rotate(
        self, tx: Transaction, row: RefreshRow, refresh_token: str, key_index: int, now: datetime
    ) -> SessionTokens | None:
        next_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
        access = self._tokens.issue(
            user_id=row.user_id,
            session_id=row.session_id,
            email=row.email,
            email_verified=row.email_verified,
            amr=row.amr.split(","),
        )
        answer = SessionTokens(access.access_token, access.expires_in, next_token)
        rotated = await rows.rotate(
            tx,
            token_hash=row.token_hash,
            session_id=row.session_id,
            next_hash=self._hash(next_token, 0),
            grace_answer=self._seal(answer, refresh_token, key_index),
            now=now,
        )
        return answer if rotated else None

    async def _answer_again(
        self,
        tx: Transaction,
        row: RefreshRow,
        refresh_token: str,
        key_index: int,
        now: datetime,
        client_ip: str,
    ) -> tuple[SessionTokens | None, str]:
        """A used token: its rotation's answer again within the grace period; otherwise the
        session ends (reuse detection)."""
        assert row.used_at is not None
        if now - row.used_at <= self._grace and row.grace_answer is not None:
            answer = self._open(row.grace_answer, refresh_token, key_index)
            if answer is not None:
                return answer, ""
        await rows.end(
            tx,
            session_id=row.session_id,
            user_id=row.user_id,
            reason=EndReason.REFRESH_REUSE,
            now=now,
        )
        await audit.record(
            tx,
            now=now,
            event="refresh_reuse",
            email_hash=email_fingerprint(self._settings.signing_key, row.email),
            ip=client_ip,
            outcome="failure",
            detail="session ended",
        )
        logger.warning("refresh token reused: session of %s ended", mask_email(row.email))
        return None, "reused"

    # --- ending --------------------------------------------------------------------------------

    async def end(self, caller: Authenticated, session_id: str, reason: str) -> bool:
        """End one of the caller's sessions; False when it is not theirs or not live."""
        now = self._clock.now()
        async with self._db.transaction() as tx:
            ended = await rows.end(
                tx, session_id=session_id, user_id=caller.user.id, reason=reason, now=now
            )
            if ended:
                await self._audit(tx, caller.user, "session_ended", reason, now)
        return ended

    async def end_all(self, caller: Authenticated) -> None:
        """Log out everywhere: every session of the caller's account ends."""
        now = self._clock.now()
        async with self._db.transaction() as tx:
            await self.end_every_session(tx, caller.user.id, EndReason.LOGOUT_ALL, now=now)
            await self._audit(tx, caller.user, "session_ended", EndReason.LOGOUT_ALL, now)

    @staticmethod
    async def end_every_session(
        tx: Transaction, user_id: int, reason: str, *, now: datetime
    ) -> int:
        """End every session of ``user_id`` in the caller's transaction (a password reset)."""
        return await rows.end_all(tx, user_id=user_id, reason=reason, now=now)

    async def live(self, caller: Authenticated) -> list[SessionRow]:
        """The caller's live sessions, newest first."""
        now = self._clock.now()
        async with self._db.reading() as reader:
            return await rows.live_of_user(
                reader, user_id=caller.user.id, now=now, idle_cutoff=now - self._idle
            )

    # --- bearer tokens ---------------------------------------------------------------------------

    async def authenticate(self, access_token: str) -> Authenticated:
        """The account and session of a bearer token, or InvalidToken: forged, expired, or its
        session ended (a pre-upgrade token: revoked by a password reset)."""
        claims = self._tokens.decode(access_token)
        now = self._clock.now()
        # Reads only, outside a transaction: on SQLite no turn on the write lock (every
        # request of a client calls /me), on PostgreSQL no BEGIN and COMMIT round trips. The
        # session is read before the account, so a logout committed before this request
        # started is seen.
        async with self._db.reading() as reader:
            if claims.session_id is not None and not await rows.is_live(
                reader,
                session_id=claims.session_id,
                user_id=claims.user_id,
                now=now,
                idle_cutoff=now - self._idle,
            ):
                raise InvalidToken("session ended")
            user = await users.get_by_id(reader, claims.user_id)
        if user is None:
            raise InvalidToken("no such user")
        if claims.session_id is None and user.token_version != claims.token_version:
            raise InvalidToken("revoked by a password reset")
        return Authenticated(user, claims.session_id)

    # --- internals -------------------------------------------------------------------------------

    def _hash(self, refresh_token: str, key_index: int) -> str:
        return hash_refresh_token(self._hash_keys[key_index], refresh_token)

    def _seal_key(self, refresh_token: str, key_index: int) -> AESGCM:
        return AESGCM(
            hmac.new(self._seal_keys[key_index], refresh_token.encode(), hashlib.sha256).digest()
        )

    def _seal(self, answer: SessionTokens, refresh_token: str, key_index: int) -> str:
        plain = json.dumps([answer.access_token, answer.expires_in, answer.refresh_token])
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._seal_key(refresh_token, key_index).encrypt(nonce, plain.encode(), None)
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def _open(self, sealed: str, refresh_token: str, key_index: int) -> SessionTokens | None:
        try:
            data = base64.urlsafe_b64decode(sealed)
            plain = self._seal_key(refresh_token, key_index).decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], None
            )
            access_token, expires_in, next_token = json.loads(plain)
        except (binascii.Error, InvalidTag, ValueError, TypeError):
            return None
        return SessionTokens(str(access_token), int(expires_in), str(next_token))

    async def _audit(
        self, tx: Transaction, user: UserRow, event: str, detail: str, now: datetime
    ) -> None:
        await audit.record(
            tx,
            now=now,
            event=event,
            email_hash=email_fingerprint(self._settings.signing_key, user.email),
            ip=None,
            outcome="success",
            detail=detail,
        )
