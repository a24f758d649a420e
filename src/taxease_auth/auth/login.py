"""Logging in: the password check, its failure budget, the session or the login challenge it
opens, and the session a challenge's code starts (DESIGN.md §4, §11).

Every email given here is canonical already, and ``client_ip`` is the client address after
TRUSTED_PROXIES (as for ``auth/service.py``, which delegates here).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from taxease_auth import metrics
from taxease_auth.auth.audit_trail import AuditTrail
from taxease_auth.auth.code_mail import CodeMail
from taxease_auth.auth.emails import mask_email
from taxease_auth.auth.limits import RateLimits
from taxease_auth.auth.passwords import PasswordHasher
from taxease_auth.auth.sessions import Sessions, SessionTokens
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import EmailNotVerified, InvalidCode, InvalidCredentials
from taxease_auth.store import users
from taxease_auth.store.models import Purpose
from taxease_auth.store.sql import Database, Transaction

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    """The password was right; a login code was mailed for this challenge."""

    challenge_id: str
    expires_in: int


class Login:
    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        clock: Clock,
        hasher: PasswordHasher,
        sessions: Sessions,
        limits: RateLimits,
        code_mail: CodeMail,
        audit: AuditTrail,
        fingerprint: Callable[[str], str],
        mail_queued: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._db = database
        self._clock = clock
        self._hasher = hasher
        self._sessions = sessions
        self._limits = limits
        self._code_mail = code_mail
        self._audit = audit
        self._fingerprint = fingerprint
        self._mail_queued = mail_queued
        self._code_lifetime = timedelta(minutes=settings.otp_expiry_minutes)

    async def login(
        self, email: str, password: str, *, client_ip: str, user_agent: str | None = None
    ) -> SessionTokens | LoginChallenge:
        """Check the password; start a session (its tokens), or return a challenge when
        LOGIN_OTP_REQUIRED.

        InvalidCredentials for an unknown email or a wrong password (same hashing work for
        both); EmailNotVerified only after a correct password. RateLimited before any hashing
        when the client or the address has spent its budget.

        The address's budget is charged before the check, in one atomic step, and kept whatever
        the outcome: checked first and charged after a failure, simultaneous wrong passwords
        all passed the check while one unit was left. A correct password therefore costs its
        owner one unit of a budget their own logins barely touch (the ``limits`` storages,
        Redis among them, cannot take a hit back).
        """
        await self._limits.spend(self._limits.login_per_ip, client_ip)
        await self._limits.spend(self._limits.login_failures_per_email, self._fingerprint(email))
        async with self._db.transaction() as tx:
            user = await users.get_by_email(tx, email)
        if user is None or user.password_hash is None:
            # The same hashing work as a wrong password: an address verified without a
            # password (two registrations raced for it) cannot be told from an unknown one.
            await self._hasher.verify_unknown_user(password)
            reason = "unknown_email" if user is None else "no_password"
            raise await self._failed(email, client_ip, reason)
        matches, new_hash = await self._hasher.verify(password, user.password_hash)
        if not matches:
            raise await self._failed(email, client_ip, "wrong_password")
        if not user.email_verified:
            metrics.LOGINS.labels(outcome="unverified").inc()
            raise EmailNotVerified
        now = self._clock.now()
        async with self._db.transaction() as tx:
            await users.record_login(
                tx,
                user.id,
                now=now,
                new_password_hash=new_hash,
                read_password_hash=user.password_hash,
            )
            if not self._settings.login_otp_required:
                await self._audit.record(tx, "login_succeeded", email, client_ip, "success")
                tokens = await self._sessions.start(
                    tx, user, amr=["pwd"], client_ip=client_ip, user_agent=user_agent, now=now
                )
            else:
                challenge_id = secrets.token_urlsafe(32)
                await self._audit.record(tx, "login_challenged", email, client_ip, "success")
                await self._code_mail.issue(
                    tx,
                    self._code_mail.new_code(
                        email=email,
                        purpose=Purpose.LOGIN,
                        first_name=user.first_name,
                        client_ip=client_ip,
                        now=now,
                        challenge_id=challenge_id,
                        locale=user.locale,
                    ),
                    now=now,
                )
        if self._settings.login_otp_required:
            self._mail_queued()
            metrics.LOGINS.labels(outcome="challenged").inc()
            return LoginChallenge(
                challenge_id=challenge_id, expires_in=int(self._code_lifetime.total_seconds())
            )
        metrics.LOGINS.labels(outcome="success").inc()
        logger.info("login succeeded for %s", mask_email(email))
        return tokens

    async def start_with_code(
        self, tx: Transaction, email: str, *, client_ip: str, user_agent: str | None
    ) -> SessionTokens:
        """Start the session a login challenge's code (just consumed in ``tx``) completes;
        InvalidCode if the account is gone (``tx`` then rolls back, the code unspent).

        Writes only to ``tx``; the caller counts the login (``code_login_succeeded``) once
        ``tx`` committed."""
        user = await users.get_by_email(tx, email)
        if user is None:
            raise InvalidCode("account vanished")
        await self._audit.record(tx, "login_succeeded", email, client_ip, "success")
        return await self._sessions.start(
            tx,
            user,
            amr=["pwd", "otp"],
            client_ip=client_ip,
            user_agent=user_agent,
            now=self._clock.now(),
        )

    @staticmethod
    def code_login_succeeded(email: str) -> None:
        """Count and log a login completed by its code, after its transaction committed."""
        logger.info("login with code succeeded for %s", mask_email(email))
        metrics.LOGINS.labels(outcome="success").inc()

    async def _failed(self, email: str, client_ip: str, reason: str) -> InvalidCredentials:
        """Audit a failed login (its unit of the address's budget was spent on admission);
        returns the error."""
        async with self._db.transaction() as tx:
            await self._audit.record(tx, "login_failed", email, client_ip, "failure", detail=reason)
        # One outcome for both reasons: /metrics must not tell an unknown address from a known
        # one (Review 17.3); the audit trail keeps the reason.
        metrics.LOGINS.labels(outcome="bad_credentials").inc()
        logger.info("login failed for %s: %s", mask_email(email), reason.replace("_", " "))
        return InvalidCredentials()
