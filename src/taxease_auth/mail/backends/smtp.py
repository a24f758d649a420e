"""SmtpBackend: mail through any SMTP server, Amazon SES's SMTP interface included.

The standard library's ``smtplib`` runs in worker threads (at most ``max_concurrency`` at a
time) and connections are kept for reuse between sends, as a relay expects. Errors are
translated here and nowhere else, by the stage that failed and the reply code (RFC 5321: 4xx
"try again later", 5xx "not like this"):

- 4xx replies, disconnections, timeouts and connection errors: ``TransientSendError``;
- a 5xx to the connection, the greeting, STARTTLS, AUTH or MAIL FROM, an untrusted
  certificate, a missing extension, and the SES replies that stop every mail (daily quota,
  paused or suspended sending, unverified sender): ``PermanentSendError(account_wide=True)``;
- a 5xx to RCPT TO or to the message itself: ``PermanentSendError`` for this message.
"""

from __future__ import annotations

import contextlib
import email.policy
import email.utils
import re
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from enum import StrEnum

import anyio
import anyio.to_thread

from taxease_auth.config import Settings, SmtpSecurity
from taxease_auth.mail.backends.base import (
    PermanentSendError,
    SendError,
    TransientSendError,
    header_values,
)
from taxease_auth.mail.backends.reasons import EMAIL_LIKE, safe_reason
from taxease_auth.mail.backends.unverified import is_sender_rejection
from taxease_auth.mail.message import Message, SendResult

# A pooled connection idle longer than this is closed rather than reused: servers drop idle
# sessions (aiosmtpd after 300 s, many relays after 30-60 s) and a fresh one costs one handshake.
MAX_IDLE_SECONDS = 20.0

# CRLF line ends and 78-column folding, as SMTP requires. Both parts are quoted-printable, so
# the message is 7-bit clean and needs neither 8BITMIME nor SMTPUTF8 from the server.
_POLICY = email.policy.SMTP

# SES answers these with a 4xx or 5xx code, but they hold for every mail until an operator
# acts (SES developer guide, "SMTP response codes"; SECURITY-AND-SES.md §2.3).
_ACCOUNT_WIDE_TEXTS = (
    "daily message quota exceeded",
    "sending paused",
    "sending suspended",
    "account is paused",
    "configuration set does not exist",
    "mail from domain",
)

# "queued as 4Xk2..." (Postfix, Exim...) or SES's "Ok 0101018f...-000000".
# SES's SMTP interface answers "250 Ok <message-id>": that id is what its events name.
_QUEUE_ID = re.compile(r"queued as\s+<?([^\s;,<>]+)>?|^ok\s+<?([^\s<>]+)>?$", re.IGNORECASE)
SES_CONFIGURATION_SET_HEADER = "X-SES-CONFIGURATION-SET"


class Stage(StrEnum):
    """Where in the SMTP conversation a send failed: it decides who is at fault."""

    CONNECT = "connect"
    HELLO = "hello"
    STARTTLS = "starttls"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass
class _Progress:
    """How far one session got; read when it fails."""

    stage: Stage = Stage.CONNECT


def _reply_text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def classify_reply(stage: Stage, code: int, text: str, *, sender: str | None = None) -> SendError:
    """Translate an SMTP failure reply at ``stage`` into the worker's vocabulary.

    Returns (does not raise) the error; its reason is ``"SMTP <stage> <code>: <text>"`` with
    every address masked. Replies echo addresses (a refused RCPT, SES's list of unverified
    identities), and an address is whatever someone registered with: the account-wide phrases
    are looked for in the reply without its addresses, and an unverified identity is the
    sender's only when SES lists the sender's address or domain (``unverified``).
    """
    reason = safe_reason(f"SMTP {stage} {code}: {text}")
    own_words = EMAIL_LIKE.sub(" ", text).lower()
    if any(marker in own_words for marker in _ACCOUNT_WIDE_TEXTS):
        return PermanentSendError(reason, account_wide=True)
    if 400 <= code < 500:
        return TransientSendError(reason)
    if stage in (Stage.CONNECT, Stage.HELLO, Stage.STARTTLS, Stage.AUTH, Stage.MAIL):
        # The server refuses us or our sender: every other mail would meet the same answer.
        return PermanentSendError(reason, account_wide=True)
    if stage is Stage.DATA:
        # SES names the unverified identity: the sender's (all mail) or a sandbox recipient's.
        return PermanentSendError(reason, account_wide=is_sender_rejection(text, sender))
    return PermanentSendError(reason)


