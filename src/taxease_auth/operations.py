"""What the operator commands do (`send-test`, `outbox`, `purge`, `why`), as text for a
terminal. `cli.py` parses arguments and exits; the queries live in ``store.reports`` and
``store.housekeeping``, the SES checks in ``mail.doctor``.

No output here ever holds a code, a code hash, a password hash or a mail body: the store
modules do not even load them.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from taxease_auth.auth.emails import email_fingerprint
from taxease_auth.clock import Clock, SystemClock
from taxease_auth.config import EmailBackendName, Settings
from taxease_auth.mail.backends import build_backend
from taxease_auth.mail.backends.base import PermanentSendError, SendError
from taxease_auth.mail.feedback import story
from taxease_auth.mail.message import Message, SendResult
from taxease_auth.mail.render import MailRenderer
from taxease_auth.store import audit, housekeeping, reports
from taxease_auth.store.db import make_engine, make_sessionmaker
from taxease_auth.store.models import OutboxStatus

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A command's text and exit status (0 done, 1 refused or failed)."""

    text: str
    exit_code: int = 0


@asynccontextmanager
async def _transaction(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = make_engine(settings)
    try:
        async with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        await engine.dispose()


async def _read(settings: Settings, query: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async with _transaction(settings) as session:
        return await query(session)


# --- time, as an operator reads it -----------------------------------------------------------


def when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def age(delta: timedelta) -> str:
    """``timedelta(seconds=3725)`` -> ``1h 2m``: the two largest units."""
    seconds = int(abs(delta.total_seconds()))
    parts = [(seconds // 86400, "d"), (seconds // 3600 % 24, "h"), (seconds // 60 % 60, "m")]
    parts.append((seconds % 60, "s"))
    shown = [f"{value}{unit}" for value, unit in parts if value][:2]
    return " ".join(shown) or "0s"


def relative(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"in {age(moment - now)}" if moment > now else f"{age(now - moment)} ago"


# --- send-test -------------------------------------------------------------------------------


async def send_test_mail(settings: Settings, recipient: str) -> SendResult:
    """Render the test mail and send it to canonical ``recipient`` through the configured
    backend, bypassing the outbox; raises a ``SendError`` subclass on failure."""
    mail = MailRenderer(settings.app_name).render_test()
    message = Message(
        sender=settings.sender or "",
        recipient=recipient,
        subject=mail.subject,
        html=mail.html,
        text=mail.text,
        kind="test",
        idempotency_key=f"test-{secrets.token_hex(8)}",
    )
    backend = build_backend(settings)
    try:
        return await backend.send(message)
    finally:
        await backend.aclose()


def describe_send_error(error: SendError) -> str:
    if isinstance(error, PermanentSendError):
        kind = "permanent, account-wide" if error.account_wide else "permanent"
        hint = (
            ": nothing will be delivered until this is fixed (run `taxease-auth doctor`)"
            if error.account_wide
            else ": this message will not be accepted as it is"
        )
    else:
        kind, hint = "transient", ": the outbox would retry it with backoff"
    return f"not sent ({kind}{hint})\n  {error.reason}"


async def send_test(settings: Settings, recipient: str) -> Outcome:
    backend = settings.mail_backend
    try:
        result = await send_test_mail(settings, recipient)
    except SendError as error:
        return Outcome(describe_send_error(error), exit_code=1)
    return Outcome(
        f"sent to {recipient} through {backend}; provider message id: "
        f"{result.provider_message_id or '(none given)'}"
    )


# --- outbox ----------------------------------------------------------------------------------


def _mail_line(mail: reports.MailRow, now: datetime) -> str:
    tries = f"{mail.attempts} attempt{'s' if mail.attempts != 1 else ''}"
    parts = [f"mail #{mail.id}", f"{mail.kind}", f"{mail.status}", tries]
    if mail.status == OutboxStatus.SENT:
        parts.append(f"sent {when(mail.sent_at)}")
    elif mail.status == OutboxStatus.PENDING:
        leased = mail.lease_expires_at is not None and mail.lease_expires_at > now
        parts.append("being sent" if leased else f"next try {relative(mail.next_attempt_at, now)}")
    else:
        parts.append(f"{mail.status} {when(mail.updated_at)}")
    if mail.provider_message_id:
        parts.append(f"provider id {mail.provider_message_id}")
    if mail.delivery_state:
        parts.append(f"SES says {mail.delivery_state}")
    line = "  ".join(parts)
    if mail.last_error and mail.status != OutboxStatus.SENT:
        line += f"\n    last error: {mail.last_error}"
    return line


async def outbox_list(
    settings: Settings, *, status: OutboxStatus | None, limit: int, clock: Clock
) -> Outcome:
    rows = await _read(
        settings, lambda session: reports.outbox_rows(session, status=status, limit=limit)
    )
    if not rows:
        return Outcome(f"no {status or ''} outbox rows".replace("  ", " "))
    now = clock.now()
    lines = [
        f"#{row.id:<6} {row.status:<8} {row.kind:<18} {row.recipient}  queued "
        f"{relative(row.created_at, now)}  {row.attempts} attempt(s)"
        + (f"  id {row.provider_message_id}" if row.provider_message_id else "")
        + (f"\n        last error: {row.last_error}" if row.last_error else "")
        for row in rows
    ]
    return Outcome("\n".join(lines))


async def outbox_stats(settings: Settings, *, clock: Clock) -> Outcome:
    now = clock.now()
    stats = await _read(settings, lambda session: reports.outbox_stats(session, now=now))
    counts = ", ".join(f"{stats.by_status.get(status, 0)} {status}" for status in OutboxStatus)
    lines = [f"outbox: {counts}"]
    if stats.by_status.get(OutboxStatus.PENDING):
        lines.append(
            f"pending: {stats.pending_due} due now, {stats.pending_in_flight} being sent, "
            f"{stats.pending_waiting} waiting to retry; oldest queued "
            f"{relative(stats.oldest_pending_created_at, now)}"
        )
    else:
        lines.append("pending: none")
    if stats.recent_failures:
        lines.append("failed in the last 24 h, commonest reasons:")
        lines += [f"  {count:>5}  {reason}" for reason, count in stats.recent_failures]
    return Outcome("\n".join(lines))


async def outbox_retry(settings: Settings, row_id: int, *, clock: Clock) -> Outcome:
    try:
        async with _transaction(settings) as session:
            await housekeeping.retry_failed(
                session, row_id, now=clock.now(), max_attempts=settings.otp_max_attempts
            )
    except housekeeping.RetryRefused as refused:
        return Outcome(f"not retried: {refused}", exit_code=1)
    return Outcome(
        f"outbox row {row_id} is pending again: the delivery worker sends it on its next pass"
    )


# --- purge -----------------------------------------------------------------------------------


class _DryRun(Exception):
    def __init__(self, counts: housekeeping.PurgeCounts) -> None:
        super().__init__()
        self.counts = counts


async def purge(
    settings: Settings, *, dry_run: bool, codes_older_than: timedelta, clock: Clock
) -> Outcome:
    """Apply the retention rules; a dry run makes the same changes and rolls them back."""
    outbox_older_than = timedelta(days=settings.outbox_retention_days)
    try:
        async with _transaction(settings) as session:
            counts = await housekeeping.purge(
                session,
                now=clock.now(),
                codes_older_than=codes_older_than,
                outbox_older_than=outbox_older_than,
                audit_older_than=timedelta(days=settings.audit_retention_days),
                session_idle=timedelta(days=settings.session_idle_days),
            )
            if dry_run:
                raise _DryRun(counts)  # leaves the transaction: it rolls back
    except _DryRun as rolled_back:
        counts = rolled_back.counts
    verb = "would delete" if dry_run else "deleted"
    clear = "would clear" if dry_run else "cleared"
    return Outcome(
        f"{verb} {counts.codes} code(s) expired more than {age(codes_older_than)} ago\n"
        f"{verb} {counts.outbox_rows} final outbox row(s) older than "
        f"{settings.outbox_retention_days} day(s) (OUTBOX_RETENTION_DAYS)\n"
        f"{clear} the body of {counts.bodies_cleared} failed row(s) whose code expired\n"
        f"{verb} {counts.audit_events} audit event(s) older than "
        f"{settings.audit_retention_days} day(s) (AUDIT_RETENTION_DAYS)\n"
        f"{verb} {counts.sessions} session(s) ended, expired or idle more than "
        f"{age(codes_older_than)} ago" + ("\n(dry run: nothing changed)" if dry_run else "")
    )


# --- audit -----------------------------------------------------------------------------------


async def audit_trail(settings: Settings, email: str | None, *, limit: int) -> Outcome:
    """Security events, newest first; for one address when given. The trail holds keyed
    fingerprints, so the address is looked up under every key that may have made one."""
    fingerprints = (
        None
        if email is None
        else [email_fingerprint(key, email) for key in settings.verification_keys]
    )
    events = await _read(
        settings, lambda session: audit.recent(session, email_hashes=fingerprints, limit=limit)
    )
    if not events:
        return Outcome("no audit events" + (f" for {email}" if email else ""))
    lines = [
        f"{when(event.occurred_at)}  {event.event:<16} {event.outcome:<8} "
        f"{event.purpose or '-':<18} {event.ip or '-':<15} {event.detail or ''}".rstrip()
        + ("" if email else f"  [{event.email_hash[:12]}]")
        for event in events
    ]
    header = "time                     event            outcome  purpose            client"
    return Outcome("\n".join([header, *lines]))


# --- why -------------------------------------------------------------------------------------


def _code_state(code: reports.CodeRow, now: datetime, max_attempts: int) -> str:
    if code.used:
        return f"used {when(code.used_at)}"
    if code.retired_at is not None:
        return f"replaced by a newer code {when(code.retired_at)}"
    if code.attempts >= max_attempts:
        return "dead (too many wrong tries)"
    if code.expires_at <= now:
        return "expired"
    return "live"


def _verdict(report: reports.AddressReport, now: datetime, settings: Settings) -> str:
    if report.suppressed is not None:
        return (
            f"the address is on the suppression list ({report.suppressed.reason}, "
            f"{when(report.suppressed.created_at)}): no mail is sent to it. If the mailbox works "
            f"again, `taxease-auth suppression remove {report.email}` lets codes go to it"
        )
    if not report.codes and not report.other_mails:
        return (
            "nothing is stored for this address: the user may have typed another one (the API "
            "answers alike for unknown addresses), or its rows were purged"
        )
    if not report.codes:
        return _mail_verdict(report.other_mails[0], None, now, settings)
    newest = report.codes[0]
    state = _code_state(newest, now, settings.otp_max_attempts)
    if newest.used:
        return f"the newest code ({newest.purpose}) was {state}: that step is done"
    if not newest.mails:
        return (
            f"no mail is recorded for the newest code ({newest.purpose}, {state}): it was "
            "issued without one (DEVELOPER_OTP) or its row was purged"
        )
    return _mail_verdict(newest.mails[0], newest, now, settings)


# A sent mail's fate from SES's events, for the verdict.
_SES_VERDICTS = {
    "delivered": "reached the recipient's mail server: if it is not in the inbox, look in spam",
    "bounced": "bounced",
    "complained": "was marked as spam by the recipient",
    "delayed": "is delayed: SES keeps trying",
    "rejected": "was rejected by SES, never sent",
}


def _mail_verdict(
    mail: reports.MailRow, code: reports.CodeRow | None, now: datetime, settings: Settings
) -> str:
    what = f"the newest {'code' if code else 'mail'} ({code.purpose if code else mail.kind})"
    live = code is not None and _code_state(code, now, settings.otp_max_attempts) == "live"
    if mail.status == OutboxStatus.SENT and mail.delivery_state in _SES_VERDICTS:
        text = f"{what} {_SES_VERDICTS[mail.delivery_state]} (see its story above)"
        if code is not None and not live:
            text += "; the code is no longer valid, the user needs a new one"
        return text
    if mail.status == OutboxStatus.SENT:
        text = (
            f"{what} was accepted by the mail provider {when(mail.sent_at)} (id "
            f"{mail.provider_message_id or '-'}): if it did not arrive, look in spam and at "
            "the suppression list and bounce notifications"
        )
        if code is not None and not live:
            text += "; the code is no longer valid, the user needs a new one"
        return text
    if mail.status == OutboxStatus.PENDING:
        if mail.attempts == 0:
            return (
                f"{what} is queued since {when(mail.created_at)} and was never tried: is a "
                "delivery worker running? (`taxease-auth outbox stats`, EMBEDDED_WORKER)"
            )
        return (
            f"{what} failed {mail.attempts} time(s) and will be retried "
            f"{relative(mail.next_attempt_at, now)}: {mail.last_error}"
        )
    if mail.status == OutboxStatus.FAILED:
        action = (
            f"`taxease-auth outbox retry {mail.id}` sends it again"
            if live and mail.has_body
            else "the user must ask for a new code"
        )
        return f"{what} failed: {mail.last_error}. {action}"
    return (
        f"{what} expired before it could be sent (no worker, the provider unavailable, or "
        "delivery paused after an account-wide error): the user must ask for a new code; see "
        "`taxease-auth outbox stats` and `taxease-auth doctor`"
    )


async def why(settings: Settings, email: str, *, clock: Clock | None = None) -> Outcome:
    """One screen about canonical ``email``: account, recent codes and their mail, the SES
    suppression list (with the SES backend), and a verdict."""
    clock = clock or SystemClock()
    now = clock.now()
    report = await _read(settings, lambda session: reports.address_report(session, email))
    lines = [f"why {email}"]
    account = report.account
    if account is None:
        lines.append("account     none (a pending registration's codes may still be below)")
    else:
        verified = (
            f"verified {when(account.email_verified_at)}"
            if account.email_verified
            else "NOT verified"
        )
        lines.append(
            f"account     {verified}; created {when(account.created_at)}; last login "
            f"{when(account.last_login_at) if account.last_login_at else 'never'}"
        )
    if report.codes:
        lines.append(f"codes       newest {len(report.codes)}, newest first")
    for code in report.codes:
        lines.append(
            f"  code #{code.id}  {code.purpose}  issued {when(code.created_at)} "
            f"({relative(code.created_at, now)})  expires {relative(code.expires_at, now)}  "
            f"tries {code.attempts}/{settings.otp_max_attempts}  "
            f"{_code_state(code, now, settings.otp_max_attempts)}"
        )
        if not code.mails:
            lines.append("    no mail recorded")
        for mail in code.mails:
            lines.append(f"    {_mail_line(mail, now)}".replace("\n", "\n  "))
            lines += [f"      {story.line(e)}" for e in report.events.get(mail.id, [])]
    if report.other_mails:
        lines.append("other mail  (notices, or mail whose code is not listed)")
        for mail in report.other_mails:
            lines.append(f"  {_mail_line(mail, now)}")
            lines += [f"    {story.line(e)}" for e in report.events.get(mail.id, [])]
    if report.suppressed is not None:
        entry = report.suppressed
        lines.append(
            f"suppressed  since {when(entry.created_at)} ({entry.reason}): "
            f"{entry.detail or 'no detail'}; no mail is sent to this address"
        )
    suppression = await anyio.to_thread.run_sync(_suppression_line, settings, email)
    if suppression:
        lines.append(suppression)
    lines.append(f"verdict     {_verdict(report, now, settings)}")
    return Outcome("\n".join(lines))


def _suppression_line(settings: Settings, email: str) -> str | None:
    if settings.mail_backend is not EmailBackendName.SES:
        return None
    from taxease_auth.mail.doctor import SesChecks

    ses = SesChecks(settings)
    try:
        check = ses.suppression_check(email)
    finally:
        ses.close()
    line = f"suppression {check.status.value}: {check.detail}"
    return line + (f"\n            fix: {check.fix}" if check.fix else "")
