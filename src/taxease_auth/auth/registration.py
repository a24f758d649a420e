"""Registration: what a registration does to the account, done after the 201.

``AuthService.register`` checks the input, spends the budgets and hashes the password (the
same work for every address) before it answers; the state-dependent rest is here, queued to
run after the answer (``auth/deferred.py``): its timing told a verified address from a new
one (Review 17.7). No registration answered with 201 is lost: the queue waits for room
before answering and is drained at shutdown.

- new address: an unverified user and a code bound to this registration's password;
- unverified address: a new code bound to *this* registration;
- verified address: the owner gets a notice instead of a code, nothing changes.

Registration binding (DESIGN.md §11): each registration has a random id, answered in the 201
(for every address alike) and stored on its code rows. Registering again never retires
another registration's code. A code submitted with the id activates that registration's
password only. Without it (the integration guide's three-field body), the newest code's
password is activated only when no other registration claimed the address within one code
lifetime before it; otherwise the address is verified with no password and its owner is
mailed a notice to choose one through the reset flow: an attacker who registers the victim's
address right after the victim cannot get the victim to activate the attacker's password.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from taxease_auth.auth.code_mail import CodeMail
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.errors import InvalidCode
from taxease_auth.store import otps, users
from taxease_auth.store.models import MailKind, Purpose
from taxease_auth.store.otps import CodeRow
from taxease_auth.store.sql import Conflict, Database, Transaction

logger = logging.getLogger(__name__)

# Registrations answered but not yet applied, at most; past it, answers wait for room.
MAX_REGISTRATIONS_IN_PROGRESS = 64


def new_registration_id() -> str:
    """16 random bytes, base64url without padding (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    first_name: str
    last_name: str
    # The language the account's mail is written in (DESIGN.md §12): the API body's
    # ``locale``, the page's language; None: DEFAULT_LOCALE.
    locale: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptedRegistration:
    """A registration answered with 201: its password already hashed, never in clear."""

    email: str
    password_hash: str
    first_name: str
    last_name: str
    client_ip: str
    registration_id: str
    locale: str | None = None


class Registrar:
    """Applies accepted registrations to the database (the part after the answer)."""

    def __init__(
        self,
        *,
        settings: Settings,
        database: Database,
        clock: Clock,
        code_mail: CodeMail,
        mail_queued: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._db = database
        self._clock = clock
        self._code_mail = code_mail
        self._mail_queued = mail_queued
        self._lifetime = timedelta(minutes=settings.otp_expiry_minutes)

    async def apply(self, registration: AcceptedRegistration) -> None:
        """Create or refresh the pending account and queue its mail (a code, or a notice)."""
        try:
            await self._apply(registration)
        except Conflict:
            # Another process inserted the same address first: ours now takes the "existing
            # account" branch.
            await self._apply(registration)
        self._mail_queued()

    async def _apply(self, registration: AcceptedRegistration) -> None:
        now = self._clock.now()
        verified_at_once = self._settings.skips_email_verification
        async with self._db.transaction() as tx:
            user = await users.get_by_email(tx, registration.email)
            if user is not None and user.email_verified:
                # The owner's language, not the registrant's: they may be someone else.
                await self._code_mail.queue_notice(
                    tx,
                    recipient=user.email,
                    kind=MailKind.ACCOUNT_EXISTS,
                    first_name=user.first_name,
                    now=now,
                    locale=user.locale,
                )
                logger.info("registration for verified %s: notice queued", mask_email(user.email))
                return
            if user is None:
                await users.add(
                    tx,
                    email=registration.email,
                    password_hash=registration.password_hash,
                    first_name=registration.first_name,
                    last_name=registration.last_name,
                    verified=verified_at_once,
                    now=now,
                    locale=registration.locale,
                )
                if verified_at_once:
                    logger.warning(
                        "SKIP_EMAIL_VERIFICATION: %s registered as verified",
                        mask_email(registration.email),
                    )
                    return
            else:
                await users.set_registration(
                    tx,
                    user.id,
                    password_hash=registration.password_hash,
                    first_name=registration.first_name,
                    last_name=registration.last_name,
                    locale=registration.locale,
                )
            code = self._code_mail.new_code(
                email=registration.email,
                purpose=Purpose.EMAIL_VERIFICATION,
                first_name=None,  # the registrant's claim: "Hello," (Review 17.5)
                client_ip=registration.client_ip,
                now=now,
                pending=(
                    registration.password_hash,
                    registration.first_name,
                    registration.last_name,
                ),
                registration_id=registration.registration_id,
                locale=registration.locale or (user.locale if user is not None else None),
            )
            await self._code_mail.issue(tx, code, now=now)

    async def activate(self, tx: Transaction, code: CodeRow, *, bound: bool) -> bool:
        """Verify the address of a registration ``code`` that was just consumed; True when
        the registration's password was activated, False when the address was verified without
        one (the caller logs which, once ``tx`` is committed).

        ``bound``: the client named the code's registration (its id), so its password is the
        one to activate. Otherwise the password is activated only if no other registration
        claimed the address from one code lifetime before this registration began until now;
        if one did, the address is verified with no password and the owner is mailed a notice
        to choose one through the reset flow. InvalidCode if the registration cannot complete
        (the caller's transaction then rolls back, the code unspent).
        """
        user = await users.get_by_email(tx, code.email)
        if user is None or code.pending_password_hash is None:
            raise InvalidCode("registration vanished")
        if user.email_verified:
            # Defence in depth: a registration code never changes a verified account's password.
            raise InvalidCode("already verified")
        now = self._clock.now()
        with_password = bound
        if not bound:
            history = await otps.registration_history(tx, email=code.email)
            started = history.started(code.registration_id)
            since = (started or code.created_at or now) - self._lifetime
            with_password = not history.other_since(code.registration_id, since)
        await users.activate_registration(
            tx,
            user.id,
            password_hash=code.pending_password_hash if with_password else None,
            first_name=code.pending_first_name or user.first_name,
            last_name=code.pending_last_name or user.last_name,
            now=now,
        )
        # The address is verified: no other registration's code may do anything any more.
        await otps.retire_live(tx, email=code.email, purpose=Purpose.EMAIL_VERIFICATION, now=now)
        if with_password:
            return True
        await self._code_mail.queue_notice(
            tx,
            recipient=code.email,
            kind=MailKind.CHOOSE_PASSWORD,
            first_name=None,
            now=now,
            locale=user.locale,
        )
        return False
