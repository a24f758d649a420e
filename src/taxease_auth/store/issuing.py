"""Issuing codes: retire the earlier codes of each (email, purpose), store the new codes' hashes,
queue their mails and write their audit events, in the caller's transaction.

A batch (the requested codes the service issues together) costs one statement per kind on
PostgreSQL, its rows passed as arrays (``unnest``): each statement is a round trip to the
server, and five per code bounded request-otp there (`make bench --database postgresql`). On
SQLite, statements on the event loop cost microseconds each; the rows are written one by one
with the same statements as a single issue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from taxease_auth.store import audit, otps, outbox
from taxease_auth.store.mail_rows import RenderedMail
from taxease_auth.store.sql import Statement, Transaction


@dataclass(frozen=True, slots=True)
class NewCode:
    """A code to issue: its hash (never the code), its mail (which holds the code), and what
    its audit event records."""

    email: str
    purpose: str
    code_hash: str
    expires_at: datetime
    mail: RenderedMail
    email_hash: str
    ip: str | None
    pending: tuple[str, str, str] | None = None  # a registration's password hash and names
    challenge_id: str | None = None
    # A registration's code retires only its own registration's earlier code (DESIGN.md §11).
    registration_id: str | None = None
    # The keyed hash of the mail link's token (DESIGN.md §12), when the mail carries a link.
    link_token_hash: str | None = None

    @property
    def key(self) -> tuple[str, str, str | None]:
        """What a new code replaces: the live code of the same (email, purpose[,
        registration])."""
        return self.email, self.purpose, self.registration_id


_RETIRE = Statement("""
    UPDATE otps SET retired_at = :now
    FROM unnest(:emails::text[], :purposes::text[], :registration_ids::text[])
         AS issued(email, purpose, registration_id)
    WHERE otps.email = issued.email AND otps.purpose = issued.purpose
      AND (issued.registration_id IS NULL OR otps.registration_id = issued.registration_id)
      AND otps.used = FALSE AND otps.retired_at IS NULL
""")
_INSERT_CODES = Statement("""
    INSERT INTO otps (email, purpose, code_hash, expires_at, used, attempts, created_at,
                      pending_password_hash, pending_first_name, pending_last_name, challenge_id,
                      registration_id, link_token_hash)
    SELECT email, purpose, code_hash, expires_at, FALSE, 0, :now,
           password_hash, first_name, last_name, challenge_id, registration_id, link_token_hash
    FROM unnest(:emails::text[], :purposes::text[], :code_hashes::text[],
                :expires::timestamptz[], :password_hashes::text[], :first_names::text[],
                :last_names::text[], :challenge_ids::text[], :registration_ids::text[],
                :link_token_hashes::text[])
         AS code(email, purpose, code_hash, expires_at, password_hash, first_name, last_name,
                 challenge_id, registration_id, link_token_hash)
    RETURNING id, email, purpose, registration_id
""")
_INSERT_MAILS = Statement("""
    INSERT INTO email_outbox (recipient, kind, otp_id, subject, html_body, text_body, status,
                              attempts, next_attempt_at, send_before, idempotency_key,
                              created_at, updated_at)
    SELECT recipient, kind, otp_id, subject, html_body, text_body, 'pending',
           0, :now, send_before, idempotency_key, :now, :now
    FROM unnest(:recipients::text[], :kinds::text[], :otp_ids::integer[], :subjects::text[],
                :html_bodies::text[], :text_bodies::text[], :send_befores::timestamptz[],
                :keys::text[])
         AS mail(recipient, kind, otp_id, subject, html_body, text_body, send_before,
                 idempotency_key)
""")
_INSERT_EVENTS = Statement("""
    INSERT INTO audit_events (occurred_at, event, purpose, email_hash, ip, outcome, detail)
    SELECT :now, 'code_issued', purpose, email_hash, ip, 'success', NULL
    FROM unnest(:purposes::text[], :email_hashes::text[], :ips::text[])
         AS event(purpose, email_hash, ip)
""")


async def issue(tx: Transaction, codes: Sequence[NewCode], *, now: datetime) -> None:
    """Issue ``codes``; each ``NewCode.key`` at most once (a second would retire the first
    before its mail left: the caller keeps the newest request)."""
    if len({code.key for code in codes}) != len(codes):
        raise ValueError("two codes for one (email, purpose, registration) in a batch")
    if not codes:
        return
    if tx.dialect == "postgresql":
        await _issue_together(tx, codes, now=now)
        return
    for code in codes:
        await otps.retire_live(
            tx,
            email=code.email,
            purpose=code.purpose,
            now=now,
            registration_id=code.registration_id,
        )
        otp_id = await otps.add(
            tx,
            email=code.email,
            purpose=code.purpose,
            code_hash=code.code_hash,
            expires_at=code.expires_at,
            now=now,
            pending=code.pending,
            challenge_id=code.challenge_id,
            registration_id=code.registration_id,
            link_token_hash=code.link_token_hash,
        )
        await outbox.enqueue(
            tx,
            recipient=code.email,
            kind=code.purpose,
            mail=code.mail,
            otp_id=otp_id,
            send_before=code.expires_at,
            now=now,
        )
        await audit.record(
            tx,
            now=now,
            event="code_issued",
            email_hash=code.email_hash,
            ip=code.ip,
            outcome="success",
            purpose=code.purpose,
        )


async def _issue_together(tx: Transaction, codes: Sequence[NewCode], *, now: datetime) -> None:
    emails = [code.email for code in codes]
    purposes = [code.purpose for code in codes]
    registration_ids = [code.registration_id for code in codes]
    await tx.run(
        _RETIRE, now=now, emails=emails, purposes=purposes, registration_ids=registration_ids
    )
    pending = [code.pending or (None, None, None) for code in codes]
    rows = await tx.all(
        _INSERT_CODES,
        now=now,
        emails=emails,
        purposes=purposes,
        code_hashes=[code.code_hash for code in codes],
        expires=[code.expires_at for code in codes],
        password_hashes=[password_hash for password_hash, _, _ in pending],
        first_names=[first_name for _, first_name, _ in pending],
        last_names=[last_name for _, _, last_name in pending],
        challenge_ids=[code.challenge_id for code in codes],
        registration_ids=registration_ids,
        link_token_hashes=[code.link_token_hash for code in codes],
    )
    # RETURNING's order is not promised: the ids are matched by key, unique here.
    otp_ids = {(email, purpose, reg): otp_id for otp_id, email, purpose, reg in rows}
    await tx.run(
        _INSERT_MAILS,
        now=now,
        recipients=emails,
        kinds=purposes,
        otp_ids=[otp_ids[code.key] for code in codes],
        subjects=[code.mail.subject for code in codes],
        html_bodies=[code.mail.html for code in codes],
        text_bodies=[code.mail.text for code in codes],
        send_befores=[code.expires_at for code in codes],
        keys=[outbox.new_idempotency_key() for _ in codes],
    )
    await tx.run(
        _INSERT_EVENTS,
        now=now,
        purposes=purposes,
        email_hashes=[code.email_hash for code in codes],
        ips=[audit.stored_ip(code.ip) for code in codes],
    )