def classify_exception(error: Exception, stage: Stage, *, sender: str | None = None) -> SendError:
    """Translate an ``smtplib``, ``ssl`` or socket error raised at ``stage``; any other
    exception (a bug, not an SMTP outcome) is raised again unchanged."""
    name = type(error).__name__
    if isinstance(error, smtplib.SMTPResponseException):
        # SMTPConnectError, SMTPHeloError, SMTPAuthenticationError, SMTPDataError...
        return classify_reply(stage, error.smtp_code, _reply_text(error.smtp_error), sender=sender)
    if isinstance(error, smtplib.SMTPServerDisconnected):
        # smtplib also reports read timeouts this way. During DATA the server may have accepted
        # the mail already: the retry carries the same Message-ID, and the worker logs it.
        return TransientSendError(
            safe_reason(f"SMTP {stage}: {name}: {error}"), possibly_sent=stage is Stage.DATA
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return PermanentSendError(
            safe_reason(
                f"SMTP {stage}: the server's TLS certificate is not trusted "
                f"({error.verify_message}): check SMTP_HOST, or set SMTP_CA_FILE"
            ),
            account_wide=True,
        )
    if isinstance(error, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return TransientSendError(safe_reason(f"SMTP {stage}: {name}: {error}"))
    if isinstance(error, ssl.SSLError):
        return PermanentSendError(
            safe_reason(
                f"SMTP {stage}: TLS failed ({error.reason or error}): check SMTP_SECURITY and "
                "SMTP_PORT (tls is usually 465, starttls 587)"
            ),
            account_wide=True,
        )
    if isinstance(error, smtplib.SMTPNotSupportedError | smtplib.SMTPException):
        # STARTTLS or AUTH not offered, no common AUTH mechanism: a configuration problem.
        return PermanentSendError(safe_reason(f"SMTP {stage}: {error}"), account_wide=True)
    if isinstance(error, OSError):
        # Refused, reset, unreachable, DNS failure, connect timeout: the network, for now.
        return TransientSendError(
            safe_reason(f"SMTP {stage}: {name}: {error}"), possibly_sent=stage is Stage.DATA
        )
    if isinstance(error, UnicodeError):
        # A non-ASCII credential (account-wide) or address (this message only).
        return PermanentSendError(
            safe_reason(f"SMTP {stage}: {name}: non-ASCII text the server cannot take"),
            account_wide=stage is Stage.AUTH,
        )
    raise error


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message ready for the wire: envelope addresses, bytes and its Message-ID."""

    sender: str
    recipient: str
    data: bytes
    message_id: str


def build_envelope(message: Message, *, configuration_set: str | None = None) -> Envelope:
    """Build the MIME message (multipart/alternative: text, then HTML; UTF-8).

    With ``configuration_set``, the ``X-SES-CONFIGURATION-SET`` header asks SES's SMTP
    interface to publish this mail's events through that set (DESIGN.md §10).

    Raises ``PermanentSendError`` when a header value holds a control character (header
    injection) or an address cannot be parsed: account-wide for the sender (configuration),
    for this message otherwise.
    """
    sender, recipient, subject = header_values(message)
    envelope_sender = email.utils.parseaddr(sender)[1]
    if "@" not in envelope_sender:
        raise PermanentSendError("sender: not an email address", account_wide=True)
    envelope_recipient = email.utils.parseaddr(recipient)[1]
    if "@" not in envelope_recipient:
        raise PermanentSendError("recipient: not an email address")

    mime = EmailMessage(policy=_POLICY)
    mime["From"] = sender
    mime["To"] = recipient
    mime["Subject"] = subject
    mime["Date"] = email.utils.formatdate(usegmt=True)
    # The idempotency key makes a retry of the same row carry the same Message-ID: a retry
    # after an ambiguous failure is recognisable, and mailboxes that dedupe will show one mail.
    domain = envelope_sender.rpartition("@")[2]
    message_id = f"<{message.idempotency_key}@{domain}>"
    mime["Message-ID"] = message_id
    if configuration_set:
        mime[SES_CONFIGURATION_SET_HEADER] = configuration_set
    mime.set_content(message.text, charset="utf-8", cte="quoted-printable")
    mime.add_alternative(message.html, subtype="html", charset="utf-8", cte="quoted-printable")
    try:
        data = mime.as_bytes()
    except (UnicodeError, ValueError) as error:
        raise PermanentSendError(f"message: {type(error).__name__}") from None
    return Envelope(envelope_sender, envelope_recipient, data, message_id)


def provider_id(reply: str, fallback: str) -> str:
    """The relay's queue id from its DATA reply, or ``fallback`` (our Message-ID)."""
    match = _QUEUE_ID.search(reply.strip())
    if match is None:
        return fallback
    return (match.group(1) or match.group(2))[:255]


@dataclass
class _Pooled:
    connection: smtplib.SMTP
    idle_since: float


class SmtpBackend:
    """Sends through ``SMTP_HOST``; at most ``max_concurrency`` SMTP sessions at a time."""

    name = "smtp"

    def __init__(self, settings: Settings, *, max_concurrency: int | None = None) -> None:
        """``max_concurrency`` defaults to OUTBOX_WORKER_CONCURRENCY: one session per send the
        worker runs at once (SES's SMTP interface answers 421 to too many)."""
        if max_concurrency is None:
            max_concurrency = settings.outbox_worker_concurrency
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be >= 1")
        if not settings.smtp_host:
            raise ValueError("SMTP_HOST is required")
        self._host = settings.smtp_host
        self._port = settings.smtp_port
        self._security = settings.smtp_security
        self._timeout = settings.smtp_timeout_seconds
        self._username = settings.smtp_username
        self._password = settings.smtp_password
        self._configuration_set = settings.aws_ses_configuration_set
        self._tls_context: ssl.SSLContext | None = None
        if self._security is not SmtpSecurity.NONE:
            # Certificate and host name checked; TLS 1.2 at least (Python's defaults).
            self._tls_context = ssl.create_default_context(cafile=settings.smtp_ca_file)
        # socket.getfqdn(), smtplib's default EHLO name, may wait on a slow reverse DNS lookup.
        self._local_hostname = socket.gethostname() or "localhost"
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._max_idle = max_concurrency
        self._idle: list[_Pooled] = []
        self._lock = threading.Lock()
        self._closed = False

    async def send(self, message: Message) -> SendResult:
        """Send ``message``; return the relay's queue id (or the Message-ID) or raise a
        ``SendError`` subclass. Cancellation waits for the session in flight."""
        envelope = build_envelope(message, configuration_set=self._configuration_set)
        sender = message.sender
        reply = await anyio.to_thread.run_sync(
            self._send_blocking, envelope, sender, limiter=self._limiter
        )
        return SendResult(provider_message_id=provider_id(reply, envelope.message_id))

    async def check(self) -> None:
        """Open a session (TLS and AUTH as configured) and close it; raise a ``SendError``
        subclass on failure. Sends nothing: for `taxease-auth doctor`."""
        await anyio.to_thread.run_sync(self._check_blocking, limiter=self._limiter)

    async def aclose(self) -> None:
        """Close the idle connections; sessions in flight close when they finish."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        await anyio.to_thread.run_sync(_quit_all, [pooled.connection for pooled in idle])

    # --- in worker threads -----------------------------------------------------------------

    def _send_blocking(self, envelope: Envelope, sender: str) -> str:
        progress = _Progress()
        connection = self._checkout()
        try:
            if connection is None:
                connection = self._open(progress)
                return _transact(connection, envelope, progress)
            try:
                return _transact(connection, envelope, progress)
            except (
                smtplib.SMTPResponseException,
                smtplib.SMTPServerDisconnected,
                OSError,
            ) as error:
                if not _dropped_before_mail(error, progress):
                    raise
            # A pooled session the server dropped while idle: nothing was sent on it, so one
            # fresh session is safe.
            _close(connection)
            connection = None
            progress = _Progress()
            connection = self._open(progress)
            return _transact(connection, envelope, progress)
        except Exception as error:
            # Not a catch-all: classify_exception re-raises anything it does not know.
            if connection is not None:
                _close(connection)
                connection = None
            raise classify_exception(error, progress.stage, sender=sender) from None
        finally:
            if connection is not None:
                self._checkin(connection)

    def _check_blocking(self) -> None:
        progress = _Progress()
        try:
            connection = self._open(progress)
        except Exception as error:
            raise classify_exception(error, progress.stage) from None
        _quit_all([connection])

    def _open(self, progress: _Progress) -> smtplib.SMTP:
        """Connect, greet, STARTTLS and AUTH as configured, recording each stage reached."""
        progress.stage = Stage.CONNECT
        connection: smtplib.SMTP
        if self._security is SmtpSecurity.TLS:
            connection = smtplib.SMTP_SSL(
                self._host,
                self._port,
                local_hostname=self._local_hostname,
                timeout=self._timeout,
                context=self._tls_context,
            )
        else:
            connection = smtplib.SMTP(
                self._host, self._port, local_hostname=self._local_hostname, timeout=self._timeout
            )
        try:
            progress.stage = Stage.HELLO
            connection.ehlo_or_helo_if_needed()
            if self._security is SmtpSecurity.STARTTLS:
                progress.stage = Stage.STARTTLS
                connection.starttls(context=self._tls_context)
                progress.stage = Stage.HELLO
                connection.ehlo_or_helo_if_needed()  # RFC 3207: greet again inside TLS
            if self._username and self._password is not None:
                progress.stage = Stage.AUTH
                connection.login(self._username, self._password.get_secret_value())
        except BaseException:
            _close(connection)
            raise
        return connection

    def _checkout(self) -> smtplib.SMTP | None:
        """An idle pooled session, or None; sessions idle too long are closed."""
        now = time.monotonic()
        stale: list[smtplib.SMTP] = []
        found: smtplib.SMTP | None = None
        with self._lock:
            while self._idle:
                pooled = self._idle.pop()
                if now - pooled.idle_since <= MAX_IDLE_SECONDS:
                    found = pooled.connection
                    break
                stale.append(pooled.connection)
        _quit_all(stale)
        return found

    def _checkin(self, connection: smtplib.SMTP) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(_Pooled(connection, time.monotonic()))
                return
        _quit_all([connection])


def _transact(connection: smtplib.SMTP, envelope: Envelope, progress: _Progress) -> str:
    """MAIL FROM, RCPT TO, DATA on an open session; the final reply's text on success."""
    progress.stage = Stage.MAIL
    code, reply = connection.mail(envelope.sender)
    if code != 250:
        raise smtplib.SMTPResponseException(code, reply)
    progress.stage = Stage.RCPT
    code, reply = connection.rcpt(envelope.recipient)
    if code not in (250, 251):
        raise smtplib.SMTPResponseException(code, reply)
    progress.stage = Stage.DATA
    code, reply = connection.data(envelope.data)  # SMTPDataError unless DATA gets 354
    if code != 250:
        raise smtplib.SMTPResponseException(code, reply)
    return _reply_text(reply)


def _dropped_before_mail(error: Exception, progress: _Progress) -> bool:
    """Whether a reused session turned out dead at MAIL FROM, before any data left."""
    if progress.stage is not Stage.MAIL:
        return False
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code == 421  # the server is closing the session (idle timeout)
    return True  # disconnected, reset, broken pipe


def _close(connection: smtplib.SMTP) -> None:
    with contextlib.suppress(OSError):
        connection.close()


def _quit_all(connections: list[smtplib.SMTP]) -> None:
    """Say QUIT politely; a session that cannot is just closed."""
    for connection in connections:
        try:
            connection.quit()
        except (smtplib.SMTPException, OSError):
            _close(connection)
