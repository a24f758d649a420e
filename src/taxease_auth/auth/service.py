"""AuthService: the account flows of DESIGN.md §4, with no HTTP and no SQL text.

Every email given to a method here is canonical already (``auth.emails.canonical_email``);
the API's schemas make it so. Methods raise the precise domain error (``errors.py``) and leave
to ``api/errors.py`` what the client may learn: an unknown email and a wrong password look the
same from outside, as do wrong, expired, used and dead codes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from taxease_auth import metrics
from taxease_auth.auth import otp as codes
from taxease_auth.auth.emails import mask_email
from taxease_auth.auth.passwords import PasswordHasher, check_password_policy
from taxease_auth.auth.tokens import IssuedToken, TokenService
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import EmailNotVerified, InvalidCode, InvalidCredentials, InvalidToken
from taxease_auth.mail.render import MailRenderer
from taxease_auth.store import otps, outbox, users
from taxease_auth.store.models import MailKind, Otp, Purpose, User

logger = logging.getLogger(__name__)

# A notice (no code) may wait this long for delivery before it is dropped as stale.
NOTICE_DELIVERY_WINDOW = timedelta(hours=24)
# A login challenge accepts resends for this many code lifetimes after the password was checked.
CHALLENGE_LIFETIMES = 3


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    first_name: str
    last_name: str


@dataclass(frozen=True, slots=True)
class CodeSubmission:
    """A code as a client submitted it, for one email and purpose (and login challenge)."""

    email: str
    code: str
    purpose: Purpose
    challenge_id: str | None = None


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    """The password was right; a login code was mailed for this challenge."""

    challenge_id: str
    expires_in: int


class AuthService:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        hasher: PasswordHasher,
        tokens: TokenService,
        renderer: MailRenderer,
        mail_queued: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._clock = clock
        self._hasher = hasher
        self._tokens = tokens
        self._renderer = renderer
        self._mail_queued = mail_queued
        self._code_lifetime = timedelta(minutes=settings.otp_expiry_minutes)

    # --- registration ------------------------------------------------------------------------

    async def register(self, registration: Registration) -> None:
        """Create or refresh a pending account and mail a code; the caller answers the same
        201 whatever happened here.

        - new address: an unverified user and a code bound to this registration's password;
        - unverified address: a new code bound to *this* registration (whoever holds the
          mailbox decides which registration completes; a squatter cannot block the owner);
        - verified address: the owner gets a notice instead of a code, nothing changes.
        """
        check_password_policy(registration.password, self._settings)
        # Hash before looking anything up: every branch costs the same hashing work.
        password_hash = await self._hasher.hash(registration.password)
        try:
            await self._register(registration, password_hash)
        except IntegrityError:
            # A simultaneous registration inserted the same address first; ours now takes
            # the "existing account" branch.
            await self._register(registration, password_hash)
        self._mail_queued()

    async def _register(self, registration: Registration, password_hash: str) -> None:
        now = self._clock.now()
        verified_at_once = self._settings.skips_email_verification
        async with self._sessions.begin() as session:
            user = await users.get_by_email(session, registration.email)
            if user is not None and user.email_verified:
                await self._queue_notice(session, user, MailKind.ACCOUNT_EXISTS, now)
                logger.info("registration for verified %s: notice queued", mask_email(user.email))
                return
            if user is None:
                user = await users.add(
                    session,
                    email=registration.email,
                    password_hash=password_hash,
                    first_name=registration.first_name,
                    last_name=registration.last_name,
                    verified=verified_at_once,
                    now=now,
                )
                if verified_at_once:
                    logger.warning(
                        "SKIP_EMAIL_VERIFICATION: %s registered as verified", mask_email(user.email)
                    )
                    return
            else:
                # The row mirrors the latest registration; only a code can make it verified.
                user.password_hash = password_hash
                user.first_name = registration.first_name
                user.last_name = registration.last_name
            await self._issue_code(
                session,
                email=user.email,
                purpose=Purpose.EMAIL_VERIFICATION,
                first_name=registration.first_name,
                now=now,
                pending=(password_hash, registration.first_name, registration.last_name),
            )

    # --- codes -------------------------------------------------------------------------------

    async def request_code(
        self, email: str, purpose: Purpose, *, challenge_id: str | None = None
    ) -> None:
        """Re-send a code where one is due; otherwise do nothing. The caller answers 202 either
        way, so this reveals nothing about the address.

        A login code is only re-sent for a live challenge (opened by a correct password): no
        one gets tokens from an email address alone.
        """
        now = self._clock.now()
        issued = False
        async with self._sessions.begin() as session:
            user = await users.get_by_email(session, email)
            if user is None:
                logger.info("code requested for unknown %s: nothing sent", mask_email(email))
            elif purpose is Purpose.EMAIL_VERIFICATION:
                if not user.email_verified:
                    await self._issue_code(
                        session,
                        email=email,
                        purpose=purpose,
                        first_name=user.first_name,
                        now=now,
                        pending=(user.password_hash, user.first_name, user.last_name),
                    )
                    issued = True
            elif purpose is Purpose.PASSWORD_RESET:
                await self._issue_code(
                    session, email=email, purpose=purpose, first_name=user.first_name, now=now
                )
                issued = True
            elif challenge_id is not None and await otps.challenge_is_live(
                session,
                email=email,
                challenge_id=challenge_id,
                started_after=now - self._code_lifetime * CHALLENGE_LIFETIMES,
            ):
                await self._issue_code(
                    session,
                    email=email,
                    purpose=purpose,
                    first_name=user.first_name,
                    now=now,
                    challenge_id=challenge_id,
                )
                issued = True
        if issued:
            self._mail_queued()

    async def request_password_reset(self, email: str) -> None:
        await self.request_code(email, Purpose.PASSWORD_RESET)

    async def verify_code(
        self, email: str, code: str, purpose: Purpose, *, challenge_id: str | None = None
    ) -> IssuedToken | None:
        """Check a code and apply its effect; InvalidCode for every kind of failure.

        - email_verification: the account becomes verified with the registration's password;
        - login: the code is consumed and an access token returned;
        - password_reset: the code is checked but *not* consumed (it is spent by
          ``confirm_password_reset``), so a client can validate it before asking for the new
          password; wrong tries still count.
        """
        if purpose is Purpose.LOGIN and challenge_id is None:
            raise InvalidCode("login code without challenge")
        consume = purpose is not Purpose.PASSWORD_RESET
        token: IssuedToken | None = None
        async with self._sessions.begin() as session:
            outcome = await self._check_code(
                session, CodeSubmission(email, code, purpose, challenge_id), consume=consume
            )
            if isinstance(outcome, InvalidCode):
                pass  # commit the counted attempt, then raise below
            elif purpose is Purpose.EMAIL_VERIFICATION:
                await self._activate_registration(session, outcome)
            elif purpose is Purpose.LOGIN:
                token = await self._login_with_code(session, email)
        if isinstance(outcome, InvalidCode):
            raise outcome
        return token

    async def confirm_password_reset(self, email: str, code: str, new_password: str) -> None:
        """Spend a reset code and set the new password. Ends every earlier token, mails the
        owner a notice, does not log in (the client logs in with the new password)."""
        check_password_policy(new_password, self._settings, field="new_password")
        # Hash first: a wrong code then costs the same time as a right one.
        password_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._sessions.begin() as session:
            outcome = await self._check_code(
                session, CodeSubmission(email, code, Purpose.PASSWORD_RESET), consume=True
            )
            user = (
                None
                if isinstance(outcome, InvalidCode)
                else await users.get_by_email(session, email)
            )
            if user is not None:
                await users.replace_password(session, user.id, password_hash=password_hash, now=now)
                # Every other pending code dies with the old password, a squatter's pending
                # registration code included (it would otherwise set *its* password back).
                await otps.retire_live(session, email=email, purpose=None, now=now)
                await self._queue_notice(session, user, MailKind.PASSWORD_CHANGED, now)
        if isinstance(outcome, InvalidCode):
            raise outcome
        if user is None:
            raise InvalidCode("account vanished")
        logger.info("password reset for %s", mask_email(email))
        self._mail_queued()

    # --- login and tokens --------------------------------------------------------------------

    async def login(self, email: str, password: str) -> IssuedToken | LoginChallenge:
        """Check the password; return a token, or a challenge when LOGIN_OTP_REQUIRED.

        InvalidCredentials for an unknown email or a wrong password (same hashing work for
        both); EmailNotVerified only after a correct password.
        """
        async with self._sessions() as session:
            user = await users.get_by_email(session, email)
        if user is None:
            await self._hasher.verify_unknown_user(password)
            metrics.LOGINS.labels(outcome="unknown_email").inc()
            logger.info("login failed for %s: unknown", mask_email(email))
            raise InvalidCredentials
        matches, new_hash = await self._hasher.verify(password, user.password_hash)
        if not matches:
            metrics.LOGINS.labels(outcome="wrong_password").inc()
            logger.info("login failed for %s: wrong password", mask_email(email))
            raise InvalidCredentials
        if not user.email_verified:
            metrics.LOGINS.labels(outcome="unverified").inc()
            raise EmailNotVerified
        now = self._clock.now()
        async with self._sessions.begin() as session:
            await users.record_login(session, user.id, now=now, new_password_hash=new_hash)
            if self._settings.login_otp_required:
                challenge_id = secrets.token_urlsafe(32)
                await self._issue_code(
                    session,
                    email=email,
                    purpose=Purpose.LOGIN,
                    first_name=user.first_name,
                    now=now,
                    challenge_id=challenge_id,
                )
        if self._settings.login_otp_required:
            self._mail_queued()
            metrics.LOGINS.labels(outcome="challenged").inc()
            return LoginChallenge(
                challenge_id=challenge_id, expires_in=int(self._code_lifetime.total_seconds())
            )
        metrics.LOGINS.labels(outcome="success").inc()
        logger.info("login succeeded for %s", mask_email(email))
        return self._tokens.issue(user_id=user.id, token_version=user.token_version)

    async def current_user(self, token: str) -> User:
        """The user a bearer token belongs to, or InvalidToken (also after a password reset)."""
        claims = self._tokens.decode(token)
        async with self._sessions() as session:
            user = await users.get_by_id(session, claims.user_id)
        if user is None:
            raise InvalidToken("no such user")
        if user.token_version != claims.token_version:
            raise InvalidToken("revoked by a password reset")
        return user

    # --- internals ---------------------------------------------------------------------------

    async def _check_code(
        self, session: AsyncSession, submitted: CodeSubmission, *, consume: bool
    ) -> Otp | InvalidCode:
        """The matching live code (consumed when asked), or the InvalidCode to raise after the
        transaction commits (a wrong attempt must be counted even though the call fails)."""
        outcome = await self._match_code(session, submitted, consume=consume)
        label = outcome.reason if isinstance(outcome, InvalidCode) else "verified"
        metrics.CODES_CHECKED.labels(purpose=submitted.purpose, outcome=label).inc()
        if isinstance(outcome, InvalidCode):
            logger.info(
                "%s code rejected for %s: %s", submitted.purpose, mask_email(submitted.email), label
            )
        return outcome

    async def _match_code(
        self, session: AsyncSession, submitted: CodeSubmission, *, consume: bool
    ) -> Otp | InvalidCode:
        max_attempts = self._settings.otp_max_attempts
        if not codes.is_well_formed(submitted.code, self._settings.otp_length):
            return InvalidCode("malformed")
        candidate = await otps.newest_candidate(
            session,
            email=submitted.email,
            purpose=submitted.purpose,
            challenge_id=submitted.challenge_id,
        )
        now = self._clock.now()
        if candidate is None:
            return InvalidCode("no live code")
        if candidate.expires_at <= now:
            return InvalidCode("expired")
        if candidate.attempts >= max_attempts:
            return InvalidCode("too many attempts")
        if not codes.code_matches(
            self._settings.verification_keys,
            email=submitted.email,
            purpose=submitted.purpose,
            code=submitted.code,
            stored_hash=candidate.code_hash,
        ):
            await otps.count_wrong_attempt(session, candidate.id, max_attempts=max_attempts)
            return InvalidCode("wrong")
        if consume and not await otps.consume(
            session, candidate.id, now=now, max_attempts=max_attempts
        ):
            return InvalidCode("already used")
        return candidate

    async def _activate_registration(self, session: AsyncSession, code: Otp) -> None:
        user = await users.get_by_email(session, code.email)
        if user is None or code.pending_password_hash is None:
            raise InvalidCode("registration vanished")
        if user.email_verified:
            # Defence in depth: a registration code never changes a verified account's password.
            raise InvalidCode("already verified")
        now = self._clock.now()
        await users.activate_registration(
            session,
            user.id,
            password_hash=code.pending_password_hash,
            first_name=code.pending_first_name or user.first_name,
            last_name=code.pending_last_name or user.last_name,
            now=now,
        )
        logger.info("email verified for %s", mask_email(code.email))

    async def _login_with_code(self, session: AsyncSession, email: str) -> IssuedToken:
        user = await users.get_by_email(session, email)
        if user is None:
            raise InvalidCode("account vanished")
        logger.info("login with code succeeded for %s", mask_email(email))
        metrics.LOGINS.labels(outcome="success").inc()
        return self._tokens.issue(user_id=user.id, token_version=user.token_version)

    async def _issue_code(
        self,
        session: AsyncSession,
        *,
        email: str,
        purpose: Purpose,
        first_name: str,
        now: datetime,
        pending: tuple[str, str, str] | None = None,
        challenge_id: str | None = None,
    ) -> None:
        """Retire older codes for (email, purpose), store the new code's hash, queue its mail."""
        await otps.retire_live(session, email=email, purpose=purpose, now=now)
        code = self._settings.active_developer_otp or codes.generate_otp(self._settings.otp_length)
        expires_at = now + self._code_lifetime
        pending_hash, pending_first, pending_last = pending or (None, None, None)
        row = await otps.add(
            session,
            Otp(
                email=email,
                purpose=purpose,
                code_hash=codes.hash_code(
                    self._settings.signing_key, email=email, purpose=purpose, code=code
                ),
                expires_at=expires_at,
                used=False,
                attempts=0,
                created_at=now,
                pending_password_hash=pending_hash,
                pending_first_name=pending_first,
                pending_last_name=pending_last,
                challenge_id=challenge_id,
            ),
        )
        mail = self._renderer.render(
            MailKind(purpose),
            code=code,
            first_name=first_name,
            expires_minutes=self._settings.otp_expiry_minutes,
        )
        await outbox.enqueue(
            session,
            recipient=email,
            kind=purpose,
            mail=mail,
            otp_id=row.id,
            send_before=expires_at,
            now=now,
        )
        metrics.CODES_ISSUED.labels(purpose=purpose).inc()
        logger.info("%s code issued for %s", purpose, mask_email(email))

    async def _queue_notice(
        self, session: AsyncSession, user: User, kind: MailKind, now: datetime
    ) -> None:
        mail = self._renderer.render(kind, first_name=user.first_name)
        await outbox.enqueue(
            session,
            recipient=user.email,
            kind=kind,
            mail=mail,
            otp_id=None,
            send_before=now + NOTICE_DELIVERY_WINDOW,
            now=now,
        )
