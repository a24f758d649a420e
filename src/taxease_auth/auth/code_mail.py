"""Building the codes and notices the account flows mail: a fresh code with its keyed hash and
rendered mail (``NewCode``), and a notice queued in the outbox.

Shared by the service (login, reset, request-otp) and the registration flow
(``auth/registration.py``), so a code and its mail are made in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from taxease_auth import metrics
from taxease_auth.auth import mail_link
from taxease_auth.auth import otp as codes
from taxease_auth.auth.emails import mask_email
from taxease_auth.config import Settings
from taxease_auth.mail.render import MailRenderer
from taxease_auth.store import issuing, outbox
from taxease_auth.store.issuing import NewCode
from taxease_auth.store.models import MailKind, Purpose
from taxease_auth.store.sql import Transaction

logger = logging.getLogger(__name__)

# A notice (no code) may wait this long for delivery before it is dropped as stale.
NOTICE_DELIVERY_WINDOW = timedelta(hours=24)


class CodeMail:
    def __init__(
        self, settings: Settings, renderer: MailRenderer, fingerprint: Callable[[str], str]
    ) -> None:
        self._settings = settings
        self._renderer = renderer
        self._fingerprint = fingerprint
        self._lifetime = timedelta(minutes=settings.otp_expiry_minutes)
        self._link_base = mail_link.link_base(settings)

    def new_code(
        self,
        *,
        email: str,
        purpose: Purpose,
        first_name: str | None,
        client_ip: str,
        now: datetime,
        pending: tuple[str, str, str] | None = None,
        challenge_id: str | None = None,
        registration_id: str | None = None,
        locale: str | None = None,
    ) -> NewCode:
        """A fresh code: its keyed hash to store, and the mail that carries it (in ``locale``;
        None or unsupported: DEFAULT_LOCALE).

        ``first_name`` is None for mail to an address not verified yet: a name there is the
        registrant's claim, not the mailbox owner's, and the mail greets with "Hello,".
        Where links can be made (``mail_link.link_base``) the mail also carries
        ``/c/{token}``: the code is then the token's (``mail_link.code_for``) and the row keeps
        the token's keyed hash.
        """
        settings = self._settings
        token = link = link_hash = None
        if self._link_base is not None:
            token = mail_link.new_token()
            link = mail_link.link_url(self._link_base, token)
            link_hash = mail_link.token_hash(settings.signing_key, token)
        code = settings.active_developer_otp or (
            mail_link.code_for(token, settings.otp_length)
            if token is not None
            else codes.generate_otp(settings.otp_length)
        )
        return NewCode(
            email=email,
            purpose=purpose,
            code_hash=codes.hash_code(
                settings.signing_key, email=email, purpose=purpose, code=code
            ),
            expires_at=now + self._lifetime,
            mail=self._renderer.render(
                MailKind(purpose),
                code=code,
                first_name=first_name,
                expires_minutes=settings.otp_expiry_minutes,
                locale=locale,
                link=link,
            ),
            email_hash=self._fingerprint(email),
            ip=client_ip,
            pending=pending,
            challenge_id=challenge_id,
            registration_id=registration_id,
            link_token_hash=link_hash,
        )

    async def issue(self, tx: Transaction, code: NewCode, *, now: datetime) -> None:
        """Retire the codes ``code`` replaces, store its hash, queue its mail."""
        await issuing.issue(tx, [code], now=now)
        code_issued(code)

    async def queue_notice(
        self,
        tx: Transaction,
        *,
        recipient: str,
        kind: MailKind,
        first_name: str | None,
        now: datetime,
        locale: str | None = None,
    ) -> None:
        """Queue a notice (a mail without a code) to ``recipient``, in ``locale`` (None:
        DEFAULT_LOCALE)."""
        mail = self._renderer.render(kind, first_name=first_name, locale=locale)
        await outbox.enqueue(
            tx,
            recipient=recipient,
            kind=kind,
            mail=mail,
            otp_id=None,
            send_before=now + NOTICE_DELIVERY_WINDOW,
            now=now,
        )


def code_issued(code: NewCode) -> None:
    """Count and log an issued code (never the code itself)."""
    metrics.CODES_ISSUED.labels(purpose=code.purpose).inc()
    logger.info("%s code issued for %s", code.purpose, mask_email(code.email))
