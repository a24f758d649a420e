"""Registration: what a registration does to the account, done after the 201.

``AuthService.register`` checks the input, spends the budgets and hashes the password (the
same work for every address) before it answers; the state-dependent rest is here, queued to
run after the answer (``auth/deferred.py``): its timing told a verified address from a new
one (Review 17.7). No registration answered with 201 is lost: the queue waits for room
before answering and is drained at shutdown.

- new address: an unverified user and a code bound to this registration's password;
- unverified address: a new code bound to *this* registration;
- verified address: the owner gets a notice instead of a code, nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from taxease_auth.auth.code_mail import CodeMail
from taxease_auth.auth.emails import mask_email
from taxease_auth.clock import Clock
from taxease_auth.config import Settings
from taxease_auth.store import users
from taxease_auth.store.models import MailKind, Purpose
from taxease_auth.store.sql import Conflict, Database

logger = logging.getLogger(__name__)

# Registrations answered but not yet applied, at most; past it, answers wait for room.
MAX_REGISTRATIONS_IN_PROGRESS = 64


@dataclass(frozen=True, slots=True)
class Registration:
    email: str
    password: str
    first_name: str
    last_name: str


@dataclass(frozen=True, slots=True)
class AcceptedRegistration:
    """A registration answered with 201: its password already hashed, never in clear."""

    email: str
    password_hash: str
    first_name: str
    last_name: str
    client_ip: str


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
                await self._code_mail.queue_notice(
                    tx,
                    recipient=user.email,
                    kind=MailKind.ACCOUNT_EXISTS,
                    first_name=user.first_name,
                    now=now,
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
            )
            await self._code_mail.issue(tx, code, now=now)
